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
  the layer's weights (each taken elementwise over the steps, then the Frobenius norm), and their ratio. NaN for an
  epoch without steps (epoch 0) and for a loop that does not report its steps (``rec.step()``); one step has no
  spread (std 0, SNR infinite).
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


class GradientMoments:
    """Sums of the gradient of each module's weights and of its square over the steps of an epoch, so that
    :meth:`take` gives the epoch's ``grad_mean``, ``grad_std`` and ``grad_snr`` (see the module). :meth:`add` after
    each backward (after DDP's allreduce, so rank 0 sees the averaged gradient); float64 sums on the weights'
    device, two elementwise operations per weight tensor and step."""

    def __init__(self, modules: Sequence[nn.Module | None], device: torch.device):
        self._weights = [_weights(module) for module in modules]
        self._device = device
        self._sums: list[list[torch.Tensor]] | None = None
        self._squares: list[list[torch.Tensor]] | None = None
        self.steps = 0

    def add(self) -> None:
        """Add the gradients the weights hold now (a weight without a gradient adds zeros)."""
        if self._sums is None or self._squares is None:
            self._sums = [[torch.zeros_like(w, dtype=torch.float64) for w in ws] for ws in self._weights]
            self._squares = [[torch.zeros_like(w, dtype=torch.float64) for w in ws] for ws in self._weights]
        for ws, sums, squares in zip(self._weights, self._sums, self._squares, strict=True):
            for w, s, q in zip(ws, sums, squares, strict=True):
                if w.grad is not None:
                    g = w.grad.detach().double()
                    s.add_(g)
                    q.addcmul_(g, g)
        self.steps += 1

    def take(self) -> dict[str, torch.Tensor]:
        """The epoch's statistics, float64 tensors (layers,) (NaN without steps), and start the next epoch."""
        n = self.steps
        nan = torch.full((len(self._weights),), math.nan, dtype=torch.float64, device=self._device)
        out = {k: nan.clone() for k in ("grad_mean", "grad_std", "grad_snr")}
        if n and self._sums is not None and self._squares is not None:
            for i, (sums, squares) in enumerate(zip(self._sums, self._squares, strict=True)):
                if not sums:
                    continue
                mean_sq = sum((s / n).square().sum() for s in sums)
                var = sum((q / n - (s / n).square()).clamp_min(0).sum() for s, q in zip(sums, squares, strict=True))
                mean, std = torch.sqrt(mean_sq).to(self._device), torch.sqrt(var).to(self._device)
                out["grad_mean"][i], out["grad_std"][i] = mean, std
                out["grad_snr"][i] = mean / std
            for part in (*self._sums, *self._squares):
                for t in part:
                    t.zero_()
        self.steps = 0
        return out
