"""Keras-like ``Sequential`` and ``IBSequential`` with PyGlow 0.1.7's API: ``add``, ``compile``, ``fit_generator``,
``fit``, and (``IBSequential``) ``attach_evaluator`` and ``evaluated_dynamics``.

A PyGlow notebook runs with its imports changed from ``glow`` to ``ibwidget``. Both models train through the same
:class:`~ibwidget.train.engine.Engine`, so a plain ``Sequential`` also keeps a :class:`~ibwidget.Run` of its epochs.
Differences, all deliberate: the dynamics are measured on a fixed probe after every epoch (``mode="batches"`` gives
PyGlow's per-batch averaging), against the model's own output as PyGlow did; a final softmax is not applied twice
with cross-entropy; ``gpu=True`` without CUDA warns and uses the CPU; ``fit_generator`` returns the history and draws
no matplotlib plot.
"""

from __future__ import annotations

import queue
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ibwidget.measure._typing import ArrayLike, Batches, Device, Labels, LossSpec, Metrics, OptimizerSpec
from ibwidget.pyglow.callback import EvaluatorsCallback
from ibwidget.pyglow.evaluators import HSIC, Estimator
from ibwidget.pyglow.layers import Layer
from ibwidget.record.recording import Recording, pop_options
from ibwidget.record.run import Run
from ibwidget.train import _compile
from ibwidget.train.engine import BatchEvent, Engine, EpochEvent, resolve_device

__all__ = ["Sequential", "IBSequential"]


