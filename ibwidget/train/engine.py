"""The training loop, run in a background thread, with pause/resume/stop and plain-data events.

The engine owns the model's training; after every epoch the recorder snapshots the probe into the
:class:`~ibwidget.record.run.Run`. Callbacks (Lightning-style names, one ``event`` argument) run in the training
thread and receive frozen dataclasses of plain Python numbers, never tensors on the device: a widget must hand
them to its own thread (it never touches a widget trait from here).
"""

from __future__ import annotations

import math
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ibwidget.measure._typing import Batches, Device, LossSpec, Metrics, OptimizerSpec
from ibwidget.record.recorder import Recorder, split_batch
from ibwidget.record.recording import Recording
from ibwidget.record.run import Run
from ibwidget.record.taps import default_layer_names, resolve_layers
from ibwidget.train import _compile

__all__ = [
    "Engine",
    "BatchEvent",
    "EpochEvent",
    "engine_of",
    "refuse_second_training",
    "resolve_device",
    "register_moved_keywords",
    "STATUSES",
    "HOOKS",
]

#: ``pausing`` and ``stopping`` are requests not yet reached: the training thread turns ``pausing`` into ``paused``
#: when it holds between batches (an epoch being validated or recorded completes first, then it holds)
STATUSES = ("idle", "running", "pausing", "paused", "stopping", "stopped", "finished", "failed")
_EVENTS = ("on_epoch_end", "on_batch_end", "on_pause", "on_exception", "on_finish")
#: the Lightning-style hooks a callback may define, each called with the engine first, in this order of a training:
#: ``setup(engine)`` when added, ``on_fit_start(engine, epochs)`` in ``start()`` (``epochs``: the run's length once
#: this training ends; raising refuses the start), then in the training thread ``on_train_start(engine)``, per epoch
#: ``on_train_epoch_start(engine, epoch)``, per batch ``on_train_batch_start(engine, x)``,
#: ``on_after_backward(engine)`` (the gradients computed, the optimizer step next) and
#: ``on_train_batch_end(engine, x, output)``, ``on_train_steps_end(engine, epoch)`` (after the epoch's last step,
#: before validation), ``on_train_epoch_end(engine, epoch, logs)`` (after validation), and
#: ``teardown(engine)`` when the thread ends (finished, stopped or failed)
HOOKS = (
    "setup",
    "on_fit_start",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_after_backward",
    "on_train_batch_end",
    "on_train_steps_end",
    "on_train_epoch_end",
    "teardown",
)
_ENGINE_ATTRIBUTES = ("forward", "batch_event_interval")
#: keywords the engine no longer takes -> (the callback they configure, built from them; how to spell it now)
_MOVED: dict[tuple[str, ...], tuple[Callable, str]] = {}

# Engines whose training thread is alive (running, paused or stopping). Weak: an ended engine pins nothing.
_TRAINING: weakref.WeakSet[Engine] = weakref.WeakSet()
_TRAINING_LOCK = threading.RLock()


def _footprint(model: nn.Module) -> set[int]:
    """Identities of the modules and parameters a training of ``model`` steps or switches between modes."""
    return {id(t) for t in (*model.modules(), *model.parameters())}


def _engine_training(model: nn.Module, exclude: Engine | None = None) -> Engine | None:
    mine = _footprint(model)
    with _TRAINING_LOCK:
        engines = [e for e in _TRAINING if e is not exclude]
    return next((e for e in engines if not mine.isdisjoint(_footprint(e.model))), None)


