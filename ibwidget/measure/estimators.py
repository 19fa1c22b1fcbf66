"""Dependence estimators as pure functions over kernel matrices, and a registry by name.

Every function takes kernel (or distance) matrices of m probe samples, shape ``(m, m)`` or batched ``(..., m, m)``,
as torch tensors on any device or numpy arrays, and returns a tensor of the batch shape (0-d when unbatched) in the
input's dtype. Sums that cancel are accumulated in float64. Binning is the one estimator that reads activations.

>>> import torch
>>> from ibwidget.measure import kernels
>>> L = kernels.label_kernel(torch.tensor([0, 1, 0, 1]))
>>> round(float(hsic(L, L)), 6)  # tr(LHLH)/(m-1)^2 = m^2 (C-1)/C^2 / (m-1)^2
0.444444
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ibwidget.measure import kernels as _kernels
from ibwidget.measure._validate import (
    as_float_tensor,
    check_finite,
    check_kernel,
    check_pair,
    check_samples,
    resolve_name,
)

if TYPE_CHECKING:
    from ibwidget.measure._packed import Stats, Target

__all__ = [
    "hsic",
    "cka",
    "cka_pairs",
    "nhsic",
    "renyi_entropy",
    "renyi_mi",
    "kde_mi",
    "binning_mi",
    "EstimatorSpec",
    "register",
    "get",
    "names",
]

_F64 = torch.float64
#: What the functions accept: a torch tensor on any device, or a numpy array.
Matrix = torch.Tensor | np.ndarray


def _center(K: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/m``, in O(m^2) (never forms H)."""
    return K - K.mean(-1, keepdim=True) - K.mean(-2, keepdim=True) + K.mean((-2, -1), keepdim=True)


