"""Estimators evaluated from a few shared statistics of many kernel matrices at once.

Runs store each symmetric squared-distance matrix as its packed strict upper triangle (P = m(m-1)/2 values); a pass
unpacks a window of them to full (m, m) matrices once (:func:`unpack_window`), then evaluates every width (sigma
slot) from that window: one kernel evaluation per matrix and width, shared by every estimator and target. HSIC (all
normalisers), CKA (plain and debiased) and the KDE bounds need only a few statistics of a kernel K: its row sums,
sum of squares, inner products with the (pre-centred) target kernels and per-class row sums. :class:`Stats` computes
each once per window and width, as contiguous reductions and small matrix products; :class:`Target` holds a target's
statistics; each estimator's packed form, registered with it, combines them. The results equal
:mod:`ibwidget.measure.estimators` on the full matrices (tested).

Precision at every sigma: a wide Gaussian kernel has values near 1, where float32 keeps only ~6e-8 of ``1 - K``,
and a narrow one values near 0, whose structure ``K - 1`` would lose. So each matrix is held in the form that keeps
its structure: a wide one (mean kernel value above 1/2) as ``K - 11^T``, i.e. ``expm1(-D2 / (2 sigma^2))`` with a
zero diagonal, a narrow one as K itself. HSIC (every normaliser) and CKA (plain and debiased) are unchanged by
``K -> K - 11^T`` (centring removes it; the unbiased estimator reads only differences of off-diagonal values), and
the KDE bounds' row sums of a shifted kernel become ``log1p`` of the shifted sums. The linear kernel is held as
``-D2/2`` with a zero diagonal (equal to ``G`` up to ``a 1^T + 1 a^T``, which centring also removes). Statistics are
accumulated in float64; results match float64 kernels on the same distances to ~1e-7 for sigma from 0.05 to 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import torch

F64 = torch.float64

#: kernel values evaluated at once (one window's matrices, or a part of them): large enough that each torch call
#: amortises its overhead over many matrices, small enough for a few such buffers to stay in memory
CHUNK_ELEMS = 2**22
_SAMPLE = 1024  # distances per matrix that decide its form (wide or narrow)
_EXP_FLOOR = -87.0  # exp(-87) = 1.6e-38, about float32's smallest normal number


@lru_cache(maxsize=8)
def _triu_cached(m: int, device: str):
    iu = torch.triu_indices(m, m, offset=1, device=device)
    return iu[0].contiguous(), iu[1].contiguous()


def triu(m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the strict upper triangle of an (m, m) matrix."""
    return _triu_cached(m, str(torch.device(device)))


@lru_cache(maxsize=8)
def _flat_triu_cached(m: int, device: str) -> torch.Tensor:
    i, j = triu(m, device)
    return (i * m + j).contiguous()


@lru_cache(maxsize=8)
def _square_index_cached(m: int, device: str) -> torch.Tensor:
    i, j = triu(m, device)
    index = torch.zeros(m * m, dtype=torch.long, device=device)
    positions = torch.arange(i.shape[0], device=device)
    index[i * m + j] = positions
    index[j * m + i] = positions
    return index  # the diagonal points at entry 0: unpack_window zeroes it


