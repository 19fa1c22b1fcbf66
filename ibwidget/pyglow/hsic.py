"""PyGlow's HSIC network, ``HSICSequential``: layers trained by the HSIC bottleneck, without back-propagation.

Ma, Lewis & Kleijn 2020, "The HSIC bottleneck: deep learning without back-propagation". PyGlow 0.1.7's calls work
as they are: ``add(layer, HSIC(kernel="gaussian", sigma=5), regularize_coeff=100)``, ``compile(loss_criterion=...,
optimizer="SGD", regularize_coeff=100)``, ``pre_training_loop(num_epochs, train_loader, val_loader)``. The training
runs through the :class:`~ibwidget.train.engine.Engine` (callback :class:`~ibwidget.train.bottleneck.HSICBottleneck`),
so pause/stop, the recording, run files and ``ib.Trainer`` work as for any model. Added here: an ``HSICoutput`` last
layer is the paper's output layer, fitted after pre-training by ``post_training_loop`` (cross-entropy, the hidden
layers frozen); ``NHSIC`` is the paper's own criterion.

Deliberate differences from PyGlow: labels are one-hot encoded with the dataset's class count (PyGlow used each
batch's largest label); an ``HSICoutput`` is not pre-trained by HSIC; ``gpu=True`` without CUDA warns and uses the
CPU; criteria compute on the model's device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ibwidget.measure._typing import Batches, LossSpec, OptimizerSpec
from ibwidget.pyglow.evaluators import Estimator
from ibwidget.pyglow.layers import HSICoutput, Layer
from ibwidget.pyglow.models import Sequential
from ibwidget.train import _compile
from ibwidget.train.bottleneck import HSICBottleneck

__all__ = ["HSICSequential"]


class HSICSequential(Sequential):
    """A stack of layers, each trained on ``HSIC(Z, X) - beta HSIC(Z, Y)`` for its own output Z (no gradient
    crosses a layer); an optional :class:`~ibwidget.pyglow.layers.HSICoutput` last layer is fitted afterwards.

    ``add(layer, loss_criterion, regularize_coeff)`` gives a layer its own criterion and beta; the others take
    ``compile``'s. ``pre_training_loop`` trains the hidden layers, ``post_training_loop`` the output layer;
    ``ib.Trainer(model, train, val, epochs)`` shows the pre-training live.
    """

    def __init__(self, input_shape: Sequence[int], gpu: bool | None = None, **kwargs: Any) -> None:
        super().__init__(input_shape, gpu, **kwargs)
        self.loss_dict: dict[int, tuple[Estimator, float]] = {}  #: layer index -> (criterion, beta), from add()
        self.global_criterion: tuple[Estimator, float] | None = None  #: (criterion, beta), from compile()
        self.bottleneck: HSICBottleneck | None = None  #: the training callback of the current engine
        self.num_classes: int | None = None  #: the one-hot width of the labels (None: the dataset's class count)

    # ------------------------------------------------------------------------------------------ building

    def add(self, layer: Layer, loss_criterion: Estimator | None = None, regularize_coeff: float = 0) -> HSICSequential:
        """Append ``layer``; ``loss_criterion`` (e.g. ``HSIC(kernel="gaussian", sigma=5)``) and ``regularize_coeff``
        (beta, the weight of the labels' term) give it its own objective."""
        if loss_criterion is not None:
            _check_criterion(loss_criterion)
            if isinstance(layer, HSICoutput):
                raise ValueError(
                    "an HSICoutput is the output layer, fitted after pre-training by post_training_loop() with "
                    "cross-entropy; add it without a criterion."
                )
        if self._layer_list and isinstance(self.layers[-1], HSICoutput):
            raise ValueError("the HSICoutput layer comes last; add the hidden layers before it.")
        super().add(layer)
        if loss_criterion is not None:
            self.loss_dict[len(self._layer_list) - 1] = (loss_criterion, float(regularize_coeff))
        return self

    @property
    def head(self) -> HSICoutput | None:
        """The output layer fitted after pre-training (an ``HSICoutput`` added last), or None."""
        last = self.layers[-1] if self._layer_list else None
        return last if isinstance(last, HSICoutput) else None

    # ------------------------------------------------------------------------------------------ compiling

    def compile(  # type: ignore[override]  # PyGlow's HSIC networks compile with their own arguments
        self,
        loss_criterion: Estimator | None = None,
        optimizer: OptimizerSpec = "SGD",
        regularize_coeff: float = 100,
        learning_rate: float = 0.001,
        momentum: float | None = 0.95,
        *,
        lr: float | None = None,
        loss: LossSpec = "cross_entropy",
        metrics: Iterable[str] | None = None,
        num_classes: int | None = None,
        **kwargs,
    ) -> None:
        """PyGlow's ``compile``: ``loss_criterion`` and ``regularize_coeff`` (beta) for every layer added without
        its own, one ``optimizer`` (``learning_rate`` or ``lr``, ``momentum``) for all. ``loss`` fits the
        output layer; ``metrics`` default to accuracy with an output layer, none without. ``num_classes`` sizes the
        one-hot labels (default: the output layer's width, else the dataset's class count)."""
        if not self._layer_list:
            raise RuntimeError("add layers before compile(): model.add(Dense(500, activation='relu'), ...).")
        if loss_criterion is not None:
            _check_criterion(loss_criterion)
            self.global_criterion = (loss_criterion, float(regularize_coeff))
        hidden = [n for n in self._layer_list[: len(self._layer_list) - (self.head is not None)]]
        missing = [n for i, n in enumerate(hidden) if getattr(self, n).has_params and self._criterion(i) is None]
        if missing:
            raise ValueError(
                f"layer {missing[0]} has no HSIC criterion: pass compile(loss_criterion=HSIC(kernel='gaussian', "
                "sigma=5), regularize_coeff=100), or give it one in add(layer, HSIC(...), regularize_coeff=...)."
            )
        self.to(self.device)
        for criterion, _ in (*self.loss_dict.values(), *([self.global_criterion] if self.global_criterion else [])):
            criterion.device = self.device  # the objective is computed where the activations are
        rate = learning_rate if lr is None else lr
        self._optimizer = _compile.resolve_optimizer(optimizer, self.parameters(), lr=rate, momentum=momentum, **kwargs)
        self._loss = _compile.resolve_loss(loss)
        self._loss_spec = "hsic_bottleneck"
        self.num_classes = num_classes if num_classes is not None else (self.head.output_dim if self.head else None)
        self._metrics = _compile.resolve_metrics(("accuracy",) if metrics is None and self.head else metrics or ())
        head = self.head
        if head is not None:
            skip = _compile.check_output_activation(head.activation_name, loss, once_key=self._warn_key)
            head.apply_output_activation = not skip

    def _criterion(self, index: int) -> tuple[Estimator, float] | None:
        return self.loss_dict.get(index, self.global_criterion)

    # ------------------------------------------------------------------------------------------ training

    def _callbacks(self) -> list:
        n_hidden = len(self._layer_list) - (self.head is not None)
        layers = self.layers[:n_hidden]
        pairs = [self._criterion(i) if layer.has_params else None for i, layer in enumerate(layers)]
        self.bottleneck = HSICBottleneck(
            layers,
            [None if p is None else p[0].criterion for p in pairs],
            [0.0 if p is None else p[1] for p in pairs],
            head=self.head,
            head_loss=self._loss or "cross_entropy",
            num_classes=self.num_classes,
        )
        return [self.bottleneck]

    def pre_training_loop(
        self,
        num_epochs: int,
        train_loader: Batches,
        val_loader: Batches | None = None,
        *,
        progress: bool = True,
        **kwargs: Any,
    ) -> dict:
        """Train the hidden layers by the HSIC bottleneck for ``num_epochs`` (blocking, tqdm progress); returns the
        history (``loss``: the summed layer objectives). Calling again continues the same run."""
        return self._train("bottleneck", num_epochs, train_loader, val_loader, progress, kwargs)

    def post_training_loop(
        self,
        num_epochs: int,
        train_loader: Batches,
        val_loader: Batches | None = None,
        *,
        progress: bool = True,
        **kwargs: Any,
    ) -> dict:
        """Fit the ``HSICoutput`` layer on the frozen hidden layers (cross-entropy by default) for ``num_epochs``,
        continuing the same run; returns the history (``loss``, ``accuracy``...)."""
        if self.head is None:
            raise ValueError("post_training_loop fits an output layer: add(HSICoutput(10)) last, then compile().")
        return self._train("head", num_epochs, train_loader, val_loader, progress, kwargs)

    def fit_generator(
        self,
        train_loader: Batches,
        val_loader: Batches | None = None,
        num_epochs: int = 1,
        show_plot: bool = False,
        progress: bool = True,
        *,
        post_num_epochs: int = 0,
        **kwargs,
    ) -> dict:
        """``pre_training_loop(num_epochs)``, then ``post_training_loop(post_num_epochs)`` if asked."""
        history = self.pre_training_loop(num_epochs, train_loader, val_loader, progress=progress, **kwargs)
        if post_num_epochs:
            history = self.post_training_loop(post_num_epochs, train_loader, val_loader, progress=progress)
        return history

    def _train(
        self,
        phase: str,
        num_epochs: int,
        train_loader: Batches,
        val_loader: Batches | None,
        progress: bool,
        kwargs: dict,
    ) -> dict:
        def set_phase() -> None:
            assert self.bottleneck is not None  # made with the engine
            self.bottleneck.set_phase(phase)

        return self._fit(train_loader, val_loader, num_epochs, progress, kwargs, before_start=set_phase)


def _check_criterion(criterion: object) -> None:
    if not isinstance(criterion, Estimator):
        raise TypeError(
            "a loss criterion is an ibwidget.estimators.Estimator such as HSIC(kernel='gaussian', sigma=5) or "
            f"NHSIC(sigma=5), got {type(criterion).__name__}."
        )
