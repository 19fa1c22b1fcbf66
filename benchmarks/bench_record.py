"""Recording from any loop, and following it: what it costs, side by side in one run (CPU).

1. One training, three ways: a plain PyTorch loop; the same loop with ``ib.record(..., path=...)`` (a probe snapshot
   and an fsynced append per epoch); the :class:`ibwidget.Engine` with a ``Recording(path=...)``. Per-epoch time and
   the overhead over the plain loop, in ms and %. Alternated rounds; the fastest of each.
2. The cost of one append at epoch 1 and at epoch 100 of the same file (it must not grow with the run).
3. Follow latency: a writer process appends an epoch; the time from its ``snapshot()`` returning to the comm message
   of a ``RunView.follow`` in this process that carries the new point (polling every 0.5 s: half of that on average).
4. torchrun, DDP on 2 CPU processes (``benchmarks/ddp_record_job.py``): rank 0's time in ``snapshot()`` per epoch
   and the other rank's wait for it at the epoch's end, beside the epoch without recording.
5. Lightning: an epoch of ``Trainer.fit`` with and without the ``InformationPlane`` callback.

Prints a table and a last line of key=value pairs.
Usage: python benchmarks/bench_record.py [--epochs 10] [--probe 256] [--rounds 3] [--appends 100] [--follow 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _messages import first_message  # first: it replaces the comm before ibwidget is imported
from torch import nn

import ibwidget as ib
from ibwidget.measure import kernels
from ibwidget.record.runfile import RunWriter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from _writer import start_writer  # noqa: E402 - the tests' writer process


def _data(n: int = 2048, d: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, :10].argmax(1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def _batches(x, y, size: int = 64):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _epoch(model, opt, batches) -> float:
    model.train()
    total = 0.0
    for xb, yb in batches:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total / len(batches)


def plain(x, y, epochs: int, probe: int, folder: Path) -> float:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(x, y)
    t0 = time.perf_counter()
    for _ in range(epochs):
        _epoch(model, opt, batches)
    return time.perf_counter() - t0


def recorded(x, y, epochs: int, probe: int, folder: Path) -> float:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(x, y)
    path = folder / f"rec-{time.perf_counter_ns()}.ibrun"
    t0 = time.perf_counter()
    with ib.record(model, probe=(x[:probe], y[:probe]), path=path) as rec:
        for _ in range(epochs):
            rec.snapshot(logs={"loss": _epoch(model, opt, batches)})
    return time.perf_counter() - t0


def engine(x, y, epochs: int, probe: int, folder: Path) -> float:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    path = folder / f"eng-{time.perf_counter_ns()}.ibrun"
    eng = ib.Engine(
        _model(), loader, epochs=epochs, lr=0.05, metrics=(), recording=ib.Recording(probe, path=path), device="cpu"
    )
    t0 = time.perf_counter()
    eng.start().wait()
    return time.perf_counter() - t0


def bench_loops(epochs: int, probe: int, rounds: int, folder: Path) -> dict:
    x, y = _data()
    ways = {"plain loop": plain, "ib.record loop": recorded, "Engine + Recording": engine}
    for fn in ways.values():
        fn(x, y, 1, probe, folder)  # warm-up
    best = {name: float("inf") for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            best[name] = min(best[name], fn(x, y, epochs, probe, folder))
    return {name: 1e3 * s / epochs for name, s in best.items()}


def bench_appends(appends: int, probe: int, folder: Path) -> tuple[float, float]:
    """ms of one append (write_new of one epoch) at the start and at the end of a file of ``appends`` epochs."""
    g = torch.Generator().manual_seed(0)
    layers = ["a", "b", "c"]
    run = ib.Run("appends", layers, [32] * 3, torch.randn(probe, 8, generator=g), torch.arange(probe) % 10)
    writer = RunWriter(folder / "appends.ibrun")
    writer.acquire()
    times = []
    for e in range(appends + 1):
        grams = {n: kernels.gram(torch.randn(probe, 32, generator=g)) for n in layers}
        run.add_snapshot(e, grams, torch.randn(probe, 10, generator=g))
        if e:
            run.log_epoch({"loss": 1.0 / e})
        t0 = time.perf_counter()
        writer.write_new(run)
        times.append(time.perf_counter() - t0)
    writer.release()
    k = min(5, appends // 4)
    return 1e3 * statistics.median(times[1 : 1 + k]), 1e3 * statistics.median(times[-k:])


def bench_follow(epochs: int, probe: int, folder: Path) -> list[float]:
    """ms from a writer's snapshot() returning to the view's comm message with that epoch's point."""
    path = folder / "followed.ibrun"
    proc = start_writer(folder, path, epochs, probe, "step")
    assert proc.stdout.readline().strip() == "entered"
    view = ib.RunView.follow(path, interval=0.5, timeout=60)
    scatter = view.marks["plane_points"][0][-1].comm.comm_id
    latencies = []
    for _ in range(epochs):
        proc.stdin.write("\n")
        proc.stdin.flush()
        line = proc.stdout.readline().split()
        t_returned = time.perf_counter()  # the writer has just printed it: the epoch is on disk
        epoch = int(line[1])
        deadline = t_returned + 10.0
        t_msg = None
        while t_msg is None and time.perf_counter() < deadline:
            t_msg = first_message(scatter, t_returned, "x", epoch + 1)
            time.sleep(0.002)
        latencies.append(float("nan") if t_msg is None else 1e3 * (t_msg - t_returned))
    proc.stdin.close()
    proc.wait(timeout=60)
    view.close()
    return latencies


