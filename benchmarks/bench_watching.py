"""Watching is free: what the views cost training, and how fast a saved run's views come up. Side by side, one run.

1. Live, on the CPU (training and the views share its cores): digits, an MLP 64-512-256-128-10, probe 512, batch 32,
   ``--epochs`` epochs; a plain PyTorch loop, the bare ``Engine`` (tracked), a ``Trainer`` without the Player tab
   and a ``Trainer`` with it, alternated over ``--rounds`` rounds (the fastest of each). Per Trainer: the view work
   per epoch (CPU time of the widget's UI thread while training: figures, Player slices, gauge), and the Player's
   lag (how many recorded epochs it had not been sent at each epoch's end: 1 is the epoch just recorded; the
   largest after the first epoch, whose update also waits for first-call costs).
2. A saved run (synthetic snapshots of 5 layers, probe 512): ``PlaneView(run)`` returning (its first sigma drawn),
   the whole default grid filled in behind it, and a one-file HTML report of ``--report-epochs`` epochs.

Prints a table with each target beside its figure, and a last line of key=value pairs.
Usage: python benchmarks/bench_watching.py [--epochs 20] [--rounds 2] [--report-epochs 100] [--skip-live]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from _messages import MESSAGES  # first: it replaces the comm before ibwidget is imported
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from bench_reestimate import build_run  # noqa: E402

import ibwidget as ib  # noqa: E402
from ibwidget.plane._report import write_html  # noqa: E402
from ibwidget.train.engine import Engine  # noqa: E402
from ibwidget.widget import _applier  # noqa: E402

PROBE = 512
WIDTHS = (512, 256, 128)
TARGETS = {"trainer_vs_engine": 1.3, "view_ms_epoch": 25.0, "player_lag": 1, "planeview_s": 1.0, "grid_s": 5.0}
TARGETS["report_s"] = 20.0


def _model() -> ib.IBSequential:
    torch.manual_seed(0)
    model = ib.IBSequential(input_shape=(1, 8, 8), device="cpu")
    model.add(ib.layers.Flatten())
    for width in WIDTHS:
        model.add(ib.layers.Dense(width, activation="relu"))
    model.add(ib.layers.Dense(10))
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
    return model


def plain(train, val, epochs: int) -> float:
    """The same MLP, optimiser and batches in a plain PyTorch loop (train, then validation, each epoch)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 64
    for w in WIDTHS:
        layers += [nn.Linear(width, w), nn.ReLU()]
        width = w
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, _ in val:
                model(x)
    return time.perf_counter() - t0


def engine(train, val, epochs: int) -> float:
    run = Engine(_model(), train, val, epochs=epochs, probe=PROBE, device="cpu")
    t0 = time.perf_counter()
    run.start()
    run.wait()
    return time.perf_counter() - t0


def trainer(train, val, epochs: int, player: bool) -> dict:
    """Training time, the UI thread's CPU time per epoch while training, and the Player's largest lag."""
    view = ib.Trainer(_model(), train, val, epochs=epochs, probe=PROBE, device="cpu", plane_view=player)
    ui_cpu: list[float] = []
    training = threading.Event()
    applier = view._applier  # noqa: SLF001 - the UI thread's work is what this measures
    apply = applier._apply  # noqa: SLF001

    def timed(batch):  # the UI thread: its CPU time, counted while training runs
        t0 = time.thread_time()
        try:
            apply(batch)
        finally:
            if training.is_set():
                ui_cpu.append(time.thread_time() - t0)

    applier._apply = timed  # noqa: SLF001
    lags: list[int] = []

    def on_epoch_end(event):  # the training thread: how many recorded epochs the Player has not been sent
        if player:
            sent = view.plane_view._sent[2][0]  # noqa: SLF001 - the epochs the Player's front-end was sent
            lags.append(view.run.num_snapshots - sent)

    view.engine.on("epoch_end", on_epoch_end)
    training.set()
    t0 = time.perf_counter()
    view.start()
    view.engine.wait()
    seconds = time.perf_counter() - t0
    training.clear()
    view.close()
    lags = lags or [0]
    steady = max(lags[1:], default=lags[0])  # the first epoch's also waits for first-call costs (torch, bqplot)
    return {"s": seconds, "view_ms_epoch": 1e3 * sum(ui_cpu) / epochs, "lag": steady, "lags": lags}


