"""Widget latency, in the kernel process (CPU): epoch end -> widget message, and a control change -> redraw.

1. Trainer on the offline digits, the seed model: for each epoch, the time from the end of the epoch (an engine
   callback in the training thread) to the comm message that carries the new point of the information plane.
   Also the training time of the same run with the bare Engine (no widget), to show the widget does not slow it.
2. RunView of a synthetic run of 100 epochs x 5 layers: the time from a control change (estimator, target, a grid
   sigma) to the comm message with the redrawn plane, now a lookup into the precomputed grid, beside the previous
   path (``Run.trajectories`` recomputed for the new view, then the same redraw); and for a sigma off the grid, the
   message with the nearest grid slot and the arrival of the exact values from the worker. Target: <= 16 ms.

Messages are timed with a recording comm in place of ipykernel's (the widgets serialise their state exactly as in a
kernel; only the socket write is skipped). Prints a table and a last line of key=value pairs.
Usage: python benchmarks/bench_widget.py [--epochs 5] [--probes 128,256,512] [--repeats 5] [--toggle-epochs 100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _messages import first_message  # first: it replaces the comm before ibwidget is imported

import ibwidget as ib
from ibwidget import kernels
from ibwidget.models import seed_model
from ibwidget.plane._grid import DEFAULT_SIGMAS
from ibwidget.train.engine import Engine
from ibwidget.widget import RunView, Trainer


def _model():
    torch.manual_seed(0)
    model = seed_model((1, 8, 8), device="cpu")
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
    return model


def _train_engine(train, val, epochs: int, probe: int) -> float:
    engine = Engine(_model(), train, val, epochs=epochs, probe=probe, device="cpu")
    t0 = time.perf_counter()
    engine.start()
    engine.wait()
    return time.perf_counter() - t0


def _train_trainer(train, val, epochs: int, probe: int) -> tuple[float, list[float]]:
    trainer = Trainer(_model(), train, val, epochs=epochs, probe=probe, device="cpu")
    ends: list[tuple[int, float]] = []
    trainer.engine.on("epoch_end", lambda ev: ends.append((ev.epoch, time.perf_counter())))
    scatter = trainer.marks["plane_points"][0][-1].comm.comm_id
    t0 = time.perf_counter()
    trainer.start()
    trainer.engine.wait()
    seconds = time.perf_counter() - t0
    trainer.wait()
    latencies = []
    for epoch, t_end in ends:
        t_msg = first_message(scatter, t_end, "x", epoch + 1)
        latencies.append((t_msg - t_end) * 1e3 if t_msg is not None else float("nan"))
    trainer.close()
    return seconds, latencies


def bench_epochs(epochs: int, probe: int, rounds: int = 2) -> dict:
    """Trainer and bare Engine, alternated after a warm-up; the fastest round of each."""
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    _train_engine(train, val, 1, probe)  # warm-up: first-call costs of torch
    engine_s, widget_s, latencies = [], [], []
    for _ in range(rounds):
        engine_s.append(_train_engine(train, val, epochs, probe))
        seconds, lat = _train_trainer(train, val, epochs, probe)
        widget_s.append(seconds)
        latencies += lat
    return {"latencies": latencies, "widget_train_s": min(widget_s), "engine_train_s": min(engine_s)}


def synthetic_run(epochs: int, layers: int, m: int) -> ib.Run:
    """Layers whose features drift epoch by epoch (random walk), against a fixed input and labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, 64, generator=g)
    y = torch.randint(0, 10, (m,), generator=g)
    run = ib.Run(
        "synthetic", [f"layer{i}" for i in range(layers)], [32] * layers, x, y, num_classes=10, capacity=epochs + 1
    )
    feats = [torch.randn(m, 32, generator=g) for _ in range(layers)]
    for e in range(epochs + 1):
        feats = [f + 0.1 * torch.randn(m, 32, generator=g) for f in feats]
        run.add_snapshot(
            e, {f"layer{i}": kernels.gram(f) for i, f in enumerate(feats)}, torch.randn(m, 10, generator=g)
        )
    return run


def _toggle(view, name: str, value, scatter: str) -> tuple[float, float]:
    """Set one control; (ms to the first plane message, ms until every update, on-demand values too, is applied)."""
    t0 = time.perf_counter()
    getattr(view.controls, name).value = value
    view.sync(timeout=300)
    t_sync = time.perf_counter()
    t_msg = first_message(scatter, t0, key="y" if name == "target" else "x")  # a target moves only y
    return (float("nan") if t_msg is None else (t_msg - t0) * 1e3), (t_sync - t0) * 1e3


