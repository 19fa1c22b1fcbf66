"""What the gradient diagnostics cost training: the seed model (Conv2d 16 -> Dense 1000/500/200 -> 10, 12.9 M
weights, every layer tracked) trained by the engine with the epoch's gradient statistics (``on_after_backward`` ->
``GradientMoments.add`` each step) and without them, side by side in one run, alternating, best of ``--rounds``.
Snapshots are taken at epoch 0 only, so the difference is the per-step gradient work alone (the per-snapshot
diagnostics are a few reductions over activations the snapshot already has). Also the cost of one ``add`` against
one training step. Prints a table and a last key=value line (target: ratio <= 1.05).

Usage: python benchmarks/bench_diagnostics.py [--device auto|cpu|cuda] [--batches 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_tracking import _sync, synthetic

from ibwidget.models import seed_model
from ibwidget.record.diagnostics import GradientMoments
from ibwidget.train.engine import device_label, resolve_device


def epoch_seconds(train, val, device, with_gradients: bool) -> float:
    torch.manual_seed(0)
    model = seed_model((1, 28, 28), device=device)
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
    train_loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=256)
    engine = model.make_engine(train_loader, val_loader, 2, probe=64, snapshot_epochs=[0])
    engine.batch_event_interval = 1.0
    if not with_gradients:
        engine.recording._moments = None  # noqa: SLF001 - the same engine without the per-step statistics
    seconds: list[float] = []
    engine.on("epoch_end", lambda event: seconds.append(event.seconds))
    engine.start().wait()
    return min(seconds)


def step_and_add(device) -> tuple[float, float]:
    """Seconds of one training step of the seed model (batch 64) and of one ``GradientMoments.add``."""
    torch.manual_seed(0)
    model = seed_model((1, 28, 28), device=device)
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 1, 28, 28, device=device), torch.randint(0, 10, (64,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    moments = GradientMoments(list(model.layers), device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(fn, n=10):
        fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return (time.perf_counter() - t0) / n

    return timed(step), timed(moments.add)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    train, val = synthetic(args.batches)
    on, off = [], []
    for _ in range(args.rounds):
        off.append(epoch_seconds(train, val, device, False))
        on.append(epoch_seconds(train, val, device, True))
    step, add = step_and_add(device)
    print(f"device {device_label(device)}; {args.batches} batches of 64 an epoch; best of {args.rounds} rounds\n")
    print(f"{'engine, every layer tracked':<36} {'s / epoch':>10}")
    print(f"{'without gradient statistics':<36} {min(off):>10.3f}")
    print(f"{'with gradient statistics':<36} {min(on):>10.3f}")
    print(f"\none training step {step * 1e3:.1f} ms; one GradientMoments.add {add * 1e3:.2f} ms")
    print(f"gradient_stats_ratio={min(on) / min(off):.3f} step_ms={step * 1e3:.2f} add_ms={add * 1e3:.3f}")


if __name__ == "__main__":
    main()
