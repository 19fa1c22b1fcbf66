"""Argument checks shared by kernels and estimators: loud, early, and saying what to pass instead."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def as_float_tensor(x: object, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` as a floating torch tensor; numpy arrays go to ``like``'s device."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} is a numpy array of objects; pass a numeric array or tensor.")
        x = torch.from_numpy(np.ascontiguousarray(x))
        if like is not None:
            x = x.to(like.device)
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if not (x.is_floating_point()):
        raise TypeError(
            f"{name} has dtype {x.dtype}; estimators need floating point. Pass {name}.float() (or .double()) instead."
        )
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s); a diverged layer or a bad input? "
            "Check the activations (or lower the learning rate) and pass finite values."
        )


def check_kernel(K: torch.Tensor, name: str, min_m: int = 2, check_symmetric: bool = True) -> int:
    """Check ``K`` is a finite, square (batched ``(..., m, m)``), symmetric matrix; return m."""
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(
            f"{name} must be a square kernel matrix of shape (m, m) or (..., m, m), got shape {tuple(K.shape)}. "
            "Build one with ibwidget.measure.kernels.gram(Z) and a kernel such as kernels.gaussian(G, sigma)."
        )
    m = K.shape[-1]
    if m < min_m:
        raise ValueError(f"{name} is {m}x{m}; this estimator needs at least {min_m} samples (m >= {min_m}).")
    K = K.detach()  # a check reads values only (a kernel in a training objective carries gradients)
    check_finite(K, name)
    if check_symmetric and m > 1:
        scale = float(K.abs().amax()) if K.numel() else 0.0
        asym = float((K - K.transpose(-1, -2)).abs().amax())
        if asym > 1e-4 * scale + 1e-12:
            raise ValueError(
                f"{name} is not symmetric (max |K - K^T| = {asym:.3g}, max |K| = {scale:.3g}); "
                "a kernel matrix must be symmetric. Pass a Gram matrix Z Z^T, not Z itself or a cross-kernel."
            )
    return m


def check_pair(
    K: torch.Tensor | np.ndarray, L: torch.Tensor | np.ndarray, names: tuple[str, str] = ("K", "L"), min_m: int = 2
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate two kernel matrices over the same m samples; return them on one device and dtype, and m.

    Batched matrices pair up by broadcasting their batch shapes: one ``(m, m)`` matrix against a batch
    ``(b, m, m)`` gives b values; two batches must have broadcastable batch shapes.
    """
    K = as_float_tensor(K, names[0], like=L if isinstance(L, torch.Tensor) else None)
    L = as_float_tensor(L, names[1], like=K)
    if K.device != L.device:
        raise ValueError(
            f"{names[0]} is on {K.device} but {names[1]} is on {L.device}; move both to one device, "
            f"e.g. {names[1]}.to({names[0]}.device)."
        )
    mk = check_kernel(K, names[0], min_m)
    ml = check_kernel(L, names[1], min_m)
    if mk != ml:
        raise ValueError(
            f"{names[0]} is {mk}x{mk} but {names[1]} is {ml}x{ml}; both must be kernel matrices of the same "
            "m samples, in the same order."
        )
    _check_batches(K, L, names)
    dtype = torch.promote_types(K.dtype, L.dtype)
    return K.to(dtype), L.to(dtype), mk


def _check_batches(K: torch.Tensor, L: torch.Tensor, names: tuple[str, str]) -> None:
    """The batch shapes (all but the last two dims) of two kernel matrices must broadcast against each other."""
    try:
        torch.broadcast_shapes(K.shape[:-2], L.shape[:-2])
    except RuntimeError:
        m = K.shape[-1]
        raise ValueError(
            f"{names[0]} has shape {tuple(K.shape)} but {names[1]} has shape {tuple(L.shape)}: batches of "
            f"{tuple(K.shape[:-2])} and {tuple(L.shape[:-2])} matrices do not pair up. Pass batches of the same "
            f"shape (matrix i with matrix i), or one ({m}, {m}) matrix to pair it with every matrix of the other."
        ) from None


def check_samples(Z: object, name: str, m: int, batch_shape: tuple = ()) -> torch.Tensor:
    """``Z`` as a tensor of one value (a label, or a row) per sample: shape ``(m,)`` or ``(m, ...)``."""
    if isinstance(Z, np.ndarray):
        Z = torch.from_numpy(np.ascontiguousarray(Z))
    if not isinstance(Z, torch.Tensor):
        Z = torch.as_tensor(Z)
    if Z.ndim == 0 or Z.shape[0] != m:
        count = "a single value" if Z.ndim == 0 else f"{Z.shape[0]} samples"
        shared = f" The same {name} apply to every matrix of the batch {tuple(batch_shape)}." if batch_shape else ""
        raise ValueError(
            f"{name} has {count} but the representation has {m}; pass one per sample: shape ({m},) of class ids, "
            f"or ({m}, k) with one row per sample (e.g. one-hot), got shape {tuple(Z.shape)}.{shared}"
        )
    return Z


def check_sigma(sigma: object, name: str = "sigma") -> float | torch.Tensor:
    """Sigma must be positive and finite: a number, or a tensor of per-batch values."""
    if isinstance(sigma, torch.Tensor | np.ndarray):
        s = torch.as_tensor(sigma)
        if not s.is_floating_point():
            s = s.double()
        if s.numel() == 0 or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError(f"{name} must be positive and finite, got {sigma!r}. Pass e.g. {name}=5.0.")
        return s
    if isinstance(sigma, np.number):  # np.float32(5.0), e.g. from np.median: an ordinary number
        sigma = sigma.item()
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise TypeError(f"{name} must be a positive number, got {type(sigma).__name__} {sigma!r}.")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"{name} must be positive and finite, got {sigma!r}. Pass e.g. {name}=5.0.")
    return float(sigma)


def _close_names(name: object, known: list) -> list:
    """Known names ``name`` may have meant: those it begins (``"kde"``), else the closest spellings (``"hsci"``)."""
    if not isinstance(name, str) or not name:
        return []
    folded = name.casefold()
    candidates = [k for k in known if isinstance(k, str)]
    starts = [k for k in candidates if k.casefold().startswith(folded)]
    if starts:
        return starts[:3]
    score = {k: difflib.SequenceMatcher(None, folded, k.casefold()).ratio() for k in candidates}
    best = max(score.values(), default=0.0)
    return [k for k in candidates if score[k] == best][:3] if best >= 0.6 else []


def unknown_name(kind: str, name: object, known: Iterable) -> ValueError:
    """The error for a name outside a vocabulary: it lists the known names and suggests the closest ones."""
    known = list(known)
    text = f"Unknown {kind} {name!r}. Known: {', '.join(repr(k) for k in known)}."
    close = _close_names(name, known)
    if close:
        text += f" Did you mean {' or '.join(repr(c) for c in close)}?"
    return ValueError(text)


def resolve_name(kind: str, name: object, known: Iterable) -> Any:
    """The name of ``known`` that ``name`` spells, ignoring case when that leaves one candidate; else an error.

    >>> resolve_name("estimator", "CKA", ["hsic", "cka"])
    'cka'
    """
    known = list(known)
    if name in known:
        return name
    if isinstance(name, str):
        same = [k for k in known if isinstance(k, str) and k.casefold() == name.casefold()]
        if len(same) == 1:
            return same[0]
    raise unknown_name(kind, name, known)


def clean_text(text: object) -> str:
    """``text`` as a string any UTF-8 file can hold: a lone surrogate (from undecodable bytes) becomes U+FFFD."""
    return str(text).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
