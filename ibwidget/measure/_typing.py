"""Type aliases of the public signatures: what an argument may be, named once.

It lives in the lowest layer (:mod:`ibwidget.measure`), so every layer above may import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

__all__ = [
    "Activation",
    "ArrayLike",
    "Batches",
    "Device",
    "Labels",
    "LossSpec",
    "Metric",
    "Metrics",
    "OptimizerSpec",
    "PathLike",
    "Sigma",
]

#: A numeric array: a torch tensor (any device) or a numpy array (nested lists are refused).
ArrayLike: TypeAlias = torch.Tensor | np.ndarray
#: Integer class ids, one per sample: a tensor, an array or a sequence of ints.
Labels: TypeAlias = torch.Tensor | np.ndarray | Sequence[int]
#: A kernel width: a number, or a tensor (or array) holding one width per batched matrix.
Sigma: TypeAlias = float | torch.Tensor | np.ndarray
#: A file path.
PathLike: TypeAlias = str | os.PathLike[str]
#: A torch device or its name (``"cpu"``, ``"cuda:0"``; ``"auto"`` where a device is chosen).
Device: TypeAlias = str | torch.device
#: An activation: a name (see ``ibwidget.layers.ACTIVATIONS``), a function of a tensor, or None (identity).
Activation: TypeAlias = str | Callable[[torch.Tensor], torch.Tensor] | None
#: Training or validation data: an iterable of batches ``(x, y, ...)`` or dicts (a DataLoader, a list of tuples).
Batches: TypeAlias = Iterable[Any]
#: An optimizer: a name (``"SGD"``, ``"Adam"``...), a built optimizer, or a class or factory ``f(params, **kw)``.
OptimizerSpec: TypeAlias = str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer]
#: A loss: a name (``"cross_entropy"``, ``"nll"``, ``"mse"``) or a callable ``loss(output, target)`` (e.g. a module).
LossSpec: TypeAlias = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: A metric: a name (``"accuracy"``) or a callable ``metric(output, target)``.
Metric: TypeAlias = str | Callable[[torch.Tensor, torch.Tensor], float | torch.Tensor]
#: Metrics: one, several, a dict naming them, or None for none.
Metrics: TypeAlias = Metric | Iterable[Metric] | dict[str, Metric] | None
