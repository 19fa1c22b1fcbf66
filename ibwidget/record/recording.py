"""The callback that records a training: it owns the :class:`~ibwidget.record.run.Run` and its probe.

An engine calls its hooks: :meth:`Recording.setup` when the engine is built (the probe is drawn, the memory budget
checked and the run created), :meth:`Recording.on_fit_start` before each ``start()`` (room for the epochs asked),
:meth:`Recording.on_train_start` in the training thread (the epoch-0 snapshot of a new run) and
:meth:`Recording.on_train_epoch_end` after each epoch (its snapshot and logs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ibwidget.record.recorder import DEFAULT_MEMORY_BUDGET, Recorder, make_probe
from ibwidget.record.run import Run

__all__ = ["Recording", "DEFAULT_PROBE", "OPTIONS", "pop_options"]

DEFAULT_PROBE = 512  #: samples in the probe set unless told
OPTIONS = ("probe_data", "keep_activations", "memory_budget", "name", "config")  #: a Recording's keyword options

#: what a snapshot listener receives: (epoch, the model's raw output on the probe, every tracked layer's activations)
SnapshotListener = Callable[[int, torch.Tensor, dict], None]


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
        probe_data=None,
        *,
        keep_activations: str = "narrow",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        name: str | None = None,
        config: dict | None = None,
    ):
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

    def setup(self, engine) -> None:
        """Draw the probe, check the memory budget for the engine's epochs and create the run."""
        if self.run is not None:
            raise RuntimeError("this Recording already records a run; build a new Recording for another engine.")
        val_loader, train_loader = engine.val_loader, engine.train_loader
        source = val_loader if val_loader is not None else train_loader
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

    def on_fit_start(self, engine, epochs: int) -> None:
        """Before a ``start()`` that trains up to ``epochs`` epochs in all: refuse it over budget, else make room."""
        self.recorder.check_budget(epochs + 1)
        self.run.reserve(epochs + 1)

    def on_train_start(self, engine) -> None:
        """The snapshot of the untrained model (epoch 0), once per run."""
        if self.run.num_snapshots == 0:
            self.snapshot(0)

    def on_train_epoch_end(self, engine, epoch: int, logs: dict) -> None:
        """The snapshot after ``epoch`` and its logs."""
        self.snapshot(epoch)
        self.run.log_epoch(logs)

    def snapshot(self, epoch: int) -> None:
        """Snapshot the model's current weights on the probe into the run as ``epoch``."""
        grams, output, kept, activations = self.recorder.snapshot()
        if self.run.num_snapshots == 0:
            self.run.layer_dims = list(self.recorder.layer_dims)
        self.run.add_snapshot(epoch, grams, output, kept)
        for listener in self._listeners:
            listener(epoch, output, activations)


def _num_classes(probe_y: torch.Tensor, loader) -> int:
    dataset = getattr(loader, "dataset", None)
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    return int(probe_y.max()) + 1
