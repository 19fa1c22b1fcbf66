"""The precomputed information-plane grid behind the kernel-free view (:class:`ibwidget.PlaneView`, ``to_html``).

Every estimator x sigma slot x target x layer x epoch x 2 coordinates, computed once in Python so that the browser
can switch between them with no kernel. A *sigma slot* is a (rule, sigma) pair: each value of a log-spaced sigma
grid under the ``fixed`` rule, then one slot per median rule (whose sigma comes from the data). An estimator that
uses no sigma (binning) has one slot. *Blocks* are the (estimator, slot, target) combinations, in this order::

    block = estimator.base + (slot if estimator uses sigma else 0) * len(targets) + target

and the values are one float32 array of shape ``(runs, epochs, blocks, layers, 2)`` ([..., 0] = vs X, 1 = vs Y),
epoch-major so that a live run appends an epoch's slice at the end. Runs with fewer epochs or layers are padded
with NaN; so are layers an estimator cannot read (binning needs stored activations). ``saturation`` holds the mean
off-diagonal Gaussian kernel value per (run, epoch, slot, layer), for the gauge.

Cost: the default estimators (:func:`default_estimators`: HSIC, CKA and KDE variants, binning) share one pass
(:func:`ibwidget.measure.trajectories.packed_slots`): each window of stored distances is unpacked once for every
slot, and each slot evaluates one kernel per matrix for all its estimators and targets; about 6 s for 21 snapshots x
5 layers on a probe of 512 on two CPU cores (the cost grows with probe^2 x epochs x layers x slots). ``nhsic`` and
``renyi_mi`` (a solve or an eigendecomposition per matrix) are computed only when listed in ``estimators=``. Live
runs append only their new epochs (``GridBuilder.compute(run, start)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ibwidget._vocabulary import (
    GRID_FORMAT,
    GRID_VERSION,
    KERNELS,
    LINE_STYLES,
    NAN_CODE,
    PALETTE,
    SATURATION_RANGE,
    SVG_DASHES,
    TARGET_SYMBOLS,
    TARGETS,
)
from ibwidget.measure import estimators as _estimators
from ibwidget.measure import kernels as _kernels
from ibwidget.measure import trajectories as _trajectories
from ibwidget.measure._validate import resolve_name, unknown_name
from ibwidget.measure.trajectories import is_packed
from ibwidget.record.run import Run

__all__ = ["Grid", "GridBuilder", "plane_grid", "default_estimators", "DEFAULT_SIGMAS", "DEFAULT_RULES", "TARGETS"]

#: 25 log-spaced widths centred on PyGlow's sigma = 5: 5 x 10^(-2 ... 2), 6 steps per decade.
DEFAULT_SIGMAS = tuple(float(f"{5.0 * 10.0**k:.6g}") for k in np.linspace(-2.0, 2.0, 25))
DEFAULT_RULES = ("fixed", "median_d2", "median_d")
_KEPT_WIDTHS = 8


def default_estimators() -> list[str]:
    """The registered estimators a grid holds by default: every fast one (packed HSIC/CKA/KDE, and binning)."""
    specs = [_estimators.get(n) for n in _estimators.names()]
    return [s.name for s in specs if is_packed(s) or s.needs == "activations"]


def _finite_or_none(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _history(run) -> dict:
    """The run's history as JSON: lists of numbers per key (NaN -> null); keys holding anything else are left out."""
    hist = {k: list(v) for k, v in dict(run.history).items()}
    out = {}
    for k, values in hist.items():
        try:
            out[str(k)] = [_finite_or_none(v) for v in values]
        except (TypeError, ValueError):
            continue
    return out


def _available_layers(run, spec) -> list[bool]:
    if spec.needs != "activations":
        return [True] * len(run.layer_names)
    return [name in run.activations for name in run.layer_names]