def _frob(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``sum_ij A_ij B_ij`` over the last two dims, accumulated in float64."""
    return (A * B).sum(dim=(-2, -1), dtype=_F64)


def _offdiag(K: torch.Tensor) -> torch.Tensor:
    return K - torch.diag_embed(torch.diagonal(K, dim1=-2, dim2=-1))


def _hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    m = K.shape[-1]
    Kt, Lt = _offdiag(K), _offdiag(L)
    trace_term = _frob(Kt, Lt)
    sum_term = Kt.sum((-2, -1), dtype=_F64) * Lt.sum((-2, -1), dtype=_F64) / ((m - 1) * (m - 2))
    cross_term = (Kt.sum(-1, dtype=_F64) * Lt.sum(-1, dtype=_F64)).sum(-1) * (2.0 / (m - 2))
    return (trace_term + sum_term - cross_term) / (m * (m - 3))


_HSIC_NORMALIZERS = ("biased", "unbiased", "pyglow")


def hsic(K: Matrix, L: Matrix, normalizer: str = "biased") -> torch.Tensor:
    """Hilbert-Schmidt independence criterion of two kernel matrices.

    ``"biased"``: ``tr(K H L H) / (m-1)^2`` (Gretton et al. 2005, "Measuring statistical dependence with
    Hilbert-Schmidt norms", Lemma 1). ``"unbiased"``: Song et al. 2012, "Feature selection via dependence
    maximization", JMLR 13, eq. (5); needs m >= 4 and can be negative. ``"pyglow"``: ``tr(K H L H) / (m-1)``,
    the scale of PyGlow 0.1.7's ``HSIC.criterion``.

    >>> import torch
    >>> I = torch.eye(5, dtype=torch.float64)
    >>> round(float(hsic(I, I)), 12)  # tr(H) / (m-1)^2 = 1/(m-1)
    0.25
    """
    normalizer = resolve_name("HSIC normalizer", normalizer, _HSIC_NORMALIZERS)
    K, L, m = check_pair(K, L, min_m=4 if normalizer == "unbiased" else 2)
    return _hsic(K, L, normalizer).to(K.dtype)


def _hsic(K: torch.Tensor, L: torch.Tensor, normalizer: str) -> torch.Tensor:
    m = K.shape[-1]
    if normalizer == "unbiased":
        return _hsic_unbiased(K, L)
    trace = _frob(_center(K), _center(L))  # tr(KHLH); centering both keeps float32 rounding out of the sum
    return trace / ((m - 1) ** 2 if normalizer == "biased" else (m - 1))


def _hsic_packed(stats: Stats, targets: Sequence[Target], normalizer: str = "biased") -> torch.Tensor:
    """:func:`hsic` from packed kernels, against each target: (epochs, layers, targets)."""
    if normalizer == "unbiased":
        return torch.stack([stats.hsic_unbiased_with(t) for t in targets], -1)
    m = stats.m
    scale = (m - 1) ** 2 if normalizer == "biased" else (m - 1)
    return torch.stack([stats.trace_with(t) / scale for t in targets], -1)


def _safe_ratio(num: torch.Tensor, den_sq: torch.Tensor) -> torch.Tensor:
    """``num / sqrt(den_sq)``, defined as 0 where a representation is constant (den_sq <= 0)."""
    ok = den_sq > 0
    return torch.where(ok, num / torch.sqrt(torch.where(ok, den_sq, torch.ones_like(den_sq))), torch.zeros_like(num))


def cka(K: Matrix, L: Matrix, debiased: bool = False) -> torch.Tensor:
    """Centered kernel alignment, ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.

    Kornblith et al. 2019, "Similarity of neural network representations revisited", eq. (3); ``debiased=True``
    uses the unbiased HSIC of Song et al. 2012 in all three terms (Kornblith et al., Appendix). 0 where either
    representation is constant on the probe. In [0, 1] when not debiased; CKA(K, K) = 1.

    >>> import torch
    >>> K = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    >>> float(cka(K, K))
    1.0
    """
    K, L, _ = check_pair(K, L, min_m=4 if debiased else 2)
    return _cka(K, L, debiased).to(K.dtype)


def cka_pairs(Ks: Matrix) -> torch.Tensor:
    """CKA between every two of ``n`` kernel matrices ``Ks`` (n, m, m): an (n, n) float64 matrix, each entry
    :func:`cka` of the pair (Kornblith et al. 2019, eq. 3), with every matrix centred once: ``<HK_iH, HK_jH>_F /
    (||HK_iH||_F ||HK_jH||_F)``; 1 on the diagonal of a non-constant representation, 0 against a constant one."""
    Ks = as_float_tensor(Ks, "Ks").double()
    if Ks.ndim != 3 or Ks.shape[-1] != Ks.shape[-2]:
        raise ValueError(f"Ks must be (n, m, m) kernel matrices, got shape {tuple(Ks.shape)}.")
    centred = _center(Ks).reshape(Ks.shape[0], -1)
    products = centred @ centred.T
    norms = products.diagonal()
    return _safe_ratio(products, norms[:, None] * norms[None, :])


def _cka(K: torch.Tensor, L: torch.Tensor, debiased: bool) -> torch.Tensor:
    if debiased:
        kl, kk, ll = _hsic_unbiased(K, L), _hsic_unbiased(K, K), _hsic_unbiased(L, L)
    else:
        Kc, Lc = _center(K), _center(L)
        kl, kk, ll = _frob(Kc, Lc), _frob(Kc, Kc), _frob(Lc, Lc)
    return _safe_ratio(kl, kk * ll)


def _cka_packed(stats: Stats, targets: Sequence[Target], debiased: bool = False) -> torch.Tensor:
    """:func:`cka` from packed kernels, against each target: (epochs, layers, targets)."""
    if debiased:
        ratios = [_safe_ratio(stats.hsic_unbiased_with(t), stats.hsic_unbiased_self * t.hsic_u_self) for t in targets]
    else:
        ratios = [_safe_ratio(stats.trace_with(t), stats.centred_norm2 * t.norm2) for t in targets]
    return torch.stack(ratios, -1)


def nhsic(K: Matrix, L: Matrix, eps: float = 1e-5) -> torch.Tensor:
    """Normalized HSIC, ``tr(Kc (Kc + eps m I)^-1 Lc (Lc + eps m I)^-1)`` with ``Kc = H K H``.

    Fukumizu et al. 2008, "Kernel measures of conditional dependence" (NOCCO), as used by Ma, Lewis & Kleijn 2020,
    "The HSIC bottleneck: deep learning without back-propagation", eq. (4). Computed in float64 from the
    eigendecompositions of ``Kc`` and ``Lc``; a matrix that carries gradients (a training objective) goes through a
    Cholesky solve instead, whose gradient stays finite where eigenvalues repeat (the same value to rounding).

    >>> import torch
    >>> L = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    >>> round(float(nhsic(L, L, eps=1e-9)), 6)  # one non-zero eigenvalue of Lc: its projection has trace 1
    1.0
    """
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a small positive number, got {eps!r}. Pass e.g. eps=1e-5.")
    K, L, _ = check_pair(K, L)
    return _nhsic(K, L, eps).to(K.dtype)


def _nhsic(K: torch.Tensor, L: torch.Tensor, eps: float) -> torch.Tensor:
    ridge = eps * K.shape[-1]

    def resolvent(A: torch.Tensor) -> torch.Tensor:
        """``Ac (Ac + eps m I)^-1 = V diag(lam / (lam + eps m)) V^T`` from the eigendecomposition of the PSD ``Ac``.

        ``eigh`` rather than a (batched) LU solve: better conditioned, and LU solves are unreliable on some MKL
        builds once torch uses several threads. With gradients: ``(Ac + eps m I)^-1 Ac`` by Cholesky (no pivoting;
        the shifted matrix is positive definite), as eigh's gradient divides by eigenvalue gaps.
        """
        if A.requires_grad and torch.is_grad_enabled():
            Ac = _center(A.to(_F64))
            eye = torch.eye(Ac.shape[-1], dtype=_F64, device=Ac.device)
            R = torch.cholesky_solve(Ac, torch.linalg.cholesky(Ac + ridge * eye))
            return 0.5 * (R + R.transpose(-1, -2))
        lam, V = torch.linalg.eigh(_center(A.to(_F64)))
        lam = lam.clamp_min(0.0)  # Ac is PSD; rounding can leave tiny negative eigenvalues
        return (V * (lam / (lam + ridge)).unsqueeze(-2)) @ V.transpose(-1, -2)

    return _frob(resolvent(K), resolvent(L))


def _renyi_entropy_normalized(A: torch.Tensor, alpha: float) -> torch.Tensor:
    """Matrix Renyi entropy (bits) of ``A`` with unit trace, in float64."""
    if alpha == 2.0:
        return -torch.log2(A.square().sum((-2, -1)))
    lam = torch.linalg.eigvalsh(A).clamp_min(0.0)
    if alpha == 1.0:
        return -(torch.special.xlogy(lam, lam)).sum(-1) / math.log(2.0)
    return torch.log2((lam**alpha).sum(-1)) / (1.0 - alpha)


def _unit_trace(K: torch.Tensor) -> torch.Tensor:
    K = K.to(_F64)
    tr = torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)
    if not bool((tr > 0).all()):
        raise ValueError("a kernel matrix for Renyi entropy needs a positive trace (all-zero representation?).")
    return K / tr[..., None, None]


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number (alpha=1 is Shannon), got {alpha!r}.")
    return float(alpha)


def renyi_entropy(K: Matrix, alpha: float = 1.01) -> torch.Tensor:
    """Matrix-based Renyi alpha-entropy in bits, ``S_a(A) = log2(sum_i lambda_i(A)^a) / (1 - a)``, ``A = K / tr K``.

    Sanchez Giraldo, Rao & Principe 2015, "Measures of entropy from data using infinitely divisible kernels",
    eq. (6). ``alpha=2`` takes the fast path ``S_2 = -log2 ||A||_F^2`` (no eigendecomposition).

    >>> import torch
    >>> float(renyi_entropy(torch.eye(8), alpha=2))  # m equally likely points: log2 m
    3.0
    """
    K = as_float_tensor(K, "K")
    check_kernel(K, "K", min_m=1)
    return _renyi_entropy_normalized(_unit_trace(K), _check_alpha(alpha)).to(K.dtype)


def renyi_mi(K: Matrix, L: Matrix, alpha: float = 1.01) -> torch.Tensor:
    """Matrix-based Renyi alpha mutual information in bits, ``S(A) + S(B) - S(A∘B / tr(A∘B))``.

    Yu et al. 2019, "Multivariate extension of matrix-based Renyi's alpha-order entropy functional", eq. (6) for
    two variables; entropies as in :func:`renyi_entropy`. Kernels should have a constant diagonal (Gaussian, or
    the one-hot label kernel).

    >>> import torch
    >>> L = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    >>> round(float(renyi_mi(torch.eye(4), L, alpha=2)), 6)  # I(X;Y) = H(Y) = 1 bit for 2 balanced classes
    1.0
    """
    alpha = _check_alpha(alpha)
    K, L, _ = check_pair(K, L, min_m=1)
    return _renyi_mi(K, L, alpha).to(K.dtype)


def _renyi_mi(K: torch.Tensor, L: torch.Tensor, alpha: float) -> torch.Tensor:
    A, B = _unit_trace(K), _unit_trace(L)
    return (
        _renyi_entropy_normalized(A, alpha)
        + _renyi_entropy_normalized(B, alpha)
        - _renyi_entropy_normalized(_unit_trace(A * B), alpha)
    )


def _neg_mean_log_mean_exp(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``-mean_i log( sum_j exp(logits_ij) / counts_i )`` in float64 (masked entries hold -inf)."""
    return -(torch.logsumexp(logits, dim=-1) - torch.log(counts)).mean(-1)


def kde_mi(D: Matrix, noise_var: float, labels: Matrix | None = None, bound: str = "upper") -> torch.Tensor:
    """Pairwise-distance bounds on the mutual information of a layer with Gaussian noise, in bits.

    Kolchinsky & Tracey 2017, "Estimating mixture entropy with pairwise distances", Entropy 19(7):361, eqs. (10)
    (upper, KL) and (11) (lower, Bhattacharyya), as used by Saxe et al. 2018 for T = h(X) + N(0, noise_var I):
    ``I(T;X) = -mean_i log mean_j exp(-D2_ij / (2 noise_var))``; the lower bound is the same with 4x the noise
    variance. With ``labels`` it returns ``I(T;Y) = I(T;X) - sum_c p_c I(T;X | Y=c)``. ``D`` is the squared
    distance matrix (:func:`ibwidget.measure.kernels.sq_distances`). Always in ``[0, log2 m]``.

    >>> import torch
    >>> D = torch.full((4, 4), 1e6) * (1 - torch.eye(4))  # far-apart points: I(T;X) = log2 m
    >>> float(kde_mi(D, noise_var=1.0))
    2.0
    """
    bound = resolve_name("KDE bound", bound, ("upper", "lower"))
    if not (isinstance(noise_var, int | float) and math.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"noise_var must be a positive number, got {noise_var!r}. Pass e.g. noise_var=0.1.")
    D = as_float_tensor(D, "D")
    m = check_kernel(D, "D", min_m=1)
    if bool((D < 0).any()):
        raise ValueError("D must hold squared distances (>= 0); build it with kernels.sq_distances(G).")
    codes = None
    if labels is not None:
        codes = _integer_codes(labels, "labels", m, tuple(D.shape[:-2])).to(D.device)
    return _kde_mi(D, noise_var, codes, bound).to(D.dtype)


def _kde_mi(D: torch.Tensor, noise_var: float, codes: torch.Tensor | None, bound: str) -> torch.Tensor:
    m = D.shape[-1]
    factor = _kernels.exponent_factor(math.sqrt(noise_var), 4.0 if bound == "lower" else 1.0)
    logits = D.to(_F64) * factor
    full = _neg_mean_log_mean_exp(logits, torch.full((m,), float(m), dtype=_F64, device=D.device))
    if codes is None:
        return full / math.log(2.0)
    same = codes[:, None] == codes[None, :]
    counts = same.sum(-1).to(_F64)
    within = _neg_mean_log_mean_exp(logits.masked_fill(~same, float("-inf")), counts)
    return (full - within) / math.log(2.0)


def _kde_mi_packed(stats: Stats, targets: Sequence[Target], bound: str = "upper") -> torch.Tensor:
    """:func:`kde_mi` from packed Gaussian kernels of the bound's noise variance (the pass's), against each target:
    none (the input X) or class labels. (epochs, layers, targets)."""
    full = -stats.log_row_means(stats.row_sums, stats.m).mean(-1)
    out = []
    for t in targets:
        if t.labels is None:
            out.append(full / math.log(2.0))
            continue
        same_class_sums, class_sizes = stats.class_row_sums(t.labels)
        out.append((full + stats.log_row_means(same_class_sums, class_sizes).mean(-1)) / math.log(2.0))
    return torch.stack(out, -1)


def _integer_codes(Z: Matrix, name: str, m: int, batch_shape: tuple = ()) -> torch.Tensor:
    """Integer codes (m,) for discrete values: integer labels as given, or the distinct rows of an array."""
    Z = check_samples(Z, name, m, batch_shape)
    if Z.ndim == 1 and not Z.is_floating_point():
        return Z.long()
    rows = Z.reshape(m, -1)
    if rows.is_floating_point():  # equal values, equal bits (-0.0 made 0.0): exact, as unique(dim=0) compares
        rows = (rows.double() + 0.0).view(torch.int64)
    return _row_codes(rows.long())


def _row_codes(rows: torch.Tensor) -> torch.Tensor:
    """Codes (m,) of the distinct rows of an integer array (m, d): equal rows, equal codes (the partition of
    ``torch.unique(rows, dim=0, return_inverse=True)``, numbered otherwise). Columns are packed into one int64 key
    while it fits, the key made dense again (a 1-d unique) when the next column would overflow it: a few 1-d sorts
    instead of one sort of rows, many times faster."""
    m = rows.shape[0]
    key = torch.zeros(m, dtype=torch.long, device=rows.device)
    span = 1  # the key's values lie in [0, span)
    for column in rows.T:
        values = column - column.min()
        radix = int(values.max()) + 1
        if radix >= 2**31:  # a wide column: its distinct values, densely numbered
            values = torch.unique(values, return_inverse=True)[1]
            radix = int(values.max()) + 1
        if span * radix >= 2**62:
            key = torch.unique(key, return_inverse=True)[1]
            span = int(key.max()) + 1
        key = key * radix + values
        span *= radix
    return torch.unique(key, return_inverse=True)[1]


def _entropy_bits(codes: torch.Tensor) -> torch.Tensor:
    p = torch.unique(codes, return_counts=True)[1].to(_F64) / codes.shape[0]
    return -(p * torch.log2(p)).sum()


def binning_mi(
    T: Matrix, Z: Matrix, bins: int = 30, *, edges: Sequence[float] | None = None, width: float | None = None
) -> torch.Tensor:
    """Mutual information (bits) between a binned layer T and discrete Z, by plug-in entropies of bin patterns.

    Shwartz-Ziv & Tishby 2017, "Opening the black box of deep neural networks via information", Sec. 3.3: each
    activation is put in a bin; a sample's pattern of bins is its discrete T. Three binning conventions:

    - default: ``bins`` equal bins spanning the layer's [min, max] on the probe;
    - ``edges``: fixed bin edges, as ``np.digitize`` uses them (values below the first edge or at or above the last
      one fall in bins of their own). IDNNs, the code of Shwartz-Ziv & Tishby: ``np.linspace(-1, 1, 30)``;
    - ``width``: bins of a fixed width over an unlimited range, ``floor(t / width)``. Saxe et al. 2018, "On the
      information bottleneck theory of deep learning" (ICLR), code ``simplebinmi``: width 0.07 (Appendix).

    ``Z`` is integer labels (m,) or an input array whose distinct rows are its values (then I(T;X) = H(T)). The
    one estimator that reads activations, not kernels; not re-estimable from a Gram.

    >>> import torch
    >>> T = torch.tensor([[0.0], [0.0], [1.0], [1.0]])
    >>> float(binning_mi(T, torch.tensor([0, 0, 1, 1]), bins=2))
    1.0
    >>> float(binning_mi(T * 0.05, torch.tensor([0, 0, 1, 1]), width=0.07))  # 0 and 0.05 share a bin
    0.0
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}. Pass e.g. bins=30.")
    if edges is not None and width is not None:
        raise ValueError("pass edges=... (fixed bin edges) or width=... (fixed bin width), not both.")
    T = as_float_tensor(T, "T")
    m = T.shape[0]
    T = T.reshape(m, -1)
    check_finite(T, "T")
    t_codes = _row_codes(_bin_indices(T, bins, edges, width))
    z_codes = _integer_codes(Z, "Z", m).to(t_codes.device)
    joint = _row_codes(torch.stack([t_codes, z_codes], 1))
    mi = _entropy_bits(t_codes) + _entropy_bits(z_codes) - _entropy_bits(joint)
    return mi.clamp_min(0.0).to(T.dtype)


def _bin_indices(T: torch.Tensor, bins: int, edges: Sequence[float] | None, width: float | None) -> torch.Tensor:
    """Integer bin of every activation of T (m, d) under one of :func:`binning_mi`'s conventions."""
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int | float) or not (math.isfinite(width) and width > 0):
            raise ValueError(f"width must be a positive bin width, got {width!r}. Pass e.g. width=0.07.")
        return torch.floor(T.double() / width).long()
    if edges is not None:
        edges_t = torch.as_tensor(edges, dtype=torch.float64, device=T.device)
        if edges_t.ndim != 1 or edges_t.numel() < 2 or not bool((edges_t.diff() > 0).all()):
            raise ValueError(
                "edges must be an increasing 1-d sequence of at least 2 bin edges, e.g. np.linspace(-1, 1, 30)."
            )
        return torch.bucketize(T.double(), edges_t, right=True)  # np.digitize: edges[i-1] <= t < edges[i]
    lo, hi = T.min(), T.max()
    step = (hi - lo) / bins
    return ((T - lo) / torch.where(step > 0, step, torch.ones_like(step))).floor().clamp_(0, bins - 1).long()


#: IDNNs' bin edges (Shwartz-Ziv & Tishby 2017 code): 30 edges spanning tanh's range [-1, 1]
IDNN_EDGES = tuple(float(e) for e in np.linspace(-1.0, 1.0, 30))
#: Saxe et al. 2018's bin width (no range limit)
SAXE_BIN_WIDTH = 0.07


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class EstimatorSpec:
    """What the widget and :meth:`ibwidget.Run.trajectories` need to know about a named estimator.

    ``needs`` says what ``fn`` takes: ``"kernels"``: ``fn(K_T, K_Z, **options)`` with kernel matrices built from
    the stored Grams (any sigma, re-estimable); ``"distances"``: ``fn(D_T, noise_var, labels=None, **options)``;
    ``"activations"``: ``fn(T, Z, **options)``. ``packed``: the form evaluated from packed kernels (see
    :func:`register`), or None; ``packed_unbiased``: it reads the targets' unbiased statistics; ``variance_scale``:
    a ``"distances"`` estimator's packed form reads Gaussian kernels of ``variance_scale * sigma**2``.
    """

    name: str
    fn: Callable
    needs: str = "kernels"
    units: str = ""
    label: str = ""
    variant: str = ""
    description: str = ""
    options: Mapping = field(default_factory=dict)
    uses_sigma: bool = True
    packed: Callable | None = None
    packed_unbiased: bool = False
    variance_scale: float = 1.0

    def axis_label(self, a: str = "T", b: str = "X") -> str:
        """E.g. ``"HSIC(T, X) · biased, 1/(m−1)²"`` or ``"I(T; X) · KDE upper [bits]"``."""
        text = (self.label or self.name + "({a}, {b})").format(a=a, b=b)
        if self.variant:
            text += f" · {self.variant}"
        if self.units:
            text += f" [{self.units}]"
        return text

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **{**self.options, **kwargs})


