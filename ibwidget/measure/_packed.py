"""Estimators evaluated straight from packed upper triangles of kernel matrices, many matrices at once.

A symmetric kernel K over m samples is held as its off-diagonal upper triangle ``k`` (P = m(m-1)/2 values) and its
diagonal ``d``. HSIC (all normalisers), CKA (plain and debiased) and the KDE bounds need only a few statistics of K:
its row sums, sum and sum of squares, and inner products with the (pre-centred) target kernels. Computing those in
chunks from ``k`` costs one pass over half the matrix, with no (m, m) matrix ever built; the results equal
:mod:`ibwidget.measure.estimators` on the full matrices (tested). This module computes the shared statistics
(:class:`Target`, :class:`Stats`); each estimator's packed form, registered with it, combines them.

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

from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch

F64 = torch.float64


@lru_cache(maxsize=8)
def _triu_cached(m: int, device: str):
    iu = torch.triu_indices(m, m, offset=1, device=device)
    return iu[0].contiguous(), iu[1].contiguous()


def triu(m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the strict upper triangle of an (m, m) matrix."""
    return _triu_cached(m, str(torch.device(device)))


def pack(full: torch.Tensor) -> torch.Tensor:
    """(..., m, m) -> (..., P): the strict upper triangle."""
    i, j = triu(full.shape[-1], full.device)
    return full[..., i, j]


