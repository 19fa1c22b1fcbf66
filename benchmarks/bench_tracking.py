"""Tracking overhead: the seed model trained by a plain PyTorch loop, by our engine untracked and tracked, and by
PyGlow tracked.

Seed model (Conv2d 16 -> Flatten -> Dense 1000/500/200 -> 10) on MNIST-shaped synthetic data (64 per batch), all
in one run on the same device. Ours tracked records a 512-sample probe snapshot of the 5 layers after every epoch;
untracked is the same engine snapshotting only epoch 0 (target on a GPU: tracked <= 1.05x untracked);
``--compile`` adds ours tracked with ``engine.compile = True`` (stretch target on a GPU: <= 1.0 s per 750-batch
epoch). PyGlow evaluates HSIC on every training batch. On a CPU use few batches (--batches); the overhead of a full
750-batch epoch is then extrapolated from the measured snapshot time. Prints a table and a last key=value line.
Usage: python benchmarks/bench_tracking.py [--device auto|cpu|cuda] [--batches 750] [--epochs 3] [--no-pyglow]
[--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import time
import types

import torch
from torch import nn

import ibwidget as ib
from ibwidget.models import seed_model
from ibwidget.train.engine import device_label, resolve_device


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(batches: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = batches * 64
    x = torch.randn(n + 1024, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n + 1024,), generator=g)
    x[torch.arange(n + 1024), 0, y, y] += 4.0  # a learnable signal
    train = torch.utils.data.TensorDataset(x[:n], y[:n])
    val = torch.utils.data.TensorDataset(x[n:], y[n:])
    return train, val


def plain_torch(train, val, device, epochs: int) -> list[float]:
    """What users write, with the data resident on the device: seconds per epoch (train + validation)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 28 * 28, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.ReLU(),
        nn.Linear(500, 200),
        nn.ReLU(),
        nn.Linear(200, 10),
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x, y = (t.to(device) for t in train.tensors)
    vx, vy = (t.to(device) for t in val.tensors)
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(x.shape[0], device=device).split(64):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            float(sum(loss_fn(model(vx[i : i + 256]), vy[i : i + 256]) for i in range(0, vx.shape[0], 256)))
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def ours(train, val, device, epochs: int, probe: int, tracked: bool = True, compile: bool = False):
    """Our engine, tracked (a snapshot after every epoch) or not (epoch 0 only): seconds per epoch, and (tracked)
    the snapshot's own time and that of its bare work."""
    torch.manual_seed(0)
    model = seed_model((1, 28, 28), device=device)
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
    train_loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=256)
    schedule = {} if tracked else {"snapshot_epochs": [0]}
    engine = model.make_engine(train_loader, val_loader, epochs, probe=probe, **schedule)
    engine.batch_event_interval = 1.0
    engine.compile = compile
    seconds = []
    engine.on("epoch_end", lambda event: seconds.append(event.seconds))
    engine.start().wait()
    if not tracked or compile:
        return seconds, math.nan, math.nan
    snap, floor = [], []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        engine.recorder.snapshot()  # the probe forward and the Gram products, as after every epoch
        _sync(device)
        snap.append(time.perf_counter() - t0)
        floor.append(_bare_snapshot(model, engine.layers, engine.recorder.probe_x, device))
    return seconds, statistics.median(snap), statistics.median(floor)


def _bare_snapshot(model, layers: list[str], probe_x, device) -> float:
    """Seconds of the work a snapshot cannot avoid: a no-grad eval forward of the probe, and Z Z^T of each layer as
    wide as the probe or wider (narrower ones need only their activations)."""
    modules = dict(model.named_modules())
    outputs = []
    hooks = [modules[n].register_forward_hook(lambda mod, args, out: outputs.append(out)) for n in layers]
    _sync(device)
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        model(probe_x)
        m = probe_x.shape[0]
        for out in outputs:
            z = out.reshape(m, -1)
            if z.shape[1] >= m:
                z @ z.T
    _sync(device)
    seconds = time.perf_counter() - t0
    for hook in hooks:
        hook.remove()
    model.train()
    return seconds


