"""Geometric diagnostics of each tracked layer, recorded with every snapshot.

Geiger 2021 (*On information plane analyses of neural network classifiers — a review*, IEEE TNNLS) argues that the
"compression" an information plane shows is often geometric: units saturating, weights growing. Saxe et al. 2018
(*On the information bottleneck theory of deep learning*, ICLR) show it with tanh against ReLU networks and with the
gradient's signal-to-noise ratio over training (their figure 5, after Shwartz-Ziv & Tishby 2017, figure 4). So each
snapshot also records, per layer (the names are :data:`ibwidget._vocabulary.DIAGNOSTICS`):

- ``saturated_fraction``: on the probe, the fraction of a tanh layer's activations with |a| > 0.99, of a sigmoid
  layer's below 0.01 or above 0.99, and the fraction of a ReLU layer's units that are dead (zero on every probe
  sample). NaN for a linear layer, and for one whose nonlinearity is not known (see :func:`nonlinearity_of`;
  declare it).
- ``mean_abs_activation``: the mean |a| over the probe and the layer's units.
- ``weight_norm``: the Frobenius norm of the layer's weights (its parameters named ``weight``; NaN if none).
- ``grad_mean``, ``grad_std``, ``grad_snr``: over the epoch's steps, ||E[g]|| and ||Std[g]|| of the gradient g of
  the layer's weights (each taken elementwise over the steps, then the Frobenius norm), and their ratio; a layer of
  more than :data:`SAMPLED_WEIGHTS` weights is estimated from a fixed sample of them (see :class:`GradientMoments`).
  NaN for an epoch without steps (epoch 0) and for a loop that does not report its steps (``rec.step()``); one
  step has no spread (std 0, SNR infinite).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ibwidget._vocabulary import DIAGNOSTICS, NONLINEARITIES

__all__ = [
    "DIAGNOSTICS",
    "NONLINEARITIES",
    "nonlinearity_of",
    "layer_nonlinearities",
    "activation_diagnostics",
    "weight_norms",
    "GradientMoments",
]

TANH_SATURATION = 0.99  #: |tanh| above this is saturated
SIGMOID_SATURATION = 0.01  #: a sigmoid below this or above 1 minus it is saturated
_BY_TYPE = ((nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.ReLU, "relu"), (nn.Identity, "linear"))


def nonlinearity_of(module: nn.Module | None) -> str | None:
    """The nonlinearity whose output ``module`` gives, when known: ``nn.Tanh``, ``nn.Sigmoid`` and ``nn.ReLU``
    modules, and ibwidget layers (``IBSequential``) built with one of those activations or none ("linear"); else
    None."""
    for kind, name in _BY_TYPE:
        if isinstance(module, kind):
            return name
    name = getattr(module, "activation_name", None)
    return name if name in NONLINEARITIES else None


def layer_nonlinearities(
    modules: Mapping[str, nn.Module | None], declared: Mapping[str, str] | None = None
) -> list[str | None]:
    """Per tracked layer (``modules``: name -> module, in order), its declared nonlinearity, else the one
    :func:`nonlinearity_of` finds, else None. A declared name that is not tracked, or a nonlinearity not in
    :data:`NONLINEARITIES`, is refused, saying what to pass."""
    declared = dict(declared or {})
    for name, kind in declared.items():
        if name not in modules:
            raise ValueError(
                f"nonlinearities names {name!r}, which is not a tracked layer; the tracked layers are "
                f"{', '.join(map(repr, modules))}."
            )
        if kind not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearities[{name!r}] must be one of {', '.join(map(repr, NONLINEARITIES))}, got {kind!r}."
            )
    return [declared.get(name) or nonlinearity_of(module) for name, module in modules.items()]


def activation_diagnostics(
    activations: Sequence[torch.Tensor], nonlinearities: Sequence[str | None]
) -> dict[str, torch.Tensor]:
    """``saturated_fraction`` and ``mean_abs_activation`` of each layer's probe activations (m, units), float64
    tensors (layers,) on the activations' device (no host synchronisation)."""
    saturated, mean_abs = [], []
    for a, kind in zip(activations, nonlinearities, strict=True):
        a = a.reshape(a.shape[0], -1).double()
        mean_abs.append(a.abs().mean())
        if kind == "tanh":
            saturated.append((a.abs() > TANH_SATURATION).double().mean())
        elif kind == "sigmoid":
            saturated.append(((a < SIGMOID_SATURATION) | (a > 1.0 - SIGMOID_SATURATION)).double().mean())
        elif kind == "relu":
            saturated.append((a <= 0).all(dim=0).double().mean())  # dead units: zero on the whole probe
        else:
            saturated.append(a.new_tensor(math.nan))
    return {"saturated_fraction": torch.stack(saturated), "mean_abs_activation": torch.stack(mean_abs)}