class Sequential(nn.Module):
    """A stack of :mod:`ibwidget.pyglow.layers`, each built for the previous layer's output shape, trained by
    ``compile(...)`` then ``fit_generator(train, val, epochs)`` (headless, tqdm progress) or ``ib.Trainer``.

    ``gpu`` comes second, as in PyGlow (``Sequential((1, 28, 28), True)``); ``device`` ("auto": CUDA when available)
    is the alternative. ``track_dynamics`` and ``save_dynamics`` are PyGlow's flags, accepted and ignored: every fit
    records a :class:`ibwidget.Run` (``model.run``) of a ``probe``-sample snapshot per epoch.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        gpu: bool | None = None,
        *,
        device: Device | None = "auto",
        name: str | None = None,
        probe: int = 512,
        track_dynamics: bool = True,
        save_dynamics: bool = True,
    ):
        super().__init__()
        if gpu is not None:  # PyGlow's flag
            if gpu and not torch.cuda.is_available():
                warnings.warn(
                    "gpu=True but no CUDA device is available: training on the CPU.", RuntimeWarning, stacklevel=2
                )
            device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        self.device = resolve_device(device)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.name = name or type(self).__name__
        self._layer_list: list[str] = []
        self._counts: dict[str, int] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._loss_spec: LossSpec | None = None
        self._metrics: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] | None = None
        self._warn_key = object()  # once-per-model warnings: id(self) is reused after a model is freed
        self.probe = probe
        self.track_dynamics = track_dynamics
        self.save_dynamics = save_dynamics
        self.engine: Engine | None = None

    # ------------------------------------------------------------------------------------------ building

    def add(self, layer: Layer) -> Sequential:
        """Append ``layer``, built for the previous layer's output shape."""
        if not isinstance(layer, Layer):
            raise TypeError(
                f"add() takes an ibwidget layer such as Dense(10) or Conv2d(16, 3), got {type(layer).__name__}; "
                "to track a plain torch model use ib.Trainer(model, ..., layers=[...])."
            )
        layer.set_input(self.output_shape)
        kind = type(layer).__name__.lower()
        self._counts[kind] = self._counts.get(kind, 0) + 1
        name = f"{kind}_{self._counts[kind]}"
        self.add_module(name, layer)
        self._layer_list.append(name)
        return self

    @property
    def layers(self) -> list[Layer]:
        """The layers in order."""
        return [getattr(self, n) for n in self._layer_list]

    @property
    def output_shape(self) -> tuple[int, ...]:
        shape = self.layers[-1].output_shape if self._layer_list else self.input_shape
        assert shape is not None  # add() builds every layer
        return shape

    @property
    def tracked_layer_names(self) -> list[str]:
        """Names of the layers with parameters: the layers whose dynamics are tracked."""
        return [n for n in self._layer_list if getattr(self, n).has_params]

    @property
    def num_layers(self) -> int:
        """Tracked layers + 1, so that PyGlow's ``for i in range(model.num_layers - 1)`` visits each tracked layer."""
        return len(self.tracked_layer_names) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs in eval mode with the final activation applied (probabilities for a softmax model)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = x.to(self.device)
                last: Any = self.layers[-1]  # duck-typed: an activated layer has apply_output_activation
                if getattr(last, "apply_output_activation", True):
                    return self(x)
                for layer in self.layers[:-1]:
                    x = layer(x)
                return last.activate(last.forward_logits(x))
        finally:
            self.train(was)

    # ------------------------------------------------------------------------------------------ compiling

    def compile(
        self,
        optimizer: OptimizerSpec = "SGD",
        loss: LossSpec = "cross_entropy",
        metrics: Metrics = ("accuracy",),
        lr: float | None = None,
        momentum: float | None = None,
        **kwargs,
    ) -> None:
        """Choose optimizer (name or torch optimizer), loss and metrics; a softmax before cross-entropy is skipped."""
        if not self._layer_list:
            raise RuntimeError("add layers before compile(): model.add(Dense(10)).")
        self.to(self.device)
        self._optimizer = _compile.resolve_optimizer(optimizer, self.parameters(), lr=lr, momentum=momentum, **kwargs)
        self._loss = _compile.resolve_loss(loss)
        self._loss_spec = loss
        self._metrics = _compile.resolve_metrics(metrics)
        last: Any = self.layers[-1]  # duck-typed: an activated layer has apply_output_activation
        skip = _compile.check_output_activation(getattr(last, "activation_name", None), loss, once_key=self._warn_key)
        if hasattr(last, "apply_output_activation"):
            last.apply_output_activation = not skip

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`compile` has chosen the optimizer, loss and metrics."""
        return self._optimizer is not None

    def _check_compiled(self) -> None:
        if not self.is_compiled:
            raise RuntimeError("compile the model first: model.compile(optimizer='SGD', loss='cross_entropy').")

    # ------------------------------------------------------------------------------------------ training

    @property
    def run(self) -> Run | None:
        """The :class:`ibwidget.Run` of the last fit (None before)."""
        return None if self.engine is None else self.engine.run

    def make_engine(
        self,
        train_loader: Batches,
        val_loader: Batches | None = None,
        num_epochs: int = 1,
        *,
        probe: int | None = None,
        callbacks: Iterable[object] = (),
        **kwargs,
    ) -> Engine:
        """An :class:`~ibwidget.train.engine.Engine` for this compiled model, which becomes ``model.engine`` (so
        ``model.run`` describes its training); ``ib.Trainer(model, ...)`` uses this. ``probe`` defaults to the
        model's; :class:`~ibwidget.record.recording.Recording` options (``name``, ``keep_activations``...) go to its
        recording, ``callbacks`` after the model's own, other keywords to the engine (e.g. ``seed``)."""
        self._check_compiled()
        assert self._loss is not None and self._optimizer is not None  # compile() set them
        options = pop_options(kwargs)
        options.setdefault("name", self.name)
        loss = self._loss_spec if isinstance(self._loss_spec, str) else type(self._loss).__name__
        options["config"] = {"loss": loss, **options.get("config", {})}
        recording = Recording(self.probe if probe is None else probe, **options)
        self.engine = Engine(
            self,
            train_loader,
            val_loader,
            epochs=num_epochs,
            loss=self._loss,
            optimizer=self._optimizer,
            metrics=self._metrics,
            layers=self.tracked_layer_names,
            device=self.device,
            recording=recording,
            callbacks=[*self._callbacks(), *callbacks],
            **kwargs,
        )
        return self.engine

    def _callbacks(self) -> list:
        """Engine callbacks a subclass adds (``IBSequential``: its evaluators)."""
        return []

    def fit_generator(
        self,
        train_loader: Batches,
        val_loader: Batches | None = None,
        num_epochs: int = 1,
        show_plot: bool = False,
        progress: bool = True,
        **kwargs,
    ) -> dict:
        """Train (blocking, with tqdm progress), recording every epoch; calling again continues the same run.

        Returns the Keras-style history (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``: per-epoch lists).
        ``show_plot`` is PyGlow's flag: no matplotlib plot is drawn (a warning says where the curves are).
        Other keyword arguments go to the :class:`~ibwidget.train.engine.Engine` (e.g. ``probe``, ``seed``).
        """
        if show_plot:
            warnings.warn(
                "show_plot=True draws no plot in ibwidget: the losses are in the returned history "
                "(also model.run.history), and ib.Trainer(model, train, val, epochs) plots them live.",
                UserWarning,
                stacklevel=2,
            )
        return self._fit(train_loader, val_loader, num_epochs, progress, kwargs)

    def _fit(
        self,
        train_loader: Batches,
        val_loader: Batches | None,
        num_epochs: int,
        progress: bool,
        engine_kwargs: dict,
        before_start: Callable[[], None] | None = None,
    ) -> dict:
        """Train ``num_epochs`` more, blocking: the same engine and run when the loader is the same and no engine
        setting changes, else a new engine; ``before_start`` runs just before the training thread starts."""
        self._check_compiled()
        engine = self.engine
        if engine is not None and engine.is_alive:
            raise RuntimeError(f"this model is already training ({engine.status}); wait for it or stop it first.")
        if engine is not None and engine.train_loader is train_loader and not engine_kwargs:
            engine.val_loader = val_loader
            epochs: int | None = num_epochs
        else:
            engine, epochs = self.make_engine(train_loader, val_loader, num_epochs, **engine_kwargs), None
        if before_start is not None:
            before_start()
        engine.start(epochs=epochs)
        _follow(engine, progress)
        return engine.run.history

    def fit(
        self,
        x: ArrayLike,
        y: Labels,
        batch_size: int = 64,
        num_epochs: int = 1,
        validation_split: float = 0.2,
        show_plot: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        **kwargs,
    ) -> dict:
        """Train on tensors or arrays ``x`` (N, *input_shape) and integer labels ``y`` (N,), holding out a seeded
        ``validation_split``; PyGlow's argument order. Returns the history, as :meth:`fit_generator`."""
        x, y = torch.as_tensor(x).float(), torch.as_tensor(y).long()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}; pass one label per sample.")
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}.")
        n_val = int(round(x.shape[0] * validation_split))
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        train = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x[train_idx], y[train_idx]),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
        )
        val = None
        if n_val:
            val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[val_idx], y[val_idx]), batch_size=256)
        return self.fit_generator(train, val, num_epochs, show_plot, **kwargs)