_REGISTRY: dict[str, EstimatorSpec] = {}
_NEEDS = ("kernels", "distances", "activations")


def register(
    name: str,
    fn: Callable | None = None,
    *,
    needs: str = "kernels",
    units: str = "",
    label: str = "",
    variant: str = "",
    description: str = "",
    options: Mapping | None = None,
    uses_sigma: bool = True,
    packed: Callable | None = None,
    packed_unbiased: bool = False,
    variance_scale: float = 1.0,
    overwrite: bool = False,
) -> Callable:
    """Register an estimator under ``name`` (usable as a decorator); it then appears in the widget's dropdown.

    ``packed`` makes it a fast estimator: ``packed(stats, targets, **options)`` evaluates it for a chunk of packed
    kernels from the statistics a :class:`ibwidget.measure._packed.Stats` computes once for every estimator of the
    pass (row sums, sums of squares, traces with each target's centred kernel...), against each target (a
    ``_packed.Target``), and returns (epochs, layers, targets) float64. ``Run.trajectories`` and the grid then
    evaluate it in that shared pass, and the grid holds it by default. ``packed_unbiased``: it reads the targets'
    unbiased statistics (``l_off``, ``l_rows``, ``hsic_u_self``; every target now carries them, so this is only
    informative); ``variance_scale``: for ``needs="distances"``, the
    Gaussian kernel it reads has variance ``variance_scale * sigma**2`` (the KDE lower bound: 4).

    >>> @register("mean_product", label="E[K∘L]({a}, {b})", overwrite=True)
    ... def mean_product(K, L):
    ...     return (K * L).mean()
    >>> get("mean_product").axis_label("T", "Y")
    'E[K∘L](T, Y)'
    """
    if not isinstance(name, str) or not name:
        raise ValueError("an estimator needs a non-empty string name.")
    needs = resolve_name("'needs' value", needs, _NEEDS)

    def add(f: Callable) -> Callable:
        if not callable(f):
            raise TypeError(f"the estimator {name!r} must be callable, got {type(f).__name__}.")
        if packed is not None and (not callable(packed) or needs == "activations"):
            raise ValueError(
                f"the packed form of {name!r} must be a function of packed kernels (needs='kernels' or "
                f"'distances'), got {packed!r} with needs={needs!r}."
            )
        if not (isinstance(variance_scale, int | float) and math.isfinite(variance_scale) and variance_scale > 0):
            raise ValueError(f"variance_scale must be a positive number, got {variance_scale!r}; e.g. 4.0.")
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"an estimator named {name!r} is already registered; pass overwrite=True to replace it.")
        summary = description or (f.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = EstimatorSpec(
            name,
            f,
            needs,
            units,
            label,
            variant,
            summary,
            dict(options or {}),
            uses_sigma,
            packed,
            packed_unbiased,
            float(variance_scale),
        )
        return f

    return add if fn is None else add(fn)


def get(name: str) -> EstimatorSpec:
    """The :class:`EstimatorSpec` registered under ``name``; case is ignored when one name matches (``"HSIC"``).

    An unknown name raises a ``ValueError`` listing the registered names and the closest ones.
    """
    if isinstance(name, EstimatorSpec):
        return name
    return _REGISTRY[resolve_name("estimator", name, _REGISTRY)]


def names() -> list[str]:
    """Registered estimator names, built-ins first."""
    return list(_REGISTRY)


for _name, _variant, _normalizer in (
    ("hsic", "biased, 1/(m−1)²", "biased"),
    ("hsic_unbiased", "unbiased (Song 2012)", "unbiased"),
    ("hsic_pyglow", "PyGlow, 1/(m−1)", "pyglow"),
):
    register(
        _name,
        hsic,
        label="HSIC({a}, {b})",
        variant=_variant,
        options={"normalizer": _normalizer},
        packed=_hsic_packed,
        packed_unbiased=_normalizer == "unbiased",
    )
register("cka", cka, label="CKA({a}, {b})", options={"debiased": False}, packed=_cka_packed)
register(
    "cka_debiased",
    cka,
    label="CKA({a}, {b})",
    variant="debiased",
    options={"debiased": True},
    packed=_cka_packed,
    packed_unbiased=True,
)
register("nhsic", nhsic, label="nHSIC({a}, {b})", variant="eps=1e-5", options={"eps": 1e-5})
register(
    "renyi_mi", renyi_mi, label="I({a}; {b})", variant="matrix Rényi α=1.01", units="bits", options={"alpha": 1.01}
)
for _bound in ("upper", "lower"):
    register(
        f"kde_{_bound}",
        kde_mi,
        needs="distances",
        label="I({a}; {b})",
        variant=f"KDE {_bound}",
        units="bits",
        options={"bound": _bound},
        packed=_kde_mi_packed,
        variance_scale=4.0 if _bound == "lower" else 1.0,
        description=f"Kolchinsky & Tracey 2017 pairwise {_bound} bound (noise var = sigma²)",
    )
for _name, _variant, _options, _description in (
    ("binning", "30 bins over each layer's range", {"bins": 30}, "30 equal bins over each layer's [min, max]"),
    ("binning_idnn", "IDNNs edges linspace(−1, 1, 30)", {"edges": IDNN_EDGES}, "IDNNs' fixed bin edges (2017)"),
    ("binning_saxe", "width 0.07 (Saxe 2018)", {"width": SAXE_BIN_WIDTH}, "bins of width 0.07, no range limit"),
):
    register(
        _name,
        binning_mi,
        needs="activations",
        label="I({a}; {b})",
        variant=f"binning, {_variant}",
        units="bits",
        options=_options,
        uses_sigma=False,
        description=f"plug-in MI of binned activations: {_description}",
    )
