"""Headless command line: ``ibwidget train`` records a run to a file, ``ibwidget info`` prints its trajectories,
``ibwidget report`` writes a one-file HTML information plane."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ibwidget import estimators as _estimators
from ibwidget.run import KERNELS, TARGETS, load_run

DATASETS = ("digits", "mnist", "cifar10")


def seed_model(input_shape, num_classes: int = 10, device="auto", dropout: float = 0.0):
    """The seed tutorial's network: Conv2d(16) -> Flatten -> Dense 1000/500/200 -> Dense(num_classes) logits."""
    from ibwidget.layers import Conv2d, Dense, Dropout, Flatten
    from ibwidget.models import IBSequential

    model = IBSequential(input_shape=input_shape, device=device)
    model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
    model.add(Flatten())
    for width in (1000, 500, 200):
        model.add(Dense(width, activation="relu"))
        if dropout:
            model.add(Dropout(dropout))
    model.add(Dense(num_classes))
    return model


def _load(dataset: str, batch_size: int, seed: int, root):
    from ibwidget import datasets

    module = getattr(datasets, dataset)
    if dataset == "digits":
        return module.load_data(batch_size=batch_size, seed=seed)
    return module.load_data(batch_size=batch_size, seed=seed, root=root)


def _train(args) -> int:
    train, val, _ = _load(args.dataset, args.batch_size, args.seed, args.data_root)
    x0, _ = next(iter(train))
    model = seed_model(tuple(x0.shape[1:]), device=args.device, dropout=args.dropout)
    model.name = args.name or f"{args.dataset} seed model"
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=args.lr, momentum=0.9)
    print(f"Training {model.name} on {args.dataset} for {args.epochs} epochs on {model.device}, probe {args.probe}")
    model.fit_generator(train, val, args.epochs, probe=args.probe, seed=args.seed)
    run = model.run
    path = run.save(args.out)
    print(f"Saved {run.num_snapshots} snapshots of {len(run.layer_names)} layers to {path}")
    _print_table(run, args.estimator, args.sigma, "labels", "fixed", "gaussian")
    return 0


def _print_table(run, estimator: str, sigma: float, target: str, rule: str, kernel: str) -> None:
    spec = _estimators.get(estimator)
    traj = run.trajectories(estimator, sigma=sigma, target=target, sigma_rule=rule, kernel=kernel)
    print(
        f"\n{run.name}: {spec.axis_label('T', 'X')} / {spec.axis_label('T', 'Y')}, sigma={sigma} ({rule}), "
        f"target={target}, probe={run.m}"
    )
    width = max(12, *(len(n) + 2 for n in run.layer_names))
    header = f"{'epoch':>5} {'loss':>8} {'val_acc':>8} " + "".join(f"{n:>{2 * width}}" for n in run.layer_names)
    print(header)
    print(f"{'':>23}" + "".join(f"{'vs X':>{width}}{'vs Y':>{width}}" for _ in run.layer_names))
    for e, epoch in enumerate(run.epochs):
        loss = run.history["loss"][epoch - 1] if epoch >= 1 and epoch - 1 < len(run.history["loss"]) else math.nan
        acc = run.history.get("val_accuracy", [])
        val_acc = acc[epoch - 1] if epoch >= 1 and epoch - 1 < len(acc) else math.nan
        cells = "".join(
            f"{traj[e, li, 0]:>{width}.4g}{traj[e, li, 1]:>{width}.4g}" for li in range(len(run.layer_names))
        )
        print(f"{epoch:>5} {loss:>8.4f} {val_acc:>8.4f} {cells}")


def _info(args) -> int:
    run = load_run(args.path)
    print(f"{args.path}: {run!r}; config {run.config}")
    _print_table(run, args.estimator, args.sigma, args.target, args.sigma_rule, args.kernel)
    return 0


def _report(args) -> int:
    from ibwidget._report import write_html

    runs = [load_run(p) for p in args.paths]
    kwargs = {"targets": tuple(args.targets.split(",")), "kernel": args.kernel}
    if args.estimators:
        kwargs["estimators"] = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if args.sigmas:
        kwargs["sigmas"] = [float(s) for s in args.sigmas.split(",") if s.strip()]
    if args.sigma_rules:
        kwargs["sigma_rules"] = tuple(args.sigma_rules.split(","))
    out = args.out or str(Path(args.paths[0]).with_suffix(".html"))
    path = write_html(runs, out, title=args.title, notes=args.notes, **kwargs)
    size = path.stat().st_size
    print(f"Wrote {path} ({size / 1e6:.2f} MB): {', '.join(r.name for r in runs)}; open it in any browser, offline")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibwidget", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the seed model and record its information-plane run")
    train.add_argument("--dataset", choices=DATASETS, default="digits")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.01)
    train.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden Dense layer")
    train.add_argument("--probe", type=int, default=512)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--data-root", default=None, help="folder holding MNIST/ or cifar-10-batches-py/")
    train.add_argument("--name", default=None)
    train.add_argument("--estimator", default="hsic", help="estimator for the printed table")
    train.add_argument("--sigma", type=float, default=5.0)
    train.add_argument("--out", default="runs/run.ibrun")
    train.set_defaults(func=_train)
    info = sub.add_parser("info", help="print a saved run's per-layer trajectories")
    info.add_argument("path")
    info.add_argument("--estimator", default="hsic")
    info.add_argument("--sigma", type=float, default=5.0)
    info.add_argument("--sigma-rule", default="fixed")
    info.add_argument("--target", choices=TARGETS, default="labels")
    info.add_argument("--kernel", choices=KERNELS, default="gaussian")
    info.set_defaults(func=_info)
    report = sub.add_parser("report", help="write a one-file HTML information plane (works offline, no kernel)")
    report.add_argument("paths", nargs="+", metavar="run.ibrun", help="one run, or several to compare")
    report.add_argument("-o", "--out", default=None, help="the HTML file (default: the first run's name .html)")
    report.add_argument("--title", default=None)
    report.add_argument("--notes", default=None, help="a paragraph shown above the plane")
    report.add_argument("--estimators", default=None, help="comma-separated (default: every fast estimator)")
    report.add_argument("--sigmas", default=None, help="comma-separated fixed sigmas (default: 25 from 0.05 to 500)")
    report.add_argument("--sigma-rules", default=None, help="comma-separated (default: fixed,median_d2,median_d)")
    report.add_argument("--targets", default="labels,output")
    report.add_argument("--kernel", choices=KERNELS, default="gaussian")
    report.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, MemoryError, RuntimeError) as exc:
        print(f"ibwidget {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