class IBSequential(Sequential):
    """``Sequential`` that tracks each layer's training dynamics in the information plane.

    ``attach_evaluator(HSIC(kernel="gaussian", sigma=5))`` then ``fit_generator(train, val, epochs)``;
    ``evaluated_dynamics`` is then PyGlow's ndarray (epochs, batches, evaluators, layers, 2), and ``run`` the
    :class:`ibwidget.Run` with every epoch's snapshot for any estimator and sigma. The first four arguments are
    PyGlow's, in its order; the rest are keyword-only.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        gpu: bool | None = None,
        track_dynamics: bool = True,
        save_dynamics: bool = True,
        *,
        device: Device | None = "auto",
        name: str | None = None,
        probe: int = 512,
        mode: str = "probe",
    ):
        super().__init__(
            input_shape,
            gpu,
            device=device,
            name=name,
            probe=probe,
            track_dynamics=track_dynamics,
            save_dynamics=save_dynamics,
        )
        self.mode = mode
        self.evaluators: list[Estimator] = []

    def attach_evaluator(self, evaluator: Estimator) -> None:
        """Evaluate ``evaluator`` (e.g. ``HSIC(kernel="gaussian", sigma=5)``) on every epoch's snapshot."""
        if not isinstance(evaluator, Estimator):
            raise TypeError(
                f"attach_evaluator takes an ibwidget.estimators.Estimator such as HSIC(kernel='gaussian', sigma=5), "
                f"got {type(evaluator).__name__}."
            )
        if self.engine is not None:
            raise RuntimeError("attach evaluators before the first fit; this model has already trained.")
        self.evaluators.append(evaluator)

    def _callbacks(self) -> list:
        return [EvaluatorsCallback(self.evaluators, self.mode)]

    @property
    def evaluated_dynamics(self) -> np.ndarray | None:
        """PyGlow's layout (epochs, batches, evaluators, layers, 2); batches = 1 in the default probe mode.

        In ``mode="batches"``, epochs with fewer batches than the longest are padded with NaN (``np.nanmean``).
        """
        if self.engine is None or not self.evaluators:
            return None
        run = self.engine.run
        if self.mode == "batches":
            return _padded(run.batch_dynamics) if run.batch_dynamics else None
        per_evaluator = []
        for ev in self.evaluators:
            if isinstance(ev, HSIC):
                values = run.trajectories(
                    "hsic_pyglow",
                    sigma=ev.sigma if ev.sigma is not None else 1.0,
                    target="output",
                    kernel=ev.kernel,
                )[1:]
            else:
                values = np.asarray(run.custom_dynamics.get(type(ev).__name__, []))[1:]
            per_evaluator.append(values)
        return np.stack(per_evaluator, 1)[:, None]


