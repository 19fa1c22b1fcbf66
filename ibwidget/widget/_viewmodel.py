"""The view model both planes read: one precomputed grid, looked up on every toggle, and exact values off the grid.

:class:`PlaneModel` holds the grid (:mod:`ibwidget.plane._grid`) of some runs and appends each new epoch's slice
once; the bqplot figures (Trainer, RunView) and the PlaneView tab read the same arrays. A view on the grid (estimator,
target, sigma slot) is an array lookup. A view off the grid (a sigma between the grid's widths, a rule or an
estimator the grid does not hold: nHSIC, Rényi, a user's registered estimator) is computed by :class:`OnDemand` in
its own worker thread, never the UI or the training thread; until it arrives the figures show the nearest grid
slot (or keep the last plot).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ibwidget.measure import estimators as _estimators
from ibwidget.measure import trajectories as _trajectories
from ibwidget.measure.trajectories import is_packed
from ibwidget.plane._grid import DEFAULT_RULES, DEFAULT_SIGMAS, Grid, GridBuilder, builder_grid
from ibwidget.widget._applier import yield_to_training

_KEPT_RESULTS = 8  # exact off-grid views kept (the latest ones)


def recorded(runs: Sequence) -> list:
    """Each run as recorded now, fixed: a computation on these never sees the training thread's next epoch."""
    return [run.snapshots() for run in runs]


#: a live grid's widths: every other default width (3 a decade, 5 among them), so that each epoch's slice costs about
#: half the full grid's; a σ between them is computed exactly on demand
LIVE_SIGMAS = DEFAULT_SIGMAS[::2]


def fast_builder(estimators, sigma: float, sigma_rule: str, live: bool) -> GridBuilder:
    """The grid of a Trainer (``live``: :data:`LIVE_SIGMAS`) or RunView (the default widths): the fast ones of
    ``estimators`` (slow ones would stall each epoch) and the default rules, plus the first view's ``sigma`` and
    ``sigma_rule``."""
    names = [estimators] if isinstance(estimators, str) else list(estimators or ())
    specs = [_estimators.get(n) for n in names]
    fast = [s.name for s in specs if is_packed(s) or s.needs == "activations"] or ["hsic"]
    rules = DEFAULT_RULES + ((sigma_rule,) if sigma_rule not in DEFAULT_RULES else ())
    widths = LIVE_SIGMAS if live else DEFAULT_SIGMAS
    return GridBuilder(fast, (*widths, float(sigma)), sigma_rules=rules, keep_targets=live)


