"""A training job as researchers write it for torchrun, recording with ib.record: ``python torchrun_record.py MODE
PATH`` with MODE ``single`` (one process, the whole global batch), ``ddp``, ``fsdp`` (``fully_shard``) or
``fsdp-wrapper`` (the FSDP class); under torchrun each rank takes its share of every global batch of 64."""

import sys

import torch
import torch.distributed as dist
from torch import nn

import ibwidget as ib

mode, path = sys.argv[1], sys.argv[2]
distributed = mode != "single"
if distributed:
    dist.init_process_group("gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
torch.manual_seed(0)
x = torch.randn(256, 20)
y = (x[:, :5].argmax(1)).long()
model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 5))
if mode == "ddp":
    model = nn.parallel.DistributedDataParallel(model)
elif mode == "fsdp":
    from torch.distributed.fsdp import fully_shard

    for layer in (model[0], model[2], model[4]):
        fully_shard(layer)
    fully_shard(model)
elif mode == "fsdp-wrapper":
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = FullyShardedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with ib.record(model, probe=(x[:64], y[:64]), layers=["0", "2", "4"], path=path, name="distributed") as rec:
    for _epoch in range(3):
        for start in range(0, 256, 64):
            xb, yb = x[start : start + 64][rank::world], y[start : start + 64][rank::world]
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            rec.step()  # the gradient diagnostics: after DDP's allreduce
            opt.step()
        rec.snapshot(logs={"loss": float(loss.detach())})
print(f"rank {rank} of {world}: {rec.run.num_snapshots} snapshots", flush=True)
if distributed:
    dist.barrier()  # leave together: a rank tearing gloo down while another still writes can abort
    dist.destroy_process_group()
