"""``Trainer``: train a model in the background and watch every layer move in the information plane, live."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import ipywidgets as widgets
from torch import nn

from ibwidget.measure._typing import Batches, Device, LossSpec, OptimizerSpec, PathLike
from ibwidget.pyglow.models import Sequential
from ibwidget.record.recording import Recording, pop_options
from ibwidget.record.run import Run
from ibwidget.train.engine import BatchEvent, Engine, device_label, refuse_second_training
from ibwidget.widget._applier import _Batch
from ibwidget.widget._base import _label, _RunsBox

__all__ = ["Trainer"]

_ACTIVE = ("running", "pausing", "paused", "stopping")
_HELD = ("pausing", "paused")  # the pause button offers Resume
_TRAINING = ("running", "pausing", "stopping")  # the training thread has the cores
_DEFAULT_EPOCHS = 7
_BAR_STYLE = {
    "finished": "success",
    "failed": "danger",
    "stopped": "warning",
    "pausing": "warning",
    "paused": "warning",
}


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _make_engine(model, train_loader, val_loader, epochs, probe, layers, loss, optimizer, lr, device, kw) -> Engine:
    if isinstance(model, Engine):
        settings = {"train_loader": train_loader, "val_loader": val_loader, "epochs": epochs, "probe": probe}
        settings.update(layers=layers, loss=loss, optimizer=optimizer, lr=lr)
        given = [k for k, v in settings.items() if v is not None]
        if given or kw:
            raise ValueError(
                f"an Engine comes with its data and settings; pass {', '.join([*given, *kw])} to the Engine instead "
                "(ib.Trainer(engine) takes only the widget's options)."
            )
        return model
    if train_loader is None:
        raise TypeError("Trainer(model, train_loader, ...) needs the training data (or pass an ib.Engine as model).")
    epochs = _DEFAULT_EPOCHS if epochs is None else epochs
    refuse_second_training(model)  # before compile() would replace the optimizer of a model still training
    if isinstance(model, Sequential):  # its compile() settings, its device, its tracked layers
        if layers is not None:
            raise ValueError(
                "an IBSequential tracks every layer with parameters; layers=[...] is for a plain nn.Module "
                "(hide layers with the widget's layer toggles instead)."
            )
        if not model.is_compiled or loss is not None or optimizer is not None or lr is not None:
            sgd = optimizer is None or (isinstance(optimizer, str) and optimizer.lower() == "sgd")
            model.compile(
                optimizer=optimizer or "SGD",
                loss=loss or "cross_entropy",
                metrics=["accuracy"],
                lr=0.01 if lr is None and sgd else lr,
                momentum=0.9 if sgd else None,
            )
        return model.make_engine(train_loader, val_loader, epochs, probe=probe, **kw)  # becomes model.engine
    if "recording" not in kw:
        kw["recording"] = Recording(probe, **pop_options(kw))
        probe = None
    return Engine(
        model,
        train_loader,
        val_loader,
        epochs=epochs,
        layers=layers,
        loss=loss or "cross_entropy",
        optimizer=optimizer or "SGD",
        lr=lr,
        probe=probe,
        device=device,
        **kw,
    )


class Trainer(_RunsBox):
    """Train ``model`` in a background thread and show, live, each layer's trajectory in the information plane.

    ``model``: an ``IBSequential`` (compiled, or compiled here with SGD lr 0.01 momentum 0.9 and cross-entropy),
    any ``nn.Module`` (then ``layers``, ``loss``, ``optimizer``, ``lr`` and ``device`` build the
    :class:`~ibwidget.train.engine.Engine`), or an ``Engine`` already built (then no data or training settings).
    ``epochs`` defaults to 7, ``probe`` to 512. ``estimators`` come first in the estimator dropdown, then every
    registered one; ``sigma``/``sigma_rule``/``target`` set the first view (all changeable later); other keywords go
    to the recording (``name``, ``keep_activations``, ``probe_data``, ``memory_budget``) or the engine (e.g.
    ``seed``, ``batch_event_interval``). Display it, then ``start()``; ``wait()`` blocks until training ends and the
    widget shows the final state (end an exported notebook with it). ``plane_view``: a second tab with the
    :class:`~ibwidget.PlaneView` of the run (epoch player, toggles in the browser), live.
    """

    _export_kind = "trainer"

    def __init__(
        self,
        model: nn.Module | Engine,
        train_loader: Batches | None = None,
        val_loader: Batches | None = None,
        epochs: int | None = None,
        estimators: Sequence[str] = ("hsic", "cka"),
        sigma: float = 5.0,
        probe: int | None = None,
        layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
        loss: LossSpec | None = None,
        optimizer: OptimizerSpec | None = None,
        lr: float | None = None,
        device: Device | None = "auto",
        autostart: bool = False,
        *,
        sigma_rule: str = "fixed",
        target: str = "labels",
        plane_view: bool = True,
        **engine_kwargs,
    ) -> None:
        batch_event_interval = engine_kwargs.pop("batch_event_interval", None)
        engine = _make_engine(
            model, train_loader, val_loader, epochs, probe, layers, loss, optimizer, lr, device, engine_kwargs
        )
        if batch_event_interval is not None:  # the widget's refresh of the progress bar
            engine.batch_event_interval = float(batch_event_interval)
        super().__init__()
        self._engine = engine
        self._target = int(engine.num_epochs)
        self._batch_event: BatchEvent | None = None
        self._setup(
            [engine.run],
            [engine.run.name],
            estimators,
            sigma,
            sigma_rule,
            target,
            self._target,
            False,
            live=True,
            busy=lambda: engine.status in _TRAINING,  # the widths not viewed wait while training has the cores
        )
        self.start_button = widgets.Button(description="Start", icon="play", tooltip="start training")
        self.pause_button = widgets.Button(description="Pause", icon="pause", tooltip="pause / resume", disabled=True)
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="stop after this batch")
        for button, cls in ((self.start_button, "start"), (self.pause_button, "pause"), (self.stop_button, "stop")):
            button.add_class(f"ibw-{cls}")
            button.layout.width = "92px"
        self.start_button.on_click(lambda _: self._click("start"))
        self.pause_button.on_click(lambda _: self._click("pause"))
        self.stop_button.on_click(lambda _: self._click("stop"))
        self.epoch_label = _label("ibw-epoch", f"epoch 0/{self._target}", min_width="85px")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="180px"))
        self.progress.add_class("ibw-progress")
        self.rate_label = _label("ibw-rate", "", min_width="200px")
        self.device_label = _label("ibw-device", device_label(engine.device), margin="0 10px")
        self.status_label = _label("ibw-status", engine.status, min_width="80px")
        bar = widgets.HBox(
            [
                self.start_button,
                self.pause_button,
                self.stop_button,
                self.epoch_label,
                self.progress,
                self.rate_label,
                self.device_label,
                self.status_label,
            ],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        bar.add_class("ibw-runbar")
        info = widgets.HBox([self.saturation, self.notice, self.export_format, self.export_button])
        self.children = [bar, self._controls.box, info, self._body(plane_view)]
        self.add_class("ibw-trainer")
        self._apply(_Batch(redraw=True, status=True))  # initial state, on this (the main) thread
        self._callbacks = {
            "batch_end": self._applier.on_batch_end,
            "pause": self._applier.on_pause,
            "epoch_end": self._applier.on_epoch_end,
            "finish": self._applier.on_finish,
            "exception": self._applier.on_exception,
        }
        for event, fn in self._callbacks.items():
            engine.on(event, fn)
        self._applier.start()
        if autostart:
            self.start()

    # ------------------------------------------------------------------------------------------ public

    @property
    def engine(self) -> Engine:
        """The :class:`~ibwidget.train.engine.Engine` that trains the model."""
        return self._engine

    @property
    def run(self) -> Run:
        """The :class:`~ibwidget.record.run.Run` being recorded."""
        return self._engine.run

    @property
    def status(self) -> str:
        """``idle``, ``running``, ``pausing``, ``paused``, ``stopping``, ``stopped``, ``finished`` or
        ``failed: <reason>`` (``pausing``: asked to pause, the current batch or epoch still completing)."""
        status = self._engine.status
        return f"failed: {self._engine.reason}" if status == "failed" else status

    def start(self, epochs: int | None = None) -> None:
        """Start training in the background; after a finished or stopped run, ``epochs`` more."""
        engine = self._engine
        engine.start(epochs)
        if epochs is not None:
            self._target = engine.epoch + int(epochs)
        self._applier.put("status")

    def pause(self) -> None:
        """Hold training after the current batch."""
        self._engine.pause()
        self._applier.put("status")

    def resume(self) -> None:
        """Continue a paused run."""
        self._engine.resume()
        self._applier.put("status")

    def stop(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Stop after the current batch (recorded epochs stay); ``wait`` joins the training thread."""
        self._engine.stop(wait=False)
        self._applier.put("status")
        if wait:
            self._engine.wait(timeout, raise_error=False)
            self.sync()

    def wait(self, timeout: float | None = None) -> Run:
        """Block until training ends and the widgets hold the final state; returns the run (failures show in
        ``status``; ``engine.error`` keeps the exception)."""
        self._engine.wait(timeout, raise_error=False)
        self._applier.sync(timeout=None if timeout is None else max(float(timeout), 10.0), full=True)
        return self.run

    def save_run(self, path: PathLike) -> Path:
        """Write the run file (see :meth:`ibwidget.Run.save`); returns its path."""
        return self.run.save(path)

    def close(self) -> None:
        for event, fn in getattr(self, "_callbacks", {}).items():  # absent if __init__ failed
            self._engine.off(event, fn)
        super().close()

    def __repr__(self) -> str:
        e = self._engine
        return f"Trainer(epoch {e.epoch}/{self._target}, {len(e.layers)} layers, {e.status})"

    # ------------------------------------------------------------------------------------------ internals

    def _click(self, action: str) -> None:
        """Button callback (a kernel thread): act on the engine, then let the UI thread refresh the run bar."""
        engine = self._engine
        try:
            if action == "start":
                engine.start()
            elif action == "pause":
                engine.resume() if engine.status in _HELD else engine.pause()
            elif action == "stop":
                engine.stop(wait=False)
        except (RuntimeError, ValueError) as exc:
            self._applier.put("notice", str(exc))
        self._applier.put("status")

    def _apply(self, batch: _Batch) -> None:
        super()._apply(batch)
        for text in batch.notices:
            self._set_notice("engine", text)
        self._update_runbar(batch)  # cheap, and a status may change with no event (a pause held, an epoch drawn)

    def _update_runbar(self, batch: _Batch) -> None:
        engine = self._engine
        for event in (batch.epoch_event, batch.batch_event):
            if event is not None:
                self._target = max(self._target, int(event.num_epochs))
        if batch.batch_event is not None:
            self._batch_event = batch.batch_event
        status = engine.status
        drawn = self._drawn[1][0] if self._drawn is not None else 0
        if status == "paused" and drawn < engine.run.num_snapshots:
            status = "pausing"  # held, but the epoch it completed is not drawn yet: nothing shown may move once paused
        bar = (self.epoch_label, self.status_label, self.progress, self.rate_label)
        buttons = (self.start_button, self.pause_button, self.stop_button)
        with contextlib.ExitStack() as stack:
            for w in bar + buttons:
                stack.enter_context(w.hold_sync())
            self.epoch_label.value = f"epoch {engine.epoch}/{self._target}"
            self.status_label.value = f"failed: {engine.reason}" if status == "failed" else status
            ev = self._batch_event
            if ev is not None:
                done = ev.epoch <= engine.epoch
                self.progress.value = 1.0 if done else ev.batch / max(ev.num_batches, 1)
                self.rate_label.value = (
                    f"epoch {ev.epoch}: batch {ev.batch}/{ev.num_batches} · {ev.rate:.1f} batches/s · "
                    f"ETA {_duration(0.0 if done else ev.eta)}"
                )
            self.progress.bar_style = _BAR_STYLE.get(status, "")
            self.start_button.disabled = status in (*_ACTIVE, "failed") or (
                status in ("finished", "stopped") and engine.epoch >= self._target
            )
            self.pause_button.disabled = status not in ("running", *_HELD)
            self.pause_button.description = "Resume" if status in _HELD else "Pause"
            self.pause_button.icon = "play" if status in _HELD else "pause"
            self.stop_button.disabled = status not in ("running", *_HELD)