@dataclass
class Grid:
    """A computed grid: ``meta`` (JSON-able), ``values`` (runs, epochs, blocks, layers, 2) and ``saturation``."""

    meta: dict
    values: np.ndarray  # float32
    saturation: np.ndarray  # float32 (runs, epochs, slots, layers)

    def block_index(self, estimator: str, slot: int, target: str) -> int:
        """The block of (estimator name, slot index, target name); an estimator without sigma ignores the slot.

        The front-end's ``blockIndex(meta, estimator, slot, target)`` (``js/planeview.js``) is the same function.
        """
        est = next((e for e in self.meta["estimators"] if e["name"] == estimator), None)
        if est is None:
            raise unknown_name("estimator in this grid", estimator, [e["name"] for e in self.meta["estimators"]])
        if target not in self.meta["targets"]:
            raise unknown_name("target in this grid", target, self.meta["targets"])
        return (
            est["base"]
            + (slot if est["slots"] > 1 else 0) * len(self.meta["targets"])
            + self.meta["targets"].index(target)
        )

    def slot_index(self, rule: str, sigma: float | None = None) -> int:
        """The slot of a median rule (``sigma`` ignored), or of the grid sigma nearest ``sigma`` (log scale) under
        a scaling rule.

        The front-end's ``slotIndex(meta, rule, sigma)`` (``js/planeview.js``) is the same function.
        """
        pairs = [(s["rule"], s["sigma"]) for s in self.meta["slots"]]
        if rule not in {r for r, _ in pairs}:
            raise unknown_name("sigma rule in this grid", rule, self.meta["rules"])
        if not _kernels.sigma_rule(rule).from_data and not _positive(sigma):
            raise ValueError(
                f"the {rule!r} rule needs a positive sigma, got {sigma!r}; e.g. slot_index({rule!r}, 5.0)."
            )
        found = _nearest_slot(pairs, rule, sigma)
        assert found is not None  # the rule is in the grid
        return found

    def block(self, estimator: str, slot: int, target: str) -> np.ndarray:
        """Values of one block: (runs, epochs, layers, 2)."""
        return self.values[:, :, self.block_index(estimator, slot, target)]


