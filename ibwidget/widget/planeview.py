"""``PlaneView``: the information plane drawn by ibwidget's own front-end, with every toggle in the browser.

The synced state is a precomputed grid (:mod:`ibwidget.plane._grid`): float32 binary buffers of every estimator x sigma
slot x target x layer x epoch, plus run names, layer names and history. Layer, estimator, sigma and target toggles,
the epoch player, hover read-outs and the saturation gauge run in the browser with no kernel round trip; the same
front-end is inlined into one-file HTML reports (:meth:`ibwidget.Run.to_html`).

Live: a :class:`~ibwidget.Trainer` shows one in a tab and appends each new epoch's slice from its UI thread (a
custom message carrying only the new epochs; the whole state is re-sent when the run ends, or when a front-end
that missed an epoch asks for it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import anywidget
import numpy as np
import traitlets

from ibwidget.measure import estimators as _estimators
from ibwidget.measure.trajectories import is_packed
from ibwidget.plane._grid import DEFAULT_RULES, TARGETS, GridBuilder, _as_runs, builder_grid
from ibwidget.plane._report import static_file, write_html

__all__ = ["PlaneView"]

_FULL_SYNC_BYTES = 1 << 16  # live grids up to this size are simply re-sent whole; larger ones get appends


def _recorded(runs: list) -> list:
    """Each run as recorded now, fixed: a computation on these never sees the training thread's next epoch."""
    return [run.snapshots() for run in runs]


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
        runs,
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
    ):
        runs = _as_runs(runs)
        live = kwargs.pop("_live", False)
        self._wake: Callable[[], None] | None = kwargs.pop("_wake", None)
        builder = GridBuilder(estimators, sigmas, targets, sigma_rules, kernel, keep_targets=live)
        self._runs = runs
        self._builder = builder
        self._default = {"estimator": estimator, "sigma": sigma, "rule": sigma_rule, "target": target}
        grid = builder_grid(builder, _recorded(runs), self._default)
        self._values, self._sat = grid.values, grid.saturation
        self._notes: dict[str, str] = {e["name"]: e["note"] for e in grid.meta["estimators"] if e["note"]}
        self._update_lock = threading.RLock()  # one writer of the traits at a time
        self._flag_lock = threading.Lock()
        self._want_full = False
        super().__init__(**kwargs)
        self._push_full(grid.meta)
        self.add_class("ibwp-widget")
        self.on_msg(self._on_msg)

    # ------------------------------------------------------------------------------------------ public

    @property
    def runs(self) -> list:
        return list(self._runs)

    @property
    def values(self) -> np.ndarray:
        """The grid, float32 (runs, epochs, blocks, layers, 2); ``meta`` names its axes."""
        return self._values

    def refresh(self) -> None:
        """Append the snapshots recorded since the grid was computed (a run still training); one thread at a time."""
        self._catch_up(full=False)

    def to_html(self, path, title: str | None = None, notes: str | None = None):
        """Write this view's runs as a one-file HTML report (see :meth:`ibwidget.Run.to_html`)."""
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

    @classmethod
    def _for_trainer(cls, run, estimators, sigma: float, sigma_rule: str, target: str, wake) -> PlaneView:
        """The live view a Trainer shows: its fast estimators (slow ones would stall the UI thread each epoch)."""
        names = [estimators] if isinstance(estimators, str) else list(estimators or ())
        fast = [n for n in names if is_packed(_estimators.get(n)) or _estimators.get(n).needs == "activations"] or [
            "hsic"
        ]
        rules = DEFAULT_RULES + ((sigma_rule,) if sigma_rule not in DEFAULT_RULES else ())
        return cls(
            run,
            estimators=fast,
            sigma_rules=rules,
            estimator=fast[0],
            sigma=sigma,
            sigma_rule=sigma_rule,
            target=target,
            _live=True,
            _wake=wake,
        )

    def _push_full(self, meta: dict) -> bool:
        """Set every trait from the Python-side grid (one message); False if they already held it."""
        grid = np.ascontiguousarray(self._values, dtype="<f4").tobytes()
        sat = np.ascontiguousarray(self._sat, dtype="<f4").tobytes()
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
            full = full or resync
            appended = None
            runs = _recorded(self._runs)
            if len(runs) == 1:
                run = runs[0]
                have = self._values.shape[1]
                if run.num_snapshots > have:
                    v, s, notes = self._builder.compute(run, start=have)
                    for k, text in notes.items():
                        self._notes.setdefault(k, text)
                    self._values = np.concatenate([self._values, v[None]], axis=1)
                    self._sat = np.concatenate([self._sat, s[None]], axis=1)
                    appended = (have, v, s, [int(e) for e in run.epochs[have : have + v.shape[0]]])
            else:  # several runs: recompute (views of several runs are of finished runs)
                counts = [r.num_snapshots for r in runs]
                if max(counts) > self._values.shape[1] and any(c for c in counts):
                    grid = builder_grid(self._builder, runs, self._default)
                    self._values, self._sat = grid.values, grid.saturation
                    full = True
            meta = self._builder.meta(runs, self._notes, self._default)
            if full or self._values.nbytes <= _FULL_SYNC_BYTES:
                if not self._push_full(meta) and resync:  # a front-end lost track: send it all again
                    self.send_state(["meta", "grid", "saturation"])
            elif appended is not None:
                start, v, s, epochs = appended
                content = {
                    "type": "append",
                    "start": start,
                    "count": int(v.shape[0]),
                    "epochs": epochs,
                    "history": meta["runs"][0]["history"],
                    "estimators": [{"available": e["available"], "note": e["note"]} for e in meta["estimators"]],
                }
                buffers = [np.ascontiguousarray(v, "<f4").tobytes(), np.ascontiguousarray(s, "<f4").tobytes()]
                self.send(content, buffers)

    def _on_msg(self, _widget, content, _buffers) -> None:
        """A front-end that missed an epoch asks for the whole state (a kernel thread: only flag it here)."""
        if not isinstance(content, dict) or content.get("type") != "resync":
            return
        with self._flag_lock:
            self._want_full = True
        if self._wake is not None:
            self._wake()  # the owner's UI thread will call _catch_up
        else:
            self._catch_up(full=True)
