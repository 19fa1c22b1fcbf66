"""The Lightning callback: ``Trainer(callbacks=[InformationPlane(probe=(x, y), path="runs/a.ibrun")])``.

It records through :func:`ibwidget.record`: epoch 0 at ``on_train_start``, then each ``on_train_epoch_end`` (after
validation), with Lightning's logged metrics (``trainer.callback_metrics``) in the run's history. The LightningModule
itself (``pl_module``) is probed, never the strategy's wrapper; under a multi-process strategy rank 0 records and
writes the file (with DDP the other ranks do nothing; with FSDP they join the probe forward). It subclasses the
``Callback`` of whichever of ``lightning`` and ``pytorch_lightning`` is installed (both, when both are: their Trainers
each refuse the other's callbacks). Install with ``pip install 'ibwidget[lightning]'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ibwidget.measure._typing import PathLike
from ibwidget.record.recorder import DEFAULT_MEMORY_BUDGET
from ibwidget.record.recording import DEFAULT_PROBE, Recording, record
from ibwidget.record.run import Run

__all__ = ["InformationPlane"]


def _callback_bases() -> tuple[type, ...]:
    bases: list[type] = []
    try:
        from lightning.pytorch import Callback as LightningCallback

        bases.append(LightningCallback)
    except ImportError:
        pass
    try:
        from pytorch_lightning import Callback as PytorchLightningCallback

        bases.append(PytorchLightningCallback)
    except ImportError:
        pass
    if not bases:
        raise ImportError(
            "ibwidget.lightning needs Lightning: pip install 'ibwidget[lightning]' (or lightning or pytorch-lightning)."
        )
    return tuple(bases)


class InformationPlane(*_callback_bases()):  # type: ignore[misc]  # the Callback class(es) installed
    """Record the LightningModule's layers in the information plane after every epoch (see the module).

    ``probe``: ``(x, labels)`` tensors, a Dataset or a DataLoader (a seeded subset of ``probe_size`` samples).
    ``layers``: module names in the LightningModule (e.g. ``["net.0", "net.2"]``; default every leaf module with
    parameters). ``path``: the run file, appended epoch by epoch (follow it with ``ib.RunView.follow(path)``).
    ``every_n_epochs`` / ``snapshot_epochs``, ``resume``, ``forward``, ``keep_activations``, ``memory_budget``,
    ``seed`` and ``nonlinearities`` are :func:`ibwidget.record`'s; every backward pass adds to the epoch's gradient
    diagnostics (``Run.diagnostics()``). :attr:`run` is the :class:`~ibwidget.Run` (on rank 0).
    """

    def __init__(
        self,
        probe: Iterable[Any] | tuple[torch.Tensor, torch.Tensor],
        layers: Sequence[str | nn.Module] | str | None = None,
        path: PathLike | None = None,
        name: str | None = None,
        every_n_epochs: int | None = 1,
        *,
        snapshot_epochs: Sequence[int] | None = None,
        probe_size: int = DEFAULT_PROBE,
        forward: Callable | None = None,
        resume: bool = False,
        keep_activations: str = "narrow",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        seed: int = 0,
        nonlinearities: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._options: dict[str, Any] = {
            "probe": probe,
            "layers": layers,
            "path": path,
            "name": name,
            "every_n_epochs": None if snapshot_epochs is not None else every_n_epochs,
            "snapshot_epochs": snapshot_epochs,
            "probe_size": probe_size,
            "forward": forward,
            "resume": resume,
            "keep_activations": keep_activations,
            "memory_budget": memory_budget,
            "seed": seed,
            "nonlinearities": nonlinearities,
        }
        self.recording: Recording | None = None  #: made at the first ``on_train_start``

    @property
    def run(self) -> Run | None:
        """The run recorded so far (None before training; empty on ranks other than 0)."""
        return None if self.recording is None else self.recording.run

    def on_train_start(self, trainer, pl_module) -> None:
        """Bind to the LightningModule (on its device) and record epoch 0; a later ``fit`` continues the run."""
        if self.recording is None:
            if self._options["forward"] is None and not _defines_forward(pl_module):
                raise TypeError(
                    f"{type(pl_module).__name__} defines no forward(), which the probe goes through: define one, or "
                    "pass InformationPlane(..., forward=lambda x: module.net(x)) with the module's inference call."
                )
            options = dict(self._options)
            options["name"] = options["name"] or type(pl_module).__name__
            self.recording = record(pl_module, device=pl_module.device, **options)
        self.recording.__enter__()

    def on_after_backward(self, trainer, pl_module) -> None:
        """A backward pass is done (under DDP, its gradients averaged): add them to the epoch's statistics."""
        if self.recording is not None:
            self.recording.step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Record the epoch, with every scalar metric Lightning has logged for it."""
        if self.recording is not None:
            self.recording.snapshot(logs=_scalars(trainer.callback_metrics))

    def on_train_end(self, trainer, pl_module) -> None:
        """Close the run file (its lock released); the run stays in :attr:`run`."""
        if self.recording is not None:
            self.recording.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A failed or interrupted fit keeps its recorded epochs: close the file."""
        self.on_train_end(trainer, pl_module)


def _defines_forward(module: nn.Module) -> bool:
    """Whether ``forward`` comes from the user's class, not from torch's or Lightning's base classes."""
    owner = next(c for c in type(module).__mro__ if "forward" in vars(c))
    return not owner.__module__.startswith(("torch.", "lightning.", "pytorch_lightning."))


def _scalars(metrics: dict) -> dict[str, float]:
    """Lightning's logged metrics as floats (tensors of one value, numbers); others are left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value.detach().cpu())
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out
