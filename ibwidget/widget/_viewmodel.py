"""The view model both planes read: one precomputed grid, looked up on every toggle, and exact values off the grid.

:class:`PlaneModel` holds the grid (:mod:`ibwidget.plane._grid`) of some runs and appends each new epoch's slice
once; the bqplot figures (Trainer, RunView) and the PlaneView tab read the same arrays. A view on the grid (estimator,
target, sigma slot) is an array lookup. A view off the grid (a sigma between the grid's widths, a rule or an
estimator the grid does not hold: nHSIC, Rényi, a user's registered estimator) is computed by :class:`OnDemand` in
its own worker thread, never the UI or the training thread; until it arrives the figures show the nearest grid
slot (or keep the last plot).
"""

from __future__ import annotations

import atexit
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ibwidget.measure import estimators as _estimators
from ibwidget.measure import trajectories as _trajectories
from ibwidget.measure.trajectories import Snapshots, is_packed
from ibwidget.plane._grid import (
    BAND_PERMUTATIONS,
    BAND_Q,
    DEFAULT_RULES,
    DEFAULT_SIGMAS,
    Grid,
    GridBuilder,
    builder_grid,
)
from ibwidget.widget._applier import yield_to_training

_KEPT_RESULTS = 8  # exact off-grid views kept (the latest ones)
_FILL_BATCH = 4  # slots the filler computes in one pass (as fast per slot as the whole grid at once, measured)
#: kernel values (epochs x layers x m² per slot) one fill job computes at most, about a second of work: between
#: jobs the filler sees a close (a big probe's whole run at once took minutes: m = 4096 is 17 M values a kernel)
_FILL_VALUES = 100_000_000
_OPEN: weakref.WeakSet = weakref.WeakSet()  # models whose filler may run: stopped at interpreter exit


@atexit.register
def _close_open_models() -> None:
    """Stop every filler before the interpreter ends: a thread still inside torch then aborts the process."""
    for model in list(_OPEN):
        model.close(timeout=30.0)


def recorded(runs: Sequence) -> list:
    """Each run as recorded now, fixed: a computation on these never sees the training thread's next epoch."""
    return [run.snapshots() for run in runs]


def fast_builder(estimators, sigma: float, sigma_rule: str, live: bool) -> GridBuilder:
    """The grid of a Trainer (``live``) or RunView: the default widths and rules, and the fast ones of
    ``estimators`` (slow ones would stall each epoch), plus the first view's ``sigma`` and ``sigma_rule``; of
    estimators that take no width (binning), only that one width (the saturation gauge's: each width costs a pass
    over every kernel, m² values a layer and epoch). A live grid keeps X's statistics of the widths computed each
    epoch."""
    names = [estimators] if isinstance(estimators, str) else list(estimators or ())
    specs = [_estimators.get(n) for n in names]
    fast = [s for s in specs if is_packed(s) or s.needs == "activations"] or [_estimators.get("hsic")]
    sigmas, rules = (float(sigma),), (sigma_rule,)  # binning only: the widths serve the gauge alone, one is enough
    if any(s.uses_sigma for s in fast):
        sigmas, rules = (*DEFAULT_SIGMAS, *sigmas), DEFAULT_RULES + tuple(r for r in rules if r not in DEFAULT_RULES)
    return GridBuilder([s.name for s in fast], sigmas, sigma_rules=rules, keep_targets=live)


def _padded(array: np.ndarray, axis: int, size: int, fill: float | bool = np.nan) -> np.ndarray:
    """``array`` grown along ``axis`` to ``size``, the new entries ``fill`` (a view's missing epochs or layers: NaN
    values, or False in the filled mask)."""
    if array.shape[axis] >= size:
        return array
    shape = list(array.shape)
    shape[axis] = size - array.shape[axis]
    return np.concatenate([array, np.full(shape, fill, dtype=array.dtype)], axis=axis)


