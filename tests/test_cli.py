"""The headless command line, end to end: ``ibwidget train`` writes a run file, ``ibwidget info`` prints it; bad
arguments are refused before any work in one line on stderr; a trained run is never lost."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import ibwidget as ib
from ibwidget.cli import main
from ibwidget.pyglow.models import IBSequential

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
    (tmp_path / "data").mkdir()  # a data folder without the MNIST files
    args = ["train", "--dataset", "mnist", "--epochs", "1", "--data-root", str(tmp_path / "data"), "--out", str(out)]
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


# ------------------------------------------------------------------------------------------ refused before training

SMALL = ["--dataset", "digits", "--epochs", "1", "--probe", "16"]


def _one_line_error(err: str, command: str = "train", after_progress: bool = False) -> str:
    """The error printed: a single line, no traceback; ``after_progress``: the last line, after tqdm's bars."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if after_progress:
        assert not any("error" in line for line in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith(f"ibwidget {command}: error: "), err
    return lines[0]


def test_out_naming_a_folder_is_refused_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ibwidget.cli", "train", *SMALL, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert f"--out {tmp_path} is a folder" in line and str(tmp_path / "run.ibrun") in line
    assert proc.stdout == ""  # refused before loading data or training
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_file_or_unwritable_is_refused(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    for out in (blocker / "run.ibrun", blocker / "deeper" / "run.ibrun"):
        assert main(["train", *SMALL, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert f"{blocker} is a file, not a folder" in _one_line_error(captured.err)
    assert blocker.read_text() == "a file, not a folder"
    long_name = tmp_path / ("x" * 300 + ".ibrun")  # longer than any file system allows
    assert main(["train", *SMALL, "--out", str(long_name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot write there" in _one_line_error(captured.err)
    assert list(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the path under a file covers it")
def test_out_in_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["train", *SMALL, "--out", str(locked / "sub" / "run.ibrun")]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "cannot write there (Permission denied)" in _one_line_error(captured.err)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_report_out_naming_a_folder_is_refused(trained_file, tmp_path, capsys):
    _, path, _, _ = trained_file
    assert main(["report", str(path), "-o", str(tmp_path)]) == 2
    line = _one_line_error(capsys.readouterr().err, "report")
    assert f"--out {tmp_path} is a folder" in line and str(tmp_path / "report.html") in line
    assert list(tmp_path.iterdir()) == []


def test_estimator_sigma_and_data_root_are_checked_before_training(tmp_path, capsys, monkeypatch):
    # should anything try to download, it fails at once instead of fetching MNIST
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    out = tmp_path / "x.ibrun"
    cases = [
        (["--estimator", "hsci"], ["Unknown estimator 'hsci'", "'hsic'"]),
        (["--sigma", "0"], ["--sigma must be positive and finite"]),
        (["--sigma", "nan"], ["--sigma must be positive and finite"]),
    ]
    for extra, expected in cases:
        assert main(["train", *SMALL, "--out", str(out), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # nothing trained
        line = _one_line_error(captured.err)
        assert all(text in line for text in expected), line
    typo = tmp_path / "dtaa"
    assert main(["train", "--dataset", "mnist", "--data-root", str(typo), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err)
    assert f"--data-root {typo} does not exist" in line and "--dataset digits" in line
    assert captured.out == "" and not typo.exists()  # a mistyped folder is not created
    assert not out.exists()


def test_train_with_an_estimator_that_reads_activations(tmp_path, capsys):
    """binning needs the activations of every layer: train keeps them, and prints the table."""
    out = tmp_path / "b.ibrun"
    assert main(["train", *SMALL, "--estimator", "binning", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    run = ib.load_run(out)
    rows = _table_rows(captured.out)
    assert [int(r[0]) for r in rows] == [0, 1]
    traj = run.trajectories("binning")
    np.testing.assert_allclose([float(v) for v in rows[-1][3:]], traj[-1].reshape(-1), rtol=1e-3)


# ------------------------------------------------------------------------------------------ a trained run is kept


def _on_epoch_end(monkeypatch, fn) -> None:
    """Call ``fn(event)`` at every epoch end of the trainings ``ibwidget train`` starts (in the training thread)."""
    make_engine = IBSequential.make_engine

    def with_callback(self, *args, **kwargs):
        engine = make_engine(self, *args, **kwargs)
        engine.on("epoch_end", fn)
        return engine

    monkeypatch.setattr(IBSequential, "make_engine", with_callback)


def test_run_saved_to_runs_when_out_folder_becomes_a_file(tmp_path, capsys, monkeypatch):
    """The out folder passes the check, then is replaced by a file during training: the run goes to ./runs/,
    beside (not over) a run already there, and stderr says where."""
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    out = results / "d.ibrun"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "d.ibrun").write_text("an older run")

    def replace_folder_by_file(event):
        if event.epoch == event.num_epochs:
            results.rmdir()
            results.write_text("now a file")

    _on_epoch_end(monkeypatch, replace_folder_by_file)
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    saved = tmp_path / "runs" / "d-1.ibrun"
    line = _one_line_error(captured.err, after_progress=True)
    assert f"could not save to {out} (File exists: {results})" in line and "saved it to runs/d-1.ibrun instead" in line
    assert (tmp_path / "runs" / "d.ibrun").read_text() == "an older run"
    run = ib.load_run(saved)
    assert run.epochs == [0, 1, 2] and len(run.history["loss"]) == 2
    assert "Saved 3 snapshots of 5 layers to runs/d-1.ibrun" in captured.out
    assert [int(r[0]) for r in _table_rows(captured.out)] == [0, 1, 2]  # the table still printed


def test_run_saved_to_temp_folder_when_runs_is_not_writable(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the temporary folder tempfile.gettempdir() names
    results = tmp_path / "results"
    results.mkdir()
    (tmp_path / "runs").write_text("a file where ./runs/ would go")

    def replace_folder_by_file(event):
        results.rmdir()
        results.write_text("now a file")

    _on_epoch_end(monkeypatch, replace_folder_by_file)
    assert main(["train", *SMALL, "--out", str(results / "d.ibrun")]) == 1
    line = _one_line_error(capsys.readouterr().err, after_progress=True)
    assert "could not save to runs/d.ibrun" in line and f"saved it to {temp / 'd.ibrun'} instead" in line
    assert ib.load_run(temp / "d.ibrun").epochs == [0, 1]


def test_failed_training_keeps_its_completed_epochs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "f.ibrun"

    def fail_in_second_epoch(event):
        if event.epoch == 2:
            raise RuntimeError("the machine went away")

    _on_epoch_end(monkeypatch, fail_in_second_epoch)
    assert main(["train", *SMALL, "--epochs", "3", "--out", str(out)]) == 1
    line = _one_line_error(capsys.readouterr().err, after_progress=True)
    assert "training failed (RuntimeError: the machine went away)" in line and str(out) in line
    run = ib.load_run(out)
    assert len(run.history["loss"]) == run.epochs[-1] >= 1  # every completed epoch, with its history


def test_an_interrupted_train_saves_its_completed_epochs(tmp_path):
    path = tmp_path / "d.ibrun"
    command = [sys.executable, "-m", "ibwidget.cli", "train", "--epochs", "1000", "--probe", "32", "--out", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("Epoch 1/1000"):  # the first epoch is complete
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    run = ib.load_run(path)
    done = len(run.history["loss"])
    assert 1 <= done < 1000 and run.epochs == list(range(done + 1))
    assert f"interrupted after {done} of 1000 epochs, saved to {path}" in err