def engine_of(model: nn.Module) -> Engine | None:
    """The :class:`Engine` training ``model`` (running, paused or stopping), or one training a module that contains
    it, is part of it or shares parameters with it; None when nothing trains it. E.g. ``ib.engine_of(model).stop()``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"engine_of takes a torch.nn.Module, got {type(model).__name__}.")
    return _engine_training(model)


def refuse_second_training(model: nn.Module, exclude: Engine | None = None) -> None:
    """Raise a ``RuntimeError`` that says what to do when an engine (other than ``exclude``) trains ``model`` or
    shares modules with it: call it before changing what a training uses (e.g. ``compile()``)."""
    other = _engine_training(model, exclude)
    if other is not None:
        same = other.model is model
        what = "this model" if same else f"{type(other.model).__name__}, which shares modules with this model,"
        raise RuntimeError(
            f"{what} is already being trained by {other!r} in a background thread; two trainings at once would "
            "step the same weights and can crash the process. Stop the first one with ib.engine_of(model).stop() "
            "(or let it end: ib.engine_of(model).wait()), then start this one."
        )


def resolve_device(device="auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cuda"`` without CUDA is an error that says so."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available here; pass device='auto' or 'cpu'.")
    return device


def device_label(device: torch.device) -> str:
    """E.g. ``"cuda:0 NVIDIA H100"`` or ``"cpu"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return str(device)


@dataclass(frozen=True)
class BatchEvent:
    """Progress within an epoch (throttled): rate in batches per second, eta in seconds for this epoch."""

    epoch: int
    num_epochs: int
    batch: int
    num_batches: int
    loss: float
    rate: float
    eta: float


@dataclass(frozen=True)
class EpochEvent:
    """An epoch ended and its snapshot is in the run: ``logs`` holds loss and metrics (train and val)."""

    epoch: int
    num_epochs: int
    logs: dict = field(default_factory=dict)
    seconds: float = 0.0
    snapshots: int = 0


class _Stop(Exception):
    pass