class GridBuilder:
    """The grid's axes (estimators, sigma slots, targets) and the computation of any run's epochs on them."""

    def __init__(
        self,
        estimators: Sequence[str] | None = None,
        sigmas: Sequence[float] | None = None,
        targets: Sequence[str] = TARGETS,
        sigma_rules: Sequence[str] = DEFAULT_RULES,
        kernel: str = "gaussian",
        keep_targets: bool = False,
    ):
        self.keep_targets = keep_targets  # keep X's kernel statistics of the widths viewed live (2 MB each at m=512)
        self._targets: dict = {}
        names = default_estimators() if estimators is None else list(estimators)
        if isinstance(estimators, str):
            names = [estimators]
        if not names:
            raise ValueError("a grid needs at least one estimator; pass e.g. estimators=['hsic', 'cka'].")
        self.specs = [_estimators.get(n) for n in dict.fromkeys(names)]
        sigmas = DEFAULT_SIGMAS if sigmas is None else tuple(float(s) for s in sigmas)
        bad = [s for s in sigmas if not (math.isfinite(s) and s > 0)]
        if bad or not sigmas:
            raise ValueError(f"sigmas must be positive finite numbers, got {list(sigmas)!r}; e.g. sigmas=[1, 5, 25].")
        self.sigmas = tuple(sorted(set(sigmas)))
        targets = [targets] if isinstance(targets, str) else targets
        targets = list(dict.fromkeys(resolve_name("target", t, TARGETS) for t in targets))
        if not targets:
            raise ValueError("a grid needs at least one target: 'labels' and/or 'output'.")
        self.targets = tuple(targets)
        rules = [sigma_rules] if isinstance(sigma_rules, str) else sigma_rules
        rules = list(dict.fromkeys(_kernels.sigma_rule(r).name for r in rules))
        if not rules:
            raise ValueError("a grid needs at least one sigma rule, e.g. sigma_rules=['fixed'].")
        self.rules = tuple(rules)
        self.kernel = resolve_name("kernel", kernel, KERNELS)
        self.slots: list[tuple[str, float | None]] = []
        for r in self.rules:
            if not _kernels.sigma_rule(r).from_data:
                self.slots += [(r, s) for s in self.sigmas]
            else:
                self.slots.append((r, None))
        self.base, base = [], 0
        for spec in self.specs:
            self.base.append(base)
            base += self._n_slots(spec) * len(self.targets)
        self.n_blocks = base

    def _n_slots(self, spec) -> int:
        return len(self.slots) if spec.uses_sigma else 1

    def _kept_targets(self, widths: int) -> dict | None:
        """The statistics kept between calls (``keep_targets``): for the few widths a live view computes each
        epoch, at most :data:`_KEPT_WIDTHS` of them (X's kernel statistics are m² floats a width); None for a pass
        over many widths, which computes its own once."""
        if not self.keep_targets or widths > 2:
            return None
        if len(self._targets) > _KEPT_WIDTHS:
            self._targets.clear()
        return self._targets

    def slot_sigma(self, k: int) -> float:
        """The sigma of slot ``k`` as the kernels take it (a median rule's slot ignores it: 1.0)."""
        sigma = self.slots[k][1]
        return 1.0 if sigma is None else sigma

    def nearest_slot(self, rule: str, sigma: float) -> int | None:
        """The slot of a median rule, or the grid sigma nearest ``sigma`` (log scale) under a scaling rule; None if
        the grid lacks the rule. :meth:`Grid.slot_index` (and ``slotIndex`` in ``js/planeview.js``) agree."""
        return _nearest_slot(self.slots, rule, sigma if _positive(sigma) else None)

    def blocks(self, i: int, slots: Sequence[int]) -> list[int]:
        """The blocks of estimator ``i`` (its index in ``specs``) at ``slots``, slot-major, one per target (an
        estimator that uses no sigma has one slot: pass ``[0]``). :meth:`Grid.block_index` agrees."""
        T = len(self.targets)
        return [self.base[i] + k * T + t for k in slots for t in range(T)]

    # ------------------------------------------------------------------------------------------ metadata

    def meta(self, runs: Sequence, notes: dict | None = None, default: dict | None = None) -> dict:
        """JSON-able description of the grid for ``runs`` (names, layers, epochs, history, axes).

        It also carries what the front-end draws with, from :mod:`ibwidget._vocabulary`: the format name and
        version (``js/planeview.js`` refuses others), the palette, the dash pattern of each run, the NaN code of
        quantised values, the saturation gauge's informative range, the sigma rules' formulas and the targets'
        axis symbols. ``default``: the first selection shown (``estimator`` name, ``sigma``, ``rule``, ``target``).
        """
        default = dict(default or {})
        names = [s.name for s in self.specs]
        first = default.get("estimator")
        rule = default.get("rule", "fixed")
        L = max(len(r.layer_names) for r in runs)
        estimators = []
        for spec, base in zip(self.specs, self.base, strict=True):
            available = [_available_layers(r, spec) + [False] * (L - len(r.layer_names)) for r in runs]
            estimators.append(
                {
                    "name": spec.name,
                    "label_x": spec.axis_label("T", "X"),
                    "label_y": spec.axis_label("T", "Y"),
                    "label_yhat": spec.axis_label("T", "Ŷ"),
                    "label_targets": {t: spec.axis_label("T", TARGET_SYMBOLS[t]) for t in self.targets},
                    "units": spec.units,
                    "description": spec.description,
                    "uses_sigma": bool(spec.uses_sigma),
                    "uses_kernel": spec.needs != "activations",
                    "slots": self._n_slots(spec),
                    "base": base,
                    "available": available,
                    "note": (notes or {}).get(spec.name, ""),
                }
            )
        return {
            "format": GRID_FORMAT,
            "version": GRID_VERSION,
            "encoding": "f32",
            "palette": list(PALETTE),
            "dashes": [SVG_DASHES[style] for style in LINE_STYLES],
            "nan_code": NAN_CODE,
            "saturation_range": list(SATURATION_RANGE),
            "sigma_rules": {r: _kernels.SIGMA_RULES[r] for r in self.rules},
            "target_symbols": {t: TARGET_SYMBOLS[t] for t in self.targets},
            "n_runs": len(runs),
            "n_epochs": max((r.num_snapshots for r in runs), default=0),
            "n_blocks": self.n_blocks,
            "n_layers": L,
            "estimators": estimators,
            "slots": [{"rule": r, "sigma": s} for r, s in self.slots],
            "rules": list(self.rules),
            "sigmas": list(self.sigmas),
            "targets": list(self.targets),
            "kernel": self.kernel,
            "default": {
                "estimator": names.index(first) if first in names else 0,
                "rule": rule if rule in self.rules else self.rules[0],
                "sigma": float(default.get("sigma", 5.0)),
                "target": default.get("target", "labels") if default.get("target") in self.targets else self.targets[0],
            },
            "runs": [
                {
                    "name": r.name,
                    "layer_names": list(r.layer_names),
                    "layer_dims": list(r.layer_dims),
                    "epochs": [int(e) for e in r.epochs],
                    "history": _history(r),
                    "probe": int(r.m),
                }
                for r in runs
            ],
        }

    # ------------------------------------------------------------------------------------------ values

    def compute(
        self, run, start: int = 0, stop: int | None = None, slots: Sequence[int] | None = None, slotless: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Values (E', blocks, layers, 2) and saturation (E', slots, layers) of ``run``'s snapshots [start, stop).

        ``run``: a :class:`ibwidget.Run` or its :meth:`~ibwidget.Run.snapshots`; ``slots``: the slot indices to
        compute (default all; the others stay NaN); ``slotless``: also the estimators that use no sigma (binning).
        Also returns notes: estimator name -> why some of its blocks are NaN.
        """
        snap = run.snapshots()
        sub = snap.window(start, snap.num_snapshots if stop is None else stop)
        wanted = list(range(len(self.slots))) if slots is None else sorted(set(slots))
        E, L = sub.num_snapshots, len(sub.layer_names)
        values = np.full((E, self.n_blocks, L, 2), np.nan, dtype=np.float32)
        sat = np.full((E, len(self.slots), L), np.nan, dtype=np.float32)
        notes: dict[str, str] = {}
        if E == 0:
            return values, sat, notes
        packed = [(i, s) for i, s in enumerate(self.specs) if is_packed(s)]
        others = [(i, s) for i, s in enumerate(self.specs) if not is_packed(s)]
        widths = [(self.slots[k][0], self.slot_sigma(k)) for k in wanted]
        results, sats = _trajectories.packed_slots(
            sub,
            [s for _, s in packed],
            widths,
            self.kernel,
            self.targets,
            cache=self._kept_targets(len(wanted)),
        )
        for k, result, sat_k in zip(wanted, results, sats, strict=True):
            sat[:, k, :] = sat_k.cpu().numpy()
            for i, spec in packed:
                res = result[spec.name].cpu().numpy()
                for t, b in enumerate(self.blocks(i, [k])):
                    values[:, b, :, 0] = res[..., 0]
                    values[:, b, :, 1] = res[..., 1 + t]
        for i, spec in others:
            layers = [n for n, ok in zip(sub.layer_names, _available_layers(sub, spec), strict=True) if ok]
            if not layers:
                notes[spec.name] = f"{spec.name} needs stored activations; this run kept none (all layers are wide)."
                continue
            index = [sub.layer_names.index(n) for n in layers]
            if len(layers) < L:
                notes[spec.name] = f"{spec.name} reads activations, kept only for layers narrower than the probe."
            todo = wanted if spec.uses_sigma else ([0] if slotless else [])
            for k in todo:
                for target, b in zip(self.targets, self.blocks(i, [k]), strict=True):
                    try:
                        traj = _trajectories.trajectories(
                            sub,
                            spec.name,
                            sigma=self.slot_sigma(k),
                            target=target,
                            sigma_rule=self.slots[k][0] if spec.uses_sigma else "fixed",
                            kernel=self.kernel,
                            layers=layers,
                        )
                    except Exception as exc:  # noqa: BLE001 - e.g. a singular solve: that block stays NaN
                        notes.setdefault(spec.name, f"{spec.name}: {type(exc).__name__}: {exc}")
                        continue
                    values[:, b, index, :] = traj
        return values, sat, notes


def plane_grid(
    runs,
    estimators: Sequence[str] | None = None,
    sigmas: Sequence[float] | None = None,
    targets: Sequence[str] = TARGETS,
    sigma_rules: Sequence[str] = DEFAULT_RULES,
    kernel: str = "gaussian",
) -> Grid:
    """The grid of one run or several (padded with NaN to the longest and widest).

    ``estimators``: names (default :func:`default_estimators`); ``sigmas``: the fixed widths (default
    :data:`DEFAULT_SIGMAS`, 25 log-spaced values); ``sigma_rules``: ``fixed`` (and ``sqrt_d``) take each sigma, the
    median rules one slot each; ``kernel`` applies to T and X as in :meth:`ibwidget.Run.trajectories`.
    """
    runs = _as_runs(runs)
    builder = GridBuilder(estimators, sigmas, targets, sigma_rules, kernel)
    return builder_grid(builder, runs)


def builder_grid(
    builder: GridBuilder, runs: list, default: dict | None = None, slots: Sequence[int] | None = None
) -> Grid:
    """Compute ``builder``'s grid for ``runs`` (one after the other, padded with NaN), as recorded now; only the
    slot indices ``slots`` when given (the others NaN)."""
    runs = [r.snapshots() for r in runs]  # runs still training keep growing: compute on what they hold now
    E = max(r.num_snapshots for r in runs)
    L = max(len(r.layer_names) for r in runs)
    values = np.full((len(runs), E, builder.n_blocks, L, 2), np.nan, dtype=np.float32)
    sat = np.full((len(runs), E, len(builder.slots), L), np.nan, dtype=np.float32)
    notes: dict[str, str] = {}
    for r, run in enumerate(runs):
        v, s, n = builder.compute(run, slots=slots)
        values[r, : v.shape[0], :, : v.shape[2]] = v
        sat[r, : s.shape[0], :, : s.shape[2]] = s
        for k, text in n.items():
            notes.setdefault(k, text)
    return Grid(builder.meta(runs, notes, default), values, sat)


BAND_Q = 0.95  #: the quantile of the chance floor the views draw (see :meth:`ibwidget.Run.null_band`)
BAND_PERMUTATIONS = 100  #: permutations of a chance floor asked for from a view
#: permutations of the chance floor a one-file report carries for its default view (each costs about one
#: run.trajectories of every run: a report's time budget allows a coarse floor, its payload says how coarse)
REPORT_BAND_PERMUTATIONS = 20


def band_payload(
    runs: Sequence, meta: dict, estimator: str, slot: int, target: str, permutations: int = BAND_PERMUTATIONS
) -> dict:
    """The chance floor of one selection of a grid (``meta``'s axes) for ``runs``, JSON-able: the selection, ``q``,
    ``permutations`` and ``values`` (runs, epochs, layers, 2) as nested lists, null where there is no value (padded
    like the grid). The front-end draws it when its selection is this one."""
    rule, sigma = meta["slots"][slot]["rule"], meta["slots"][slot]["sigma"]
    E, L = meta["n_epochs"], meta["n_layers"]
    values = np.full((len(runs), E, L, 2), np.nan)
    for r, run in enumerate(runs):
        band = run.null_band(
            estimator,
            sigma=5.0 if sigma is None else float(sigma),
            sigma_rule=rule,
            target=target,
            q=BAND_Q,
            permutations=permutations,
            layers=None,
            kernel=meta["kernel"],
        )
        values[r, : band.shape[0], : band.shape[1]] = band
    return {
        "estimator": estimator,
        "slot": int(slot),
        "target": target,
        "q": BAND_Q,
        "permutations": int(permutations),
        "values": _json_floats(values.tolist()),
    }


def _json_floats(nested):
    """Nested lists of floats with null for NaN and infinities."""
    return [_json_floats(v) for v in nested] if isinstance(nested, list) else _finite_or_none(nested)


def cka_payload(runs: Sequence) -> dict:
    """Linear CKA between the probe's input, every tracked layer and the output, at every recorded epoch of each
    run (:meth:`ibwidget.Run.cka_matrix` with ``sigma=None, sigma_rule=None``), JSON-able: per run its ``names``
    and ``values`` (epochs, n, n), null where undefined. The front-end's heatmap follows the epoch player."""
    out = []
    for run in _as_runs(runs):
        names = run.cka_names(run.epochs[0]) if run.epochs else []
        values = np.stack([run.cka_matrix(e, sigma=None, sigma_rule=None) for e in run.epochs]) if run.epochs else []
        out.append({"names": names, "values": _json_floats(np.asarray(values, dtype=float).tolist())})
    return {"kind": "linear", "runs": out}


def checked_band_request(meta: dict, request: dict) -> tuple[str, int, str]:
    """(estimator, slot, target) of a front-end's request for a chance floor, checked against the grid's axes (a
    ``ValueError`` names what is not in it)."""
    estimator, slot, target = request.get("estimator"), request.get("slot"), request.get("target")
    if estimator not in [e["name"] for e in meta["estimators"]]:
        raise unknown_name("estimator in this grid", str(estimator), [e["name"] for e in meta["estimators"]])
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < len(meta["slots"]):
        raise ValueError(f"slot must be a whole number below {len(meta['slots'])}, got {slot!r}.")
    if target not in meta["targets"]:
        raise unknown_name("target in this grid", str(target), meta["targets"])
    return str(estimator), int(slot), str(target)


def default_band(runs: Sequence, grid: Grid, permutations: int = BAND_PERMUTATIONS) -> dict:
    """:func:`band_payload` of the view a grid opens on (its ``meta["default"]``)."""
    meta = grid.meta
    default = meta["default"]
    est = meta["estimators"][default["estimator"]]
    slot = grid.slot_index(default["rule"], default["sigma"]) if est["slots"] > 1 else 0
    return band_payload(_as_runs(runs), meta, est["name"], slot, default["target"], permutations)


def _positive(sigma) -> bool:
    return sigma is not None and math.isfinite(float(sigma)) and float(sigma) > 0


def _nearest_slot(slots: Sequence[tuple[str, float | None]], rule: str, sigma: float | None) -> int | None:
    """Index in ``slots`` ((rule, sigma) pairs; sigma None for a median rule) of ``rule``'s slot nearest ``sigma``
    on a log scale, or its first slot (a median rule's only one, or ``sigma`` None); None if no slot has ``rule``."""
    of_rule = [k for k, (r, _) in enumerate(slots) if r == rule]
    if not of_rule:
        return None
    if slots[of_rule[0]][1] is None or sigma is None:
        return of_rule[0]
    return min(of_rule, key=lambda k: abs(math.log(float(slots[k][1]) / float(sigma))))  # type: ignore[arg-type]


def _as_runs(runs) -> list:
    runs = [runs] if isinstance(runs, Run) else list(runs)
    if not runs or not all(isinstance(r, Run) for r in runs):
        raise TypeError("pass an ibwidget.Run or a list of runs (e.g. [trainer.run, ib.load_run('a.ibrun')]).")
    return runs
