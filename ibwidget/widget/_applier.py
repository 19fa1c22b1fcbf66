"""The one writer: a daemon thread that drains a queue of immutable requests and applies them to the widgets.

Engine callbacks (training thread) and UI callbacks (kernel threads) only :meth:`_Applier.put` records here;
this thread coalesces them (the latest batch progress wins, any number of redraw requests make one redraw) and
calls the owner's ``apply`` with one :class:`_Batch`. Errors never kill the thread: they go to ``on_error``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ibwidget.train.engine import BatchEvent, EpochEvent

THREAD_NAME = "ibwidget-ui"
VIEW_NICENESS = 10  #: how much lower than the training the view threads run (a nice increment; Linux)


def yield_to_training(increment: int | None = None) -> None:
    """Lower the calling thread's scheduling priority by ``increment`` (default :data:`VIEW_NICENESS`, read at
    each call), so that view work never takes a core from training.

    On Linux a thread has its own nice value (and the worker threads its torch operations start inherit it); call
    this first thing in a view thread. Elsewhere, or when not permitted, nothing changes.
    """
    if not hasattr(os, "setpriority"):
        return
    increment = VIEW_NICENESS if increment is None else increment
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))


@dataclass
class _Batch:
    """What one pass of the applier has to do, coalesced from every request queued so far."""

    batch_event: BatchEvent | None = None  # the latest
    epoch_event: EpochEvent | None = None  # the latest
    data: bool = False  # new snapshots: recompute the figures
    redraw: bool = False  # the view changed: recompute the figures
    status: bool = False  # refresh the run bar
    finish: object | None = None  # the engine's final status
    full: bool = False  # resend every widget's whole state (for nbclient/nbconvert)
    new_runs: list = field(default_factory=list)  # runs joining a followed view
    exports: list = field(default_factory=list)
    notices: list = field(default_factory=list)
    more_pending: bool = False  # the queue is not empty after this batch (skip optional work)


class _Applier:
    """A queue plus the daemon thread that applies it; ``sync()`` waits until everything queued is applied."""

    def __init__(self, apply: Callable[[_Batch], None], on_error: Callable[[BaseException, str], None]):
        self._queue: queue.Queue = queue.Queue()
        self._apply = apply
        self._on_error = on_error
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def put(self, kind: str, payload=None) -> None:
        """Queue an immutable request (any thread; never blocks)."""
        if not self._closed:
            self._queue.put((kind, payload))

    # engine callbacks: run in the training thread, so they only queue the event records
    def on_batch_end(self, event) -> None:
        self.put("batch", event)

    def on_epoch_end(self, event) -> None:
        self.put("epoch", event)

    def on_finish(self, status) -> None:
        self.put("finish", str(status))

    def on_pause(self, epoch) -> None:
        self.put("status")

    def on_exception(self, exc) -> None:
        self.put("status")

    def sync(self, timeout: float | None = 10.0, full: bool = False) -> None:
        """Block until every request queued before this call is applied; ``full`` resends all widget state."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("sync() called from the UI thread itself would wait forever.")
        if not self._thread.is_alive():
            raise RuntimeError("the widget's UI thread is not running (closed?).")
        done = threading.Event()
        if full:
            self.put("full")
        self._queue.put(("sync", done))
        if not done.wait(timeout):
            raise TimeoutError(f"the widget did not apply its pending updates within {timeout} s.")

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the thread after what is queued; wait for it (unless called from it) so it holds its owner no more."""
        self._closed = True
        self._queue.put(("close", None))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _drain(self, first) -> tuple[_Batch, list, bool]:
        items = [first]
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch, syncs, close = _Batch(), [], False
        for kind, payload in items:
            if kind == "batch":
                batch.batch_event = payload
                batch.status = True
            elif kind == "epoch":
                batch.epoch_event = payload
                batch.data = batch.status = True
            elif kind == "finish":
                batch.finish = payload
                batch.data = batch.status = True
            elif kind == "data":  # a followed run gained epochs
                batch.data = True
            elif kind == "runs":  # runs joining a followed view
                batch.new_runs.extend(payload)
                batch.data = True
            elif kind == "redraw":
                batch.redraw = True
            elif kind == "status":
                batch.status = True
            elif kind == "full":
                batch.full = batch.redraw = batch.status = True
            elif kind == "notice":
                batch.notices.append(payload)
                batch.status = True
            elif kind == "export":
                batch.exports.append(payload)
            elif kind == "sync":
                syncs.append(payload)
            elif kind == "close":
                close = True
        return batch, syncs, close

    def _loop(self) -> None:
        yield_to_training()
        while True:
            batch, syncs, close = self._drain(self._queue.get())
            try:
                batch.more_pending = not self._queue.empty()
                self._apply(batch)
            except BaseException as exc:  # noqa: BLE001 - shown in the widget, never kills this thread
                with contextlib.suppress(BaseException):  # reporting the error must not kill this thread either
                    self._on_error(exc, traceback.format_exc())
            finally:
                for done in syncs:
                    done.set()
            if close:
                return