class Engine:
    """Train ``model`` on ``train_loader`` in a background thread, snapshotting ``layers`` on a fixed probe.

    ``start()`` returns at once; ``pause()``, ``resume()`` and ``stop()`` act between batches; ``wait()`` joins and
    re-raises a failure. A finished or stopped run continues with ``start(epochs=more)``.

    ``loss``, ``optimizer`` (a name, a built optimizer, or a class or factory such as
    ``functools.partial(torch.optim.SGD, momentum=0.9)``) and ``lr`` configure the step; ``layers`` (module names,
    default: every layer with parameters) are tracked by ``recording``, a
    :class:`~ibwidget.record.recording.Recording` (default: ``Recording(probe)``), which owns :attr:`run`.
    ``callbacks``: objects with any of the :data:`HOOKS` (e.g. PyGlow's
    :class:`~ibwidget.pyglow.callback.EvaluatorsCallback`), called after the recording's. Set :attr:`compile` to
    train through ``torch.compile``. The keywords that moved to
    the recording (``probe_data``, ``keep_activations``, ``memory_budget``, ``name``, ``config``), to the optimizer
    (``momentum``...) or to a callback still work, with a ``DeprecationWarning`` saying where they go now.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Batches,
        val_loader: Batches | None = None,
        *,
        epochs: int = 10,
        loss: LossSpec = "cross_entropy",
        optimizer: OptimizerSpec = "SGD",
        lr: float | None = None,
        metrics: Metrics = ("accuracy",),
        layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
        probe: int | None = None,
        seed: int | None = 0,
        device: Device | None = "auto",
        recording: Recording | None = None,
        callbacks: Iterable[object] = (),
        **moved,
    ) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}.")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        callbacks = list(callbacks)
        recording = _recording_of(recording, probe, moved)
        self.forward: Callable = model  #: what the training and the probe call on a batch: the model
        #: one batch's ``(loss, output)`` from ``(x, y)``, in training and (without gradients) in validation: by
        #: default :meth:`forward_and_loss`; a callback may replace it in ``setup`` (HSIC-bottleneck training does)
        self.compute_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        self.compute_loss = self.forward_and_loss
        self.batch_event_interval = 0.2  #: seconds between progress events (``on_batch_end``); 0: every batch
        for k in _ENGINE_ATTRIBUTES:
            if k in moved:
                _deprecated(k, f"nothing, and set engine.{k} once the engine is built", stacklevel=3)
                setattr(self, k, moved.pop(k))
        self.forward = self.forward or model
        self.batch_event_interval = float(self.batch_event_interval)
        callbacks += _moved_callbacks(moved)
        optimizer_kwargs = _moved_optimizer_keywords(moved)
        refuse_second_training(model)  # before anything moves the model or runs a probe forward through it
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.num_epochs = epochs
        self.loss_fn = _compile.resolve_loss(loss)
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn = self.loss_fn.to(self.device)
        self.optimizer = _compile.resolve_optimizer(optimizer, self.model.parameters(), lr=lr, **optimizer_kwargs)
        self.metrics = _compile.resolve_metrics(metrics)
        if layers is not None:
            layers = [layers] if isinstance(layers, str | nn.Module) else list(layers)
            if not layers:
                raise ValueError(
                    "layers=[] tracks nothing; pass the module names to track, as in model.named_modules() "
                    "(e.g. layers=['fc1', 'fc2']), or layers=None for every layer with parameters."
                )
            layers = [name for name, _ in resolve_layers(self.model, layers)]
        self.layers = layers if layers is not None else default_layer_names(self.model)
        if not self.layers:
            raise ValueError("the model has no layer with parameters to track; pass layers=[...] by module name.")
        self.seed = seed
        self._compile = False
        self._compiled: Callable | None = None  # torch.compile(forward), made at the first batch
        #: the training's settings, which the recording writes into the run's config
        self.config = {
            "epochs": epochs,
            "seed": seed,
            "device": str(self.device),
            "optimizer": type(self.optimizer).__name__,
            "lr": self.optimizer.param_groups[0].get("lr"),
            "loss": loss if isinstance(loss, str) else type(loss).__name__,
            "model": type(model).__name__,
        }
        self.recording = recording
        self._callbacks: dict[str, list[Callable]] = {e: [] for e in _EVENTS}
        self._resident_cache: dict[int, tuple | None] = {}
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        # set while no training thread runs; cleared by start(), set by the thread as its very last step. Liveness
        # is read from here, not from Thread.is_alive, which an interrupted join (Python 3.11) turns False.
        self._ended = threading.Event()
        self._ended.set()
        self._defer_loss_check = self.device.type != "cpu"  # on a GPU, read the loss check at progress events
        self._clean_state: _CleanState | None = None
        self.status = "idle"
        self.reason = ""
        self.error: BaseException | None = None
        self.traceback = ""
        self.epoch = 0  # completed epochs
        self._target_epochs = epochs
        #: the Lightning-style callbacks (see :data:`HOOKS`), the recording first
        self.callbacks: list = []
        for callback in [recording, *callbacks]:
            self._add_hooks(callback)
            for e in _EVENTS:  # e.g. the recording's on_epoch_end, after every hook of the epoch
                if callable(getattr(callback, e, None)):
                    self._callbacks[e].append(getattr(callback, e))

    @property
    def compile(self) -> bool:
        """Whether training runs through ``torch.compile(forward)``: set it before :meth:`start`. Compiled at the first
        batch (tens of seconds on a CPU); the probe snapshot stays eager, so its hooks never enter the compiled graph.
        The run's config records it."""
        return self._compile

    @compile.setter
    def compile(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"compile must be True or False, got {value!r}.")
        self._compile = value
        for config in (self.config, self.run.config):
            config.pop("compile", None)
            config.update({"compile": True} if value else {})

    @property
    def run(self) -> Run:
        """The :class:`~ibwidget.record.run.Run` the recording fills."""
        run = self.recording.run
        assert run is not None  # the recording's setup ran in __init__
        return run

    @property
    def recorder(self) -> Recorder:
        """The recording's :class:`~ibwidget.record.recorder.Recorder` (the probe and its snapshots)."""
        recorder = self.recording.recorder
        assert recorder is not None  # the recording's setup ran in __init__
        return recorder

    # ------------------------------------------------------------------------------------------ control

    def on(self, event: str, fn: Callable) -> Callable:
        """Register ``fn(event)`` for ``"epoch_end"``, ``"batch_end"``, ``"pause"``, ``"exception"`` or ``"finish"``."""
        key = event if event.startswith("on_") else f"on_{event}"
        if key not in self._callbacks:
            raise ValueError(f"unknown event {event!r}; known: {', '.join(e[3:] for e in _EVENTS)}.")
        self._callbacks[key].append(fn)
        return fn

    def off(self, event: str, fn: Callable) -> None:
        """Remove a function registered with :meth:`on`."""
        key = event if event.startswith("on_") else f"on_{event}"
        self._callbacks[key] = [f for f in self._callbacks.get(key, []) if f != fn]

    def add_callback(self, callback: object) -> None:
        """Register an object having any of the :data:`HOOKS` (called with the engine, see the module) or of the
        events ``on_epoch_end``, ``on_batch_end``, ``on_pause``, ``on_exception``, ``on_finish`` (called with the
        event)."""
        found = [e for e in _EVENTS if callable(getattr(callback, e, None))]
        hooks = [h for h in HOOKS if callable(getattr(callback, h, None))]
        if not found and not hooks:
            raise TypeError(f"{type(callback).__name__} defines none of {', '.join((*HOOKS, *_EVENTS))}.")
        if hooks:
            if self.is_alive:
                raise RuntimeError("add callbacks with hooks before start(), or while no training runs.")
            self._add_hooks(callback)
        for e in found:
            self._callbacks[e].append(getattr(callback, e))

    def _add_hooks(self, callback) -> None:
        if not any(callable(getattr(callback, h, None)) for h in HOOKS):
            raise TypeError(f"a callback defines any of {', '.join(HOOKS)}; got {type(callback).__name__}.")
        self.callbacks.append(callback)
        self._hook("setup", callbacks=[callback])

    def _hook(self, name: str, *args, callbacks=None) -> None:
        for callback in self.callbacks if callbacks is None else callbacks:
            hook = getattr(callback, name, None)
            if callable(hook):
                hook(self, *args)

    def start(self, epochs: int | None = None) -> Engine:
        """Start training in a background thread; after a finished or stopped run, ``epochs`` more epochs."""
        with self._lock:
            if not self._ended.is_set():
                raise RuntimeError(f"training is already {self.status}; pause(), resume() or stop() it instead.")
            if self.status == "failed":
                raise RuntimeError(f"this run failed ({self.reason}); build a new one to train again.")
            target = self._target_epochs
            if epochs is not None:
                if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                    raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
                target = self.epoch + epochs
            elif self.status in ("finished", "stopped") and self.epoch >= self._target_epochs:
                raise RuntimeError("this run has trained all its epochs; call start(epochs=N) to train N more.")
            self._hook("on_fit_start", target)
            self._target_epochs = target
            with _TRAINING_LOCK:
                refuse_second_training(self.model, exclude=self)
                _TRAINING.add(self)
            status, self.status = self.status, "running"
            self._stop_requested = False
            self._resume.set()
            self._ended.clear()
            thread = threading.Thread(target=self._main, name="ibwidget-training", daemon=True)
            try:
                thread.start()
            except BaseException:
                self.status = status
                self._end_thread()
                raise
            self._thread = thread
        return self

    def pause(self) -> None:
        """Hold training after the current batch: the status reads ``pausing`` until the training thread holds, then
        ``paused`` (the ``pause`` event fires then, with the number of completed epochs)."""
        with self._lock:
            if self.status == "running":
                self._resume.clear()
                self.status = "pausing"

    def resume(self) -> None:
        """Continue a paused (or pausing) run."""
        with self._lock:
            if self.status in ("pausing", "paused"):
                self.status = "running"
                self._resume.set()

    def stop(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Stop after the current batch; completed epochs stay in the run. From a callback it never waits."""
        with self._lock:
            if self.status in ("running", "pausing", "paused"):
                self._stop_requested = True
                self._resume.set()
                self.status = "stopping"
        if wait and not self._in_training_thread():
            self.wait(timeout, raise_error=False)

    def wait(self, timeout: float | None = None, raise_error: bool = True) -> Run:
        """Block until training ends; re-raise its exception if it failed. Returns the run.

        An interrupt (``KeyboardInterrupt``, e.g. the notebook's stop button) while waiting stops the training
        after the current batch, waits for it to end (completed epochs kept, status ``stopped``), then is re-raised.
        """
        if self._in_training_thread():
            raise RuntimeError("wait() from an engine callback would wait for its own thread; call stop(wait=False).")
        try:
            ended = self._ended.wait(timeout)
        except KeyboardInterrupt:
            self.stop(wait=False)
            self._ended.wait()  # a second interrupt leaves it stopping; start() refuses until it has ended
            raise
        if not ended:
            raise TimeoutError(f"training still {self.status} after {timeout} s.")
        if raise_error and self.error is not None:
            raise self.error
        return self.run

    @property
    def is_alive(self) -> bool:
        """Whether a training thread runs (status running, paused or stopping)."""
        return not self._ended.is_set()

    def _in_training_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    # ------------------------------------------------------------------------------------------ the thread

    def _emit(self, event: str, payload) -> None:
        for fn in list(self._callbacks[event]):
            fn(payload)

    def _checkpoint(self) -> None:
        """Between batches: block while paused, leave the loop when stopping."""
        self._hold()
        if self._stop_requested:
            raise _Stop

    def _hold(self) -> None:
        """Block while a pause is requested; the status turns ``paused`` (and ``on_pause`` fires) once held here."""
        if self._resume.is_set():
            return
        with self._lock:
            held = self.status == "pausing"
            if held:
                self.status = "paused"
        if held:
            self._emit("on_pause", self.epoch)
        self._resume.wait()

    def _main(self) -> None:
        try:
            if self.seed is not None:
                torch.manual_seed(self.seed)
                np.random.seed(self.seed % 2**32)
            self._hook("on_train_start")
            while self.epoch < self._target_epochs:
                self._checkpoint()
                t0 = time.perf_counter()
                logs = self._train_epoch(self.epoch + 1)
                self._hold()  # paused after the last batch: the epoch completes (and is recorded) on resume
                self._hook("on_train_steps_end", self.epoch + 1)
                if self.val_loader is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate(self.val_loader).items()})
                self._hook("on_train_epoch_end", self.epoch + 1, logs)
                self.epoch += 1
                self._emit(
                    "on_epoch_end",
                    EpochEvent(
                        self.epoch, self._target_epochs, dict(logs), time.perf_counter() - t0, self.run.num_snapshots
                    ),
                )
            self._finish("finished")
        except _Stop:
            self._finish("stopped")
        except BaseException as exc:  # noqa: BLE001 - every failure is kept and re-raised by wait()
            self.error = exc
            self.traceback = traceback.format_exc()
            with self._lock:
                self.status = "failed"
                self.reason = f"{type(exc).__name__}: {exc}"
            try:
                self._emit("on_exception", exc)
            finally:
                self._emit("on_finish", self.status)
        finally:
            try:
                self._hook("teardown")
            finally:
                self._end_thread()

    def _end_thread(self) -> None:
        with _TRAINING_LOCK:
            _TRAINING.discard(self)
        self._ended.set()

    def _finish(self, status: str) -> None:
        with self._lock:
            self.status = status
            self.reason = ""
        self._emit("on_finish", status)

    def _resident(self, loader):
        """(x, y) of an in-memory TensorDataset (or a Subset of one) moved to the device once, else None.

        Batches are then indexed on the device in the order the loader's own batch sampler gives (same batches,
        same shuffling), skipping per-sample collation and host-to-device copies.
        """
        key = id(loader)
        if key in self._resident_cache:
            return self._resident_cache[key]
        found = None
        data = getattr(loader, "dataset", None)
        indices = None
        if isinstance(data, torch.utils.data.Subset):
            data, indices = data.dataset, torch.as_tensor(data.indices, dtype=torch.long)
        if (
            isinstance(loader, torch.utils.data.DataLoader)
            and isinstance(data, torch.utils.data.TensorDataset)
            and len(data.tensors) == 2
            and loader.batch_sampler is not None
            and not loader.persistent_workers  # those draw the base seed once, not every epoch
            and loader.collate_fn is torch.utils.data.default_collate
        ):
            x, y = data.tensors
            if indices is not None:
                x, y = x[indices], y[indices]
            nbytes = x.numel() * x.element_size() + y.numel() * y.element_size()
            limit = torch.cuda.mem_get_info(self.device)[0] // 4 if self.device.type == "cuda" else 2 * 1024**3
            if nbytes <= limit:
                found = (x.to(self.device), y.to(self.device))
        self._resident_cache[key] = found
        return found

    def _batches(self, loader):
        resident = self._resident(loader)
        if resident is not None:
            x_all, y_all = resident
            # iterating a DataLoader first draws its workers' base seed (from loader.generator, else the global RNG);
            # draw it too, so that the sampler shuffles, and dropout draws, exactly as iterating the loader would
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
            for idx in loader.batch_sampler:
                idx = torch.as_tensor(idx, device=self.device)
                yield x_all[idx], y_all[idx]
            return
        for batch in loader:
            x, y = split_batch(batch)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _train_epoch(self, epoch: int) -> dict:
        self.model.train()
        num_batches = len(self.train_loader) if isinstance(self.train_loader, Sized) else 0
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        metric_sums = dict.fromkeys(self.metrics, 0.0)
        seen = 0
        t_start = last_event = time.perf_counter()
        # every step's loss is checked: at once on the CPU, at progress events on a device (see _CleanState)
        guard = self._clean_state
        if guard is None:
            guard = self._clean_state = _CleanState(self.model, self.optimizer, self.device, self._defer_loss_check)
        guard.save(epoch, 0)
        b = 0
        self._hook("on_train_epoch_start", epoch)
        for b, (x, y) in enumerate(self._batches(self.train_loader), 1):
            self._checkpoint()
            if not guard.deferred and b > 1:
                guard.save(epoch, b - 1)  # the buffers, which this batch's forward updates
            self._hook("on_train_batch_start", x)
            self.optimizer.zero_grad(set_to_none=True)
            loss, output = self.compute_loss(x, y)
            guard.observe(loss, epoch, b)
            loss.backward()
            self._hook("on_after_backward")
            self.optimizer.step()
            n = x.shape[0]
            total_loss += loss.detach().double() * n
            seen += n
            self._hook("on_train_batch_end", x, output)
            for k, fn in self.metrics.items():
                metric_sums[k] = metric_sums[k] + _metric_sum(fn, output.detach(), y)
            now = time.perf_counter()
            if now - last_event >= self.batch_event_interval or b == num_batches:
                guard.check(epoch, b)
                last_event = now
                rate = b / max(now - t_start, 1e-9)
                eta = (num_batches - b) / rate if num_batches else math.nan
                value = float(loss.detach())
                self._emit("on_batch_end", BatchEvent(epoch, self._target_epochs, b, num_batches, value, rate, eta))
        if b != num_batches:  # else the last batch was a progress event, and checked
            guard.check(epoch, b)
        if seen == 0:
            raise ValueError("the training loader yielded no batch; check the dataset and batch_size.")
        return {"loss": float(total_loss) / seen, **{k: float(v) / seen for k, v in metric_sums.items()}}

    def forward_and_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The usual step: ``output = forward(x)`` (compiled with ``compile=True``), and its loss against ``y``."""
        forward = self.forward
        if self.compile:
            if self._compiled is None:
                self._compiled = torch.compile(forward)
            forward = self._compiled
        output = forward(x)
        return self.loss_fn(output, y), output

    def _evaluate(self, loader) -> dict:
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), device=self.device, dtype=torch.float64)  # summed on the device: no sync a batch
        seen = 0
        metric_sums = dict.fromkeys(self.metrics, 0.0)
        try:
            with torch.no_grad():
                for x, y in self._batches(loader):
                    loss, output = self.compute_loss(x, y)
                    n = x.shape[0]
                    total += loss.double() * n
                    for k, fn in self.metrics.items():
                        metric_sums[k] = metric_sums[k] + _metric_sum(fn, output, y)
                    seen += n
        finally:
            self.model.train(was_training)
        if seen == 0:
            return {}
        return {"loss": float(total) / seen, **{k: float(v) / seen for k, v in metric_sums.items()}}

    def __repr__(self) -> str:
        return f"Engine(epoch {self.epoch}/{self._target_epochs}, {len(self.layers)} layers, {self.status})"