def _weights(module: nn.Module | None) -> list[torch.nn.Parameter]:
    if module is None:
        return []
    return [p for name, p in module.named_parameters() if name.rsplit(".", 1)[-1] == "weight"]


def weight_norms(modules: Sequence[nn.Module | None], device: torch.device) -> torch.Tensor:
    """The Frobenius norm of each module's weights, float64 (layers,) on ``device``; NaN for a module without."""
    norms = []
    for module in modules:
        weights = _weights(module)
        if weights:
            norms.append(torch.sqrt(sum(w.detach().double().square().sum() for w in weights)).to(device))
        else:
            norms.append(torch.tensor(math.nan, dtype=torch.float64, device=device))
    return torch.stack(norms)


#: weights of a layer whose gradients are followed each step; a bigger layer's statistics are estimated from a fixed,
#: seeded sample of this many of them (the full tensors cost a step's worth of memory traffic: 2x a seed-model step)
SAMPLED_WEIGHTS = 65_536


class GradientMoments:
    """Sums of the gradient of each module's weights and of its square over the steps of an epoch, so that
    :meth:`take` gives the epoch's ``grad_mean``, ``grad_std`` and ``grad_snr`` (see the module). :meth:`add` after
    each backward (after DDP's allreduce, so rank 0 sees the averaged gradient).

    A layer of at most :data:`SAMPLED_WEIGHTS` weights is followed whole (exact); a bigger one through a fixed,
    seeded sample of that many of its weights, the sums scaled by its size over the sample's (unbiased estimates of
    ||E[g]||² and ||Std[g]||², their ratio the SNR): each step then costs a gather of at most that many values a
    layer and two float64 operations on them, whatever the layer's size.
    """

    def __init__(self, modules: Sequence[nn.Module | None], device: torch.device, sample: int = SAMPLED_WEIGHTS):
        self._device = device
        generator = torch.Generator().manual_seed(0)
        self._picks: list[tuple[torch.nn.Parameter, torch.Tensor | None, int]] = []  # (weight, flat indices, count)
        self._layers: list[tuple[int, int, float]] = []  # per layer: (start, stop) in the sampled vector, scale
        start = 0
        for module in modules:
            weights = _weights(module)
            total = sum(w.numel() for w in weights)
            if total <= sample:
                chosen = [(w, None, w.numel()) for w in weights]
            else:
                flat = torch.randperm(total, generator=generator)[:sample].sort().values
                chosen, offset = [], 0
                for w in weights:
                    local = flat[(flat >= offset) & (flat < offset + w.numel())] - offset
                    chosen.append((w, local.to(w.device), int(local.numel())))
                    offset += w.numel()
            count = sum(n for _, _, n in chosen)
            self._picks += chosen
            self._layers.append((start, start + count, total / count if count else math.nan))
            start += count
        self._sum = torch.zeros(start, dtype=torch.float64, device=device)
        self._squares = torch.zeros(start, dtype=torch.float64, device=device)
        self.steps = 0

    def add(self) -> None:
        """Add the gradients the weights hold now (a weight without a gradient adds zeros)."""
        parts = []
        for w, index, count in self._picks:
            if w.grad is None:
                parts.append(torch.zeros(count, dtype=torch.float64, device=self._device))
                continue
            flat = w.grad.detach().reshape(-1)
            parts.append((flat if index is None else flat[index]).to(self._device, torch.float64))
        if parts:
            g = torch.cat(parts)
            self._sum.add_(g)
            self._squares.addcmul_(g, g)
        self.steps += 1

    def take(self) -> dict[str, torch.Tensor]:
        """The epoch's statistics, float64 tensors (layers,) (NaN without steps), and start the next epoch."""
        n = self.steps
        nan = torch.full((len(self._layers),), math.nan, dtype=torch.float64, device=self._device)
        out = {k: nan.clone() for k in ("grad_mean", "grad_std", "grad_snr")}
        if n:
            mean = self._sum / n
            var = (self._squares / n - mean.square()).clamp_min(0)
            for i, (start, stop, scale) in enumerate(self._layers):
                if stop == start:
                    continue
                norm = torch.sqrt(scale * mean[start:stop].square().sum())
                spread = torch.sqrt(scale * var[start:stop].sum())
                out["grad_mean"][i], out["grad_std"][i], out["grad_snr"][i] = norm, spread, norm / spread
            self._sum.zero_()
            self._squares.zero_()
        self.steps = 0
        return out
