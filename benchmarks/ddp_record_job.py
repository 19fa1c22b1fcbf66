"""The DDP job bench_record.py launches with torchrun: per-epoch times on each rank, without and with ib.record.

``torchrun --standalone --nproc_per_node=2 benchmarks/ddp_record_job.py FOLDER EPOCHS PROBE`` prints one line per
rank: ``rank R plain_ms=... record_ms=... snapshot_ms=... wait_ms=...``: the median epoch without and with recording,
and, with recording, the time in ``snapshot()`` and the time then spent waiting for the other rank at the epoch's end.
"""

import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

import ibwidget as ib

folder, epochs, probe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(0)
x = torch.randn(2048, 64)
y = x[:, :10].argmax(1)


def epoch_times(recording: bool) -> tuple[list[float], list[float], list[float]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    path = f"{folder}/ddp-{time.time_ns() if rank == 0 else 0}.ibrun"
    rec = ib.record(ddp, probe=(x[:probe], y[:probe]), path=path) if recording else None
    times, snapshots, waits = [], [], []
    if rec is not None:
        rec.__enter__()
    for _ in range(epochs):
        dist.barrier()
        t0 = time.perf_counter()
        for start in range(0, len(x), 64):
            xb, yb = x[start : start + 64][rank::world], y[start : start + 64][rank::world]
            loss = nn.functional.cross_entropy(ddp(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        if rec is not None:
            rec.snapshot(logs={"loss": float(loss.detach())})
        t2 = time.perf_counter()
        dist.barrier()  # the epoch ends when every rank is done: rank 1 waits here for rank 0's snapshot
        t3 = time.perf_counter()
        times.append(t3 - t0)
        snapshots.append(t2 - t1)
        waits.append(t3 - t2)
    if rec is not None:
        rec.close()
    return times, snapshots, waits


epoch_times(False)  # warm-up
plain, _, _ = epoch_times(False)
recorded, snapshots, waits = epoch_times(True)
ms = [1e3 * statistics.median(v) for v in (plain, recorded, snapshots, waits)]
print(f"rank {rank} plain_ms={ms[0]:.2f} record_ms={ms[1]:.2f} snapshot_ms={ms[2]:.2f} wait_ms={ms[3]:.2f}", flush=True)
dist.barrier()  # leave together: a rank tearing gloo down while another still writes can abort
dist.destroy_process_group()
