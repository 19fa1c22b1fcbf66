"""The callback that records a training: it owns the :class:`~ibwidget.record.run.Run` and its probe.

An engine calls its hooks: :meth:`Recording.setup` when the engine is built (the probe is drawn, the memory budget
checked and the run created), :meth:`Recording.on_fit_start` before each ``start()`` (room for the epochs asked),
:meth:`Recording.on_train_start` in the training thread (the epoch-0 snapshot of a new run) and
:meth:`Recording.on_train_epoch_end` after each epoch (its snapshot and logs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from ibwidget.record.recorder import DEFAULT_MEMORY_BUDGET, Recorder, make_probe
from ibwidget.record.run import Run

__all__ = ["Recording", "DEFAULT_PROBE", "OPTIONS", "pop_options"]

DEFAULT_PROBE = 512  #: samples in the probe set unless told
OPTIONS = ("probe_data", "keep_activations", "memory_budget", "name", "config")  #: a Recording's keyword options

#: what a snapshot listener receives: (epoch, the model's raw output on the probe, every tracked layer's activations)
SnapshotListener = Callable[[int, torch.Tensor, dict], None]


class EngineLike(Protocol):
    """What a :class:`Recording` reads of the engine that calls its hooks (an :class:`ibwidget.Engine`)."""

    @property
    def model(self) -> nn.Module: ...
    @property
    def layers(self) -> list[str]: ...
    @property
    def train_loader(self) -> Iterable[Any]: ...
    @property
    def val_loader(self) -> Iterable[Any] | None: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def forward(self) -> Callable: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def num_epochs(self) -> int: ...
    @property
    def config(self) -> dict: ...


def pop_options(options: dict) -> dict:
    """Take a :class:`Recording`'s keyword options (:data:`OPTIONS`) out of ``options``."""
    return {k: options.pop(k) for k in OPTIONS if k in options}


class Recording:
    """Record the probe's snapshot of every tracked layer after each epoch into a :class:`~ibwidget.Run`.

    ``probe``: samples in the fixed probe set (:data:`DEFAULT_PROBE` when None), drawn (seeded by the engine's
    seed) from ``probe_data`` (a DataLoader, Dataset or ``(x, labels)`` tensors), else from the validation loader,
    else the training loader. ``keep_activations`` (``"narrow"``, ``"all"``, ``"none"``) and ``memory_budget``
    (bytes) are the :class:`~ibwidget.record.recorder.Recorder`'s. ``name`` and ``config`` (merged over the engine's
    settings) describe the run; bad values are refused when the engine is built. E.g.
    ``ib.Engine(model, train, val, recording=Recording(probe=256, keep_activations="all"))``.
    """

    def __init__(
        self,
        probe: int | None = None,
        probe_data: Iterable[Any] | Dataset | tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        keep_activations: str = "narrow",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        name: str | None = None,
        config: dict | None = None,
    ) -> None:
        self.probe = DEFAULT_PROBE if probe is None else probe
        self.probe_data = probe_data
        self.keep_activations = keep_activations
        self.memory_budget = int(memory_budget)
        self.name = name
        self.config = dict(config or {})
        self.recorder: Recorder | None = None  #: set by :meth:`setup`
        self.run: Run | None = None  #: set by :meth:`setup`
        self._listeners: list[SnapshotListener] = []

    def add_listener(self, listener: SnapshotListener) -> None:
        """Call ``listener(epoch, output, activations)`` after every snapshot, in the training thread."""
        self._listeners.append(listener)

    def setup(self, engine: EngineLike) -> None:
        """Draw the probe, check the memory budget for the engine's epochs and create the run."""
        if self.run is not None:
            raise RuntimeError("this Recording already records a run; build a new Recording for another engine.")
        val_loader, train_loader = engine.val_loader, engine.train_loader
        source: object = val_loader if val_loader is not None else train_loader
        source = self.probe_data if self.probe_data is not None else source
        probe_x, probe_y = make_probe(source, self.probe, seed=0 if engine.seed is None else engine.seed)
        self.recorder = Recorder(
            engine.model,
            engine.layers,
            probe_x,
            probe_y,
            engine.device,
            self.keep_activations,
            self.memory_budget,
            forward=engine.forward,
        )
        self.recorder.check_budget(engine.num_epochs + 1)
        config = {"probe": int(probe_x.shape[0]), "mode": "probe", **engine.config, **self.config}
        self.run = Run(
            self.name or type(engine.model).__name__,
            engine.layers,
            [1] * len(engine.layers),
            probe_x,
            probe_y,
            num_classes=_num_classes(probe_y, train_loader),
            config=config,
            device=engine.device,
            capacity=engine.num_epochs + 1,
        )

    def _set_up(self) -> tuple[Recorder, Run]:
        """The recorder and run that :meth:`setup` made (an engine calls it before any other hook)."""
        assert self.recorder is not None and self.run is not None, "setup(engine) comes first"
        return self.recorder, self.run

    def on_fit_start(self, engine: EngineLike, epochs: int) -> None:
        """Before a ``start()`` that trains up to ``epochs`` epochs in all: refuse it over budget, else make room."""
        recorder, run = self._set_up()
        recorder.check_budget(epochs + 1)
        run.reserve(epochs + 1)

    def on_train_start(self, engine: EngineLike) -> None:
        """The snapshot of the untrained model (epoch 0), once per run."""
        _, run = self._set_up()
        if run.num_snapshots == 0:
            self.snapshot(0)

    def on_train_epoch_end(self, engine: EngineLike, epoch: int, logs: dict) -> None:
        """The snapshot after ``epoch`` and its logs."""
        self.snapshot(epoch)
        _, run = self._set_up()
        run.log_epoch(logs)

    def snapshot(self, epoch: int) -> None:
        """Snapshot the model's current weights on the probe into the run as ``epoch``."""
        recorder, run = self._set_up()
        grams, output, kept, activations = recorder.snapshot()
        if run.num_snapshots == 0:
            assert recorder.layer_dims is not None  # the snapshot just taken set them
            run.layer_dims = list(recorder.layer_dims)
        run.add_snapshot(epoch, grams, output, kept)
        for listener in self._listeners:
            listener(epoch, output, activations)


def _num_classes(probe_y: torch.Tensor, loader) -> int:
    """The dataset's class count: its ``classes``, else its largest label + 1, else the probe's (which may lack the
    last class)."""
    dataset = getattr(loader, "dataset", None)
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    labels = _dataset_labels(dataset)
    largest = int(probe_y.max())
    if labels is not None and labels.numel() and not labels.is_floating_point():
        largest = max(largest, int(labels.max()))
    return largest + 1


def _dataset_labels(dataset) -> torch.Tensor | None:
    """All labels of a dataset that holds them (``targets``, a ``TensorDataset``'s last tensor), through Subsets."""
    if isinstance(dataset, torch.utils.data.Subset):
        return _dataset_labels(dataset.dataset)
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) > 1:
        targets = dataset.tensors[-1]
    if targets is None:
        return None
    try:
        return torch.as_tensor(targets).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        return None
