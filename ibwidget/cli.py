"""Headless command line: ``ibwidget train`` records a run to a file, ``ibwidget info`` prints its trajectories,
``ibwidget report`` writes a one-file HTML information plane.

Arguments are checked before any work; an error is one line on stderr (exit status 2), never a traceback. A trained
run is never lost: when it cannot be saved where ``--out`` says, it goes to ``./runs/``, else to the temporary
folder, and stderr says where (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from ibwidget.datasets import TorchvisionMissingError
from ibwidget.measure import estimators as _estimators
from ibwidget.measure._validate import check_sigma
from ibwidget.plane.table import trajectory_table
from ibwidget.pyglow.seed import seed_model
from ibwidget.record.run import KERNELS, TARGETS, load_run

DATASETS = ("digits", "mnist", "cifar10")


def _load(dataset: str, batch_size: int, seed: int, root):
    from ibwidget import datasets

    module = getattr(datasets, dataset)
    if dataset == "digits":
        return module.load_data(batch_size=batch_size, seed=seed)
    return module.load_data(batch_size=batch_size, seed=seed, root=root)


class _Failed(Exception):
    """A failure after work was done (the message says what was kept); exit status 1."""


def _checked_output(text: str, flag: str, example: str) -> Path:
    """The file ``text`` names, refused at once when it cannot be written: a folder, a path under a file, a place
    without write access, a name the file system rejects. Tried with a real temporary file, nothing left behind."""
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            raise ValueError(f"{flag} {text} is a folder; name a file in it, e.g. {flag} {path / example}")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:  # folders still to create: check the first that exists
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{flag} {text}: {folder} is a file, not a folder; choose another path")
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {text}: cannot write there ({exc.strerror}); choose another place") from None
    return path


def _checked_folder(text: str, flag: str) -> Path:
    """An existing folder (never created here: a mistyped path must not appear on disk)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ValueError(
            f"{flag} {text} {what}; give the folder that holds MNIST/ or cifar-10-batches-py/ "
            "(create it first to download the data into it), or train offline with --dataset digits"
        )
    return path


def _unused(path: Path) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``... beside it: a fallback save never replaces another file."""
    candidate, k = path, 0
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return candidate


def _save(run, out: Path) -> tuple[Path, str]:
    """Save ``run`` to ``out``, else to ``./runs/``, else to the temporary folder: (where it went, what failed)."""
    failures: list[tuple[Path, str]] = []
    for target in (out, _unused(Path("runs") / out.name), _unused(Path(tempfile.gettempdir()) / out.name)):
        if any(target.resolve() == Path(tried).resolve() for tried, _ in failures):
            continue
        try:
            return run.save(target), _could_not_save(failures)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename and Path(exc.filename) != target else ""
            failures.append((target, f"{exc.strerror or exc}{where}"))
    raise _Failed(_could_not_save(failures) + ": the run is not saved")


def _could_not_save(failures) -> str:
    return "; ".join(f"could not save to {target} ({reason})" for target, reason in failures)


def _train(args) -> int:
    out = _checked_output(args.out, "--out", "run.ibrun")
    spec = _estimators.get(args.estimator)
    sigma = check_sigma(args.sigma, "--sigma")
    if args.data_root is not None:
        _checked_folder(args.data_root, "--data-root")
    train, val, _ = _load(args.dataset, args.batch_size, args.seed, args.data_root)
    x0, _ = next(iter(train))
    model = seed_model(tuple(x0.shape[1:]), device=args.device, dropout=args.dropout)
    model.name = args.name or f"{args.dataset} seed model"
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=args.lr, momentum=0.9)
    print(f"Training {model.name} on {args.dataset} for {args.epochs} epochs on {model.device}, probe {args.probe}")
    keep = {"keep_activations": "all"} if spec.needs == "activations" else {}
    failure = None
    try:
        model.fit_generator(train, val, args.epochs, probe=args.probe, seed=args.seed, **keep)
    except KeyboardInterrupt:  # the engine stopped after its current batch: its completed epochs are saved below
        if model.engine is None:
            raise
    except Exception as exc:  # noqa: BLE001 - the completed epochs are saved below, then the failure is reported
        if model.engine is None or model.engine.epoch == 0:
            raise
        failure = exc
    run = model.run
    path, problems = _save(run, out)
    print(f"Saved {run.num_snapshots} snapshots of {len(run.layer_names)} layers to {path}")
    ended = [f"{problems}; saved it to {path} instead"] if problems else []
    if failure is not None:
        done = f"{model.engine.epoch} completed epoch" + "s" * (model.engine.epoch != 1)
        ended.insert(0, f"training failed ({type(failure).__name__}: {failure}); the {done} saved to {path}")
    elif model.engine.status == "stopped":
        ended.insert(0, f"interrupted after {model.engine.epoch} of {args.epochs} epochs, saved to {path}")
    _print_table(run, spec.name, sigma, "labels", "fixed", "gaussian")
    if ended:
        raise _Failed("; ".join(ended))
    return 0


def _print_table(run, estimator: str, sigma: float, target: str, rule: str, kernel: str) -> None:
    print("\n" + trajectory_table(run, estimator, sigma, target, rule, kernel))


def _info(args) -> int:
    run = load_run(args.path)
    print(f"{args.path}: {run!r}; config {run.config}")
    _print_table(run, args.estimator, args.sigma, args.target, args.sigma_rule, args.kernel)
    return 0


def _report(args) -> int:
    from ibwidget.plane._report import write_html

    runs = [load_run(p) for p in args.paths]
    kwargs = {"targets": tuple(args.targets.split(",")), "kernel": args.kernel}
    if args.estimators:
        kwargs["estimators"] = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if args.sigmas:
        kwargs["sigmas"] = [float(s) for s in args.sigmas.split(",") if s.strip()]
    if args.sigma_rules:
        kwargs["sigma_rules"] = tuple(args.sigma_rules.split(","))
    out = _checked_output(args.out or str(Path(args.paths[0]).with_suffix(".html")), "--out", "report.html")
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


def _error(command: str, exc: BaseException) -> None:
    """One line on stderr: what went wrong and what to do."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    print(f"ibwidget {command}: error: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status: 0 done, 1 done with
    a problem (a run saved elsewhere, or only partly trained), 2 refused or failed, 130 interrupted."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except _Failed as exc:
        _error(args.command, exc)
        return 1
    except (ValueError, OSError, MemoryError, RuntimeError, ArithmeticError, TorchvisionMissingError) as exc:
        _error(args.command, exc)
        return 2
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            print(f"ibwidget {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