def live(epochs: int, rounds: int) -> dict:
    train, val, _ = ib.datasets.digits.load_data(batch_size=32, seed=0)
    engine(train, val, 1)  # warm-up: first-call costs of torch
    best: dict[str, dict] = {}
    for _ in range(rounds):
        results = {
            "plain": {"s": plain(train, val, epochs)},
            "engine": {"s": engine(train, val, epochs)},
            "trainer": trainer(train, val, epochs, player=False),
            "trainer_player": trainer(train, val, epochs, player=True),
        }
        for k, r in results.items():
            if k not in best or r["s"] < best[k]["s"]:
                best[k] = r
        MESSAGES.clear()
    return best


def saved(report_epochs: int) -> dict:
    run = build_run(20, PROBE)
    t0 = time.perf_counter()
    view = ib.PlaneView(run)
    returned = time.perf_counter() - t0
    assert view.wait_filled(600)
    filled = time.perf_counter() - t0
    view.close()
    big = build_run(report_epochs, PROBE)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_html([big], Path(tmp) / "run.html")
        report = time.perf_counter() - t0
    return {"planeview_s": returned, "grid_s": filled, "report_s": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--report-epochs", type=int, default=100)
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-saved", action="store_true")
    parser.add_argument(
        "--nice", type=int, default=None, help="the view threads' nice increment (default: the house's)"
    )
    args = parser.parse_args()
    if args.nice is not None:
        _applier.VIEW_NICENESS = args.nice
    pairs: dict[str, float] = {}
    rows: list[tuple[str, str, str]] = []
    if not args.skip_live:
        best = live(args.epochs, args.rounds)
        base = best["engine"]["s"]
        print(f"1. digits, MLP 64-{'-'.join(map(str, WIDTHS))}-10, probe {PROBE}, batch 32, {args.epochs} epochs, CPU")
        print(f"{'':<26}{'train s':>9}{'x Engine':>10}{'view ms/epoch':>15}{'Player lag':>12}")
        for key, label in (
            ("plain", "plain PyTorch loop"),
            ("engine", "Engine (tracked)"),
            ("trainer", "Trainer, no Player"),
            ("trainer_player", "Trainer with Player"),
        ):
            r = best[key]
            view = f"{r['view_ms_epoch']:>15.1f}" if "view_ms_epoch" in r else f"{'':>15}"
            lag = f"{r['lag']:>12d}" if key == "trainer_player" else f"{'':>12}"
            print(f"{label:<26}{r['s']:>9.2f}{r['s'] / base:>10.2f}{view}{lag}")
        ratio = best["trainer_player"]["s"] / base
        pairs.update(
            plain_s=best["plain"]["s"],
            engine_s=base,
            trainer_s=best["trainer"]["s"],
            trainer_player_s=best["trainer_player"]["s"],
            trainer_vs_engine=ratio,
            view_ms_epoch=best["trainer_player"]["view_ms_epoch"],
            player_lag=best["trainer_player"]["lag"],
        )
        print("Player lag at each epoch's end:", best["trainer_player"]["lags"])
        rows += [
            ("Trainer (with Player) / Engine", f"{ratio:.2f}", f"<= {TARGETS['trainer_vs_engine']}"),
            ("view work per epoch (ms)", f"{pairs['view_ms_epoch']:.1f}", f"<= {TARGETS['view_ms_epoch']:.0f}"),
            ("Player lag (epochs), after the first", f"{pairs['player_lag']:.0f}", f"<= {TARGETS['player_lag']}"),
        ]
    r = {} if args.skip_saved else saved(args.report_epochs)
    pairs.update(r)
    rows += (
        []
        if args.skip_saved
        else [
            ("PlaneView(run) returns (s), 20 epochs x 5", f"{r['planeview_s']:.2f}", f"<= {TARGETS['planeview_s']}"),
            ("its whole default grid (s)", f"{r['grid_s']:.2f}", f"<= {TARGETS['grid_s']}"),
            (f"HTML report, {args.report_epochs} epochs x 5 (s)", f"{r['report_s']:.1f}", f"<= {TARGETS['report_s']}"),
        ]
    )
    print(f"\n2. and the targets (saved run: probe {PROBE}, default grid)")
    print(f"{'what':<44}{'measured':>10}{'target':>10}")
    for what, got, target in rows:
        print(f"{what:<44}{got:>10}{target:>10}")
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