class PlaneModel:
    """The grid of ``runs`` on ``builder``'s axes, computed slot by slot, the viewed slots first.

    The viewed slots (:meth:`view`, one list per viewer: a figure's controls, a PlaneView's player) are computed for
    every recorded epoch before anything else, and for each new epoch as it arrives (:meth:`catch_up`); a filler
    thread computes the other slots behind them, nearest the viewed sigma first, and calls each listener
    (:meth:`listen`) as slots land. While ``busy()`` (a live training on these cores), only viewed slots are
    computed. ``lock`` guards reading the arrays whole.
    """

    def __init__(
        self,
        runs: Sequence,
        builder: GridBuilder,
        default: dict,
        on_ready: Callable[[], None] | None = None,
        busy: Callable[[], bool] | None = None,
    ):
        """Computes the viewed slot (the ``default`` view's) now, or, given ``on_ready``, in a background thread
        that calls it when that slot is there (until then :meth:`lookup` finds nothing); the filler does the rest."""
        self.runs = list(runs)
        self.builder = builder
        self.default = dict(default)
        self.lock = threading.RLock()
        self.ready = threading.Event()
        self.version = 0  # grows when the runs change (runs joined): the grid is new
        self.fills = 0  # grows when slots are filled in: values of epochs already sent change
        self.counts = [0] * len(self.runs)
        self.notes: dict[str, str] = {}
        self._busy = busy or (lambda: False)
        self._listeners: list[Callable[[], None]] = []
        self._views: dict[str, list[int]] = {}
        first = builder.nearest_slot(self.default.get("rule", "fixed"), float(self.default.get("sigma", 5.0)))
        self._views["default"] = [0 if first is None else first]
        self._cond = threading.Condition(self.lock)
        self._closed = False
        self._working: list[int] = []  # the slots the filler is computing
        self._filler = threading.Thread(target=self._fill_loop, name="ibwidget-grid-fill", daemon=True)
        _OPEN.add(self)
        self._builder_thread: threading.Thread | None = None
        if on_ready is None:
            self._build()
        else:
            self._builder_thread = threading.Thread(
                target=self._build, args=(on_ready,), name="ibwidget-grid", daemon=True
            )
            self._builder_thread.start()

    # ------------------------------------------------------------------------------------------ building

    def _build(self, on_ready: Callable[[], None] | None = None) -> None:
        if on_ready is not None:  # its own thread
            yield_to_training()
        with self.lock:
            self._recorded = recorded(self.runs)
            focus = self.focus()
            self.grid = builder_grid(self.builder, self._recorded, self.default, slots=focus)
            self.notes = {e["name"]: e["note"] for e in self.grid.meta["estimators"] if e["note"]}
            self.counts = [r.num_snapshots for r in self._recorded]
            self.filled = np.zeros(self.grid.saturation.shape[:3], dtype=bool)  # (runs, epochs, slots)
            self.filled[:, :, focus] = True
            self._filler.start()
            self.ready.set()
        if on_ready is not None:
            on_ready()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the filler thread after the slot it is computing; wait for it (it holds the runs until it ends)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in (self._builder_thread, self._filler):
            if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
                thread.join(timeout)

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the filler thread) after slots are filled in."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Wake the filler (e.g. training paused or ended: the slots not viewed can be computed now)."""
        with self._cond:
            self._cond.notify_all()

    def view(self, viewer: str, slots: Sequence[int]) -> None:
        """What ``viewer`` shows now: its slots are computed first, and for every new epoch (none: it is gone)."""
        slots = [int(k) for k in slots if 0 <= int(k) < len(self.builder.slots)]
        with self._cond:
            if self._views.get(viewer) != slots:
                self._views.pop("default", None)  # the first view's slot, until a viewer says what it shows
                if slots:
                    self._views[viewer] = slots
                else:  # the viewer is gone
                    self._views.pop(viewer, None)
                self._cond.notify_all()

    def focus(self) -> list[int]:
        """Every viewed slot, the latest viewer's first."""
        with self.lock:
            out: list[int] = []
            for slots in reversed(list(self._views.values())):
                out += [k for k in slots if k not in out]
            return out

    # ------------------------------------------------------------------------------------------ arrays

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
        """The grid's metadata for the snapshots its values hold, with ``slot_filled``: per slot, whether every
        recorded epoch of every run has its values (a view of a slot still to come says so)."""
        with self.lock:
            meta = self.builder.meta(self._recorded, self.notes, self.default)
            meta["slot_filled"] = self.slot_filled()
            return meta

    def whole_grid(self, timeout: float | None = None) -> Grid | None:
        """The grid of every slot of the runs as recorded now (waiting up to ``timeout`` seconds for the filler), or
        None if it is not whole: a slot the filler may not compute now (a training is busy), or runs that grew."""
        self.catch_up()
        self.wait_idle(timeout)
        with self.lock:
            grown = [r.num_snapshots for r in recorded(self.runs)] != self.counts
            if grown or not all(self.slot_filled()):
                return None
            meta = self.builder.meta(self._recorded, self.notes, self.default)
            return Grid(meta, self.values.copy(), self.saturation.copy())

    def slot_filled(self) -> list[bool]:
        """Per slot: every recorded epoch of every run computed."""
        with self.lock:
            done = np.ones(len(self.builder.slots), dtype=bool)
            for r, n in enumerate(self.counts):
                done &= self.filled[r, :n].all(axis=0)
            return [bool(v) for v in done]

    def _grow(self, counts: list[int]) -> None:
        """Pad the arrays (and the filled mask) to the longest run's epochs."""
        E = max(counts)
        self.grid = Grid(self.grid.meta, _padded(self.values, 1, E), _padded(self.saturation, 1, E))
        self.filled = _padded(self.filled, 1, E, fill=False)

    def _write(self, r: int, start: int, values: np.ndarray, sat: np.ndarray, slots: Sequence[int], slotless: bool):
        """Store computed values of run ``r`` from epoch ``start``: the blocks of ``slots``, and those of the
        estimators that use no sigma when ``slotless``."""
        stop, L = start + values.shape[0], values.shape[2]
        blocks = []
        for i, spec in enumerate(self.builder.specs):
            if spec.uses_sigma or slotless:
                blocks += self.builder.blocks(i, slots if spec.uses_sigma else [0])
        dest = self.values[r, start:stop]  # a view: one advanced index below keeps the axes in place
        dest[:, blocks, :L] = values[:, blocks]
        self.saturation[r, start:stop][:, list(slots), :L] = sat[:, list(slots)]
        self.filled[r, start:stop, list(slots)] = True

    def catch_up(self) -> bool:
        """Compute the viewed slots (and the slot-less estimators) of the snapshots recorded since the last call,
        run by run (once, whichever plane asks first); True if any. The filler does the other slots."""
        if not self.ready.is_set():
            return False
        with self.lock:
            runs = recorded(self.runs)
            counts = [r.num_snapshots for r in runs]
            if counts == self.counts:
                return False
            self._grow(counts)
            focus = self.focus()
            for r, (snap, have) in enumerate(zip(runs, self.counts, strict=True)):
                if snap.num_snapshots == have:
                    continue
                v, s, notes = self.builder.compute(snap, start=have, slots=focus)
                for k, text in notes.items():
                    self.notes.setdefault(k, text)
                self._write(r, have, v, s, focus, slotless=True)
            self._recorded, self.counts = runs, counts
            self._cond.notify_all()
            return True

    def add_runs(self, runs: Sequence) -> None:
        """Add ``runs`` to the grid (their viewed slots now, the rest by the filler; the others' values stay)."""
        if not runs:
            return
        self.ready.wait()
        with self.lock:
            focus = self.focus()
            new = builder_grid(self.builder, list(runs), self.default, slots=focus)
            values, sat = self.values, self.saturation
            E = max(values.shape[1], new.values.shape[1])
            L = max(values.shape[3], new.values.shape[3])
            values = np.concatenate([_padded(_padded(values, 1, E), 3, L), _padded(_padded(new.values, 1, E), 3, L)])
            sat = np.concatenate([_padded(_padded(sat, 1, E), 3, L), _padded(_padded(new.saturation, 1, E), 3, L)])
            filled = np.zeros((len(runs), E, len(self.builder.slots)), dtype=bool)
            filled[:, :, focus] = True
            self.filled = np.concatenate([_padded(self.filled, 1, E, fill=False), filled])
            for entry in new.meta["estimators"]:
                if entry["note"]:
                    self.notes.setdefault(entry["name"], entry["note"])
            self.runs = [*self.runs, *runs]
            self._recorded = recorded(self.runs)
            self.counts = [*self.counts, *(r.num_snapshots for r in self._recorded[-len(runs) :])]
            self.grid = Grid(self.builder.meta(self._recorded, self.notes, self.default), values, sat)
            self.version += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------------ the filler

    def _next_job(self) -> tuple[list[int], list[tuple[int, int, int]]] | None:
        """The slots to fill next and, per run, the epochs [start, stop) they lack; None if nothing may be done now.
        Viewed slots first (alone: they are waited for), then the slots nearest the first viewed one (log sigma), up
        to :data:`_FILL_BATCH` lacking the same epochs (one pass shares their unpacked distances); only viewed ones
        while busy."""
        focus = self.focus()
        rest: list[int] = []
        if not self._busy():
            anchor = focus[0] if focus else 0
            rest = sorted(
                (k for k in range(len(self.builder.slots)) if k not in focus), key=lambda k: self._distance(anchor, k)
            )
        job: tuple[list[int], list[tuple[int, int, int]]] | None = None
        for k in focus + rest:
            todo = []
            for r, n in enumerate(self.counts):
                missing = np.flatnonzero(~self.filled[r, :n, k])
                if missing.size:
                    snap = self._recorded[r]
                    per_epoch = _FILL_BATCH * max(1, len(snap.layer_names)) * snap.m**2
                    stop = min(int(missing[-1]) + 1, int(missing[0]) + max(1, _FILL_VALUES // per_epoch))
                    todo.append((r, int(missing[0]), stop))
            if not todo:
                continue
            if job is None:
                job = ([k], todo)
                if k in focus:
                    return job
            elif todo == job[1] and len(job[0]) < _FILL_BATCH:
                job[0].append(k)
            if job is not None and len(job[0]) == _FILL_BATCH:
                break
        return job

    def filling(self, viewed_only: bool = False) -> bool:
        """Whether the filler is computing slots or has some it may compute now (``viewed_only``: viewed ones)."""
        with self.lock:
            if not self.ready.is_set() or self._closed:
                return False
            job = self._next_job()
            if not viewed_only:
                return bool(self._working) or job is not None
            focus = self.focus()
            return any(k in focus for k in self._working) or (job is not None and job[0][0] in focus)

    def has_work(self) -> bool:
        """Whether slots are left that the filler may compute now (the one it computes aside)."""
        with self.lock:
            return self.ready.is_set() and not self._closed and self._next_job() is not None

    def wait_idle(self, timeout: float | None = None, viewed_only: bool = False) -> bool:
        """Block until the filler has nothing it may compute now (``viewed_only``: no viewed slot left to compute;
        else every slot, unless ``busy``); False on timeout."""
        if not self.ready.wait(timeout):
            return False
        with self._cond:
            return self._cond.wait_for(lambda: not self.filling(viewed_only), timeout)

    def _distance(self, a: int, b: int) -> float:
        (rule_a, _), (rule_b, _) = self.builder.slots[a], self.builder.slots[b]
        far = 0.0 if rule_a == rule_b else 100.0
        return far + abs(math.log(self.builder.slot_sigma(a) / self.builder.slot_sigma(b)))

    def _fill_loop(self) -> None:
        yield_to_training()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._next_job() is not None)
                if self._closed:
                    return
                slots, todo = self._next_job()  # type: ignore[misc]
                snaps = list(self._recorded)
                self._working = list(slots)
            try:
                computed = [
                    (r, start, self.builder.compute(snaps[r], start, stop, slots=slots, slotless=False))
                    for r, start, stop in todo
                ]
            except Exception as exc:  # noqa: BLE001 - those slots stay NaN, marked done and noted; the filler goes on
                computed = []
                failure = f"σ slots {slots} could not be computed: {type(exc).__name__}: {exc}"
            else:
                failure = ""
            with self.lock:
                for r, start, (v, s, notes) in computed:
                    for key, text in notes.items():
                        self.notes.setdefault(key, text)
                    self._write(r, start, v, s, slots, slotless=False)
                if failure:
                    for spec in self.builder.specs:
                        if spec.uses_sigma:
                            self.notes.setdefault(spec.name, failure)
                    for r, start, stop in todo:
                        self.filled[r, start:stop, slots] = True
                self.fills += 1
            for listener in list(self._listeners):  # before the filler counts as idle: a waiter sees their work
                listener()
            with self._cond:
                self._working = []
                self._cond.notify_all()

    # ------------------------------------------------------------------------------------------ views

    def slot(self, rule: str, sigma: float) -> tuple[int, bool] | None:
        """The grid slot nearest (``rule``, ``sigma``) and whether it is that view exactly; None if the grid lacks
        the rule."""
        if rule not in self.builder.rules or not self.ready.is_set():
            return None
        k = self.builder.nearest_slot(rule, sigma)
        if k is None:
            return None
        width = self.builder.slots[k][1]
        return k, width is None or math.isclose(width, sigma, rel_tol=1e-9)

    def lookup(self, estimator: str, sigma: float, rule: str, target: str) -> Lookup | None:
        """Per run, the grid's (epochs, layers, 2) values nearest this view; None if the grid holds neither the
        estimator, the target nor the rule, or nothing of it is computed yet."""
        names = [s.name for s in self.builder.specs]
        if estimator not in names or target not in self.builder.targets or not self.ready.is_set():
            return None
        uses_sigma = self.builder.specs[names.index(estimator)].uses_sigma
        if uses_sigma:
            found = self.slot(rule, sigma)
            if found is None:
                return None
            k, on_grid = found
        else:
            k, on_grid = 0, True
        with self.lock:
            filled = self.slot_filled()
            pending = uses_sigma and not filled[k]
            if pending:  # still to be computed: the nearest computed slot of the rule meanwhile
                done = [j for j, ok in enumerate(filled) if ok and self.builder.slots[j][0] == rule]
                if not done:
                    return None
                shown = min(done, key=lambda j: self._distance(k, j))
            else:
                shown = k
            block = self.grid.values[:, :, self.grid.block_index(estimator, shown, target)]
            counts = list(self.counts)
        out = [block[r, : counts[r], : len(run.layer_names)] for r, run in enumerate(self.runs)]
        return Lookup(out, on_grid and not pending, pending, self.builder.slot_sigma(shown))


@dataclass
class Lookup:
    """A view looked up in the grid: per run (epochs, layers, 2) values; ``exact``: they are that view's;
    ``pending``: the view's slot is still being computed (these are the nearest computed slot's, of width
    ``sigma``)."""

    values: list
    exact: bool
    pending: bool
    sigma: float


class OnDemand:
    """A worker thread computing exact views off the grid, epochs appended as they come; the latest request wins.

    :meth:`get` never blocks on a computation: it returns what is ready, or queues the view and returns None;
    ``on_ready`` is called (from the worker) when a result lands.
    """

    def __init__(self, on_ready: Callable[[], None], compute: Callable[[tuple, Snapshots], np.ndarray] | None = None):
        """``compute(params, snapshots)``: the values of ``params`` for those snapshots, (epochs, layers, 2); each
        epoch's must depend on its own snapshot only (new epochs are computed alone and appended). Default: the
        trajectories."""
        self._on_ready = on_ready
        self._of = compute or _trajectories_of
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
            result: list | BaseException = self._compute(params, recorded(runs), None, self._of)
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
                result = self._compute(params, snaps, known if isinstance(known, list) else None, self._of)
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
    def _compute(params: tuple, snaps: list, known: list | None, of: Callable) -> list[np.ndarray]:
        out = []
        for r, snap in enumerate(snaps):
            have = 0 if known is None else min(len(known[r]), snap.num_snapshots)
            head = known[r][:have] if have else np.zeros((0, len(snap.layer_names), 2))
            if snap.num_snapshots > have:
                new = of(params, snap.since(have))
                head = np.concatenate([head, new]) if have else new
            out.append(head)
        return out


def _trajectories_of(params: tuple, snap: Snapshots) -> np.ndarray:
    estimator, sigma, rule, target = params
    return _trajectories.trajectories(snap, estimator, sigma=sigma, target=target, sigma_rule=rule)


def band_of(params: tuple, snap: Snapshots) -> np.ndarray:
    """The chance floor of ``params`` (the views' quantile and permutations, seeded: an epoch's is the same computed
    alone or with the others)."""
    estimator, sigma, rule, target = params
    return _trajectories.null_band(
        snap,
        BAND_Q,
        estimator=estimator,
        sigma=sigma,
        target=target,
        sigma_rule=rule,
        permutations=BAND_PERMUTATIONS,
    )
