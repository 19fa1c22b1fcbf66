"""The seed tutorial's network, built in one call: the model the command line, the notebooks and the benchmarks
train. Public as ``ibwidget.models.seed_model``."""

from __future__ import annotations

from collections.abc import Sequence

from ibwidget.pyglow.layers import Conv2d, Dense, Dropout, Flatten
from ibwidget.pyglow.models import IBSequential

__all__ = ["seed_model"]

_HIDDEN_WIDTHS = (1000, 500, 200)


def seed_model(
    input_shape: Sequence[int],
    num_classes: int = 10,
    device: str = "auto",
    dropout: float = 0.0,
    name: str | None = None,
) -> IBSequential:
    """PyGlow's HSIC tutorial network, uncompiled: Conv2d(16, 3x3, relu) -> Flatten -> Dense 1000/500/200 (relu)
    -> Dense(num_classes) logits (the loss applies the softmax).

    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 28, 28)``; ``dropout`` > 0 adds a
    ``Dropout(dropout)`` after each hidden Dense layer; ``name`` labels the model's runs in legends. Seed torch
    (``torch.manual_seed``) first for reproducible initial weights.
    """
    model = IBSequential(input_shape=tuple(input_shape), device=device, name=name)
    model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
    model.add(Flatten())
    for width in _HIDDEN_WIDTHS:
        model.add(Dense(width, activation="relu"))
        if dropout:
            model.add(Dropout(dropout))
    model.add(Dense(num_classes))
    return model
