"""Following runs that other processes write: ``RunView.follow`` and ``PlaneView.follow`` on a file or a folder,
with real writer processes; ``ibwidget report`` on a file still being written."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from _writer import start_writer

import ibwidget as ib
from ibwidget.cli import main
from ibwidget.plane import _grid
from ibwidget.record.follow import Follower

INTERVAL = 0.1


def _until(condition, timeout: float = 20.0, what: str = "the condition") -> float:
    """Seconds until ``condition()`` holds (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def _step(proc) -> int:
    """Let a stepping writer train one epoch; returns the epoch once its snapshot() returned (it is on disk)."""
    proc.stdin.write("\n")
    proc.stdin.flush()
    line = proc.stdout.readline().split()
    assert line[0] == "returned", line
    return int(line[1])


def _points(view) -> int:
    return len(view.marks["plane_points"][0][0].x)


def test_a_runview_follows_a_file_another_process_writes(tmp_path):
    path = tmp_path / "live.ibrun"
    proc = start_writer(tmp_path, path, 4, 64, "step")
    assert proc.stdout.readline().strip() == "entered"
    view = ib.RunView.follow(path, interval=INTERVAL, timeout=30)
    assert view.following and view.runs[0].name == "child" and _points(view) == 1
    versions = view._model.version
    for _ in range(4):
        epoch = _step(proc)
        _until(lambda epoch=epoch: _points(view) == epoch + 1, what=f"epoch {epoch} in the view")
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    view.sync()
    assert view._model.version == versions  # appended, never recomputed whole
    np.testing.assert_allclose(
        view.marks["plane_points"][0][1].y, ib.load_run(path).trajectories("hsic", sigma=5.0)[:, 1, 1], rtol=1e-4
    )
    assert view.marks["loss"][0]["train"].y.shape[-1] == 4
    view.close()
    assert not view.following  # following stops with the view


def test_a_runview_of_a_folder_takes_in_each_new_run(tmp_path, monkeypatch):
    """A sweep: a second writer starts later in the folder; its run joins the view, the first run's values are not
    recomputed (the grid computes each run's new epochs only)."""
    first = start_writer(tmp_path, tmp_path / "a.ibrun", 3, 64, "step", "name=seed 0")
    assert first.stdout.readline().strip() == "entered"
    (tmp_path / "notes.txt").write_text("not a run")  # other files in the folder are ignored
    computed = []
    real = _grid.GridBuilder.compute

    def spy(self, run, start=0, stop=None, slots=None, slotless=True):
        stop_ = run.num_snapshots if stop is None else stop
        widths = range(len(self.slots)) if slots is None else slots
        computed.extend((run.name, e, k) for e in range(start, stop_) for k in widths)
        return real(self, run, start, stop, slots, slotless)

    monkeypatch.setattr(_grid.GridBuilder, "compute", spy)
    view = ib.RunView.follow(tmp_path, interval=INTERVAL, timeout=30)
    assert [r.name for r in view.runs] == ["seed 0"]
    second = start_writer(tmp_path, tmp_path / "b.ibrun", 3, 64, "step", "name=seed 1", "seed=1")
    assert second.stdout.readline().strip() == "entered"
    _until(lambda: len(view.runs) == 2, what="the second run to join")
    _step(first)
    _step(second)
    _until(lambda: len(view.marks["plane_points"]) == 2 and [len(m[0].x) for m in view.marks["plane_points"]] == [2, 2])
    assert "seed 1" in view.legend.value and "seed 0" in view.legend.value
    first_epoch = [c for c in computed if c[0] == "seed 0" and c[1] == 0]
    assert first_epoch and len(first_epoch) == len(set(first_epoch))  # its epoch 0: once per width
    for proc in (first, second):
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    # The Player tab reads the same grid: the joined run is in it, and its layer-CKA request covers both runs.
    player = view.plane_view
    view.sync()
    assert [r["name"] for r in player.meta["runs"]] == ["seed 0", "seed 1"] and player.values is view._model.values
    np.testing.assert_array_equal(np.frombuffer(player.grid, "<f4"), view._model.values.ravel())
    sent, done = [], threading.Event()
    monkeypatch.setattr(type(player), "send", lambda self, content, buffers=None: (sent.append(content), done.set()))
    player._on_msg(player, {"type": "cka"}, [])
    assert done.wait(60)
    runs = sent[0]["cka"]["runs"]
    for answer, run in zip(runs, [ib.load_run(tmp_path / n) for n in ("a.ibrun", "b.ibrun")], strict=True):
        want = run.cka_matrix(run.epochs[-1], sigma=None, sigma_rule=None)
        np.testing.assert_allclose(np.array(answer["values"][-1], dtype=float), want, rtol=1e-6)
    view.close()


def test_a_planeview_follows_a_folder(tmp_path):
    first = start_writer(tmp_path, tmp_path / "a.ibrun", 2, 32, "step", "name=a")
    assert first.stdout.readline().strip() == "entered"
    plane = ib.PlaneView.follow(tmp_path, estimators=["hsic"], interval=INTERVAL, timeout=30)
    assert plane.meta["n_runs"] == 1 and plane.meta["n_epochs"] == 1
    _step(first)
    _until(lambda: plane.meta["n_epochs"] == 2, what="the new epoch in the PlaneView")
    second = start_writer(tmp_path, tmp_path / "b.ibrun", 1, 32, "name=b")
    assert second.wait(timeout=60) == 0
    _until(lambda: plane.meta["n_runs"] == 2, what="the second run in the PlaneView")
    assert [r["name"] for r in plane.meta["runs"]] == ["a", "b"]
    alone = _grid.plane_grid(ib.load_run(tmp_path / "b.ibrun"), estimators=["hsic"]).values[0]
    np.testing.assert_allclose(plane.values[1, :2], alone[:2], rtol=1e-5)
    first.stdin.close()
    first.wait(timeout=30)
    plane.close()
    assert not plane.following


def test_a_follower_skips_files_that_are_not_runs_yet_and_waits_for_the_first(tmp_path):
    (tmp_path / "broken.ibrun").write_bytes(b"garbage that is not a run")
    follower = Follower(tmp_path, interval=0.05)
    with pytest.raises(TimeoutError, match="broken.ibrun: .*not a readable ibwidget run"):
        follower.wait_for_runs(timeout=0.3)
    with pytest.raises(FileNotFoundError, match="nothing to follow"):
        Follower(tmp_path / "missing" / "run.ibrun")
    soon = Follower(tmp_path / "soon.ibrun", interval=0.05)  # a file a job is about to create
    with pytest.raises(TimeoutError, match="no .ibrun file yet"):
        soon.wait_for_runs(timeout=0.2)


def test_report_works_on_a_file_still_being_written(tmp_path, capsys):
    path = tmp_path / "growing.ibrun"
    proc = start_writer(tmp_path, path, 2, 32, "hold")
    assert proc.stdout.readline().strip() == "entered"
    for _ in range(2):
        assert proc.stdout.readline().startswith("returned")
    with open(path, "ab") as fh:  # an epoch being appended: its first bytes only
        fh.write(b"\x02\x00\x00\x00" + b"\x00" * 9)
    out = tmp_path / "growing.html"
    assert main(["report", str(path), "-o", str(out), "--estimators", "hsic"]) == 0
    assert "Wrote" in capsys.readouterr().out and out.stat().st_size > 1000
    proc.communicate("\n", timeout=30)
