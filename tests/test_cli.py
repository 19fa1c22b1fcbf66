"""The headless command line, end to end: ``ibwidget train`` writes a run file, ``ibwidget info`` prints it."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import subprocess
import sys

import numpy as np
import pytest

import ibwidget as ib
from ibwidget.cli import main

LAYERS = ["conv2d_1", "dense_1", "dense_2", "dense_3", "dense_4"]


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """One `ibwidget train` on the offline digits (2 epochs, probe 64), and what it printed (captured by hand:
    capsys is function-scoped)."""
    path = tmp_path_factory.mktemp("cli") / "d.ibrun"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", "--dataset", "digits", "--epochs", "2", "--probe", "64", "--out", str(path)])
    return rc, path, out.getvalue(), err.getvalue()


def _table_rows(text: str) -> list[list[str]]:
    """The rows of the printed table that start with an epoch number."""
    return [line.split() for line in text.splitlines() if re.match(r"^\s*\d+\s", line)]


def test_train_writes_a_loadable_run(trained_file):
    rc, path, out, _ = trained_file
    assert rc == 0
    assert path.is_file() and not [p for p in path.parent.iterdir() if p != path]  # no temp files left
    run = ib.load_run(path)
    assert run.layer_names == LAYERS
    assert run.epochs == [0, 1, 2] and run.m == 64
    assert len(run.history["loss"]) == 2 and np.isfinite(run.history["loss"]).all()
    assert run.config["epochs"] == 2 and run.config["probe"] == 64 and run.config["loss"] == "cross_entropy"
    assert run.name == "digits seed model"
    assert run.trajectories("hsic").shape == (3, 5, 2)
    # what it printed: the plan, the file, and the table of the run it saved
    assert "Training digits seed model on digits for 2 epochs" in out
    assert f"Saved 3 snapshots of 5 layers to {path}" in out
    rows = _table_rows(out)
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    traj = run.trajectories("hsic", sigma=5.0, target="labels")
    for r, epoch_values in zip(rows, traj, strict=True):
        cells = [float(v) for v in r[3:]]
        np.testing.assert_allclose(cells, epoch_values.reshape(-1), rtol=1e-3)  # printed with 4 significant digits


def test_info_prints_a_table_with_every_layer(trained_file, capsys):
    _, path, _, _ = trained_file
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    run = ib.load_run(path)
    header = next(line for line in out.splitlines() if line.lstrip().startswith("epoch"))
    for name in LAYERS:
        assert name in header
    assert out.count("vs X") == 5 and out.count("vs Y") == 5
    rows = _table_rows(out)
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    # epoch rows: loss and val accuracy from the history, then (vs X, vs Y) per layer
    for r in rows[1:]:
        e = int(r[0])
        assert float(r[1]) == pytest.approx(run.history["loss"][e - 1], abs=1e-4)
        assert float(r[2]) == pytest.approx(run.history["val_accuracy"][e - 1], abs=1e-4)
        assert len(r) == 3 + 2 * len(LAYERS)
    assert rows[0][1] == "nan"  # nothing trained at epoch 0
    assert "HSIC(T, X)" in out and "sigma=5.0" in out and "probe=64" in out


def test_info_with_other_estimators_and_options(trained_file, capsys):
    _, path, _, _ = trained_file
    run = ib.load_run(path)
    args = ["info", str(path), "--estimator", "cka", "--sigma", "2", "--sigma-rule", "median_d2", "--target", "output"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "CKA(T, X)" in out and "target=output" in out and "median_d2" in out
    rows = _table_rows(out)
    traj = run.trajectories("cka", sigma=2.0, target="output", sigma_rule="median_d2")
    np.testing.assert_allclose([float(v) for v in rows[-1][3:]], traj[-1].reshape(-1), rtol=1e-3)
    assert main(["info", str(path), "--estimator", "nhsic", "--kernel", "linear"]) == 0
    assert "nHSIC" in capsys.readouterr().out


def test_info_missing_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["info", "missing.ibrun"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ibwidget info: error:" in captured.err and "missing.ibrun" in captured.err
    assert "no run file" in captured.err


def test_info_damaged_file_and_bad_options(trained_file, tmp_path, capsys):
    _, path, _, _ = trained_file
    bad = tmp_path / "bad.ibrun"
    bad.write_bytes(path.read_bytes()[:500])
    assert main(["info", str(bad)]) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert main(["info", str(path), "--estimator", "mutual_info"]) == 2
    err = capsys.readouterr().err
    assert "mutual_info" in err and "hsic" in err  # says what exists
    with pytest.raises(SystemExit) as info:
        main(["info", str(path), "--target", "inputs"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "imagenet"])
    with pytest.raises(SystemExit):
        main([])


def test_train_refusals_return_2(tmp_path, capsys, monkeypatch):
    # never download here (a networked machine would fetch MNIST): the missing files must be reported instead
    monkeypatch.setattr(ib.datasets.mnist, "load_data", functools.partial(ib.datasets.mnist.load_data, download=False))
    out = tmp_path / "x.ibrun"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--probe", "2", "--out", str(out)]) == 2
    assert "probe" in capsys.readouterr().err
    assert not out.exists()
    args = ["train", "--dataset", "mnist", "--epochs", "1", "--data-root", str(tmp_path / "none"), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "MNIST" in err and "digits" in err  # where to put the files, and the offline alternative
    assert not out.exists()


def test_module_entry_point(tmp_path):
    """`python -m ibwidget.cli` exits with main()'s status."""
    proc = subprocess.run(
        [sys.executable, "-m", "ibwidget.cli", "info", str(tmp_path / "missing.ibrun")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no run file" in proc.stderr