def _padded(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``array`` grown along ``axis`` to ``size``, the new entries NaN (a view's missing epochs or layers)."""
    if array.shape[axis] >= size:
        return array
    shape = list(array.shape)
    shape[axis] = size - array.shape[axis]
    return np.concatenate([array, np.full(shape, np.nan, dtype=array.dtype)], axis=axis)


class PlaneModel:
    """The grid of ``runs`` on ``builder``'s axes, grown by :meth:`catch_up`; ``lock`` guards reading it whole."""

    def __init__(self, runs: Sequence, builder: GridBuilder, default: dict, on_ready: Callable[[], None] | None = None):
        """Computes the grid now, or, given ``on_ready``, in a background thread that calls it when the grid is
        there (a view of long saved runs opens at once; until then :meth:`lookup` finds nothing)."""
        self.runs = list(runs)
        self.builder = builder
        self.default = dict(default)
        self.lock = threading.RLock()
        self.ready = threading.Event()
        self.version = 0  # grows when the whole grid is recomputed (not on appends)
        self.counts = [0] * len(self.runs)
        self.notes: dict[str, str] = {}
        if on_ready is None:
            self._build()
        else:
            threading.Thread(target=self._build, args=(on_ready,), name="ibwidget-grid", daemon=True).start()

    def _build(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready is not None:  # its own thread
            yield_to_training()
        with self.lock:
            self._recorded = recorded(self.runs)
            self.grid = builder_grid(self.builder, self._recorded, self.default)
            self.notes = {e["name"]: e["note"] for e in self.grid.meta["estimators"] if e["note"]}
            self.counts = [r.num_snapshots for r in self._recorded]
            self.ready.set()
        if on_ready is not None:
            on_ready()

    @property
    def values(self) -> np.ndarray:
        """float32 (runs, epochs, blocks, layers, 2)."""
        return self.grid.values

    @property
    def saturation(self) -> np.ndarray:
        """float32 (runs, epochs, slots, layers)."""
        return self.grid.saturation

    @property
    def n_epochs(self) -> int:
        return int(self.grid.values.shape[1])

    def meta(self) -> dict:
        """The grid's metadata for the snapshots its values hold."""
        with self.lock:
            return self.builder.meta(self._recorded, self.notes, self.default)

    def catch_up(self) -> bool:
        """Compute the snapshots recorded since the last call, run by run (once, whichever plane asks first);
        True if any. Earlier epochs are never recomputed."""
        if not self.ready.is_set():
            return False
        with self.lock:
            runs = recorded(self.runs)
            counts = [r.num_snapshots for r in runs]
            if counts == self.counts:
                return False
            values, sat = self.values, self.saturation
            E = max(counts)  # more epochs than any run had: the epoch axis grows (padded with NaN)
            values, sat = _padded(values, 1, E), _padded(sat, 1, E)
            for r, (snap, have) in enumerate(zip(runs, self.counts, strict=True)):
                if snap.num_snapshots == have:
                    continue
                v, s, notes = self.builder.compute(snap, start=have)
                for k, text in notes.items():
                    self.notes.setdefault(k, text)
                values[r, have : snap.num_snapshots, :, : v.shape[2]] = v
                sat[r, have : snap.num_snapshots, :, : s.shape[2]] = s
            self.grid = Grid(self.grid.meta, values, sat)
            self._recorded, self.counts = runs, counts
            return True

    def add_runs(self, runs: Sequence) -> None:
        """Add ``runs`` to the grid (computed for them alone; the others' values stay as they are)."""
        if not runs:
            return
        self.ready.wait()
        with self.lock:
            new = builder_grid(self.builder, list(runs), self.default)
            values, sat = self.values, self.saturation
            E = max(values.shape[1], new.values.shape[1])
            L = max(values.shape[3], new.values.shape[3])
            values = np.concatenate([_padded(_padded(values, 1, E), 3, L), _padded(_padded(new.values, 1, E), 3, L)])
            sat = np.concatenate([_padded(_padded(sat, 1, E), 3, L), _padded(_padded(new.saturation, 1, E), 3, L)])
            for entry in new.meta["estimators"]:
                if entry["note"]:
                    self.notes.setdefault(entry["name"], entry["note"])
            self.runs = [*self.runs, *runs]
            self._recorded = recorded(self.runs)
            self.counts = [*self.counts, *(r.num_snapshots for r in self._recorded[-len(runs) :])]
            self.grid = Grid(self.builder.meta(self._recorded, self.notes, self.default), values, sat)
            self.version += 1

    def slot(self, rule: str, sigma: float) -> tuple[int, bool] | None:
        """The grid slot nearest (``rule``, ``sigma``) and whether it is that view exactly; None if the grid lacks
        the rule."""
        if rule not in self.builder.rules or not self.ready.is_set():
            return None
        k = self.grid.slot_index(rule, sigma)
        width = self.builder.slots[k][1]
        return k, width is None or math.isclose(width, sigma, rel_tol=1e-9)

    def lookup(self, estimator: str, sigma: float, rule: str, target: str) -> tuple[list[np.ndarray], bool] | None:
        """Per run, the grid's (epochs, layers, 2) values nearest this view, and whether they are exact; None if
        the grid holds neither the estimator, the target nor the rule."""
        names = [s.name for s in self.builder.specs]
        if estimator not in names or target not in self.builder.targets or not self.ready.is_set():
            return None
        if self.builder.specs[names.index(estimator)].uses_sigma:
            found = self.slot(rule, sigma)
            if found is None:
                return None
            k, exact = found
        else:
            k, exact = 0, True
        with self.lock:
            block = self.grid.values[:, :, self.grid.block_index(estimator, k, target)]
            counts = list(self.counts)
        out = [block[r, : counts[r], : len(run.layer_names)] for r, run in enumerate(self.runs)]
        return out, exact


class OnDemand:
    """A worker thread computing exact views off the grid, epochs appended as they come; the latest request wins.

    :meth:`get` never blocks on a computation: it returns what is ready, or queues the view and returns None;
    ``on_ready`` is called (from the worker) when a result lands.
    """

    def __init__(self, on_ready: Callable[[], None]):
        self._on_ready = on_ready
        self._cond = threading.Condition()
        self._pending: tuple | None = None
        self._busy = False
        self._closed = False
        self._results: OrderedDict[tuple, list | BaseException] = OrderedDict()
        self._thread = threading.Thread(target=self._loop, name="ibwidget-on-demand", daemon=True)
        self._thread.start()

    def get(self, params: tuple, runs: Sequence) -> list[np.ndarray] | BaseException | None:
        """Per run the exact (epochs, layers, 2) values of ``params``, the error computing them raised, or None.

        Epochs recorded since the last result are queued; meanwhile that result (fewer epochs) is returned, so a live
        view off the grid stays exact, one epoch behind. None: nothing computed yet (queued).
        """
        snaps = recorded(runs)
        with self._cond:
            result = self._results.get(params)
            if isinstance(result, BaseException):
                return result
            if result is not None:
                self._results.move_to_end(params)
                if [len(t) for t in result] == [s.num_snapshots for s in snaps]:
                    return result
            self._pending = (params, snaps)
            self._cond.notify_all()
        return result

    def compute_now(self, params: tuple, runs: Sequence) -> None:
        """Compute ``params`` on the calling thread and keep the result (a first view drawn before its grid)."""
        try:
            result: list | BaseException = self._compute(params, recorded(runs), None)
        except Exception as exc:  # noqa: BLE001 - shown by the view, as from the worker
            result = exc
        with self._cond:
            self._results[params] = result

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no computation is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after its current computation; wait for it (it holds its owner until it ends)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        yield_to_training()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                (params, snaps), self._pending = self._pending, None
                self._busy = True
                known = self._results.get(params)
            try:
                result = self._compute(params, snaps, known if isinstance(known, list) else None)
            except Exception as exc:  # noqa: BLE001 - shown by the view, e.g. binning without activations
                result = exc
            with self._cond:
                self._results[params] = result
                self._results.move_to_end(params)
                while len(self._results) > _KEPT_RESULTS:
                    self._results.popitem(last=False)
                self._busy = False
                self._cond.notify_all()
            self._on_ready()

    @staticmethod
    def _compute(params: tuple, snaps: list, known: list | None) -> list[np.ndarray]:
        estimator, sigma, rule, target = params
        out = []
        for r, snap in enumerate(snaps):
            have = 0 if known is None else min(len(known[r]), snap.num_snapshots)
            head = known[r][:have] if have else np.zeros((0, len(snap.layer_names), 2))
            if snap.num_snapshots > have:
                new = _trajectories.trajectories(
                    snap.since(have), estimator, sigma=sigma, target=target, sigma_rule=rule
                )
                head = np.concatenate([head, new]) if have else new
            out.append(head)
        return out