def unpack(k: torch.Tensor, m: int, diagonal: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(..., P) -> symmetric (..., m, m) with the given diagonal (a number or (..., m))."""
    i, j = triu(m, k.device)
    full = k.new_zeros(k.shape[:-1] + (m * m,))
    full.index_copy_(-1, i * m + j, k)
    full = full.reshape(k.shape[:-1] + (m, m))
    full = full + full.transpose(-1, -2)
    if isinstance(diagonal, torch.Tensor):
        full.diagonal(dim1=-2, dim2=-1).copy_(diagonal)
    elif diagonal:
        full.diagonal(dim1=-2, dim2=-1).fill_(diagonal)
    return full


@dataclass
class Target:
    """Precomputed statistics of a target kernel L (m, m), or one per epoch (E, m, m), in float64."""

    lc: torch.Tensor  # packed centred kernel (..., P)
    lc_trace: torch.Tensor  # trace of the centred kernel (...)
    norm2: torch.Tensor  # ||H L H||_F^2 (...)
    l_off: torch.Tensor  # packed L shifted to off-diagonal mean 0 (..., P)
    l_rows: torch.Tensor  # row sums of that shifted L with zeroed diagonal (..., m)
    hsic_u_self: torch.Tensor  # unbiased HSIC(L, L) (...)
    labels: torch.Tensor | None = None  # (m,) or (E, m) integer codes, for KDE

    @classmethod
    def of(cls, L: torch.Tensor, unbiased: bool = False) -> Target:
        """Statistics of L (symmetric); those of the unbiased estimators only when ``unbiased``.

        ``H L H`` is never formed: its packed triangle is ``l_ij - mu_i - mu_j + mu`` from L's row means.
        """
        L = L.to(F64)
        m = L.shape[-1]
        i, j = triu(m, L.device)
        l_packed = L[..., i, j]
        diag = torch.diagonal(L, dim1=-2, dim2=-1)
        mu = L.mean(-1)
        mu_all = mu.mean(-1, keepdim=True)
        lc = l_packed - mu[..., i] - mu[..., j] + mu_all
        lc_diag = diag - 2.0 * mu + mu_all
        l_rows = hsic_u = None
        if unbiased:  # unbiased HSIC reads off-diagonal values up to a constant: shift them to mean 0 (a wide
            # Gaussian L, all near 1, would otherwise cancel away its structure in the sums below)
            l_packed = l_packed - l_packed.mean(-1, keepdim=True)
            l_rows = _row_sums(l_packed, m)
            total = l_rows.sum(-1)
            sum_sq = 2.0 * (l_packed * l_packed).sum(-1)
            hsic_u = (sum_sq + total * total / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * (l_rows * l_rows).sum(-1)) / (
                m * (m - 3)
            )
        return cls(
            lc=lc,
            lc_trace=lc_diag.sum(-1),
            norm2=2.0 * (lc * lc).sum(-1) + (lc_diag * lc_diag).sum(-1),
            l_off=l_packed if unbiased else None,
            l_rows=l_rows,
            hsic_u_self=hsic_u,
        )

    @classmethod
    def of_labels(cls, labels: torch.Tensor | None) -> Target:
        """A target that is only class labels (m,) or (E, m), or none (the input X), for KDE."""
        return cls(*(None,) * 6, labels=labels)

    @property
    def per_epoch(self) -> bool:
        reference = self.lc if self.lc is not None else self.labels
        return reference is not None and reference.ndim > 1

    def epochs(self, start: int, stop: int) -> Target:
        """The statistics for epochs [start, stop), with a layer axis to broadcast against (epochs, layers, ...)."""
        if not self.per_epoch:
            return self
        pick = lambda t: None if t is None else t[start:stop].unsqueeze(1)  # noqa: E731
        return Target(
            *(pick(getattr(self, f)) for f in ("lc", "lc_trace", "norm2", "l_off", "l_rows", "hsic_u_self", "labels"))
        )


CHUNK_ELEMS = 2**19  # kernel values evaluated at once: cache-sized (measured best on 2 CPU cores)
_SAMPLE = 1024  # distances per matrix that decide its form (wide or narrow)


def kernel_chunks(dist: torch.Tensor, factor: torch.Tensor, gaussian: bool = True):
    """Yield ``(start, stop, k32, k, shift)``: kernel values of epochs [start, stop) from packed distances (E, L, P).

    Each matrix's off-diagonal values are ``K - shift`` (see the module docstring): Gaussian ``expm1(factor * D2)``
    where the kernel is wide (shift 1, zero diagonal) and ``exp(factor * D2)`` where it is narrow (shift 0, unit
    diagonal); linear ``factor * D2`` (shift 1 in the sense of a zero diagonal). ``factor`` (E, L) as from
    :func:`ibwidget.measure.kernels.exponent_factor`; ``shift`` (e, L) float64, so the diagonal of what ``k`` holds is
    ``1 - shift`` and a row's mean Gaussian kernel value is ``k32.mean(-1) + shift``. Computed in float32 into reused
    buffers (``k32``) and copied to float64 (``k``); the buffers are overwritten at the next step.
    """
    E, L, P = dist.shape
    chunk = min(E, max(1, CHUNK_ELEMS // max(L * P, 1)))
    work32 = torch.empty(chunk, L, P, device=dist.device)
    work64 = torch.empty(chunk, L, P, dtype=F64, device=dist.device)
    factor32 = factor.to(torch.float32)
    if gaussian:  # wide where the mean kernel value of a strided sample of each matrix's distances exceeds 1/2
        sample = dist[..., :: max(1, P // _SAMPLE)]
        wide = torch.exp(sample * factor32[..., None]).mean(-1) > 0.5
    else:
        wide = torch.ones(E, L, dtype=torch.bool, device=dist.device)
    for start in range(0, E, chunk):
        stop = min(E, start + chunk)
        k32, k = work32[: stop - start], work64[: stop - start]
        torch.mul(dist[start:stop], factor32[start:stop, :, None], out=k32)
        rows = wide[start:stop]
        if gaussian:
            for e, layer in rows.nonzero().tolist():
                k32[e, layer].expm1_()
            for e, layer in (~rows).nonzero().tolist():
                k32[e, layer].exp_()
        k.copy_(k32)
        yield start, stop, k32, k, rows.to(F64)


def _dot(k: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """Inner products over the last axis of k (..., P) with (P,), per epoch (e, 1, P), or per row (B, P)."""
    if packed.ndim == 1:
        return k @ packed
    if k.ndim == 3 and packed.shape[-2] == 1:
        return torch.matmul(k, packed.transpose(-1, -2)).squeeze(-1)
    return torch.einsum("...p,...p->...", k, packed)


def _row_sums(k: torch.Tensor, m: int) -> torch.Tensor:
    """Row sums (B, m) of the symmetric matrices whose strict upper triangles are k (B, P), zero diagonal."""
    i, j = triu(m, k.device)
    r = k.new_zeros(k.shape[:-1] + (m,))
    r.index_add_(-1, i, k)
    r.index_add_(-1, j, k)
    return r


class Stats:
    """Statistics of one chunk of packed kernels, each computed on first use and shared by every packed form.

    ``k`` (epochs, layers, P) float64 holds the off-diagonal values of ``K - shift`` (``shift`` (epochs, layers): 1
    or 0), whose diagonal is ``1 - shift``, as :func:`kernel_chunks` yields them; ``m`` is the number of samples. A
    registered estimator's packed form reads what it needs from here (see
    :func:`ibwidget.measure.estimators.register`), so a pass computes each statistic once for all its estimators.
    """

    def __init__(self, k: torch.Tensor, m: int, shift: torch.Tensor):
        self.k, self.m, self.shift = k, m, shift
        self.diagonal = 1.0 - shift  # the diagonal of what k holds

    def trace_with(self, target: Target) -> torch.Tensor:
        """``tr(K H L H)`` with the target's centred kernel (unchanged by the shift): (epochs, layers)."""
        return 2.0 * _dot(self.k, target.lc) + self.diagonal * target.lc_trace

    @cached_property
    def row_sums(self) -> torch.Tensor:
        """Off-diagonal row sums of what ``k`` holds: (epochs, layers, m)."""
        return _row_sums(self.k, self.m)

    @cached_property
    def sum_sq(self) -> torch.Tensor:
        """Sum of squares of the packed values (half the off-diagonal sum of squares): (epochs, layers)."""
        return torch.einsum("...p,...p->...", self.k, self.k)

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
        return 2.0 * self.k.sum(-1)

    def hsic_unbiased_with(self, target: Target) -> torch.Tensor:
        """Unbiased HSIC (Song et al. 2012) with a target built by ``Target.of(L, unbiased=True)``."""
        m = self.m
        return (1.0 / (m * (m - 3))) * (
            2.0 * _dot(self.k, target.l_off)
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
        included), for integer codes (m,) or per epoch (epochs, 1, m)."""
        i, j = triu(self.m, self.k.device)
        r_same = _row_sums(self.k * (codes[..., i] == codes[..., j]).to(self.k.dtype), self.m)
        counts = (codes[..., :, None] == codes[..., None, :]).sum(-1).to(self.k.dtype)
        return r_same, counts