class _CleanState:
    """The model's (and optimizer's) state at the last point where every training loss so far was finite.

    Immediate mode (the CPU): :meth:`observe` reads each loss and raises before its ``backward``, so no update is
    made from a bad batch; only the buffers (BatchNorm statistics, which the forward updates) are saved, before each
    step. Deferred mode (a device): :meth:`observe` folds ``~isfinite(loss)`` and the first bad batch into device
    flags (no host sync); :meth:`check`, at progress events, reads them and either saves parameters, buffers and
    optimizer state into preallocated copies (asynchronous device copies) or restores the last save and raises.
    """

    def __init__(self, model: nn.Module, optimizer, device: torch.device, deferred: bool):
        self.model, self.optimizer, self.deferred = model, optimizer, deferred
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._first_bad = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float64, device=device)
        self._copies: dict[int, torch.Tensor] = {}  # id(tensor) -> its preallocated copy, for the tensors last saved
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._saved_optimizer: dict = {}  # parameter -> {key: copy or value} of its optimizer state
        self._saved_at = (0, 0)

    def _tensors(self) -> list[torch.Tensor]:
        if not self.deferred:
            return list(self.model.buffers())
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        return list({id(t): t for t in (*self.model.parameters(), *params, *self.model.buffers())}.values())

    @torch.no_grad()
    def save(self, epoch: int, batch: int) -> None:
        """Keep the current state as the clean one, reached after ``batch`` of ``epoch`` (0: before its first)."""
        if batch and not self.deferred:
            for tensor, copy in self._saved:
                copy.copy_(tensor)
            self._saved_at = (epoch, batch)
            return
        # what to keep is looked up again (optimizer state appears after a first step); copies are reused
        old, self._copies = self._copies, {}

        def copy_of(source: torch.Tensor) -> torch.Tensor:
            copy = old.get(id(source))
            if copy is None or (copy.shape, copy.dtype, copy.device) != (source.shape, source.dtype, source.device):
                copy = torch.empty_like(source)
            self._copies[id(source)] = copy
            return copy.copy_(source, non_blocking=True)

        self._saved = [(t, copy_of(t)) for t in self._tensors()]
        if self.deferred:
            self._saved_optimizer = {
                p: {k: copy_of(v) if isinstance(v, torch.Tensor) else v for k, v in state.items()}
                for p, state in self.optimizer.state.items()
            }
        self._saved_at = (epoch, batch)

    @torch.no_grad()
    def _restore(self) -> None:
        for tensor, copy in self._saved:
            tensor.copy_(copy)
        if self.deferred:
            for p in [p for p in self.optimizer.state if p not in self._saved_optimizer]:
                del self.optimizer.state[p]  # state created after the save: as before the parameter's first step
            for p, state in self._saved_optimizer.items():
                self.optimizer.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}

    def observe(self, loss: torch.Tensor, epoch: int, batch: int) -> None:
        """Check one step's loss before its backward: at once (immediate), or folded into the device flags."""
        loss = loss.detach()
        if not self.deferred:
            if not bool(torch.isfinite(loss).all()):
                self._fail(float(loss.double().sum()), epoch, batch)
            return
        new = ~torch.isfinite(loss).all() & ~self._bad
        self._first_bad.masked_fill_(new, batch)
        self._bad_value.copy_(torch.where(new, loss.double().sum(), self._bad_value))
        self._bad.logical_or_(new)

    def check(self, epoch: int, batch: int) -> None:
        """At a progress event (deferred mode): raise if a loss since the last save was not finite, else save."""
        if not self.deferred:
            return
        if bool(self._bad):
            self._fail(float(self._bad_value), epoch, int(self._first_bad))
        self.save(epoch, batch)

    def _fail(self, value: float, epoch: int, batch: int):
        self._restore()
        if not self.deferred:
            state = "before that batch changed the model"
        else:
            saved_epoch, saved_batch = self._saved_at
            last = f"after batch {saved_batch} of epoch {saved_epoch}" if saved_batch else f"before epoch {saved_epoch}"
            state = f"and the model was restored to its state at the last check, {last}"
        raise FloatingPointError(
            f"the training loss became {value} at epoch {epoch}, batch {batch}; the run stopped {state}. "
            "Lower the learning rate or check the inputs for NaN."
        )