def pack(full: torch.Tensor) -> torch.Tensor:
    """(..., m, m) -> (..., P): the strict upper triangle, in one gather of the flattened matrices."""
    m = full.shape[-1]
    flat = full.reshape(-1, m * m)
    packed = torch.index_select(flat, 1, _flat_triu_cached(m, str(full.device)))
    return packed.reshape(*full.shape[:-2], m * (m - 1) // 2)  # P named: an empty batch has no -1 to infer


def unpack(k: torch.Tensor, m: int, diagonal: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(..., P) -> symmetric (..., m, m) with the given diagonal (a number or (..., m))."""
    full = unpack_window(k.reshape(-1, k.shape[-1]), m).reshape(k.shape[:-1] + (m, m))
    if isinstance(diagonal, torch.Tensor):
        full.diagonal(dim1=-2, dim2=-1).copy_(diagonal)
    elif diagonal:
        full.diagonal(dim1=-2, dim2=-1).fill_(diagonal)
    return full


def unpack_window(packed: torch.Tensor, m: int) -> torch.Tensor:
    """(n, P) packed triangles -> (n, m, m) symmetric matrices with a zero diagonal, in one gather."""
    n = packed.shape[0]
    full = torch.index_select(packed, 1, _square_index_cached(m, str(packed.device))).view(n, m, m)
    full.diagonal(dim1=-2, dim2=-1).zero_()
    return full


def _dot(k: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Frobenius inner products of k (e, l, m, m) with (m, m) or, per epoch, (e, 1, m, m): (e, l)."""
    e, l_, m, _ = k.shape
    flat = k.reshape(e, l_, m * m)
    if other.ndim == 2:
        return flat @ other.reshape(m * m)
    per_epoch = other.reshape(e, m * m)
    return torch.stack([flat[i] @ per_epoch[i] for i in range(e)])  # matrix-vector products: 2x a batched matmul


def _one_hot(codes: torch.Tensor) -> torch.Tensor:
    """float64 one-hot rows (..., m, C) of integer codes (..., m)."""
    return torch.nn.functional.one_hot(codes.long(), int(codes.max()) + 1).to(F64)


@dataclass
class Target:
    """Precomputed statistics of a target kernel L (m, m), or one per epoch (E, m, m), in float64.

    L is held as ``l_off`` = its off-diagonal values shifted to mean 0 (``shift``, that mean), with a zero diagonal,
    and ``delta`` = its diagonal minus ``shift``: the form that keeps a wide Gaussian L's structure (values near 1),
    and from which ``H L H`` (the shift removed by centring) enters every trace through one inner product
    (:meth:`Stats.trace_with`). A kernel of class labels (the one-hot Gram) also keeps its ``classes``: its inner
    products are then per-class row sums. A target of labels alone (:meth:`of_labels`, for KDE) has None for
    every kernel statistic.
    """

    l_off: torch.Tensor  # L - shift off the diagonal, 0 on it (..., m, m)
    l_rows: torch.Tensor  # row sums of l_off (..., m)
    delta: torch.Tensor  # diag(L) - shift (..., m)
    shift: torch.Tensor  # the off-diagonal mean of L (...)
    lc_trace: torch.Tensor  # tr(H L H) (...)
    norm2: torch.Tensor  # ||H L H||_F^2 (...)
    hsic_u_self: torch.Tensor  # unbiased HSIC(L, L) (...)
    labels: torch.Tensor | None = None  # (m,) or (E, m) integer codes, for KDE
    classes: torch.Tensor | None = None  # (m,) codes whose one-hot Gram is L
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def off_triangle(self) -> torch.Tensor:
        """The packed strict upper triangle of ``l_off`` (..., P), once: what a triangle's inner products read."""
        if "off" not in self._memo:
            self._memo["off"] = pack(self.l_off)
        return self._memo["off"]

    def centred_triangle(self) -> torch.Tensor:
        """The packed strict upper triangle of ``H L H`` (..., P), once: what a triangle's trace reads."""
        if "lc" not in self._memo:
            m = self.l_off.shape[-1]
            i, j = triu(m, self.l_off.device)
            u = (self.l_rows + self.delta) / m
            self._memo["lc"] = self.off_triangle() - u[..., i] - u[..., j] + (u.sum(-1) / m)[..., None]
        return self._memo["lc"]

    @classmethod
    def of(cls, L: torch.Tensor, classes: torch.Tensor | None = None) -> Target:
        """Statistics of L (symmetric), the unbiased estimators' too; ``classes``: integer codes whose one-hot Gram
        L is (a label kernel)."""
        L = L.to(F64)
        m = L.shape[-1]
        diag = torch.diagonal(L, dim1=-2, dim2=-1)
        shift = (L.sum((-1, -2)) - diag.sum(-1)) / (m * (m - 1))
        l_off = L - shift[..., None, None]
        l_off.diagonal(dim1=-2, dim2=-1).zero_()
        rows = l_off.sum(-1)
        delta = diag - shift[..., None]
        total = rows.sum(-1)
        sum_sq = torch.linalg.vector_norm(l_off.flatten(-2), dim=-1).square()
        ones = rows + delta  # (l_off + diag(delta)) 1
        full = ones.sum(-1)
        return cls(
            l_off=l_off,
            l_rows=rows,
            delta=delta,
            shift=shift,
            lc_trace=delta.sum(-1) - full / m,
            norm2=(
                sum_sq + (delta * delta).sum(-1) - (2.0 / m) * (ones * ones).sum(-1) + full * full / (m * m)
            ).clamp_min(0.0),
            hsic_u_self=(sum_sq + total * total / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (rows * rows).sum(-1))
            / (m * (m - 3)),
            classes=classes,
        )

    @classmethod
    def of_labels(cls, labels: torch.Tensor | None) -> Target:
        """A target that is only class labels (m,) or (E, m), or none (the input X), for KDE."""
        return cls(*(None,) * 7, labels=labels)

    @property
    def per_epoch(self) -> bool:
        if self.l_off is not None:
            return self.l_off.ndim > 2
        return self.labels is not None and self.labels.ndim > 1

    def epochs(self, start: int, stop: int) -> Target:
        """The statistics for epochs [start, stop), with a layer axis to broadcast against (epochs, layers, ...)."""
        if not self.per_epoch:
            return self
        pick = lambda t: None if t is None else t[start:stop].unsqueeze(1)  # noqa: E731
        fields = ("l_off", "l_rows", "delta", "shift", "lc_trace", "norm2", "hsic_u_self", "labels", "classes")
        return Target(*(pick(getattr(self, f)) for f in fields))


def wide_kernels(dist: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Which Gaussian kernels of packed distances (E, L, P) at ``factor`` (E, L) are wide (mean value > 1/2, decided
    on a strided sample of each matrix's distances): bool (E, L)."""
    sample = dist[..., :: max(1, dist.shape[-1] // _SAMPLE)]
    return torch.exp(sample * factor.to(dist.dtype)[..., None]).mean(-1) > 0.5


def kernel_window(D: torch.Tensor, factor: torch.Tensor, wide: torch.Tensor | None, out32, out64) -> torch.Tensor:
    """Off-diagonal kernel values of the squared distances D, (e, l, m, m) with a zero diagonal or packed triangles
    (e, l, P), into ``out64``, returned with D's shape: Gaussian ``expm1(factor * D)`` where ``wide`` (shift 1) and
    ``exp(factor * D)`` where not (shift 0); ``wide=None``: linear, ``factor * D`` (shift 1). The diagonal they stand
    for is ``1 - shift``, kept out of the matrix so that no sum adds it to values many orders smaller. Evaluated in
    float32 (``out32``), accumulated in float64 (``out64``); both are buffers of at least D's size, overwritten at
    the next call."""
    e, l_ = D.shape[:2]
    square = D.ndim == 4
    k32 = out32[: D.numel()].view(D.shape)
    f32 = factor.to(torch.float32)
    torch.mul(D, f32[..., None, None] if square else f32[..., None], out=k32)
    if wide is not None:
        if bool((~wide).any()):
            k32.clamp_(min=_EXP_FLOOR)  # exp of lower values is 0 or subnormal, and 30x slower to compute
        forms = wide.reshape(-1).tolist()
        if all(forms):
            k32.expm1_()
        elif not any(forms):
            k32.exp_()
        else:
            flat = k32.view(e * l_, -1)
            for index, is_wide in enumerate(forms):
                flat[index].expm1_() if is_wide else flat[index].exp_()
    k = out64[: D.numel()].view(D.shape)
    k.copy_(k32)
    if square:
        k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


class Stats:
    """Statistics of one window of full (m, m) kernels, each computed on first use and shared by every packed form.

    ``k`` (epochs, layers, m, m) float64 holds the off-diagonal values of ``K - shift`` (``shift`` (epochs, layers): 1
    or 0, see the module docstring) and a zero diagonal, as :func:`kernel_window` returns it; ``m`` is the number of
    samples. A registered estimator's packed form reads what it needs from here (see
    :func:`ibwidget.measure.estimators.register`), so a pass computes each statistic once for all its estimators.
    """

    def __init__(self, k: torch.Tensor, m: int, shift: torch.Tensor, codes: Sequence[torch.Tensor] = ()):
        """``codes``: the class codes (m,) or (epochs, 1, m) the pass's estimators will ask about
        (:meth:`class_row_sums`), read together with the row sums in one product with ``k``."""
        self.k, self.m, self.shift = k, m, shift
        self.diagonal = 1.0 - shift  # the diagonal of K - shift, which k leaves out
        self._dots: dict = {}
        self._codes = list({id(c): c for c in codes}.values())

    def _dot(self, other: torch.Tensor) -> torch.Tensor:
        """``<K - shift, other>`` off the diagonal, once per matrix ``other`` (every estimator asks for the same)."""
        key = id(other)
        if key not in self._dots:
            self._dots[key] = (other, _dot(self.k, other))  # holding other keeps its id from being reused
        return self._dots[key][1]

    def _dot_target(self, target: Target) -> torch.Tensor:
        """``<K - shift, L - target.shift>`` off the diagonal: (epochs, layers). For a label kernel, the same-class
        row sums (read with the row sums) less the shift times the total."""
        if target.classes is not None:
            same, _ = self.class_row_sums(target.classes)
            return same.sum(-1) - target.shift * self.total
        return self._dot(target.l_off)

    def trace_with(self, target: Target) -> torch.Tensor:
        """``tr(K H L H)`` (unchanged by either shift): (epochs, layers).

        With ``A`` = the target's ``l_off``, ``D`` = diag(``delta``) and ``a`` the row means of K:
        ``tr(K H (A + D) H) = <K, A> - 2 a.rows(A) + mean(a) sum(rows(A)) + sum_i delta_i (K_ii - 2 a_i + mean(a))``.
        """
        key = ("trace", id(target.l_off))
        if key not in self._dots:
            m = self.m
            a = (self.row_sums + self.diagonal[..., None]) / m
            a_bar = a.mean(-1)
            rows = target.l_rows
            trace = (
                self._dot_target(target)
                - 2.0 * (a * rows).sum(-1)
                + a_bar * rows.sum(-1)
                + (target.delta * (self.diagonal[..., None] - 2.0 * a + a_bar[..., None])).sum(-1)
            )
            self._dots[key] = (target.l_off, trace)
        return self._dots[key][1]

    @cached_property
    def row_sums(self) -> torch.Tensor:
        """Off-diagonal row sums of ``K - shift``: (epochs, layers, m)."""
        if self._codes:
            return self._row_products[0][..., 0]
        return self.k.sum(-1)

    @cached_property
    def _row_products(self) -> tuple[torch.Tensor, dict[int, tuple[int, torch.Tensor]]]:
        """``k`` times ``[1 | one-hot of each code set]``: row sums and per-class row sums in one read of ``k``;
        and, per code set (by id), its first column and one-hot matrix."""
        onehots = [_one_hot(c) for c in self._codes]
        columns = [torch.ones(self.m, 1, dtype=F64, device=self.k.device), *onehots]
        if any(c.ndim > 2 for c in columns):  # some codes per epoch: every block per epoch
            e = self.k.shape[0]
            columns = [c if c.ndim > 2 else c.expand(e, 1, *c.shape) for c in columns]
        offsets, start = {}, 1
        for codes, onehot in zip(self._codes, onehots, strict=True):
            offsets[id(codes)] = (start, onehot)
            start += onehot.shape[-1]
        return torch.matmul(self.k, torch.cat(columns, -1)), offsets

    @cached_property
    def sum_sq(self) -> torch.Tensor:
        """Half the off-diagonal sum of squares of ``K - shift``: (epochs, layers)."""
        return 0.5 * torch.linalg.vector_norm(self.k.flatten(-2), dim=-1).square()

    @cached_property
    def centred_norm2(self) -> torch.Tensor:
        """``||H K H||_F^2`` (clamped at 0): (epochs, layers)."""
        m, diagonal = self.m, self.diagonal
        r = self.row_sums + diagonal[..., None]
        norm2 = m * diagonal**2 + 2.0 * self.sum_sq - (2.0 / m) * (r * r).sum(-1) + r.sum(-1) ** 2 / (m * m)
        return norm2.clamp_min(0.0)

    @cached_property
    def total(self) -> torch.Tensor:
        """Sum of the off-diagonal values of what ``k`` holds: (epochs, layers)."""
        return self.row_sums.sum(-1)

    def hsic_unbiased_with(self, target: Target) -> torch.Tensor:
        """Unbiased HSIC (Song et al. 2012, "Feature selection via dependence maximization", HSIC_1) from shared
        sums."""
        m = self.m
        return (1.0 / (m * (m - 3))) * (
            self._dot_target(target)
            + self.total * target.l_rows.sum(-1) / ((m - 1) * (m - 2))
            - 2.0 / (m - 2) * (self.row_sums * target.l_rows).sum(-1)
        )

    @cached_property
    def hsic_unbiased_self(self) -> torch.Tensor:
        """Unbiased HSIC(K, K): (epochs, layers)."""
        m, r, total = self.m, self.row_sums, self.total
        scale = 1.0 / (m * (m - 3))
        return scale * (2.0 * self.sum_sq + total * total / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (r * r).sum(-1))

    def log_row_means(self, row_sums: torch.Tensor, counts: torch.Tensor | float) -> torch.Tensor:
        """``log`` of each row's mean Gaussian kernel value from off-diagonal sums of what ``k`` holds over ``counts``
        entries (the diagonal included): ``log1p(r / n)`` where shifted, ``log((1 + r) / n)`` where not."""
        wide = self.shift[..., None] > 0
        return torch.where(wide, torch.log1p(row_sums / counts), torch.log((1.0 + row_sums) / counts))

    def class_row_sums(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Off-diagonal row sums over same-class samples (epochs, layers, m), and each row's class size (self
        included), for integer codes (m,) or per epoch (epochs, 1, m); once per ``codes``."""
        key = ("classes", id(codes))
        if key not in self._dots:
            self._dots[key] = (codes, self._class_row_sums(codes))
        return self._dots[key][1]

    def _class_row_sums(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if id(codes) in {id(c) for c in self._codes}:  # read with the row sums
            products, offsets = self._row_products
            start, onehot = offsets[id(codes)]
            per_class = products[..., start : start + onehot.shape[-1]]
        else:
            onehot = _one_hot(codes)  # (m, C) or (e, 1, m, C)
            per_class = torch.matmul(self.k, onehot)  # (e, l, m, C)
        own = codes.long()[..., None].expand(per_class.shape[:-1] + (1,))
        r_same = per_class.gather(-1, own).squeeze(-1)
        counts = onehot.sum(-2).gather(-1, codes.long())  # each row's class size
        return r_same, counts


def _row_sums(k: torch.Tensor, m: int) -> torch.Tensor:
    """Row sums (..., m) of the symmetric matrices whose strict upper triangles are k (..., P), zero diagonal."""
    i, j = triu(m, k.device)
    r = k.new_zeros(k.shape[:-1] + (m,))
    r.index_add_(-1, i, k)
    r.index_add_(-1, j, k)
    return r


class TriangleStats(Stats):
    """:class:`Stats` of packed triangles ``k`` (epochs, layers, P): for one width, cheaper than unpacking.

    Unpacking costs about as much as a width's whole pass; a grid's many widths share it, one width does not. The
    statistics (and every estimator's packed form) are the same; only their primitives read the triangle.
    """

    def _dot(self, other: torch.Tensor) -> torch.Tensor:
        """``<K - shift, other>`` off the diagonal for a full matrix ``other`` (a target's: see :meth:`_dot_target`)."""
        key = id(other)
        if key not in self._dots:
            self._dots[key] = (other, self._triangle_dot(pack(other)))
        return self._dots[key][1]

    def _dot_target(self, target: Target) -> torch.Tensor:
        if target.classes is not None:
            return super()._dot_target(target)
        key = ("off", id(target.l_off))
        if key not in self._dots:  # the target packs its triangle once for every window
            self._dots[key] = (target.l_off, self._triangle_dot(target.off_triangle()))
        return self._dots[key][1]

    def _triangle_dot(self, packed: torch.Tensor) -> torch.Tensor:
        """``2 <k, packed>``: both triangles, for (P,) or per epoch (e, 1, P)."""
        if packed.ndim == 1:
            return 2.0 * (self.k @ packed)
        return 2.0 * torch.matmul(self.k, packed.transpose(-1, -2)).squeeze(-1)

    def trace_with(self, target: Target) -> torch.Tensor:
        """``tr(K H L H)`` from the target's centred triangle: no row sums of K needed."""
        key = ("trace", id(target.l_off))
        if key not in self._dots:
            trace = self._triangle_dot(target.centred_triangle()) + self.diagonal * target.lc_trace
            self._dots[key] = (target.l_off, trace)
        return self._dots[key][1]

    @cached_property
    def row_sums(self) -> torch.Tensor:
        return _row_sums(self.k, self.m)

    @cached_property
    def sum_sq(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.k, dim=-1).square()

    @cached_property
    def total(self) -> torch.Tensor:
        return 2.0 * self.k.sum(-1)  # no row sums needed (the saturation of one width asks only for this)

    def _class_row_sums(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = triu(self.m, self.k.device)
        r_same = _row_sums(self.k * (codes[..., i] == codes[..., j]).to(self.k.dtype), self.m)
        counts = (codes[..., :, None] == codes[..., None, :]).sum(-1).to(self.k.dtype)
        return r_same, counts
