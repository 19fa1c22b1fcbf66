"""The kernel-free view: grid build time, one-file HTML size, and the cost of one live epoch in a Trainer.

1. ``plane_grid`` of a synthetic run (snapshots as in bench_reestimate: random low-rank activations of the seed
   model's widths) with the default grid (every fast estimator x 25 sigmas + 2 median rules x 2 targets), side by
   side with the same grid from one ``Run.trajectories`` call per (estimator, slot, target) (what the shared
   kernel pass saves).
2. The one-file HTML of a 100-epoch x 5-layer run with the default grid: its size (budget: < 2 MB).
3. A live epoch: what a Trainer computes for one new epoch (its default estimators hsic and cka, at the viewed
   sigma; the other widths are filled in once training pauses or ends).

Prints a table and a last line of key=value pairs. Usage: python benchmarks/bench_planeview.py [--epochs 20]
[--probe 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_reestimate import build_run  # noqa: E402

from ibwidget.plane import _grid  # noqa: E402
from ibwidget.plane._report import write_html  # noqa: E402


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_call_per_block(run, builder: _grid.GridBuilder) -> None:
    """The grid from Run.trajectories alone (no shared pass)."""
    for spec in builder.specs:
        if spec.needs == "activations":
            continue
        for rule, sigma in builder.slots[: len(builder.slots) if spec.uses_sigma else 1]:
            for target in builder.targets:
                run.trajectories(spec.name, sigma=sigma or 1.0, target=target, sigma_rule=rule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the run timed in part 1")
    parser.add_argument("--probe", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-direct", action="store_true", help="skip the slow one-call-per-block comparison")
    args = parser.parse_args()

    run = build_run(args.epochs, args.probe, device=args.device)
    builder = _grid.GridBuilder()
    t_grid = _seconds(lambda: _grid.builder_grid(builder, [run]))
    t_direct = float("nan") if args.skip_direct else _seconds(lambda: one_call_per_block(run, builder))
    print(
        f"grid: {len(builder.specs)} estimators x {len(builder.slots)} slots x {len(builder.targets)} targets = "
        f"{builder.n_blocks} blocks; run {args.epochs + 1} snapshots x 5 layers, probe {args.probe}, {args.device}"
    )
    print(f"{'what':<52}{'seconds':>10}")
    print(f"{'default grid, shared kernel pass (plane_grid)':<52}{t_grid:>10.2f}")
    print(f"{'same grid, one Run.trajectories call per block':<52}{t_direct:>10.2f}")

    live = _grid.GridBuilder(["hsic", "cka"], keep_targets=True)
    viewed = [live.nearest_slot("fixed", 5.0)]  # a Trainer computes each epoch's viewed width; the rest afterwards
    live.compute(run, start=args.epochs, slots=viewed)  # warm the kept X statistics, as after a Trainer's first epoch
    t_live = _seconds(lambda: live.compute(run, start=args.epochs, slots=viewed))
    print(f"{'one live epoch (hsic, cka at the viewed sigma)':<52}{t_live:>10.3f}")

    big = build_run(100, 64, device=args.device)  # the probe does not change the page's size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.html"
        t_html = _seconds(lambda: write_html([big], path))
        size = path.stat().st_size
    print(f"{'one-file HTML, 100 epochs x 5 layers, default grid':<52}{t_html:>10.2f}   {size / 1e6:.3f} MB")
    print(
        f"device={args.device} epochs={args.epochs} probe={args.probe} blocks={builder.n_blocks} "
        f"grid_s={t_grid:.2f} direct_s={t_direct:.2f} live_epoch_s={t_live:.3f} html_100x5_mb={size / 1e6:.3f} "
        f"html_budget_mb=2"
    )


if __name__ == "__main__":
    main()