def _metric_sum(fn, output: torch.Tensor, y: torch.Tensor):
    """A metric summed over the batch; accuracy stays on the device (no sync per batch)."""
    if fn is _compile.accuracy and output.ndim == 2 and y.ndim == 1:
        return (output.argmax(1) == y).sum()
    return fn(output, y) * output.shape[0]


def register_moved_keywords(names: tuple[str, ...], build: Callable, spelling: str) -> None:
    """Let ``Engine(..., **{name: value})`` for ``names`` still work: ``build(**given)`` becomes one of its callbacks,
    with a ``DeprecationWarning`` that says to pass ``spelling`` instead (a layer above the engine registers its
    callback's old keywords here)."""
    _MOVED[tuple(names)] = (build, spelling)


def _deprecated(old: str, new: str, stacklevel: int = 4) -> None:
    warnings.warn(f"Engine({old}=...) is deprecated; pass {new}.", DeprecationWarning, stacklevel=stacklevel)


_MOVED_TO_RECORDING = ("probe_data", "keep_activations", "memory_budget", "name", "config")


def _recording_of(recording: Recording | None, probe: int | None, moved: dict) -> Recording:
    """The recording given, or one built from ``probe`` and the recording keywords the engine used to take."""
    given = {k: moved.pop(k) for k in _MOVED_TO_RECORDING if k in moved}
    if recording is None:
        for k in given:
            _deprecated(k, f"recording=ibwidget.record.recording.Recording({k}=...)")
        return Recording(probe, **given)
    if not isinstance(recording, Recording):
        raise TypeError(f"recording must be a Recording, got {type(recording).__name__}.")
    if probe is not None or given:
        both = ", ".join(["probe"] * (probe is not None) + list(given))
        raise ValueError(f"pass {both} to the Recording (Recording({both}=...)), not to the Engine beside recording=.")
    return recording


def _moved_callbacks(moved: dict) -> list:
    """The callbacks built from keywords that moved to them (see :func:`register_moved_keywords`)."""
    built = []
    for names, (build, spelling) in _MOVED.items():
        given = {k: moved.pop(k) for k in names if k in moved}
        if given:
            _deprecated(", ".join(given), spelling)
            built.append(build(**given))
    return built


def _moved_optimizer_keywords(moved: dict) -> dict:
    """Keywords left over: the optimizer's (e.g. momentum), which the engine used to pass through."""
    if moved:
        names = ", ".join(sorted(moved))
        _deprecated(names, f"them to the optimizer, e.g. optimizer=functools.partial(torch.optim.SGD, {names}=...)")
    return moved
