"""Information-plane coordinates computed from a run's snapshots: trajectories, kernel saturation and grid slots.

Pure functions of a :class:`Snapshots` (what :meth:`ibwidget.Run.snapshots` returns): ``Run.trajectories`` and
``Run.saturation`` call them, and so does the precomputed grid (:mod:`ibwidget.plane`), so both compute every value
the same way. Estimators registered with a packed form (HSIC, CKA, the KDE bounds) are evaluated from the stored
triangles of squared distances in one shared pass (:mod:`ibwidget.measure._packed`), any other registered estimator
from float64 kernels unpacked a few matrices at a time, binning from stored activations.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ibwidget._vocabulary import KERNELS, TARGETS
from ibwidget.measure import _packed
from ibwidget.measure import estimators as _estimators
from ibwidget.measure import kernels as _kernels
from ibwidget.measure._packed import Target, unpack
from ibwidget.measure._validate import resolve_name, unknown_name

__all__ = [
    "Snapshots",
    "trajectories",
    "saturation",
    "layer_sigmas",
    "x_kernel",
    "target_kernel",
    "is_packed",
    "packed_estimates",
    "null_samples",
    "null_band",
    "cka_matrix",
    "cka_representations",
]

_CHUNK = 32  # matrices unpacked at once on the generic path


@dataclass(frozen=True, eq=False)
class Snapshots:
    """A run's snapshots as recorded at one moment: read-only, never growing (epoch 0 = before training).

    ``stored_dist`` (E, S, P) float32: per epoch, for the S layers whose distances are stored, the packed upper
    triangle of the squared-distance matrix of the probe's m samples (P = m(m-1)/2); ``stored_norms`` (E, S, m):
    their squared norms (together, the Gram matrix). ``derived_layers``: the indices of the other layers, narrow
    ones, which keep only their activations (m d floats, not m²/2): their distances are computed from them
    when needed (:meth:`distances`; the ``dist`` and ``norms`` properties hold every layer). ``outputs`` (E, m, C):
    the model's raw output; ``activations``: layer name -> (E, m, d) for the layers that kept them; ``x_dist`` (P,)
    and ``x_norms`` (m,): the same for the probe inputs ``probe_x``; ``labels`` (m,). The tensors share the run's
    storage: do not modify them.
    """

    name: str
    layer_names: tuple[str, ...]
    layer_dims: tuple[int, ...]
    epochs: tuple[int, ...]
    stored_dist: torch.Tensor
    stored_norms: torch.Tensor
    outputs: torch.Tensor
    activations: Mapping[str, torch.Tensor]
    probe_x: torch.Tensor
    x_dist: torch.Tensor
    x_norms: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    output_is_probabilities: bool = False
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    derived_layers: tuple[int, ...] = ()
    _memo: dict = field(default_factory=dict, init=False, repr=False)  # values derived once (median sigmas)

    def __post_init__(self):
        object.__setattr__(self, "activations", MappingProxyType(dict(self.activations)))
        object.__setattr__(self, "history", MappingProxyType({k: tuple(v) for k, v in dict(self.history).items()}))
        object.__setattr__(self, "derived_layers", tuple(int(i) for i in self.derived_layers))
        missing = [self.layer_names[i] for i in self.derived_layers if self.layer_names[i] not in self.activations]
        if missing:
            raise ValueError(f"the layers {missing} keep no distances, so they need their activations.")

    @property
    def m(self) -> int:
        """Probe size."""
        return int(self.labels.shape[0])

    @property
    def input_dim(self) -> int:
        """Features per probe input."""
        return int(self.probe_x[0].numel())

    @property
    def num_snapshots(self) -> int:
        """Snapshots held, E."""
        return len(self.epochs)

    @property
    def device(self) -> torch.device:
        """Where the tensors live (the run's device)."""
        return self.probe_x.device

    @property
    def stored_layers(self) -> tuple[int, ...]:
        """Indices of the layers whose distances are stored (the others are :attr:`derived_layers`)."""
        return tuple(i for i in range(len(self.layer_names)) if i not in self.derived_layers)

    @property
    def dist(self) -> torch.Tensor:
        """(E, L, P) packed squared distances of every layer (a derived layer's computed now; see :meth:`distances`)."""
        return self.distances()[0]

    @property
    def norms(self) -> torch.Tensor:
        """(E, L, m) squared norms of every layer (see :meth:`distances`)."""
        return self.distances()[1]

    def distances(self, layers: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed squared distances (E, L', P) and squared norms (E, L', m) of the layer indices ``layers`` (default
        all): stored layers as stored (no copy when all of them are asked, in order), derived ones computed from
        their activations (:func:`~ibwidget.measure.kernels.pack_activations`, float32: what storing them
        would have kept, to float32 rounding). Call it on a :meth:`window` to bound the memory of a long run."""
        groups = self.distance_groups(layers)
        if len(groups) == 1 and groups[0][0] == list(range(len(groups[0][0]))):
            return groups[0][1], groups[0][2]
        n = sum(len(cols) for cols, _, _ in groups)
        dist = torch.empty(self.num_snapshots, n, self.m * (self.m - 1) // 2, device=self.device)
        norms = torch.empty(self.num_snapshots, n, self.m, device=self.device)
        for cols, d, q in groups:
            dist[:, cols], norms[:, cols] = d, q
        return dist, norms

    def distance_groups(
        self, layers: Sequence[int] | None = None
    ) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """:meth:`distances` as groups, without assembling them: (positions in ``layers``, packed distances (E, n, P),
        norms (E, n, m)) for the stored layers (a view of the store when they are all asked, in order), then for the
        derived ones (computed)."""
        index = list(range(len(self.layer_names))) if layers is None else [int(i) for i in layers]
        stored = [(k, self.stored_layers.index(i)) for k, i in enumerate(index) if i not in self.derived_layers]
        derived = [(k, i) for k, i in enumerate(index) if i in self.derived_layers]
        groups = []
        if stored:
            rows = [row for _, row in stored]
            whole = rows == list(range(self.stored_dist.shape[1]))
            d, q = (
                (self.stored_dist, self.stored_norms)
                if whole
                else (self.stored_dist[:, rows], self.stored_norms[:, rows])
            )
            groups.append(([k for k, _ in stored], d, q))
        if derived:
            parts = [_kernels.pack_activations(self.activations[self.layer_names[i]]) for _, i in derived]
            groups.append(
                ([k for k, _ in derived], torch.stack([d for d, _ in parts], 1), torch.stack([q for _, q in parts], 1))
            )
        return groups

    def snapshots(self) -> Snapshots:
        """Itself: a ``Snapshots`` is already fixed (so a run or its snapshots can be passed alike)."""
        return self

    def since(self, start: int) -> Snapshots:
        """The snapshots from index ``start`` on (``start=E``: none); the history stays whole."""
        return self.window(start, self.num_snapshots)

    def window(self, start: int, stop: int) -> Snapshots:
        """The snapshots of indices [start, stop); the history stays whole."""
        if start == 0 and stop >= self.num_snapshots:
            return self
        return replace(
            self,
            epochs=self.epochs[start:stop],
            stored_dist=self.stored_dist[start:stop],
            stored_norms=self.stored_norms[start:stop],
            outputs=self.outputs[start:stop],
            activations={k: a[start:stop] for k, a in self.activations.items()},
        )

    def windows(self, per_epoch: int) -> list[tuple[int, int]]:
        """[start, stop) ranges of epochs that each hold about :data:`_packed.CHUNK_ELEMS` values, ``per_epoch``
        values an epoch (at least one epoch a window)."""
        step = max(1, _packed.CHUNK_ELEMS // max(1, per_epoch))
        return [(e0, min(self.num_snapshots, e0 + step)) for e0 in range(0, self.num_snapshots, step)]

    def memoised(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value derived once from these fixed snapshots (e.g. a median sigma): ``compute()`` on first use."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def _require_snapshot(snap: Snapshots) -> None:
    if snap.num_snapshots == 0:
        raise ValueError("this run has no snapshot yet; train at least until epoch 0 is recorded.")


def _layer_index(snap: Snapshots, layers: Sequence[str] | None) -> list[int]:
    if layers is None:
        return list(range(len(snap.layer_names)))
    unknown = [n for n in layers if n not in snap.layer_names]
    if unknown:
        raise unknown_name("layer", unknown[0], snap.layer_names)
    return [snap.layer_names.index(n) for n in layers]


def _pick(t: torch.Tensor, layers: Sequence[int] | None) -> torch.Tensor:
    """``t`` (E, L, ...) restricted to the layer indices ``layers`` (no copy when they are all layers, in order)."""
    if layers is None or list(layers) == list(range(t.shape[1])):
        return t
    return t[:, list(layers)]


def layer_sigmas(snap: Snapshots, rule: str = "fixed", sigma: float = 5.0) -> torch.Tensor:
    """Kernel width per (epoch, layer) under ``rule``, float64 (E, L) (see :func:`kernels.sigma_from_distances`)."""
    rule = _kernels.sigma_rule(rule).name
    E, L = snap.num_snapshots, len(snap.layer_names)
    if _kernels.sigma_rule(rule).from_data:  # e.g. one kthvalue pass over every stored distance: worth keeping
        s = snap.memoised(("sigma", rule), lambda: _data_sigmas(snap, rule))
    else:
        s = _kernels.sigma_from_distances(torch.empty(E, L, 0), rule, sigma, snap.layer_dims)
    if not isinstance(s, torch.Tensor):
        return torch.full((E, L), s, dtype=torch.float64, device=snap.device)
    return s.to(snap.device, torch.float64).expand(E, L)


def _data_sigmas(snap: Snapshots, rule: str) -> torch.Tensor:
    """A data rule's width per (epoch, layer), a window of epochs at a time (a derived layer's distances are computed
    for its window only)."""
    P = snap.m * (snap.m - 1) // 2
    parts = [
        torch.as_tensor(_kernels.sigma_from_distances(snap.window(e0, e1).dist, rule))
        for e0, e1 in snap.windows(len(snap.layer_names) * P)
    ]
    return torch.cat(parts) if parts else torch.empty(0, len(snap.layer_names), dtype=torch.float64)


def _x_sigma(snap: Snapshots, rule: str, sigma: float):
    if _kernels.sigma_rule(rule).from_data:
        return snap.memoised(("x_sigma", rule), lambda: _kernels.sigma_from_distances(snap.x_dist, rule))
    return _kernels.sigma_from_distances(snap.x_dist, rule, sigma, snap.input_dim)


def x_kernel(snap: Snapshots, kernel: str = "gaussian", rule: str = "fixed", sigma: float = 5.0) -> torch.Tensor:
    """Kernel of the probe inputs X, (m, m), in float64 (a wide kernel keeps its structure near 1)."""
    if kernel == "linear":
        return _kernels.gram(snap.probe_x.double())
    s_x = _x_sigma(snap, rule, sigma)
    return unpack(torch.exp(snap.x_dist.double() * _kernels.exponent_factor(s_x)), snap.m, 1.0)


def target_kernel(
    snap: Snapshots, target: str = "labels", kernel: str = "gaussian", rule: str = "fixed", sigma: float = 5.0
) -> torch.Tensor:
    """Kernel of Y: (m, m) for ``labels`` (one-hot, linear), (E, m, m) float64 for the network's softmax ``output``."""
    if target == "labels":
        return _kernels.label_kernel(snap.labels, snap.num_classes).to(snap.device)
    E, m = snap.outputs.shape[0], snap.m
    if E * m * m * 8 * 5 // 2 <= _MEMO_BYTES:  # a few epochs (a live slice): kept for every width's kernel
        G, D, packed = snap.memoised(("output_distances",), lambda: _output_distances(snap))
    else:  # a whole long run: not held in memory
        G, D, packed = _output_distances(snap)
    if kernel == "linear":
        return G
    s = _kernels.sigma_from_distances(packed, rule, sigma, snap.outputs.shape[-1])  # sqrt_d: d = the outputs
    s = s[..., None, None] if isinstance(s, torch.Tensor) else s
    return (D * _kernels.exponent_factor(s)).exp_()


_MEMO_BYTES = 64 * 1024**2  #: derived arrays larger than this are computed when needed, not kept


def _output_distances(snap: Snapshots) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The softmax outputs' Gram, squared distances and their packed form, float64 (E, m, m): every width's output
    kernel starts from them (a saturated output kernel, values near 1, needs float64 to keep its structure)."""
    outputs = snap.outputs.double()
    probs = outputs if snap.output_is_probabilities else torch.softmax(outputs, -1)
    G = probs @ probs.transpose(-1, -2)
    D = _kernels.sq_distances(G, check=False)
    return G, D, _packed.pack(D)


def is_packed(spec) -> bool:
    """Whether ``spec`` (a registered estimator) has a packed form, evaluated from packed kernel values in a pass
    shared with the other packed estimators (see :func:`ibwidget.measure.estimators.register`)."""
    return spec.packed is not None


def _kernel_targets(snap, kernel, rule, sigma_x, sigma_y, targets, cache) -> list[Target]:
    """Statistics of X's kernel, then of each target's; X's and the labels' (the same every epoch) kept in ``cache``."""

    def fixed(key, make, classes=None):
        key = (id(snap.probe_x), *key)
        if key not in cache:
            cache[key] = Target.of(make(), classes=classes)
        return cache[key]

    out = [fixed(("X", kernel, rule, sigma_x), lambda: x_kernel(snap, kernel, rule, sigma_x))]
    for t in targets:
        if t == "labels":
            out.append(fixed(("labels",), lambda: target_kernel(snap, "labels"), classes=snap.labels))
        else:
            out.append(Target.of(target_kernel(snap, t, kernel, rule, sigma_y)))
    return out


def _kde_targets(snap: Snapshots, targets: Sequence[str]) -> list[Target]:
    """KDE's targets: none (the input X: every probe sample distinct), then the labels or the output's argmax."""
    label_of = {"labels": lambda: snap.labels, "output": lambda: snap.outputs.argmax(-1)}
    return [Target.of_labels(None)] + [Target.of_labels(label_of[t]()) for t in targets]


def packed_estimates(
    snap: Snapshots,
    specs: Sequence,
    rule: str = "fixed",
    sigma: float = 5.0,
    kernel: str = "gaussian",
    targets: Sequence[str] = ("labels",),
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    layers: Sequence[int] | None = None,
    cache: dict | None = None,
    saturation: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Every packed estimator of ``specs`` (see :func:`is_packed`) at one width, in one pass over ``snap``.

    ``rule``/``sigma`` give each layer's width (``sigma_x``, ``sigma_y``: X's and the output's base sigma, default
    ``sigma``; for the KDE bounds sigma² is the noise variance, 4x for the lower bound); ``layers``: layer indices
    (default all); ``cache``: a dict keeping X's and the labels' kernel statistics between calls. Returns name ->
    (E, L', 1 + targets) float64 (column 0 vs X, then one per target), and the mean off-diagonal Gaussian kernel
    value (E, L') when ``saturation`` asks for it (else None). :func:`packed_slots` does the same for many widths.
    """
    values, sats = packed_slots(
        snap, specs, [(rule, sigma)], kernel, targets, sigma_x, sigma_y, layers, cache, saturation
    )
    return values[0], sats[0]


_SLOT_TARGET_BYTES = 256 * 1024**2  #: X's kernel statistics held at once across the widths of one pass


def packed_slots(
    snap: Snapshots,
    specs: Sequence,
    slots: Sequence[tuple[str, float]],
    kernel: str = "gaussian",
    targets: Sequence[str] = ("labels",),
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    layers: Sequence[int] | None = None,
    cache: dict | None = None,
    saturation: bool = True,
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor | None]]:
    """:func:`packed_estimates` at each (rule, sigma) of ``slots``: per slot, name -> (E, L', 1 + targets) float64,
    and the saturation (E, L') or None.

    Each window of stored distances is unpacked once for every slot (a few epochs' (m, m) matrices at a time, see
    :data:`_packed.CHUNK_ELEMS`); each slot evaluates one kernel per matrix, shared by every estimator and target.
    A single slot reads the stored triangles instead (:class:`_packed.TriangleStats`: unpacking would cost as much as
    the slot itself).
    """
    m = snap.m
    E, L, P = snap.num_snapshots, len(snap.layer_names) if layers is None else len(layers), m * (m - 1) // 2
    unpackable = [s.name for s in specs if not is_packed(s)]
    if unpackable:
        raise ValueError(f"{unpackable} have no packed form; register one with register(..., packed=...).")
    keep = cache is not None  # the caller keeps X's statistics at every width between calls (a live grid)
    plans = [_slot_plan(snap, specs, rule, sigma, kernel, layers, saturation) for rule, sigma in slots]
    out = [
        {s.name: torch.empty(E, L, 1 + len(targets), dtype=torch.float64, device=snap.device) for s in specs}
        for _ in slots
    ]
    sats = [torch.empty(E, L, dtype=torch.float64, device=snap.device) if saturation else None for _ in slots]
    if E == 0 or not slots:
        return out, sats
    per_slot = m * m * 8 if specs else 0  # X's kernel statistics
    group = len(slots) if keep else max(1, _SLOT_TARGET_BYTES // max(per_slot, 1))
    square = len(slots) > 1  # unpacking pays off when widths share it; one width reads the triangles
    per_matrix = m * m if square else P
    layer_chunk = L if L * per_matrix <= _packed.CHUNK_ELEMS else max(1, _packed.CHUNK_ELEMS // per_matrix)
    windows = snap.windows(L * per_matrix)
    size = (windows[0][1] - windows[0][0]) * layer_chunk * per_matrix  # the first window is the largest
    form = _packed.Stats if square else _packed.TriangleStats
    work32 = torch.empty(size, device=snap.device)
    work64 = torch.empty(size, dtype=torch.float64, device=snap.device)
    for g0 in range(0, len(slots), group):  # a group's X statistics stay cached while its windows pass
        group_cache = cache if keep else {}
        for e0, e1 in windows:
            part = snap.window(e0, e1)
            chunks = []  # (positions among the layers, packed distances, what the kernels read), shared by the slots
            for cols, dist, _ in part.distance_groups(layers):
                for c0 in range(0, len(cols), layer_chunk):
                    d = dist[:, c0 : c0 + layer_chunk]
                    n = d.shape[1]
                    D = _packed.unpack_window(d.reshape(-1, P), m).view(e1 - e0, n, m, m) if square else d
                    chunks.append((cols[c0 : c0 + layer_chunk], d, D))
            for s in range(g0, min(len(slots), g0 + group)):
                rule, sigma = slots[s]
                plan = plans[s]
                stats_of = {}
                if plan.kernel_specs:
                    x_sigma, y_sigma = (sigma if v is None else v for v in (sigma_x, sigma_y))
                    stats_of["kernel"] = _kernel_targets(part, kernel, rule, x_sigma, y_sigma, targets, group_cache)
                if plan.scales:
                    stats_of.update(dict.fromkeys(plan.scales, _kde_targets(part, targets)))
                rows = {g: [t.epochs(0, e1 - e0) for t in ts] for g, ts in stats_of.items()}
                for factor, gaussian, groups, with_sat in plan.passes:
                    todo = [(spec, g) for g in groups for spec in plan.jobs[g]]
                    codes = [c for g in groups for t in rows[g] for c in (t.labels, t.classes) if c is not None]
                    for cols, d, D in chunks:
                        f = factor[e0:e1, cols]
                        w = _packed.wide_kernels(d, f) if gaussian else None
                        k = _packed.kernel_window(D, f, w, work32, work64)
                        shift = torch.ones_like(f) if w is None else w.to(torch.float64)
                        shared = form(k, m, shift, codes)
                        if with_sat and sats[s] is not None:
                            sats[s][e0:e1, cols] = shared.total / (m * (m - 1)) + shift
                        for spec, g in todo:
                            res = spec.packed(shared, rows[g], **spec.options)
                            out[s][spec.name][e0:e1, cols] = res.reshape(e1 - e0, len(cols), -1)
    return out, sats


@dataclass
class _SlotPlan:
    """The kernel passes of one width: (exponent factor (E, L), Gaussian?, estimator groups, saturation?)."""

    passes: list
    jobs: dict
    kernel_specs: list
    scales: list


def _slot_plan(snap, specs, rule, sigma, kernel, layers, saturation) -> _SlotPlan:
    """Which passes over the kernel values one width needs: the kernel estimators' (with the KDE bound of variance
    sigma² when the kernel is Gaussian), one per other KDE variance, and the saturation's when no pass gives it."""
    sigmas = _pick(layer_sigmas(snap, rule, sigma), layers)
    kernel_specs = [s for s in specs if s.needs == "kernels"]
    scales = sorted({s.variance_scale for s in specs if s.needs == "distances"}, key=lambda v: v != 1.0)
    jobs: dict[object, list] = {"kernel": kernel_specs}  # group -> its estimators: "kernel", or a distance scale
    jobs.update({v: [s for s in specs if s.needs == "distances" and s.variance_scale == v] for v in scales})
    gaussian = kernel == "gaussian"
    factor = _kernels.exponent_factor(sigmas)
    passes = []
    if kernel_specs and gaussian:  # a distance estimator's kernel exp(-D2 / (2 sigma^2)) is the Gaussian kernel
        passes.append((factor, True, ["kernel"] + [v for v in scales if v == 1.0], True))
    elif kernel_specs:
        passes.append((torch.full_like(sigmas, -0.5), False, ["kernel"], False))
    for v in scales:
        if v != 1.0 or not (kernel_specs and gaussian):
            scaled = factor if v == 1.0 else _kernels.exponent_factor(sigmas, v)
            passes.append((scaled, True, [v], v == 1.0))
    if saturation and not any(p[3] for p in passes):
        passes.append((factor, True, [], True))
    return _SlotPlan(passes, jobs, kernel_specs, scales)


def trajectories(
    snap: Snapshots,
    estimator: str = "hsic",
    sigma: float = 5.0,
    target: str = "labels",
    sigma_rule: str = "fixed",
    kernel: str = "gaussian",
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    layers: Sequence[str] | None = None,
) -> np.ndarray:
    """Information-plane coordinates of every snapshot: ndarray (epochs, layers, 2), float64.

    The arguments are those of :meth:`ibwidget.Run.trajectories`, which calls this.
    """
    spec = _estimators.get(estimator)
    target = resolve_name("target", target, TARGETS)
    kernel = resolve_name("kernel", kernel, KERNELS)
    sigma_rule = _kernels.sigma_rule(sigma_rule).name
    index = _layer_index(snap, layers)
    _require_snapshot(snap)
    if spec.needs == "activations":
        return _activation_trajectories(snap, spec, index, target)
    if is_packed(spec):
        out, _ = packed_estimates(
            snap, [spec], sigma_rule, sigma, kernel, (target,), sigma_x, sigma_y, index, saturation=False
        )
        return out[spec.name].cpu().numpy()
    if spec.needs == "distances":
        return _generic_distances(snap, spec, index, _pick(layer_sigmas(snap, sigma_rule, sigma), index), target)
    K_x = x_kernel(snap, kernel, sigma_rule, sigma if sigma_x is None else sigma_x)
    K_y = target_kernel(snap, target, kernel, sigma_rule, sigma if sigma_y is None else sigma_y)
    sigmas = _pick(layer_sigmas(snap, sigma_rule, sigma), index)
    return _generic(snap, spec, kernel, index, sigmas, K_x, K_y)


def permuted(snap: Snapshots, x_order: torch.Tensor, y_order: torch.Tensor) -> Snapshots:
    """``snap`` with the probe inputs taken in ``x_order`` and the labels and outputs in ``y_order``; every layer keeps
    its samples, so X and Y keep their own structure but lose every tie to the layers (independence, the null)."""
    probe_x = snap.probe_x[x_order.to(snap.probe_x.device)]
    x_dist, x_norms = _kernels.pack_gram(_kernels.gram(probe_x))
    y_order = y_order.to(snap.labels.device)
    return replace(
        snap,
        probe_x=probe_x,
        x_dist=x_dist,
        x_norms=x_norms,
        labels=snap.labels[y_order],
        outputs=snap.outputs[:, y_order.to(snap.outputs.device)],
    )


def null_samples(
    snap: Snapshots,
    estimator: str = "hsic",
    sigma: float = 5.0,
    target: str = "labels",
    sigma_rule: str = "fixed",
    kernel: str = "gaussian",
    permutations: int = 100,
    seed: int = 0,
    layers: Sequence[str] | None = None,
) -> np.ndarray:
    """The estimator under independence: (permutations, epochs, layers, 2), float64; each permutation draws one
    order of the probe inputs (column 0, the X axis) and one of the labels and outputs (column 1, the Y axis), the
    same for every epoch and layer, seeded by ``seed`` (Gretton et al. 2008, *A Kernel Statistical Test of
    Independence*, NIPS: the permutation null of HSIC). Arguments as :func:`trajectories`."""
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be a whole number >= 1, got {permutations!r} (100 is the default).")
    _require_snapshot(snap)
    g = torch.Generator().manual_seed(int(seed))
    samples = []
    for _ in range(permutations):
        x_order, y_order = torch.randperm(snap.m, generator=g), torch.randperm(snap.m, generator=g)
        shuffled = permuted(snap, x_order, y_order)
        samples.append(trajectories(shuffled, estimator, sigma, target, sigma_rule, kernel, layers=layers))
    return np.stack(samples)


def null_band(snap: Snapshots, q: float = 0.95, **null) -> np.ndarray:
    """The ``q``-quantile of :func:`null_samples` (``null``: its arguments) per epoch, layer and axis: (epochs,
    layers, 2). A value above it is dependence that chance alone reaches with probability below 1 - q.

    For biased HSIC the null's mean is known: with Gaussian kernels (k(x, x) = 1) and Gretton et al. 2008's 1/m²
    normaliser it is (1 - E k)(1 - E l) / m; ours divides by (m-1)², so it is that times m²/(m-1)². Over the
    permutations of one probe it is exactly (1 - k̄)(1 - l̄) / (m-1), with k̄ and l̄ the mean off-diagonal kernel
    values (the tests check both).
    """
    if not 0.0 < float(q) < 1.0:
        raise ValueError(f"q must be a quantile strictly between 0 and 1, got {q!r} (0.95 is the default).")
    return np.quantile(null_samples(snap, **null), float(q), axis=0)


def cka_representations(snap: Snapshots, index: int) -> tuple[list[str], list[int], torch.Tensor, torch.Tensor]:
    """(names, widths, packed squared distances (n, P), squared norms (n, m)), float64, of the representations of the
    probe at snapshot ``index`` that :func:`cka_matrix` compares: the probe inputs ("input"), each tracked layer, and
    the model's raw output ("output"), left out when it equals the last tracked layer."""
    _require_snapshot(snap)
    one = snap.window(index, index + 1)
    dist, norms = one.distances()
    names = ["input", *snap.layer_names]
    dims = [snap.input_dim, *snap.layer_dims]
    dist = torch.cat([snap.x_dist[None].to(dist), dist[0]]).double()
    norms = torch.cat([snap.x_norms[None].to(norms), norms[0]]).double()
    out_dist, out_norms = _kernels.pack_gram(_kernels.gram(one.outputs[0].double()))
    scale = float(out_norms.abs().max()) or 1.0
    same = torch.allclose(out_dist, dist[-1], atol=1e-5 * scale) and torch.allclose(
        out_norms, norms[-1], atol=1e-5 * scale
    )
    if not same:
        names.append("output")
        dims.append(int(one.outputs.shape[-1]))
        dist = torch.cat([dist, out_dist[None].to(dist)])
        norms = torch.cat([norms, out_norms[None].to(norms)])
    return names, dims, dist, norms


def cka_matrix(
    snap: Snapshots, index: int, sigma: float | None = None, sigma_rule: str | None = "median_d2"
) -> np.ndarray:
    """CKA between every two :func:`cka_representations` of snapshot ``index``, a symmetric float64 matrix with a
    unit diagonal (Kornblith et al. 2019, *Similarity of neural network representations revisited*, eq. 3 with the
    biased HSIC; their figures compare layers this way). Linear CKA (each Gram matrix) when ``sigma`` and
    ``sigma_rule`` are None; else Gaussian kernels, of width ``sigma`` for every representation when it is given (a
    rule of the data, such as the medians, is then not used), otherwise ``sigma_rule``'s width per representation."""
    names, dims, dist, norms = cka_representations(snap, index)
    if sigma is None and sigma_rule is None:
        K = 0.5 * (norms[:, :, None] + norms[:, None, :] - unpack(dist, snap.m))
    else:
        rule = _kernels.sigma_rule(sigma_rule or "fixed")
        if sigma is not None and rule.from_data:
            rule = _kernels.sigma_rule("fixed")
        width = _kernels.sigma_from_distances(dist, rule.name, 5.0 if sigma is None else float(sigma), dims)
        width = torch.as_tensor(width, dtype=torch.float64, device=dist.device).expand(len(names))
        K = unpack(torch.exp(dist * _kernels.exponent_factor(width)[:, None]), snap.m, 1.0)
    return _estimators.cka_pairs(K).cpu().numpy()


def _generic(snap: Snapshots, spec, kernel: str, index, sigmas, K_x, K_y) -> np.ndarray:
    """Any registered estimator: float64 kernels unpacked to (chunk, m, m) and passed to its function.

    float64, because estimators such as Rényi's read K itself (its eigenvalues), not only ``K - 1``: near 1, a
    float32 kernel has lost the structure they measure.
    """
    dist, norms = snap.distances(index)
    E, L, P = dist.shape
    flat_dist, flat_norms = dist.reshape(E * L, P).double(), norms.reshape(E * L, -1).double()
    factor = _kernels.exponent_factor(sigmas.reshape(E * L))
    epoch_of = torch.arange(E, device=snap.device).repeat_interleave(L)
    out = torch.empty(E * L, 2, dtype=torch.float64)
    for start in range(0, E * L, _CHUNK):
        sl = slice(start, start + _CHUNK)
        if kernel == "linear":
            K = 0.5 * (flat_norms[sl, :, None] + flat_norms[sl, None, :]) - 0.5 * unpack(flat_dist[sl], snap.m)
            K.diagonal(dim1=-2, dim2=-1).copy_(flat_norms[sl])
        else:
            K = unpack(torch.exp(flat_dist[sl] * factor[sl, None]), snap.m, 1.0)
        ky = K_y if K_y.ndim == 2 else K_y[epoch_of[sl]]
        out[sl, 0] = torch.as_tensor(spec(K, K_x.to(K.dtype))).double().cpu()
        out[sl, 1] = torch.as_tensor(spec(K, ky.to(K.dtype))).double().cpu()
    return out.reshape(E, L, 2).numpy()


def _generic_distances(snap: Snapshots, spec, index, sigmas, target: str) -> np.ndarray:
    """A distance estimator without a packed form: its function on each float64 squared-distance matrix, with noise
    variance sigma² (the layer's width under the rule), against X (no labels) and the target's labels."""
    dist = snap.distances(index)[0]
    out = np.empty((*dist.shape[:2], 2))
    for e in range(dist.shape[0]):
        labels = snap.labels if target == "labels" else snap.outputs[e].argmax(-1)
        D = unpack(dist[e].double(), snap.m)
        for li in range(dist.shape[1]):
            noise_var = float(sigmas[e, li]) ** 2
            out[e, li, 0] = float(spec(D[li], noise_var))
            out[e, li, 1] = float(spec(D[li], noise_var, labels=labels))
    return out


def _activation_trajectories(snap: Snapshots, spec, index, target: str) -> np.ndarray:
    layers = [snap.layer_names[i] for i in index]
    missing = [n for n in layers if n not in snap.activations]
    if missing:
        raise ValueError(
            f"{spec.name!r} reads activations, which this run kept only for layers narrower than the probe; "
            f"missing: {missing}. Record with keep_activations='all', or pass layers=[...] of narrow layers."
        )
    x_codes = torch.arange(snap.m)  # probe inputs are distinct samples: I(T;X) = H(T)
    out = np.empty((snap.num_snapshots, len(layers), 2))
    for e in range(snap.num_snapshots):
        labels = snap.labels if target == "labels" else snap.outputs[e].argmax(-1)
        for li, name in enumerate(layers):
            out[e, li, 0] = float(spec(snap.activations[name][e], x_codes))
            out[e, li, 1] = float(spec(snap.activations[name][e], labels))
    return out


def saturation(snap: Snapshots, sigma: float = 5.0, sigma_rule: str = "fixed") -> np.ndarray:
    """Mean off-diagonal Gaussian kernel value per (epoch, layer): ~1 sigma too large, ~0 too small."""
    _require_snapshot(snap)
    _, sats = packed_slots(snap, [], [(sigma_rule, sigma)])
    return sats[0].cpu().numpy()