def bench_ddp(epochs: int, probe: int, folder: Path) -> dict[int, dict[str, float]]:
    """Per rank: plain_ms, record_ms, snapshot_ms, wait_ms (medians) from the torchrun job."""
    job = ROOT / "benchmarks" / "ddp_record_job.py"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*args, str(job), str(folder), str(epochs), str(probe)], capture_output=True, text=True, env=env, timeout=600
    )
    ranks = {}
    for line in done.stdout.splitlines():
        if line.startswith("rank "):
            words = line.split()
            ranks[int(words[1])] = {k: float(v) for k, v in (w.split("=") for w in words[2:])}
    if len(ranks) != 2:
        raise RuntimeError(f"the torchrun job failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return ranks


def bench_lightning(epochs: int, probe: int, rounds: int, folder: Path) -> tuple[float, float]:
    """ms per epoch of Trainer.fit without and with the InformationPlane callback (best of ``rounds``)."""
    import lightning.pytorch as L

    from ibwidget.lightning import InformationPlane

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, index):
            loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
            self.log("loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    def fit(with_callback: bool) -> float:
        callbacks = [InformationPlane((x[:probe], y[:probe]), path=folder / f"l-{time.perf_counter_ns()}.ibrun")]
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks if with_callback else [],
        )
        t0 = time.perf_counter()
        trainer.fit(Module(), loader)
        return 1e3 * (time.perf_counter() - t0) / epochs

    fit(True)  # warm-up
    without, with_callback = float("inf"), float("inf")
    for _ in range(rounds):
        without = min(without, fit(False))
        with_callback = min(with_callback, fit(True))
    return without, with_callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--probe", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appends", type=int, default=100)
    parser.add_argument("--follow", type=int, default=8, help="epochs followed for the latency")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_epoch = bench_loops(args.epochs, args.probe, args.rounds, folder)
        first, last = bench_appends(args.appends, args.probe, folder)
        follow = bench_follow(args.follow, args.probe, folder)
        ddp = bench_ddp(args.epochs, args.probe, folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on loader workers
            lightning_ms = bench_lightning(args.epochs, args.probe, args.rounds, folder)
    base = per_epoch["plain loop"]
    print(f"{args.epochs} epochs of 32 batches (MLP 64-256-128-10), probe {args.probe}, best of {args.rounds} rounds")
    print(f"{'way':<22}{'ms/epoch':>10}{'overhead ms':>13}{'overhead %':>12}")
    for name, ms in per_epoch.items():
        print(f"{name:<22}{ms:>10.1f}{ms - base:>13.1f}{100 * (ms - base) / base:>11.1f}%")
    print(
        f"\nappend one epoch (3 layers, probe {args.probe}): epoch 1 {first:.2f} ms, epoch {args.appends} {last:.2f} ms"
    )
    finite = [v for v in follow if v == v]
    print(
        f"follow latency (poll every 0.5 s), {len(follow)} epochs: median {statistics.median(finite):.0f} ms, "
        f"max {max(finite):.0f} ms"
    )
    print(
        f"\ntorchrun DDP, 2 processes: epoch {ddp[0]['plain_ms']:.1f} ms without recording, "
        f"{ddp[0]['record_ms']:.1f} ms with; rank 0 in snapshot() {ddp[0]['snapshot_ms']:.1f} ms, "
        f"rank 1 waits {ddp[1]['wait_ms']:.1f} ms for it"
    )
    print(
        f"Lightning: {lightning_ms[0]:.1f} ms/epoch without the callback, {lightning_ms[1]:.1f} ms with "
        f"(+{lightning_ms[1] - lightning_ms[0]:.1f} ms)"
    )
    record_ms, engine_ms = per_epoch["ib.record loop"], per_epoch["Engine + Recording"]
    print(
        f"plain_ms_per_epoch={base:.1f} record_overhead_pct={100 * (record_ms - base) / base:.1f} "
        f"engine_overhead_pct={100 * (engine_ms - base) / base:.1f} append_ms_epoch1={first:.2f} "
        f"append_ms_epoch{args.appends}={last:.2f} append_ratio={last / first:.2f} "
        f"follow_latency_ms_median={statistics.median(finite):.0f} follow_latency_ms_max={max(finite):.0f} "
        f"ddp_rank0_snapshot_ms={ddp[0]['snapshot_ms']:.1f} ddp_rank1_wait_ms={ddp[1]['wait_ms']:.1f} "
        f"lightning_overhead_ms={lightning_ms[1] - lightning_ms[0]:.1f}"
    )


if __name__ == "__main__":
    main()