def bench_toggle(m: int, repeats: int, epochs: int = 100, layers: int = 5) -> dict:
    """Grid lookups (estimator, target, grid sigma) beside the recomputation the previous redraw did per toggle."""
    run = synthetic_run(epochs, layers, m)
    t0 = time.perf_counter()
    view = RunView(run)  # computes the grid once
    build_s = time.perf_counter() - t0
    scatter = view.marks["plane_points"][0][0].comm.comm_id
    sigmas = DEFAULT_SIGMAS  # the grid's widths: a slider value on the grid is a lookup
    toggles = [("estimator", "cka"), ("estimator", "hsic"), ("target", "output"), ("target", "labels")]
    toggles += [("sigma", sigmas[6 + i % 12]) for i in range(repeats)]
    lookup, recompute = [], []
    for name, value in toggles:
        msg, _ = _toggle(view, name, value, scatter)
        v = view.controls.view()
        t1 = time.perf_counter()
        run.trajectories(v.estimator, sigma=v.sigma, target=v.target, sigma_rule=v.sigma_rule)  # previous path
        lookup.append(msg)
        recompute.append((time.perf_counter() - t1) * 1e3 + msg)  # its computation, then the same redraw
    nearest, exact = [], []
    for i in range(repeats):  # off the grid: the nearest slot at once, the exact values from the worker
        msg, synced = _toggle(view, "sigma", 1.5 + 0.75 * i + 0.01, scatter)
        nearest.append(msg)
        exact.append(synced)
    view.close()
    return {"build_s": build_s, "lookup": lookup, "recompute": recompute, "nearest": nearest, "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--probe", type=int, default=256, help="probe of the training run (part 1)")
    parser.add_argument("--probes", default="128,256,512", help="probe sizes of the 100x5 synthetic run (part 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--toggle-epochs", type=int, default=100, help="epochs of the synthetic run (part 2)")
    args = parser.parse_args()

    result = bench_epochs(args.epochs, args.probe)
    lat = result["latencies"]
    print(f"1. digits, seed model, probe {args.probe}, {args.epochs} epochs on the CPU")
    print(f"{'round':>6} {'epoch':>6} {'epoch end -> widget message (ms)':>34}")
    for i, ms in enumerate(lat):
        print(f"{i // args.epochs + 1:>6} {i % args.epochs + 1:>6} {ms:>34.1f}")
    ratio = result["widget_train_s"] / result["engine_train_s"]
    print(
        f"training time (best of 2): Trainer {result['widget_train_s']:.2f} s, bare Engine "
        f"{result['engine_train_s']:.2f} s (ratio {ratio:.2f})\n"
    )

    print(f"2. control change -> plane message, {args.toggle_epochs} epochs x 5 layers, hsic/cka (medians)")
    header = ("probe", "grid (s)", "lookup (ms)", "recompute (ms)", "off-grid nearest (ms)", "off-grid exact (ms)")
    print(f"{header[0]:>6} {header[1]:>9} {header[2]:>12} {header[3]:>15} {header[4]:>22} {header[5]:>20}")
    pairs = {
        "epoch_update_ms_median": statistics.median(lat),
        "epoch_update_ms_max": max(lat),
        "train_ratio_trainer_vs_engine": ratio,
    }
    for m in (int(p) for p in args.probes.split(",")):
        r = bench_toggle(m, args.repeats, epochs=args.toggle_epochs)
        look, rec, near, ex = (statistics.median(r[k]) for k in ("lookup", "recompute", "nearest", "exact"))
        print(f"{m:>6} {r['build_s']:>9.1f} {look:>12.1f} {rec:>15.1f} {near:>22.1f} {ex:>20.1f}")
        pairs[f"grid_build_s_p{m}"] = r["build_s"]
        pairs[f"toggle_lookup_ms_p{m}"] = look
        pairs[f"toggle_recompute_ms_p{m}"] = rec
        pairs[f"offgrid_nearest_ms_p{m}"] = near
        pairs[f"offgrid_exact_ms_p{m}"] = ex
    pairs["target_ms"] = 16
    print(
        " ".join(
            f"{k}={v:.2f}" if "ratio" in k else f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in pairs.items()
        )
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
