"""HSIC-bottleneck training: every layer learns from its own objective; no gradient crosses a layer.

Ma, Lewis & Kleijn 2020, "The HSIC bottleneck: deep learning without back-propagation" (AAAI), eq. (5): layer i
minimises ``dep(Z_i, X) - beta_i dep(Z_i, Y)`` over its own parameters, where ``Z_i`` is computed from the previous
layer's output *detached* from the graph and Y is the one-hot labels. ``dep`` is the paper's nHSIC (eq. 4,
:func:`ibwidget.measure.estimators.nhsic`, Gaussian width ``sigma * sqrt(d)`` as in the paper's code) or PyGlow's
HSIC (``tr(K H L H)/(m-1)``, one width for all); both are computed by :mod:`ibwidget.measure`'s estimators. Summing
the layers' objectives into one loss gives each layer exactly its own gradient (the detaches cut every path between
layers), so one optimizer over all parameters steps each layer as a per-layer optimizer would.

After this *pre-training*, the paper fits an output layer (the "head") on the last representation with an ordinary
loss and back-propagation through that layer only: the ``"head"`` phase here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ibwidget.train import _compile

__all__ = ["HSICBottleneck", "Criterion", "PHASES"]

#: ``criterion(z, other) -> 0-d tensor``: the dependence of a layer's activations ``z`` (m, d) on ``other`` (m, d')
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``bottleneck``: train the blocks on their HSIC objectives; ``head``: fit the head on the frozen representation
PHASES = ("bottleneck", "head")


class HSICBottleneck:
    """An engine callback that trains ``blocks`` (a chain of modules, applied in order) by the HSIC bottleneck.

    ``criteria[i]`` is block i's dependence measure (None: no objective, e.g. a Flatten or a layer left as it is),
    ``betas[i]`` its weight on the labels' term. ``head`` (optional) maps the last block's output to the network's
    output: in the ``bottleneck`` phase it is applied without gradients (the output the metrics and the plane see);
    in the ``head`` phase only it trains, on ``head_loss``, with the blocks frozen. ``num_classes`` sizes the one-hot
    labels (default: the run's class count, from the dataset, never from a batch).

    Added to an engine (``callbacks=[...]``), it becomes the engine's ``compute_loss`` in ``setup``.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        criteria: Sequence[Criterion | None],
        betas: Sequence[float],
        head: nn.Module | None = None,
        head_loss: str | Callable = "cross_entropy",
        num_classes: int | None = None,
    ):
        blocks, criteria, betas = list(blocks), list(criteria), [float(b) for b in betas]
        if not len(blocks) == len(criteria) == len(betas):
            raise ValueError(
                f"one criterion and one beta per block: got {len(blocks)} blocks, {len(criteria)} criteria and "
                f"{len(betas)} betas."
            )
        if not any(c is not None for c in criteria):
            raise ValueError("no block has a criterion: give at least one, e.g. HSIC(kernel='gaussian', sigma=5).")
        bad = [c for c in criteria if c is not None and not callable(c)]
        if bad:
            raise TypeError(f"a criterion is callable as criterion(z, x); got {type(bad[0]).__name__}.")
        self.blocks, self.criteria, self.betas = blocks, criteria, betas
        self.head = head
        self.head_loss = _compile.resolve_loss(head_loss)
        self.num_classes = num_classes
        self.phase = "bottleneck"

    # ------------------------------------------------------------------------------------------ engine hooks

    def setup(self, engine) -> None:
        """Become the engine's ``compute_loss``; take the class count from its run unless given."""
        if self.num_classes is None:
            self.num_classes = engine.run.num_classes
        engine.compute_loss = self

    # ------------------------------------------------------------------------------------------ the step

    def set_phase(self, phase: str) -> None:
        """``"bottleneck"`` (train the blocks) or ``"head"`` (fit the head on the frozen blocks)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}.")
        if phase == "head" and self.head is None:
            raise ValueError("there is no head to fit: add an output layer (e.g. HSICoutput(10)) after the blocks.")
        self.phase = phase

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's ``(loss, output)`` in the current phase."""
        if self.phase == "head":
            assert self.head is not None  # set_phase refuses "head" without one
            with torch.no_grad():
                t = x
                for block in self.blocks:
                    t = block(t)
            output = self.head(t)
            return self.head_loss(output, y), output
        return self.objective(x, y)

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum_i dep(Z_i, X) - beta_i dep(Z_i, Y)`` over the blocks with a criterion, and the network's output."""
        m = x.shape[0]
        x_flat = x.reshape(m, -1)
        y_onehot = nn.functional.one_hot(y.long(), self._classes(y)).to(x_flat.dtype)
        loss = x_flat.new_zeros(())
        t = x
        for block, criterion, beta in zip(self.blocks, self.criteria, self.betas, strict=True):
            z = block(t)
            if criterion is not None:
                flat = z.reshape(m, -1)
                loss = loss + criterion(flat, x_flat) - beta * criterion(flat, y_onehot)
            t = z.detach()  # the next block learns from this output, never into this block
        if self.head is None:
            return loss, t
        with torch.no_grad():
            return loss, self.head(t)

    def _classes(self, y: torch.Tensor) -> int:
        if self.num_classes is None:
            raise RuntimeError("the class count is unknown: add this callback to an engine, or pass num_classes=C.")
        # read on the CPU only: on a device it would be a host sync every batch (one_hot refuses the label there)
        if y.device.type == "cpu" and y.numel() and int(y.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(y.max())} is out of range for {self.num_classes} classes; pass num_classes=C covering "
                "every label of the dataset."
            )
        return self.num_classes