def _padded(per_epoch: list[np.ndarray]) -> np.ndarray:
    """Per-epoch (batches, ...) arrays stacked to (epochs, most batches, ...); an epoch with fewer batches (a sampler
    that varies them) is padded with NaN, so ``np.nanmean(dynamics, 1)`` averages each epoch's own batches."""
    most = max(len(a) for a in per_epoch)
    out = np.full((len(per_epoch), most, *per_epoch[0].shape[1:]), np.nan)
    for e, a in enumerate(per_epoch):
        out[e, : len(a)] = a
    return out


def _follow(engine: Engine, progress: bool) -> None:
    """Block until the engine ends, drawing tqdm bars in this thread from the engine's events.

    An interrupt (the notebook's stop button) stops the training after the current batch, waits for it to end
    (completed epochs kept, status ``stopped``), then is re-raised, as :meth:`Engine.wait` does.
    """
    events: queue.Queue = queue.Queue()
    engine.on("batch_end", events.put)
    engine.on("epoch_end", events.put)
    engine.on("finish", events.put)
    bar = None
    try:
        from tqdm.auto import tqdm

        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                if not engine.is_alive:
                    break
                continue
            if isinstance(event, BatchEvent) and progress:
                if bar is None:
                    bar = tqdm(total=event.num_batches, desc=f"Epoch {event.epoch}/{event.num_epochs}", leave=False)
                bar.update(event.batch - bar.n)
                bar.set_postfix(loss=f"{event.loss:.3f}")
            elif isinstance(event, EpochEvent):
                if bar is not None:
                    bar.close()
                    bar = None
                if progress:
                    tqdm.write(
                        f"Epoch {event.epoch}/{event.num_epochs} - "
                        + " - ".join(f"{k}: {v:.4f}" for k, v in event.logs.items())
                    )
            elif isinstance(event, str):
                break
    except KeyboardInterrupt:
        engine.stop(wait=False)
        engine.wait(raise_error=False)
        raise
    finally:
        if bar is not None:
            bar.close()
        for name in ("batch_end", "epoch_end", "finish"):
            engine.off(name, events.put)
    engine.wait()
