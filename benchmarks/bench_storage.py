"""How recording scales with the probe size m and the number of tracked layers (CPU).

For m in {128, 256, 512, 1024, 2048} and 5, 20 or 50 tracked layers (an MLP of tanh layers of 256, 64 and 16 units
in turn): the snapshot's time, the bytes a run keeps per epoch, the time of a sigma change over 100 epochs
(``run.trajectories`` for a new sigma) and of one grid block (HSIC against the labels at one sigma, 100 epochs). The
64- and 16-unit layers keep only their activations, and their distances are computed from them when needed; the
columns marked "all dist." are the same run storing every layer's distances too (``derived_layers=[]``), side by
side. A cell whose 100 epochs would not fit in this machine's memory budget is measured on fewer epochs and scaled
(costs are linear in epochs), marked ``~``. Each column's exponent in m is fitted over the layers' rows (log-log
least squares).

Prints a table and a last line of key=value pairs. Usage: python benchmarks/bench_storage.py [--probes 128,...]
[--layers 5,20,50] [--epochs 100] [--budget-gb 1.5]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from _timing import median_time
from torch import nn

from ibwidget.measure import kernels
from ibwidget.plane._grid import GridBuilder
from ibwidget.record.recorder import Recorder
from ibwidget.record.run import Run, derives_distances

WIDTHS = (256, 64, 16)  #: the tracked layers' widths, in turn


def _model(layers: int) -> nn.Module:
    torch.manual_seed(0)
    widths = [64] + [WIDTHS[i % len(WIDTHS)] for i in range(layers)]
    parts: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        parts += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*parts, nn.Linear(widths[-1], 10))


def cell(m: int, layers: int, epochs: int, budget: float) -> dict:
    model = _model(layers)
    names = [str(2 * i) for i in range(layers)]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(m, 64, generator=g), torch.randint(0, 10, (m,), generator=g)
    recorder = Recorder(model, names, x, y, torch.device("cpu"), memory_budget=2**62)
    snapshot_ms = 1e3 * median_time(recorder.snapshot, 3)
    per_epoch = recorder.bytes_per_epoch()
    _, output, kept_acts, acts = recorder.snapshot()
    grams = {n: kernels.gram(a) for n, a in acts.items()}
    derived = [n for n in names if n in kept_acts and derives_distances(acts[n].shape[1], m)]
    per_epoch_all = per_epoch + 4 * len(derived) * (m * (m - 1) // 2 + m)
    kept = min(epochs, max(2, int(budget // (per_epoch + per_epoch_all))))  # snapshots that fit: the rest is scaled
    scale = (epochs + 1) / (kept + 1)
    out = {"snapshot_ms": snapshot_ms, "mb_per_epoch": per_epoch / 2**20, "mb_all": per_epoch_all / 2**20}
    block = GridBuilder(["hsic"], [5.0], sigma_rules=["fixed"], targets=["labels"])

    def timed(stored: list[str] | None) -> tuple[float, float]:
        run = Run("storage", names, recorder.layer_dims, x, y, num_classes=10, capacity=kept + 1, derived_layers=stored)
        for e in range(kept + 1):
            run.add_snapshot(e, grams, output, kept_acts)
        sigma = median_time(lambda: run.trajectories("hsic", sigma=7.0), 2)
        return 1e3 * sigma * scale, 1e3 * median_time(lambda: block.compute(run.snapshots()), 2) * scale

    out["sigma_ms"], out["block_ms"] = timed(None)  # as recorded: narrow layers keep their activations only
    out["sigma_ms_all"], out["block_ms_all"] = timed([])  # every layer's distances stored
    out["scaled"] = kept < epochs
    return out


def _exponent(ms: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(ms), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", default="128,256,512,1024,2048")
    parser.add_argument("--layers", default="5,20,50")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--budget-gb", type=float, default=1.5, help="snapshots held at once for the timing runs")
    args = parser.parse_args()
    probes = [int(p) for p in args.probes.split(",")]
    layer_counts = [int(n) for n in args.layers.split(",")]
    budget = args.budget_gb * 2**30
    print(
        f"MLP of {'-'.join(map(str, WIDTHS))}-... unit tanh layers on the CPU; sigma change and grid block over "
        f"{args.epochs} epochs"
    )
    print(
        f"{'m':>6}{'layers':>8}{'snapshot ms':>13}{'MB/epoch':>10}{'all dist.':>11}"
        f"{'sigma change ms':>17}{'all dist.':>11}{'grid block ms':>15}{'all dist.':>11}"
    )
    results: dict[tuple[int, int], dict] = {}
    t0 = time.perf_counter()
    for layers in layer_counts:
        for m in probes:
            r = results[(m, layers)] = cell(m, layers, args.epochs, budget)
            mark = "~" if r["scaled"] else " "
            print(
                f"{m:>6}{layers:>8}{r['snapshot_ms']:>13.1f}{r['mb_per_epoch']:>10.2f}{r['mb_all']:>11.2f}"
                f"{r['sigma_ms']:>16.0f}{mark}{r['sigma_ms_all']:>10.0f}{mark}"
                f"{r['block_ms']:>14.0f}{mark}{r['block_ms_all']:>10.0f}{mark}"
            )
    exps = {}
    for key in ("snapshot_ms", "mb_per_epoch", "sigma_ms", "block_ms"):
        per_layers = [_exponent(probes, [results[(m, n)][key] for m in probes]) for n in layer_counts]
        exps[key] = sum(per_layers) / len(per_layers)
    print(
        "exponent in m (mean over layer counts): "
        + ", ".join(f"{k} {v:.2f}" for k, v in exps.items())
        + f"  ({time.perf_counter() - t0:.0f} s)"
    )
    largest = results[(probes[-1], layer_counts[-1])]
    at512 = results.get((512, layer_counts[0]), {})
    print(
        " ".join(f"exp_{k}={v:.2f}" for k, v in exps.items())
        + f" mb_per_epoch_m{probes[-1]}_l{layer_counts[-1]}={largest['mb_per_epoch']:.1f}"
        + f" mb_all_dist_m{probes[-1]}_l{layer_counts[-1]}={largest['mb_all']:.1f}"
        + f" sigma_ms_m512_l{layer_counts[0]}={at512.get('sigma_ms', math.nan):.0f}"
        + f" sigma_ms_all_dist_m512_l{layer_counts[0]}={at512.get('sigma_ms_all', math.nan):.0f}"
    )


if __name__ == "__main__":
    main()
