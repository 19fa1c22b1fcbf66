"""``PlaneView``: the information plane drawn by ibwidget's own front-end, with every toggle in the browser.

The synced state is a precomputed grid (:mod:`ibwidget.plane._grid`): float32 binary buffers of every estimator x sigma
slot x target x layer x epoch, plus run names, layer names and history. Layer, estimator, sigma and target toggles,
the epoch player, hover read-outs and the saturation gauge run in the browser with no kernel round trip; the same
front-end is inlined into one-file HTML reports (:meth:`ibwidget.Run.to_html`).

The grid fills in behind the first view: the σ the Player shows is computed first (the front-end says which with a
``view`` message) and the other widths by the view model's filler thread, the whole state re-sent as they land
(at most every half second).

Live: a :class:`~ibwidget.Trainer` shows one in a tab and appends each new epoch's slice from its UI thread (a
custom message carrying only the new epochs; the whole state is re-sent when the run ends, when widths are filled
in, or when a front-end that missed an epoch asks for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ibwidget.measure._typing import PathLike
from ibwidget.plane._grid import (
    DEFAULT_RULES,
    TARGETS,
    GridBuilder,
    _as_runs,
    band_payload,
    checked_band_request,
    cka_payload,
)
from ibwidget.plane._report import static_file, write_grid_html, write_html
from ibwidget.record.follow import Follower
from ibwidget.record.run import Run
from ibwidget.widget._viewmodel import PlaneModel

__all__ = ["PlaneView"]

_FULL_SYNC_BYTES = 1 << 16  # live grids up to this size are simply re-sent whole; larger ones get appends
_FILL_PUSH_S = 0.5  # while slots are filled in, the grid is sent at most this often


class PlaneView(anywidget.AnyWidget):
    """A kernel-free information plane of one run or several: toggles and an epoch player in the browser.

    ``estimators`` (default: every fast registered estimator, see :func:`ibwidget.plane._grid.default_estimators`),
    ``sigmas`` (default 25 log-spaced widths from 0.05 to 500), ``targets``, ``sigma_rules`` and ``kernel`` choose
    the precomputed grid; ``estimator``, ``sigma``, ``sigma_rule`` and ``target`` the first view shown.
    """

    # The module's text, not its Path: anywidget would watch a Path for hot reload and keep every view alive.
    _esm = static_file("planeview.js").read_text(encoding="utf-8")
    meta = traitlets.Dict().tag(sync=True)
    grid = traitlets.Bytes(b"").tag(sync=True)
    saturation = traitlets.Bytes(b"").tag(sync=True)
    scales = traitlets.Bytes(b"").tag(sync=True)  # only for uint16 grids (one-file HTML); empty here

    def __init__(
        self,
        runs: Run | Iterable[Run],
        estimators: Sequence[str] | None = None,
        sigmas: Sequence[float] | None = None,
        targets: Sequence[str] = TARGETS,
        sigma_rules: Sequence[str] = DEFAULT_RULES,
        kernel: str = "gaussian",
        *,
        estimator: str | None = None,
        sigma: float = 5.0,
        sigma_rule: str = "fixed",
        target: str = "labels",
        **kwargs,
    ) -> None:
        live = kwargs.pop("_live", False)
        self._wake: Callable[[], None] | None = kwargs.pop("_wake", None)
        model = kwargs.pop("_model", None)  # a grid shared with a Trainer's figures: its owner computes it
        self._computes = model is None
        if model is None:
            builder = GridBuilder(estimators, sigmas, targets, sigma_rules, kernel, keep_targets=live)
            default = {"estimator": estimator, "sigma": sigma, "rule": sigma_rule, "target": target}
            model = PlaneModel(_as_runs(runs), builder, default)
        self._model = model
        self._builder = model.builder
        self._sent: tuple | None = None  # (version, fills, counts) the front-end holds; None: nothing yet
        self._follower: Follower | None = None
        self._update_lock = threading.RLock()  # one writer of the traits at a time
        self._flag_lock = threading.Lock()
        self._want_full = False
        self._last_push = 0.0
        super().__init__(**kwargs)
        if model.ready.is_set():  # else (a RunView's grid computing its first view) the owner's catch-up sends it
            self._sent = (model.version, model.fills, tuple(model.counts))
            self._push_full(model.meta(), model.values, model.saturation)
        self.add_class("ibwp-widget")
        self.on_msg(self._on_msg)
        if self._computes:
            model.listen(self._on_fill)

    # ------------------------------------------------------------------------------------------ public

    @property
    def runs(self) -> list:
        return list(self._runs)

    @property
    def _runs(self) -> list:
        return self._model.runs  # runs may join the model (a followed folder): never a copy of an earlier list

    @property
    def values(self) -> np.ndarray:
        """The grid, float32 (runs, epochs, blocks, layers, 2); ``meta`` names its axes."""
        return self._model.values

    def refresh(self, full: bool = False) -> None:
        """Append the snapshots recorded since the grid was computed (a run still training); one thread at a time.

        ``full`` sends the whole grid, not only the new epochs (e.g. once the run has ended).
        """
        self._catch_up(full=full)

    @classmethod
    def follow(
        cls,
        source: PathLike,
        estimators: Sequence[str] | None = None,
        sigmas: Sequence[float] | None = None,
        targets: Sequence[str] = TARGETS,
        sigma_rules: Sequence[str] = DEFAULT_RULES,
        kernel: str = "gaussian",
        *,
        interval: float = 0.5,
        timeout: float | None = 60.0,
        **view,
    ) -> PlaneView:
        """A PlaneView of the runs other processes are writing (a run file, or a folder whose new ``.ibrun`` files
        join as they appear), appended every ``interval`` seconds with each run's new epochs (computed in the
        follower's thread; the epochs already there are never recomputed). Waits up to ``timeout`` seconds for a
        first readable run; stops when the view is closed. ``view``: ``estimator``, ``sigma``... as for the view.
        """
        follower = Follower(source, interval)
        plane = cls(
            follower.wait_for_runs(timeout), estimators, sigmas, targets, sigma_rules, kernel, _live=True, **view
        )
        plane._follower = follower

        def changed(new_runs: list, grew: bool) -> None:  # the follower's thread
            if new_runs:
                plane._model.add_runs(new_runs)
            plane._catch_up(full=bool(new_runs))

        follower.start(changed)
        return plane

    @property
    def following(self) -> bool:
        """Whether this view follows run files (see :meth:`follow`) and still does."""
        return self._follower is not None and self._follower.alive

    def close(self) -> None:
        follower = getattr(self, "_follower", None)
        if follower is not None:
            follower.stop()
        model = getattr(self, "_model", None)  # absent if __init__ failed
        if model is not None and self._computes:
            model.close()
        elif model is not None:  # a Trainer's grid: this player's σ no longer needs computing each epoch
            model.view(f"player-{id(self)}", [])
        super().close()

    def wait_filled(self, timeout: float | None = 60.0) -> bool:
        """Block until every slot of the grid is computed and sent (the view fills in behind its first σ); False on
        timeout, or while a Trainer's training keeps its widths not viewed waiting (use ``Trainer.wait_filled``)."""
        if not self._model.wait_idle(timeout):
            return False
        if self._computes:
            self._catch_up()
        elif self._wake is not None:
            self._wake()  # a Trainer's view: its UI thread sends the grid (see Trainer.wait_filled)
        return all(self._model.slot_filled())

    def to_html(self, path: PathLike, title: str | None = None, notes: str | None = None) -> Path:
        """Write this view's runs as a one-file HTML report (see :meth:`ibwidget.Run.to_html`): the view's own grid
        once every width is in (it waits for the filler), else (a Trainer still training) computed anew."""
        grid = self._model.whole_grid(timeout=600)
        if grid is not None:
            return write_grid_html(grid, path, title=title, notes=notes, runs=self._runs)
        b = self._builder
        return write_html(
            self._runs,
            path,
            title=title,
            notes=notes,
            estimators=[s.name for s in b.specs],
            sigmas=b.sigmas,
            targets=b.targets,
            sigma_rules=b.rules,
            kernel=b.kernel,
        )

    # ------------------------------------------------------------------------------------------ internals

    def _push_full(self, meta: dict, values: np.ndarray, saturation: np.ndarray) -> bool:
        """Set every trait from the Python-side grid (one message); False if they already held it."""
        grid = np.ascontiguousarray(values, dtype="<f4").tobytes()
        sat = np.ascontiguousarray(saturation, dtype="<f4").tobytes()
        if meta == self.meta and grid == self.grid and sat == self.saturation:
            return False
        with self.hold_sync():
            self.meta, self.grid, self.saturation = meta, grid, sat
        return True

    def _catch_up(self, full: bool = False) -> None:
        """Compute the epochs recorded since the last call and send them (the owner's UI thread, or the caller's).

        New epochs go as one custom message with binary buffers; the whole state is set when ``full``, when a
        front-end asked for it, or while the grid is small. Values and metadata describe the snapshots recorded when
        the call began: those that land meanwhile are the next call's.
        """
        with self._update_lock:
            with self._flag_lock:
                resync, self._want_full = self._want_full, False
            model = self._model
            if not model.ready.is_set():
                return  # no grid yet: its owner calls again once the first view is computed
            full = full or resync or self._sent is None
            if self._computes:  # else the owner (a Trainer's UI thread) computes new epochs, then calls refresh
                model.catch_up()
            with model.lock:
                version, fills, counts = model.version, model.fills, tuple(model.counts)
                meta, values, saturation = model.meta(), model.values, model.saturation
                appended = None
                sent_version, sent_fills, sent_counts = self._sent or (version, fills, counts)
                if (version, fills) != (sent_version, sent_fills) or (len(counts) > 1 and counts != sent_counts):
                    full = True  # runs joined, slots filled in, or several runs grew: the whole state
                elif counts != sent_counts:
                    start, count = sent_counts[0], counts[0]
                    v, s = values[0, start:count], saturation[0, start:count]
                    appended = (start, v, s, meta["runs"][0]["epochs"][start:count])
                self._sent = (version, fills, counts)
            if full or values.nbytes <= _FULL_SYNC_BYTES:
                if (
                    not self._push_full(meta, values, saturation) and resync
                ):  # a front-end lost track: send it all again
                    self.send_state(["meta", "grid", "saturation"])
            elif appended is not None:
                start, v, s, epochs = appended
                content = {
                    "type": "append",
                    "start": start,
                    "count": int(v.shape[0]),
                    "epochs": epochs,
                    "slot_filled": meta["slot_filled"],
                    "history": meta["runs"][0]["history"],
                    "estimators": [{"available": e["available"], "note": e["note"]} for e in meta["estimators"]],
                }
                buffers = [np.ascontiguousarray(v, "<f4").tobytes(), np.ascontiguousarray(s, "<f4").tobytes()]
                self.send(content, buffers)

    def _on_fill(self) -> None:
        """The filler thread computed a slot: send the grid, at most every :data:`_FILL_PUSH_S` seconds while more
        are coming, and always once the last has landed."""
        now = time.monotonic()
        if self._model.has_work() and now - self._last_push < _FILL_PUSH_S:
            return
        self._last_push = now
        self._catch_up()

    def _on_msg(self, _widget, content, _buffers) -> None:
        """A front-end shows another slot (computed first), or missed an epoch and asks for the whole state (a
        kernel thread: only flag it here)."""
        if isinstance(content, dict) and content.get("type") == "view" and isinstance(content.get("slot"), int):
            self._model.view(f"player-{id(self)}", [content["slot"]])
            return
        if isinstance(content, dict) and content.get("type") == "band":
            self._send_band(content)
            return
        if isinstance(content, dict) and content.get("type") == "cka":
            runs = list(self._runs)
            self._in_thread(lambda: {"type": "cka", "cka": cka_payload(runs)})
            return
        if not isinstance(content, dict) or content.get("type") != "resync":
            return
        with self._flag_lock:
            self._want_full = True
        if self._wake is not None:
            self._wake()  # the owner's UI thread will call _catch_up
        else:
            self._catch_up(full=True)

    def _send_band(self, request: dict) -> None:
        """Compute the chance floor a front-end asked for (its selection) in a thread of its own, then send it."""
        if not self._model.ready.is_set():
            return  # no grid yet: the front-end cannot have selected in it
        meta = self._model.meta()
        try:
            estimator, slot, target = checked_band_request(meta, request)
        except ValueError:
            return  # not a selection of this grid: a stale or foreign message
        runs = list(self._runs)
        self._in_thread(lambda: {"type": "band", "band": band_payload(runs, meta, estimator, slot, target)})

    def _in_thread(self, message: Callable[[], dict]) -> None:
        """Compute ``message()`` in a thread of its own (a front-end asked for it) and send it when it is there."""
        threading.Thread(target=lambda: self.send(message()), name="ibwidget-request", daemon=True).start()


def live_plane_view(model: PlaneModel, wake: Callable[[], None]) -> PlaneView:
    """The Player tab of a Trainer or RunView: the grid its figures read, appended from its UI thread (``wake`` asks
    it)."""
    return PlaneView(model.runs, _model=model, _wake=wake)