def pyglow(train, val, device, epochs: int) -> list[float]:
    """PyGlow 0.1.7's IBSequential with its HSIC evaluator (sigma=5), per-batch tracking: seconds per epoch."""
    try:
        import matplotlib.pyplot  # noqa: F401  (glow.models imports it; we never plot)
    except ImportError:
        stub = types.ModuleType("matplotlib")
        stub.pyplot = types.ModuleType("matplotlib.pyplot")
        sys.modules.update({"matplotlib": stub, "matplotlib.pyplot": stub.pyplot})
    from glow.information_bottleneck.estimator import HSIC
    from glow.layers import Conv2d, Dense, Flatten
    from glow.models import IBSequential

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = IBSequential(input_shape=(1, 28, 28), gpu=device.type == "cuda", track_dynamics=True)
    model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
    model.add(Flatten())
    for width in (1000, 500, 200):
        model.add(Dense(width, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"])
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=device.type == "cuda", sigma=5))
    train_loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=256)
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                model.fit_generator(train_loader, val_loader, 1)
            except Exception as exc:  # PyGlow's tracking crashes at the end of an epoch on CUDA
                print(f"PyGlow failed: {type(exc).__name__}: {exc}", file=sys.__stdout__)
                _sync(device)
                times.append(time.perf_counter() - t0)
                break
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--probe", type=int, default=512)
    parser.add_argument("--full-batches", type=int, default=750, help="epoch length the overhead is extrapolated to")
    parser.add_argument("--no-pyglow", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also ours tracked with engine.compile = True")
    args = parser.parse_args()
    device = resolve_device(args.device)
    train, val = synthetic(args.batches)
    print(
        f"device {device_label(device)}, {args.batches} batches of 64 per epoch, probe {args.probe}, "
        f"ibwidget {ib.__version__}, torch {torch.__version__}"
    )
    plain = plain_torch(train, val, device, args.epochs + 1)[1:]  # first epoch warms up
    untracked = ours(train, val, device, args.epochs + 1, args.probe, tracked=False)[0][1:]
    tracked, snapshot_s, floor_s = ours(train, val, device, args.epochs + 1, args.probe)
    tracked = tracked[1:]
    compiled = ours(train, val, device, args.epochs + 1, args.probe, compile=True)[0][1:] if args.compile else []
    glow = [] if args.no_pyglow else pyglow(train, val, device, min(args.epochs, 2))
    t_plain, t_ours, t_bare = min(plain), min(tracked), min(untracked)
    per_batch = t_plain / args.batches
    overhead = t_ours / t_plain - 1
    overhead_full = snapshot_s / (per_batch * args.full_batches)
    print(f"{'loop':<40}{'s/epoch':>10}{'x plain':>10}{'x untracked':>13}  target (GPU)")
    print(f"{'plain PyTorch (resident data)':<40}{t_plain:>10.3f}{1:>10.2f}")
    print(f"{'ibwidget untracked (epoch 0 only)':<40}{t_bare:>10.3f}{t_bare / t_plain:>10.2f}{1:>13.2f}")
    print(
        f"{'ibwidget tracked (5 layers, probe)':<40}{t_ours:>10.3f}{t_ours / t_plain:>10.2f}{t_ours / t_bare:>13.2f}"
        "  <= 1.05x untracked"
    )
    if compiled:
        t_compiled = min(compiled)
        print(
            f"{'ibwidget tracked, compiled':<40}{t_compiled:>10.3f}{t_compiled / t_plain:>10.2f}"
            f"{t_compiled / t_bare:>13.2f}  <= 1.0 s per 750-batch epoch"
        )
    if glow:
        print(f"{'PyGlow 0.1.7 tracked (HSIC per batch)':<40}{min(glow):>10.3f}{min(glow) / t_plain:>10.2f}")
    print(
        f"snapshot (probe {args.probe}, 5 layers): {snapshot_s * 1e3:.1f} ms; "
        f"overhead at {args.full_batches} batches/epoch: {overhead_full * 100:.2f}%"
    )
    print(
        f"snapshot vs its bare work (no-grad forward + Z Z^T of the wide layers, {floor_s * 1e3:.1f} ms): "
        f"{snapshot_s / floor_s:.2f}x (target <= 1.3x)"
    )
    glow_s = f"{min(glow):.3f}" if glow else "nan"
    print(
        f"device={device.type} batches={args.batches} plain_s={t_plain:.3f} untracked_s={t_bare:.3f} "
        f"ours_s={t_ours:.3f} tracked_vs_untracked={t_ours / t_bare:.3f} tracked_target=1.05 "
        f"compile_s={min(compiled) if compiled else math.nan:.3f} pyglow_s={glow_s} "
        f"overhead_pct={overhead * 100:.1f} snapshot_ms={snapshot_s * 1e3:.1f} "
        f"overhead_{args.full_batches}_pct={overhead_full * 100:.2f} bare_snapshot_ms={floor_s * 1e3:.1f} "
        f"snapshot_vs_bare={snapshot_s / floor_s:.2f} snapshot_target=1.3"
    )


if __name__ == "__main__":
    main()
