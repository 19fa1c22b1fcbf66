"""The one recording path: a :class:`Recording` owns the :class:`~ibwidget.record.run.Run`, its probe and its file.

Two ways to drive it. In your own loop, :func:`record` (``ib.record``) binds it to a model: epoch 0 is snapshotted
on entry, each :meth:`Recording.snapshot` records one epoch (probe -> snapshot -> appended to the file), and the
file is closed on exit. In an :class:`~ibwidget.train.engine.Engine` it is a callback: :meth:`Recording.setup` when
the engine is built (the probe is drawn, the budget checked, the run created or resumed from its file),
:meth:`Recording.on_fit_start` before each ``start()``, :meth:`Recording.on_train_start` (the epoch-0 snapshot of a
new run), :meth:`Recording.on_train_steps_end` (a scheduled epoch's snapshot begun: on CUDA it runs on a side stream
beside validation), :meth:`Recording.on_train_epoch_end` (that snapshot taken into the run, every epoch's logs) and,
once every hook of the epoch has run, :meth:`Recording.on_epoch_end` (the epoch appended to the file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from ibwidget.measure._typing import PathLike
from ibwidget.record import runfile
from ibwidget.record._distributed import Placement, clean_name, placement
from ibwidget.record.diagnostics import GradientMoments, activation_diagnostics, layer_nonlinearities, weight_norms
from ibwidget.record.recorder import DEFAULT_MEMORY_BUDGET, PendingSnapshot, Recorder, make_probe
from ibwidget.record.run import Run
from ibwidget.record.taps import default_layer_names, resolve_layers

__all__ = ["Recording", "record", "DEFAULT_PROBE", "OPTIONS", "pop_options"]

DEFAULT_PROBE = 512  #: samples in the probe set unless told
#: a Recording's keyword options
OPTIONS = (
    "probe_data",
    "keep_activations",
    "memory_budget",
    "name",
    "config",
    "path",
    "resume",
    "every_n_epochs",
    "snapshot_epochs",
    "nonlinearities",
)

#: what a snapshot listener receives: (epoch, the model's raw output on the probe, every tracked layer's activations)
SnapshotListener = Callable[[int, torch.Tensor, dict], None]


class EngineLike(Protocol):
    """What a :class:`Recording` reads of the engine that calls its hooks (an :class:`ibwidget.Engine`)."""

    epoch: int  #: completed epochs (a resumed run sets it)
    error: BaseException | None  #: why the training failed, once it has

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
    """Record the probe's snapshot of every tracked layer after each (scheduled) epoch into a :class:`~ibwidget.Run`,
    and, with ``path``, append each epoch to the run file as it is recorded.

    ``probe``: samples in the fixed probe set (:data:`DEFAULT_PROBE` when None), drawn (seeded) from ``probe_data``
    (a DataLoader, Dataset or ``(x, labels)`` tensors), else from the engine's validation loader, else its training
    loader. ``keep_activations`` (``"narrow"``, ``"all"``, ``"none"``) and ``memory_budget`` (bytes) are the
    :class:`~ibwidget.record.recorder.Recorder`'s. ``name`` and ``config`` describe the run. ``path``: the run file,
    appended epoch by epoch (crash-safe: see :class:`~ibwidget.record.runfile.RunWriter`); an existing file is
    refused unless ``resume=True``, which continues it (same name, layers and probe; training goes on from its last
    epoch). ``every_n_epochs`` or ``snapshot_epochs`` (a list, e.g. log-spaced epochs of a long run) choose which
    epochs are snapshotted (epoch 0 always); every epoch's logs are kept. Bad values are refused before training.
    Each snapshot also records the layers' geometric diagnostics (:mod:`ibwidget.record.diagnostics`;
    ``Run.diagnostics()``): ``nonlinearities`` (layer name -> ``"tanh"``, ``"sigmoid"``, ``"relu"`` or
    ``"linear"``) declares what a tracked layer's output is where it is not an ``nn.Tanh``/``nn.Sigmoid``/
    ``nn.ReLU`` module or an IBSequential layer, for its saturated fraction; the gradient statistics come from
    :meth:`step` (the engine calls it after every backward pass).
    E.g. ``ib.Engine(model, train, val, recording=Recording(probe=256, path="runs/a.ibrun"))``.
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
        path: PathLike | None = None,
        resume: bool = False,
        every_n_epochs: int | None = None,
        snapshot_epochs: Sequence[int] | None = None,
        nonlinearities: Mapping[str, str] | None = None,
    ) -> None:
        self.probe = DEFAULT_PROBE if probe is None else probe
        self.probe_data = probe_data
        self.keep_activations = keep_activations
        self.memory_budget = int(memory_budget)
        self.name = name
        self.config = dict(config or {})
        self.path = None if path is None else Path(path)
        self.resume = bool(resume)
        self._scheduled = _schedule(every_n_epochs, snapshot_epochs)
        if nonlinearities is not None and not isinstance(nonlinearities, Mapping):
            raise TypeError(
                f"nonlinearities maps layer names to 'tanh', 'sigmoid', 'relu' or 'linear', got {nonlinearities!r}."
            )
        self.nonlinearities = dict(nonlinearities or {})
        self._modules: list[nn.Module | None] = []  # the tracked modules, for weight norms
        self._nonlinearity: list[str | None] = []
        self._moments: GradientMoments | None = None  # the epoch's gradient sums (the recording rank, not FSDP)
        self.recorder: Recorder | None = None  #: set by :meth:`setup` (or on entering :func:`record`)
        self.run: Run | None = None  #: set by :meth:`setup` (or on entering :func:`record`)
        self.epoch = 0  #: the epochs recorded so far (logs), in a loop of your own
        self._listeners: list[SnapshotListener] = []
        self._writer: runfile.RunWriter | None = None
        self._placement = Placement(nn.Identity(), lambda x: x, 0, 1, "local")  # set by bind()
        self._names: dict[str, str] = {}  # tapped module name -> the run's layer name
        self._pending: tuple[int, PendingSnapshot] | None = None  # (epoch, its snapshot) begun after its last step

    def add_listener(self, listener: SnapshotListener) -> None:
        """Call ``listener(epoch, output, activations)`` after every snapshot, in the training thread."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------------------------------ binding

    def bind(
        self,
        model: nn.Module,
        layers: list[str],
        device,
        forward,
        source,
        seed: int,
        epochs: int,
        dataset=None,
        placement: Placement | None = None,
    ) -> Run:
        """Record ``layers`` of ``model``: draw the probe from ``source``, build the recorder and the run (or take
        the file's run, resuming), check the budget for ``epochs`` and take the run file's lock. The class count is
        ``dataset``'s (a loader or dataset; default ``source``). ``placement`` (under torch.distributed) says whether
        this process records and writes (rank 0) and whether it joins the probe forward (FSDP: every rank)."""
        if self.run is not None:
            raise RuntimeError("this Recording already records a run; build a new Recording for another model.")
        self._placement = placement or Placement(model, forward, 0, 1, "local")
        if not self._placement.records:  # another rank: it only joins the probe forward under FSDP
            self.path = None
        if self.path is not None and self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; pass a run file path such as runs/mine.ibrun.")
        if self.path is not None and self.path.exists() and not self.resume:
            raise FileExistsError(
                f"{self.path} exists; pass resume=True to continue that run, or choose another path (nothing is "
                "overwritten)."
            )
        modules = dict(model.named_modules())
        tracked = {name: modules.get(name) for name in layers}
        self._nonlinearity = layer_nonlinearities(tracked, self.nonlinearities)
        probe_x, probe_y = make_probe(source, self.probe, seed=seed)
        keep, budget = self.keep_activations, self.memory_budget
        recorder = Recorder(model, layers, probe_x, probe_y, device, keep, budget, forward=forward)
        recorder.check_budget(epochs + 1)
        config = {"probe": int(probe_x.shape[0]), "mode": "probe", "nonlinearities": self._nonlinearity}
        config.update(self.config)
        if self._placement.world > 1:
            config.update(world_size=self._placement.world, parallel=self._placement.kind)
        self._names = {name: clean_name(name) for name in layers}  # the FSDP wrapper's segments removed
        run = Run(
            self.name or type(model).__name__,
            list(self._names.values()),
            [1] * len(layers),
            probe_x,
            probe_y,
            num_classes=_num_classes(probe_y, source if dataset is None else dataset),
            config=config,
            device=device,
            capacity=epochs + 1,
        )
        if self.path is not None:
            self._writer = runfile.RunWriter(self.path, resume=self.resume)
            try:
                self._writer.acquire()  # a second writer of this path is refused here, before any training
                existing = self._writer.existing(device)
                if existing is not None:
                    diffs = runfile.same_configuration(run, existing)
                    if diffs:
                        raise ValueError(
                            f"resume=True, but {self.path} holds a run of another configuration: {'; '.join(diffs)}. "
                            "Resume with the same name, layers and probe, or write to another path."
                        )
                    run = existing
                    run.config.update(config)
                    self._writer.adopt(run)
            except BaseException:
                self._writer.release()
                self._writer = None
                raise
        self.recorder, self.run = recorder, run
        self.epoch = len(run.history.get("loss", []))
        self._modules = list(tracked.values())
        if self._placement.records and self._placement.kind != "fsdp":
            self._moments = GradientMoments(self._modules, recorder.device)  # (FSDP ranks hold weight shards)
        return run

    def setup(self, engine: EngineLike) -> None:
        """Draw the probe, check the memory budget for the engine's epochs and create the run (or resume the file's:
        then the engine goes on from the file's last epoch)."""
        val_loader, train_loader = engine.val_loader, engine.train_loader
        source: object = val_loader if val_loader is not None else train_loader
        source = self.probe_data if self.probe_data is not None else source
        self.config = {**engine.config, **self.config}
        seed = 0 if engine.seed is None else engine.seed
        run = self.bind(
            engine.model, engine.layers, engine.device, engine.forward, source, seed, engine.num_epochs, train_loader
        )
        if self._writer is not None:
            self._writer.release()  # held while training runs (on_fit_start ... teardown)
        if run.num_snapshots:
            engine.epoch = self.epoch  # resumed: train on from the file's last epoch

    def _set_up(self) -> tuple[Recorder, Run]:
        """The recorder and run that :meth:`setup` made (an engine calls it before any other hook)."""
        assert self.recorder is not None and self.run is not None, "setup(engine) comes first"
        return self.recorder, self.run

    # ------------------------------------------------------------------------------------------ engine hooks

    def on_fit_start(self, engine: EngineLike, epochs: int) -> None:
        """Before a ``start()`` that trains up to ``epochs`` epochs in all: refuse it over budget, else make room;
        take the run file's lock for the training."""
        recorder, run = self._set_up()
        recorder.check_budget(epochs + 1)
        run.reserve(epochs + 1)
        if self._writer is not None:
            self._writer.acquire()

    def on_train_start(self, engine: EngineLike) -> None:
        """The snapshot of the untrained model (epoch 0), once per run."""
        _, run = self._set_up()
        if run.num_snapshots == 0:
            self._snapshot(0)

    def on_train_epoch_start(self, engine: EngineLike, epoch: int) -> None:
        """Append what the previous hooks added (epoch 0 and its listeners' values) to the file."""
        self._flush()

    def on_after_backward(self, engine: EngineLike) -> None:
        """A step's gradients are computed: add them to the epoch's gradient statistics."""
        self.step()

    def on_train_steps_end(self, engine: EngineLike, epoch: int) -> None:
        """The epoch's last step is done: begin its snapshot (if scheduled), which on a CUDA device runs on a side
        stream beside the validation that follows."""
        recorder, _ = self._set_up()
        if self._scheduled(epoch) and self._placement.probes:
            self._pending = (epoch, recorder.begin_snapshot())

    def on_train_epoch_end(self, engine: EngineLike, epoch: int, logs: dict) -> None:
        """The snapshot after ``epoch`` (if scheduled; the one begun after its last step) and its logs."""
        _, run = self._set_up()
        gradients = self._epoch_gradients()
        if self._scheduled(epoch):
            self._snapshot(epoch, gradients)
        run.log_epoch(logs)
        self.epoch = epoch

    def on_epoch_end(self, event) -> None:
        """Every hook of the epoch has run (other callbacks' values too): append the epoch to the file."""
        self._flush()

    def teardown(self, engine: EngineLike) -> None:
        """The training thread ends (finished, stopped or failed): append what is left, release the file's lock. When
        the training already failed (perhaps on this file), that failure is the one reported."""
        try:
            self._settle()
            self._flush()
        except Exception:
            if engine.error is None:
                raise
        finally:
            if self._writer is not None:
                self._writer.release()

    # ------------------------------------------------------------------------------------------ your own loop

    def __enter__(self) -> Recording:
        """Snapshot epoch 0 (unless resuming a run that has it) and write it to the file."""
        _, run = self._set_up()
        if self._writer is not None:
            self._writer.acquire()
        if run.num_snapshots == 0:
            self._snapshot(0)
        self._flush()
        return self

    def step(self) -> None:
        """Add the gradients the tracked layers' weights hold now to the epoch's statistics (``grad_mean``,
        ``grad_std``, ``grad_snr`` of :meth:`~ibwidget.Run.diagnostics`): in a loop of your own, call it after each
        ``loss.backward()`` (under DDP that is after the gradients' allreduce). Optional; other ranks: nothing."""
        if self._moments is not None:
            self._moments.add()

    def snapshot(self, logs: dict | None = None) -> None:
        """Record one epoch: its ``logs`` (e.g. ``{"loss": ..., "val_accuracy": ...}``) always, the probe's
        snapshot when the schedule says so; appended to the file before this returns."""
        _, run = self._set_up()
        if self._writer is not None and not self._writer.held:
            raise RuntimeError("this recording is closed; record epochs inside its with-block.")
        scheduled = self._scheduled(self.epoch + 1)
        if scheduled and self._placement.records:  # a loop of unknown length: the budget is checked as it grows
            self._set_up()[0].check_budget(run.num_snapshots + 1)
        self.epoch += 1
        gradients = self._epoch_gradients()
        if scheduled:
            self._snapshot(self.epoch, gradients)
        if self._placement.records:  # other ranks return at once (DDP), or after the probe forward (FSDP)
            run.log_epoch(dict(logs or {}))
            self._flush()

    def __exit__(self, *exc) -> None:
        """Append anything pending and close the file (its lock released); the run stays in :attr:`run`."""
        self.close()

    def close(self) -> None:
        """Close the run file, if any (its lock released)."""
        try:
            self._flush()
        finally:
            if self._writer is not None:
                self._writer.release()

    # ------------------------------------------------------------------------------------------ internals

    def _snapshot(self, epoch: int, gradients: dict | None = None) -> None:
        """Snapshot the model's current weights on the probe into the run as ``epoch``, with the layers'
        diagnostics and the epoch's ``gradients`` statistics (on rank 0; under FSDP the other ranks join the probe
        forward and keep nothing)."""
        recorder, run = self._set_up()
        if not self._placement.probes:
            return
        pending = self._settle(epoch)
        grams, output, kept, activations = pending.result() if pending is not None else recorder.snapshot()
        if not self._placement.records:
            return
        if len(self._names) and any(k != v for k, v in self._names.items()):
            grams = {self._names[k]: v for k, v in grams.items()}
            kept = {self._names[k]: v for k, v in kept.items()}
            activations = {self._names[k]: v for k, v in activations.items()}
        if run.num_snapshots == 0:
            assert recorder.layer_dims is not None  # the snapshot just taken set them
            run.layer_dims = list(recorder.layer_dims)
        run.add_snapshot(epoch, grams, output, kept)
        run.add_diagnostics(self._diagnostics([activations[n] for n in run.layer_names], gradients))
        for listener in self._listeners:
            listener(epoch, output, activations)

    def _epoch_gradients(self) -> dict | None:
        """The gradient statistics of the epoch that just ended (None when no step was reported), the next one
        begun."""
        if self._moments is None or not self._moments.steps:
            return None
        return self._moments.take()

    def _diagnostics(self, activations: list[torch.Tensor], gradients: dict | None) -> dict:
        """A snapshot's diagnostics, as device tensors (layers,): nothing here waits for the device."""
        out = activation_diagnostics(activations, self._nonlinearity or [None] * len(activations))
        device = activations[0].device
        if self._moments is not None:  # the weights are whole on this rank (not FSDP shards)
            out["weight_norm"] = weight_norms(self._modules, device)
        return {**out, **{k: v.to(device) for k, v in (gradients or {}).items()}}

    def _settle(self, epoch: int | None = None) -> PendingSnapshot | None:
        """Take the snapshot begun for ``epoch``; one begun for another epoch (a validation that failed) is waited
        for and dropped, so the next step never writes the weights it reads."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        begun, snapshot = pending
        if begun == epoch:
            return snapshot
        snapshot.drop()
        return None

    def _flush(self) -> None:
        if self._writer is not None and self._writer.held and self.run is not None and self.run.num_snapshots:
            self._writer.write_new(self.run)


def record(
    model: nn.Module,
    probe: Iterable[Any] | Dataset | tuple[torch.Tensor, torch.Tensor],
    layers: Sequence[str | nn.Module] | str | None = None,
    path: PathLike | None = None,
    name: str | None = None,
    *,
    probe_size: int = DEFAULT_PROBE,
    forward: Callable | None = None,
    device: str | torch.device | None = None,
    every_n_epochs: int | None = None,
    snapshot_epochs: Sequence[int] | None = None,
    resume: bool = False,
    keep_activations: str = "narrow",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    config: dict | None = None,
    seed: int = 0,
    nonlinearities: Mapping[str, str] | None = None,
) -> Recording:
    """Record ``model`` from a training loop of your own: use it as ``with ib.record(...) as rec:`` and call
    ``rec.snapshot(logs={...})`` after each epoch (and, for the gradient diagnostics, ``rec.step()`` after each
    ``loss.backward()``); ``rec.run`` is the :class:`~ibwidget.Run` (also in ``path``).

    ``probe``: ``(x, labels)`` tensors (all of them, in order), or a Dataset or DataLoader (a seeded random subset of
    ``probe_size`` samples). ``layers``: module names as in ``model.named_modules()`` (or the modules; default every
    leaf module with parameters). ``forward(x)`` replaces ``model(x)`` for models that take dicts or keywords.
    ``device``: where the probe runs (default: the model's). The probe is taken in eval mode, without gradients,
    and the model's mode restored; forward hooks exist only during that pass. ``path``, ``resume``,
    ``every_n_epochs``, ``snapshot_epochs``, ``keep_activations``, ``memory_budget``, ``name``, ``config`` and
    ``nonlinearities`` are :class:`Recording`'s. Errors (an unknown layer, a probe without labels, a path that
    cannot be written, a file of another run) are raised here, before any training.

    Under torchrun (``torch.distributed`` initialised) call it on every rank with the same arguments: with DDP, rank
    0 probes the unwrapped module and writes the file while the other ranks' ``snapshot()`` returns at once; with
    FSDP (``fully_shard`` or the FSDP wrapper) every rank runs the probe forward together and rank 0 records. On
    the other ranks ``rec.run`` stays empty.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"record() takes a torch.nn.Module, got {type(model).__name__}.")
    where = placement(model, forward)
    model = where.module
    if isinstance(probe, tuple | list) and all(isinstance(t, torch.Tensor) for t in probe):
        if len(probe) != 2:
            raise ValueError(f"probe=(x, labels): pass the inputs and their integer labels, got {len(probe)} tensors.")
        probe_size = max(int(probe[0].shape[0]), 1)  # the whole pair, in order
    if layers is None:
        names = default_layer_names(model)
    else:
        chosen = [layers] if isinstance(layers, str | nn.Module) else list(layers)
        names = [name for name, _ in resolve_layers(model, chosen)]
    if not names:
        raise ValueError("the model has no layer with parameters to record; pass layers=[...] by module name.")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    rec = Recording(
        probe_size,
        probe,
        keep_activations=keep_activations,
        memory_budget=memory_budget,
        name=name,
        config=config,
        path=path,
        resume=resume,
        every_n_epochs=every_n_epochs,
        snapshot_epochs=snapshot_epochs,
        nonlinearities=nonlinearities,
    )
    horizon = max(snapshot_epochs or [0], default=0)
    rec.bind(model, names, torch.device(device), where.forward, probe, seed, horizon, placement=where)
    return rec


def _schedule(every_n_epochs: int | None, snapshot_epochs: Sequence[int] | None) -> Callable[[int], bool]:
    """Whether epoch e (>= 1) is snapshotted: every epoch, every n-th, or those listed."""
    if every_n_epochs is not None and snapshot_epochs is not None:
        raise ValueError("pass every_n_epochs or snapshot_epochs, not both.")
    if every_n_epochs is not None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        return lambda epoch: epoch % every_n_epochs == 0
    if snapshot_epochs is not None:
        chosen = set()
        for e in snapshot_epochs:
            if isinstance(e, bool) or not isinstance(e, int | torch.SymInt) or int(e) < 0:
                raise ValueError(f"snapshot_epochs must be non-negative integers, got {e!r}.")
            chosen.add(int(e))
        return lambda epoch: epoch in chosen
    return lambda epoch: True


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
