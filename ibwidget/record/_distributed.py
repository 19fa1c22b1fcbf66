"""Recording under ``torch.distributed`` (torchrun, Lightning's strategies): who runs the probe, who records.

DDP replicas are identical, so rank 0 probes the *unwrapped* module alone: never a DDP forward on one rank (DDP
broadcasts buffers in forward and the other ranks would not join: a hang). FSDP shards the parameters, so every
rank runs the same full probe forward together (the all-gathers need them all); each rank's hooks see the full
activations (the parameters are sharded, the activations are not), and rank 0 records them: no gather. Other
kinds of sharding (tensor parallelism: DTensor parameters outside FSDP) are refused, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Placement", "placement", "FSDP1_PREFIX"]

FSDP1_PREFIX = "_fsdp_wrapped_module."  #: what the FSDP wrapper (FSDP1) inserts in module names


@dataclass(frozen=True)
class Placement:
    """Where a recording runs: ``module`` (whose layers are named and tapped), ``forward`` (what the probe goes
    through), ``rank`` and ``world``, ``kind`` (``"local"``, ``"ddp"`` or ``"fsdp"``)."""

    module: nn.Module
    forward: Callable
    rank: int
    world: int
    kind: str

    @property
    def records(self) -> bool:
        """Whether this process records (and writes the file): rank 0."""
        return self.rank == 0

    @property
    def probes(self) -> bool:
        """Whether this process runs the probe forward: rank 0, and every rank under FSDP."""
        return self.records or self.kind == "fsdp"


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def _fsdp_wrapper() -> type | None:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support
        return None
    return FullyShardedDataParallel


def _fsdp2_module() -> type | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return None
    return FSDPModule


def placement(model: nn.Module, forward: Callable | None = None) -> Placement:
    """How to record ``model`` in this process (see the module docstring); unsupported sharding raises."""
    rank, world = _rank_and_world()
    replica = "ddp" if world > 1 else "local"  # data-parallel replicas (DDP, or Lightning's unwrapped module)
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        inner = model.module
        return Placement(inner, forward or inner, rank, world, replica)
    wrapper, fsdp2 = _fsdp_wrapper(), _fsdp2_module()
    sharded = (wrapper is not None and any(isinstance(m, wrapper) for m in model.modules())) or (
        fsdp2 is not None and any(isinstance(m, fsdp2) for m in model.modules())
    )
    if sharded:
        return Placement(model, forward or model, rank, world, "fsdp")
    if any(_is_dtensor(p) for p in model.parameters()):
        raise NotImplementedError(
            "this model's parameters are DTensors outside FSDP (tensor or sequence parallelism?): recording supports "
            "DDP and FSDP (fully_shard, or the FSDP wrapper). Record a replica that holds whole parameters."
        )
    return Placement(model, forward or model, rank, world, replica)


def clean_name(name: str) -> str:
    """A module name as the user wrote it (the FSDP wrapper's inserted segments removed)."""
    return name.replace(FSDP1_PREFIX, "")
