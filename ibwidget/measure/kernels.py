"""Gram matrices, distances and kernels over a probe set of m samples.

Every estimator in :mod:`ibwidget.measure.estimators` depends on a representation Z only through its Gram matrix
``G = Z Z^T``: squared distances are ``D2_ij = G_ii + G_jj - 2 G_ij``. So we store Grams and derive kernels from them,
for any sigma, after the fact. All functions take torch tensors (any device) or numpy arrays, work on batched
inputs ``(..., m, m)``, and compute in the input's dtype.

>>> import torch
>>> Z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
>>> sq_distances(gram(Z))
tensor([[ 0., 25.],
        [25.,  0.]])
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast, overload

import numpy as np
import torch

from ibwidget._vocabulary import KERNELS
from ibwidget.measure import _packed
from ibwidget.measure._typing import ArrayLike, Labels, Sigma
from ibwidget.measure._validate import as_float_tensor, check_kernel, check_sigma, resolve_name

__all__ = [
    "gram",
    "sq_distances",
    "linear",
    "gaussian",
    "one_hot",
    "label_kernel",
    "sigma_median",
    "sigma_from_rule",
    "sigma_from_distances",
    "SigmaRule",
    "register_sigma_rule",
    "sigma_rule",
    "pack_gram",
    "saturation",
    "exponent_factor",
    "SIGMA_RULES",
    "KERNELS",
]


def gram(Z: ArrayLike) -> torch.Tensor:
    """``Z`` of shape (m, ...) flattened to (m, d), returns ``Z Z^T`` of shape (m, m)."""
    Z = as_float_tensor(Z, "Z")
    if Z.ndim < 1 or Z.shape[0] < 1:
        raise ValueError(f"Z must have shape (m, ...) with m >= 1 samples, got {tuple(Z.shape)}.")
    Z = Z.reshape(Z.shape[0], -1)
    G = Z @ Z.T
    return 0.5 * (G + G.T)  # exact symmetry, whatever the BLAS summation order


def sq_distances(G: ArrayLike, check: bool = True) -> torch.Tensor:
    """Squared Euclidean distances from a Gram matrix: ``D2_ij = G_ii + G_jj - 2 G_ij``, clamped at 0.

    ``check=False`` skips the argument checks (finite, square, symmetric), for a hot path holding a Gram matrix it
    built itself.
    """
    if not check:
        return _sq_distances(cast(torch.Tensor, G))  # check=False: the caller passes its own tensor
    G = as_float_tensor(G, "G")
    check_kernel(G, "G", min_m=1)
    return _sq_distances(G)


def _sq_distances(G: torch.Tensor) -> torch.Tensor:
    """:func:`sq_distances` without the argument checks, for hot paths that checked once."""
    diag = torch.diagonal(G, dim1=-2, dim2=-1)
    D = (diag.unsqueeze(-1) + diag.unsqueeze(-2) - 2.0 * G).clamp_min_(0.0)
    D.diagonal(dim1=-2, dim2=-1).zero_()  # exact zeros: a point's distance to itself
    return D


#: The most negative exponent factor used: beyond it every distinct pair has K = 0 in any float (sigma -> 0).
_MIN_FACTOR = -1e30


@overload
def exponent_factor(sigma: torch.Tensor, variance_scale: float = 1.0) -> torch.Tensor: ...
@overload
def exponent_factor(sigma: float, variance_scale: float = 1.0) -> float: ...
def exponent_factor(sigma: float | torch.Tensor, variance_scale: float = 1.0) -> float | torch.Tensor:
    """``-1 / (2 variance_scale sigma^2)``, the Gaussian kernel's exponent per unit squared distance.

    Finite for every positive finite ``sigma`` (a number or a tensor, computed in float64): a width so small that
    ``sigma^2`` underflows gives the limit kernel ``K = I`` instead of a division by zero, a huge one gives ``K = 1``.
    """
    if isinstance(sigma, torch.Tensor):
        var = sigma.to(torch.float64).square() * variance_scale
        return (-0.5 / var).clamp_min(_MIN_FACTOR)
    v = float(sigma) * float(sigma) * variance_scale  # inf for a huge sigma (no OverflowError), 0 for a tiny one
    return max(-0.5 / v, _MIN_FACTOR) if v > 0 else _MIN_FACTOR


def _gaussian(G: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """:func:`gaussian` without the argument checks; ``sigma`` a float or a tensor broadcastable to G."""
    D = _sq_distances(G)
    factor = exponent_factor(sigma)
    return D.mul_(factor.to(D.dtype) if isinstance(factor, torch.Tensor) else factor).exp_()


def linear(G: ArrayLike) -> torch.Tensor:
    """The linear kernel ``k(z, z') = <z, z'>``: the Gram matrix itself."""
    G = as_float_tensor(G, "G")
    check_kernel(G, "G", min_m=1)
    return G


def _broadcast_sigma(sigma: Sigma, G: torch.Tensor) -> torch.Tensor | float:
    sigma = check_sigma(sigma)
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(device=G.device, dtype=G.dtype)
        return sigma.reshape(sigma.shape + (1, 1))
    return sigma


def gaussian(G: ArrayLike, sigma: Sigma) -> torch.Tensor:
    """Gaussian (RBF) kernel from a Gram matrix: ``exp(-D2 / (2 sigma^2))``.

    ``sigma`` is a number, or a tensor of shape ``G.shape[:-2]`` with one width per batched matrix.
    """
    G = as_float_tensor(G, "G")
    check_kernel(G, "G", min_m=1)
    return _gaussian(G, _broadcast_sigma(sigma, G))


def _class_ids(labels: Labels, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Integer labels (m,) as a long tensor, checked against ``num_classes`` (default: max label + 1)."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
        raise TypeError(
            f"labels must be a 1-d tensor of integer class ids, got dtype {labels.dtype}, shape "
            f"{tuple(labels.shape)}. Pass e.g. torch.tensor([0, 3, 1, ...])."
        )
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class ids 0..C-1.")
    C = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.numel() and int(labels.max()) >= C:
        raise ValueError(f"label {int(labels.max())} is out of range for num_classes={C}.")
    return labels.long(), C


def one_hot(labels: Labels, num_classes: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer labels (m,) to a one-hot matrix (m, C)."""
    labels, C = _class_ids(labels, num_classes)
    return torch.nn.functional.one_hot(labels, C).to(dtype)


def label_kernel(labels: Labels, num_classes: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Linear kernel of one-hot labels: ``L_ij = 1`` if samples i and j share a class, else 0.

    Built from label equality, so its cost does not grow with ``num_classes`` (which is only checked).
    """
    labels, _ = _class_ids(labels, num_classes)
    return (labels[:, None] == labels[None, :]).to(dtype)


_MIDDLE_LOCK = threading.Lock()
_MIDDLE_KEPT = 8  #: the last tensors whose middle pair is kept
_middle_cache: OrderedDict[int, tuple[weakref.ref, int, tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()


def _middle(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two middle order statistics of packed squared distances (..., P) (the same one twice for odd P).

    Both median rules read them (sqrt is monotone, so the middle distances are the square roots of these). The pairs
    of the last few tensors are kept, so the second rule on the same distances costs nothing, nor does the probe
    inputs' median at every epoch of a live grid (a run's input distances are one tensor).
    """
    version = dist._version  # noqa: SLF001 - torch's in-place counter: an edited tensor is computed again
    with _MIDDLE_LOCK:
        cached = _middle_cache.get(id(dist))
        if cached is not None and cached[0]() is dist and cached[1] == version:
            _middle_cache.move_to_end(id(dist))
            return cached[2]
    n = dist.shape[-1]
    k_lo, k_hi = (n + 1) // 2 - 1, n // 2  # 0-based ranks of the middle pair (equal for odd n)
    if dist.device.type == "cpu" and dist.dtype in (torch.float32, torch.float64):
        # numpy's introselect finds both ranks in one pass, about 10x faster than two torch kthvalue calls
        values = np.partition(dist.detach().numpy(), [k_lo, k_hi], axis=-1)
        lo, hi = torch.from_numpy(values[..., k_lo].copy()), torch.from_numpy(values[..., k_hi].copy())
    else:
        lo = dist.kthvalue(k_lo + 1, dim=-1).values
        hi = dist.kthvalue(k_hi + 1, dim=-1).values if k_hi != k_lo else lo
    with _MIDDLE_LOCK:
        _middle_cache[id(dist)] = (weakref.ref(dist), version, (lo, hi))
        while len(_middle_cache) > _MIDDLE_KEPT:
            _middle_cache.popitem(last=False)
    return lo, hi


def _median(dist: torch.Tensor, rule: str) -> torch.Tensor:
    """The raw median-rule width from packed squared distances (..., P): 0 where all points coincide."""
    lo, hi = _middle(dist)
    if rule == "median_d2":
        return (0.5 * (lo + hi)).sqrt()  # sigma^2 = the mean of the two middle squared distances
    return 0.5 * (lo.sqrt() + hi.sqrt())  # sigma = the mean of the two middle distances


def _packed_sq_distances(G: ArrayLike, min_m: int = 2) -> torch.Tensor:
    G = as_float_tensor(G, "G")
    if G.shape[-1] < min_m:
        raise ValueError("a median sigma needs at least 2 samples.")
    return _packed.pack(sq_distances(G))


_MEDIAN_RULES = ("median_d2", "median_d")


def sigma_median(G: ArrayLike, rule: str = "median_d2") -> torch.Tensor:
    """Median-heuristic sigma from a Gram matrix (Gretton et al. 2005; batched over leading dims).

    ``median_d2``: sigma^2 = median of off-diagonal squared distances. ``median_d``: sigma = median of
    off-diagonal distances. The two differ only in how the two middle values are averaged.
    A representation whose points all coincide has no scale: an error says so (:func:`sigma_from_rule` and
    :func:`sigma_from_distances` give such a layer sigma = 1 instead, whose kernel is all ones like any other).
    """
    rule = resolve_name("median rule", rule, _MEDIAN_RULES)
    sigma = _median(_packed_sq_distances(G), rule)
    if not bool((sigma > 0).all()):
        raise ValueError(
            f"the {rule} rule gives sigma = 0: most samples have identical representations (a dead layer?). "
            "Use a fixed sigma instead (rule='fixed')."
        )
    return sigma


# ------------------------------------------------------------------------------------------ sigma rules

#: ``width(dist, sigma, dim)``: packed squared distances (..., P), the sigma given, and the representation's
#: dimension (a number, or one per matrix of the last batch axis) -> the width per matrix (a float, or a tensor of
#: ``dist.shape[:-1]``)
SigmaWidth = Callable[[torch.Tensor, float, Any], "float | torch.Tensor"]


@dataclass(frozen=True)
class SigmaRule:
    """A named way to choose the Gaussian kernel's width for each matrix.

    ``from_data``: the width comes from the distances alone (a grid holds one slot of it, worth memoising per run);
    otherwise it scales the sigma given (a grid holds one slot per grid sigma, and the sigma slider applies).
    """

    name: str
    formula: str
    width: SigmaWidth
    from_data: bool


_RULES: dict[str, SigmaRule] = {}
_FORMULAS: dict[str, str] = {}
#: Every sigma rule's name and formula (d is the representation's dimension, D2 the off-diagonal squared distances):
#: a read-only view of the registry, which :func:`register_sigma_rule` adds to.
SIGMA_RULES = MappingProxyType(_FORMULAS)


def register_sigma_rule(name: str, formula: str, width: SigmaWidth, *, from_data: bool) -> SigmaRule:
    """Add a sigma rule: it then shows in every sigma-rule control, grid and report, and in ``trajectories``.

    ``width(dist, sigma, dim)`` returns the width per matrix (see :data:`SigmaWidth`); it gets the packed
    off-diagonal squared distances (empty when ``from_data`` is false). Names are lower case and unique.
    """
    key = str(name).strip().lower()
    if not key or key in _RULES:
        raise ValueError(f"a sigma rule needs a new, non-empty name; {name!r} is empty or taken ({', '.join(_RULES)}).")
    if not callable(width):
        raise TypeError(f"width must be callable as width(dist, sigma, dim); got {type(width).__name__}.")
    rule = SigmaRule(key, str(formula), width, bool(from_data))
    _RULES[key] = rule
    _FORMULAS[key] = rule.formula
    return rule


def sigma_rule(name: str) -> SigmaRule:
    """The registered :class:`SigmaRule` called ``name`` (any case; an unknown name suggests the closest)."""
    return _RULES[resolve_name("sigma rule", name, _RULES)]


def _fixed(dist: torch.Tensor, sigma: float, dim: Any) -> float | torch.Tensor:
    return check_sigma(sigma)


def _sqrt_d(dist: torch.Tensor, sigma: float, dim: Any) -> float | torch.Tensor:
    per_matrix = isinstance(dim, Sequence | np.ndarray | torch.Tensor)
    dims = [int(d) for d in dim] if per_matrix else [0 if dim is None else int(dim)]  # 0: not given
    if any(d < 1 for d in dims):
        raise ValueError("rule 'sqrt_d' needs the representation's dimension: pass dim=d (d >= 1).")
    s = check_sigma(sigma)
    if not per_matrix:
        return s * math.sqrt(dims[0])
    root_d = torch.tensor([math.sqrt(d) for d in dims], dtype=torch.float64, device=dist.device)
    return (s * root_d).expand(dist.shape[:-1])


def _median_width(rule: str) -> SigmaWidth:
    def width(dist: torch.Tensor, sigma: float, dim: Any) -> torch.Tensor:
        med = _median(dist, rule)
        return torch.where(med > 0, med, torch.ones_like(med))  # a dead layer: its kernel is all ones at any width

    return width


register_sigma_rule("fixed", "sigma as given (PyGlow: 5 for X, H and Y alike)", _fixed, from_data=False)
register_sigma_rule("sqrt_d", "sigma * sqrt(d) (HSIC-bottleneck code)", _sqrt_d, from_data=False)
register_sigma_rule("median_d2", "sigma^2 = median of off-diagonal D2", _median_width("median_d2"), from_data=True)
register_sigma_rule(
    "median_d", "sigma = median of off-diagonal distances sqrt(D2)", _median_width("median_d"), from_data=True
)


def sigma_from_distances(
    dist: torch.Tensor,
    rule: str = "fixed",
    sigma: float = 5.0,
    dim: int | Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> float | torch.Tensor:
    """The kernel width per matrix under a named rule of :data:`SIGMA_RULES`, from packed squared distances.

    ``dist`` (..., P) holds each matrix's off-diagonal squared distances (its strict upper triangle). ``fixed``
    returns ``sigma``; ``sqrt_d`` returns ``sigma * sqrt(dim)``, with ``dim`` a number or one per matrix of the last
    batch axis (a layer's width; then a float64 tensor of ``dist.shape[:-1]``); the median rules ignore ``sigma``
    and return a tensor of ``dist.shape[:-1]``. A dead layer (all points coincide: median 0) gets sigma = 1: its
    kernel is all ones at any width, so its trajectory stays defined.
    """
    return sigma_rule(rule).width(dist, sigma, dim)


def sigma_from_rule(
    G: ArrayLike, rule: str = "fixed", sigma: float = 5.0, dim: int | None = None
) -> float | torch.Tensor:
    """The kernel width for ``G`` under a named rule of :data:`SIGMA_RULES`.

    ``fixed`` returns ``sigma``; ``sqrt_d`` returns ``sigma * sqrt(dim)``; the median rules ignore ``sigma`` (a dead
    layer, whose points all coincide, gets 1). The same rules as :func:`sigma_from_distances`, from a Gram matrix.
    """
    spec = sigma_rule(rule)
    dist = _packed_sq_distances(G) if spec.from_data else torch.empty(0)
    return spec.width(dist, sigma, dim)


def pack_gram(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram (..., m, m) -> (packed squared distances (..., P), squared norms (..., m)), P = m(m-1)/2."""
    return _packed.pack(_sq_distances(G)).contiguous(), torch.diagonal(G, dim1=-2, dim2=-1).contiguous()


def pack_activations(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations (..., m, d) -> (packed squared distances (..., P), squared norms (..., m)), as :func:`pack_gram`
    of their Gram, without building it: ``n_i + n_j - 2 <z_i, z_j>`` from one (batched) matrix product, clamped at 0
    (the same values to float32 rounding, several times faster for a narrow layer)."""
    batch, m = Z.shape[:-2], Z.shape[-2]
    Z = Z.reshape(-1, m, Z.shape[-1])
    norms = (Z * Z).sum(-1)
    D = torch.baddbmm(norms[:, None, :], Z, Z.transpose(1, 2), alpha=-2.0)
    D += norms[:, :, None]
    dist = _packed.pack(D).clamp_(min=0.0)
    return dist.reshape(*batch, m * (m - 1) // 2), norms.reshape(*batch, m)


def saturation(K: ArrayLike) -> torch.Tensor:
    """Mean off-diagonal kernel value: near 1, sigma is too large; near 0, too small (a gauge for the user)."""
    K = as_float_tensor(K, "K")
    m = check_kernel(K, "K", min_m=2, check_symmetric=False)
    off = K.sum(dim=(-2, -1)) - torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)
    return off / (m * (m - 1))
