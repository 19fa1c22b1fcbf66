"""Run files as a channel: ``ib.record`` from a loop of one's own, an append-only schema-3 file that survives
``kill -9`` at any instant, readers in other processes that see only complete epochs, one writer per path."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import numpy as np
import pytest
import torch
from _schema1 import write_schema1
from _writer import start_writer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.record import _runlog
from ibwidget.record.runfile import RunTail


def _data(n: int = 128, d: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))


def _train_one_epoch(model, x, y, opt) -> float:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


# ------------------------------------------------------------------------------------------ ib.record


def test_record_in_a_loop_of_ones_own_equals_the_engines_snapshots(tmp_path):
    """Epoch 0 on entry, one snapshot per call, logs kept; the file holds what rec.run holds; the estimates equal a
    direct computation on the same weights (the probe taken in eval mode, the mode restored)."""
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    path = tmp_path / "runs" / "mine.ibrun"
    model.train()
    with ib.record(model, probe=(x[:64], y[:64]), layers=["0", "2"], path=path, name="mine") as rec:
        assert rec.run.epochs == [0] and path.is_file()
        for _ in range(4):
            loss = _train_one_epoch(model, x, y, opt)
            rec.snapshot(logs={"loss": loss, "val_accuracy": 0.5})
            assert ib.load_run(path).epochs == rec.run.epochs  # appended before snapshot() returned
    assert model.training and not (tmp_path / "runs" / "mine.ibrun.lock").exists()
    run = rec.run
    assert run.epochs == [0, 1, 2, 3, 4] and len(run.history["loss"]) == 4 and run.name == "mine"
    back = ib.load_run(path)
    assert back.history["loss"] == run.history["loss"] and back.layer_names == ["0", "2"]
    np.testing.assert_array_equal(back.trajectories("cka"), run.trajectories("cka"))
    # the last snapshot is the trained model's: its layer-0 Gram on the probe, computed here directly
    model.eval()
    with torch.no_grad():
        z = model[0](x[:64])
    expected = ib.kernels.sq_distances(ib.kernels.gram(z))
    m = 64
    iu = torch.triu_indices(m, m, 1)
    np.testing.assert_allclose(
        back.snapshots().dist[-1, 0].numpy(), expected[iu[0], iu[1]].numpy(), rtol=1e-4, atol=1e-4
    )


def test_schedules_choose_the_snapshotted_epochs_and_keep_every_epochs_logs(tmp_path):
    x, y = _data()
    for kwargs, expected in (({"every_n_epochs": 2}, [0, 2, 4]), ({"snapshot_epochs": [1, 4]}, [0, 1, 4])):
        model = _model()
        path = tmp_path / f"{next(iter(kwargs))}.ibrun"
        with ib.record(model, probe=(x[:32], y[:32]), path=path, **kwargs) as rec:
            for epoch in range(5):
                rec.snapshot(logs={"loss": float(epoch)})
        back = ib.load_run(path)
        assert rec.run.epochs == back.epochs == expected
        assert back.history["loss"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="every_n_epochs or snapshot_epochs, not both"):
        ib.record(_model(), probe=(x[:32], y[:32]), every_n_epochs=2, snapshot_epochs=[1])
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
        ib.record(_model(), probe=(x[:32], y[:32]), every_n_epochs=0)


def test_probe_from_a_dataset_or_loader_and_a_forward_for_dict_inputs(tmp_path):
    x, y = _data()

    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _model()

        def forward(self, batch):
            return self.body(batch["pixels"])

    model = DictModel()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    with ib.record(
        model, probe=loader, probe_size=40, layers=["body.0"], forward=lambda t: model({"pixels": t}), seed=3
    ) as rec:
        rec.snapshot()
    assert rec.run.m == 40 and rec.run.epochs == [0, 1] and rec.run.num_classes == 4
    again = ib.record(_model(), probe=TensorDataset(x, y), probe_size=40, seed=3)
    assert torch.equal(again.run.probe_x, rec.run.probe_x)  # the same seeded subset from a Dataset


def test_resume_appends_to_the_same_configuration_and_refuses_another(tmp_path):
    x, y = _data()
    path = tmp_path / "r.ibrun"
    model = _model()
    with ib.record(model, probe=(x[:32], y[:32]), path=path, name="r") as rec:
        rec.snapshot(logs={"loss": 1.0})
        rec.snapshot(logs={"loss": 0.9})
    with pytest.raises(FileExistsError, match="resume=True"):
        ib.record(model, probe=(x[:32], y[:32]), path=path, name="r")
    with pytest.raises(ValueError, match="another configuration: name 'r' \\(file\\) vs 'other'"):
        ib.record(model, probe=(x[:32], y[:32]), path=path, name="other", resume=True)
    with pytest.raises(ValueError, match="probe inputs differ"):
        ib.record(model, probe=(x[32:64], y[32:64]), path=path, name="r", resume=True)
    assert ib.load_run(path).epochs == [0, 1, 2]  # nothing written by the refused calls
    with ib.record(model, probe=(x[:32], y[:32]), path=path, name="r", resume=True) as rec:
        assert rec.run.epochs == [0, 1, 2] and rec.epoch == 2
        rec.snapshot(logs={"loss": 0.8})
    back = ib.load_run(path)
    assert back.epochs == [0, 1, 2, 3] and back.history["loss"] == [1.0, 0.9, 0.8]


def test_bad_input_is_refused_before_training(tmp_path):
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match="Unknown layer 'fc9'"):
        ib.record(model, probe=(x, y), layers=["fc9"], path=tmp_path / "a.ibrun")
    with pytest.raises(ValueError, match="probe=\\(x, labels\\)"):
        ib.record(model, probe=(x,), path=tmp_path / "a.ibrun")
    with pytest.raises(ValueError, match="got 3 tensors"):
        ib.record(model, probe=(x, y, y), path=tmp_path / "a.ibrun")
    with pytest.raises(TypeError, match="a pair \\(inputs, targets\\)"):  # a dataset of inputs only
        ib.record(model, probe=TensorDataset(x), path=tmp_path / "a.ibrun")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="cannot create the folder"):
        ib.record(model, probe=(x, y), path=blocker / "a.ibrun")
    with pytest.raises(ValueError, match="is a folder"):
        ib.record(model, probe=(x, y), path=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


# ------------------------------------------------------------------------------------------ the file


def test_schema1_files_still_load_and_save_writes_the_record_log(tmp_path):
    x, y = _data()
    model = _model()
    with ib.record(model, probe=(x[:32], y[:32]), keep_activations="all") as rec:
        rec.snapshot(logs={"loss": 1.0})
    run = rec.run
    old = write_schema1(run, tmp_path / "old.ibrun")
    assert old.read_bytes()[:2] == b"PK"  # a zip
    loaded = ib.load_run(old)
    assert loaded.epochs == run.epochs and loaded.history["loss"] == run.history["loss"] == [1.0]
    assert set(loaded.history) == set(run.history) and np.isnan(loaded.history["val_loss"]).all()
    new = loaded.save(tmp_path / "new.ibrun")
    assert new.read_bytes()[:8] == _runlog.MAGIC
    again = ib.load_run(new)
    np.testing.assert_array_equal(again.trajectories("binning_idnn"), run.trajectories("binning_idnn"))


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path):
    header = _runlog.encode(
        _runlog.HEADER, {"format": _runlog.FORMAT, "schema_version": 4}, {"probe_x": np.zeros((4, 1), np.float32)}
    )
    path = tmp_path / "future.ibrun"
    path.write_bytes(_runlog.MAGIC + header)
    with pytest.raises(ValueError, match="schema 4, newer than this ibwidget reads \\(3\\); upgrade ibwidget"):
        ib.load_run(path)


def test_a_torn_tail_is_ignored_by_readers_and_cut_off_by_resume(tmp_path):
    x, y = _data()
    path = tmp_path / "t.ibrun"
    model = _model()
    with ib.record(model, probe=(x[:32], y[:32]), path=path, name="t") as rec:
        rec.snapshot(logs={"loss": 1.0})
    good = path.read_bytes()
    record = _runlog.encode(_runlog.EPOCH, {"snapshot": None, "logs": {"loss": 2.0}})
    for cut in (3, _runlog._FRAME.size, len(record) - 1):  # mid-frame, frame only, all but the last byte
        path.write_bytes(good + record[:cut])
        assert ib.load_run(path).history["loss"] == [1.0]
    flipped = bytearray(good + record)
    flipped[-2] ^= 0xFF  # the last record, complete but damaged: a torn write that the checksum gives away
    path.write_bytes(bytes(flipped))
    assert ib.load_run(path).history["loss"] == [1.0]
    with ib.record(model, probe=(x[:32], y[:32]), path=path, name="t", resume=True) as rec:
        rec.snapshot(logs={"loss": 3.0})
    assert ib.load_run(path).history["loss"] == [1.0, 3.0]
    damaged = bytearray(path.read_bytes())
    damaged[len(good) - 10] ^= 0xFF  # a record in the middle: corruption, said as such
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="fails its checksum; the file is corrupted"):
        ib.load_run(path)


def test_hostile_sizes_are_refused_before_they_are_read(tmp_path):
    x, y = _data()
    path = tmp_path / "h.ibrun"
    with ib.record(_model(), probe=(x[:32], y[:32]), path=path) as rec:
        rec.snapshot()
    huge = _runlog._FRAME.pack(_runlog.EPOCH, 0, 2**40)  # claims a terabyte
    path.write_bytes(path.read_bytes() + huge)
    with pytest.raises(ValueError, match="declares 1099511627776 bytes"):
        ib.load_run(path)


# ------------------------------------------------------------------------------------------ other processes


def test_kill_9_at_any_instant_keeps_every_epoch_whose_snapshot_returned(tmp_path):
    """A writer killed with SIGKILL at five different instants (some mid-append: each epoch appends about 0.5 MB):
    the file opens with every epoch whose snapshot() returned (and at most the one in flight), and a resumed writer
    on this host takes over the dead one's lock and goes on."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        path = tmp_path / f"k{trial}.ibrun"
        proc = start_writer(tmp_path, path, 400)
        assert proc.stdout.readline().strip() == "entered"
        returned = 0
        deadline = time.monotonic() + float(rng.uniform(0.05, 0.6))
        while time.monotonic() < deadline:
            line = proc.stdout.readline().split()
            if line and line[0] == "returned":
                returned = int(line[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().split("\n"):  # lines written before the kill
            if line.startswith("returned"):
                returned = int(line.split()[1])
        run = ib.load_run(path)
        assert returned <= len(run.history["loss"]) <= returned + 1, (trial, returned, run.epochs)
        assert run.epochs == list(range(len(run.history["loss"]) + 1))
        assert (tmp_path / f"k{trial}.ibrun.lock").exists()  # the dead writer's lock
    resumed = start_writer(tmp_path, path, 2, 256, "resume")
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and "done" in out
    after = ib.load_run(path)
    assert len(after.history["loss"]) == len(run.history["loss"]) + 2


def test_a_reader_in_another_process_sees_only_complete_epochs_and_never_an_error(tmp_path):
    path = tmp_path / "live.ibrun"
    proc = start_writer(tmp_path, path, 30, 128)
    seen = []
    tail = None
    while proc.poll() is None or tail is None or tail.run is None or tail.run.num_snapshots < 31:
        if path.exists():
            tail = tail or RunTail(path)
            tail.poll()  # never raises while the file grows
            if tail.run is not None:
                run = tail.run
                seen.append(run.num_snapshots)
                assert run.epochs == list(range(run.num_snapshots))
                assert np.isfinite(run.snapshots().dist.numpy()).all()
        if proc.poll() is not None and seen and seen[-1] == 31:
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == 0
    assert seen == sorted(seen) and seen[-1] == 31 and len(set(seen)) > 3  # it followed the growth
    np.testing.assert_array_equal(tail.run.trajectories("hsic"), ib.load_run(path).trajectories("hsic"))


def test_a_second_writer_is_refused_naming_host_and_pid(tmp_path):
    path = tmp_path / "one.ibrun"
    first = start_writer(tmp_path, path, 1, 32, "resume", "hold")
    assert first.stdout.readline().strip() == "entered"
    x, y = torch.randn(32, 20), torch.arange(32) % 5
    model = nn.Sequential(nn.Linear(20, 4))
    with pytest.raises(RuntimeError, match=f"being written by pid {first.pid} on {socket.gethostname()}"):
        ib.record(model, probe=(x, y), path=path, resume=True)
    lock = json.loads((tmp_path / "one.ibrun.lock").read_text())
    assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
    first.communicate("go\n", timeout=60)
    assert not (tmp_path / "one.ibrun.lock").exists()  # released on exit


def test_a_second_writer_in_the_same_process_is_refused(tmp_path):
    x, y = _data()
    path = tmp_path / "same.ibrun"
    with ib.record(_model(), probe=(x[:16], y[:16]), path=path) as rec:
        with pytest.raises(RuntimeError, match=f"being written by pid {os.getpid()}"):
            ib.record(_model(), probe=(x[:16], y[:16]), path=path, resume=True)
        rec.snapshot()
    assert ib.load_run(path).epochs == [0, 1]


# ------------------------------------------------------------------------------------------ the engine


def test_the_engine_appends_each_epoch_through_the_same_recording(tmp_path):
    x, y = _data()
    train = DataLoader(TensorDataset(x, y), batch_size=32)
    path = tmp_path / "engine.ibrun"
    engine = ib.Engine(_model(), train, epochs=3, recording=ib.Recording(32, path=path))
    on_disk = []
    engine.on("epoch_end", lambda event: on_disk.append(ib.load_run(path).epochs))
    engine.start().wait(timeout=60)
    assert on_disk == [[0, 1], [0, 1, 2], [0, 1, 2, 3]]  # each epoch in the file when its event fires
    assert not (tmp_path / "engine.ibrun.lock").exists()  # released when the training thread ended
    engine.start(epochs=1).wait(timeout=60)
    back = ib.load_run(path)
    assert back.epochs == [0, 1, 2, 3, 4] and back.history["loss"] == engine.run.history["loss"]
    # a preempted job relaunched with resume=True goes on from the file's last epoch
    again = ib.Engine(_model(), train, epochs=6, recording=ib.Recording(32, path=path, resume=True))
    assert again.epoch == 4
    again.start().wait(timeout=60)
    assert ib.load_run(path).epochs == list(range(7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_record_on_cuda_matches_the_cpu(tmp_path):
    x, y = _data()
    runs = []
    for device in ("cpu", "cuda"):
        model = _model().to(device)
        with ib.record(model, probe=(x[:64], y[:64]), path=tmp_path / f"{device}.ibrun") as rec:
            rec.snapshot()
        runs.append(ib.load_run(tmp_path / f"{device}.ibrun"))
    np.testing.assert_allclose(runs[0].trajectories("cka"), runs[1].trajectories("cka"), rtol=1e-4, atol=1e-6)


def test_later_record_kinds_and_per_epoch_fields_are_skipped(tmp_path):
    """A file written by a later version of schema 3: a record kind and an epoch array this version does not know
    are skipped, and the rest loads."""
    x, y = _data()
    path = tmp_path / "later.ibrun"
    with ib.record(_model(), probe=(x[:16], y[:16]), path=path) as rec:
        rec.snapshot(logs={"loss": 1.0})
    snap = rec.run.snapshots()
    extra = _runlog.encode(
        _runlog.EPOCH,
        {"snapshot": {"epoch": 2, "custom": []}, "logs": {"loss": 0.5}, "diagnostic": {"rank": 3}},
        {
            "dist": snap.stored_dist[-1].numpy(),
            "norms": snap.stored_norms[-1].numpy(),
            "output": snap.outputs[-1].numpy(),
            **{
                f"acts/{i}": snap.activations[n][-1].numpy()
                for i, n in enumerate(snap.layer_names)
                if n in snap.activations
            },
            "geometry/rank": np.arange(3, dtype=np.float32),
        },
    )
    unknown_kind = _runlog.encode(9, {"note": "a record kind of a later version"}, {"blob": np.zeros(4)})
    path.write_bytes(path.read_bytes() + unknown_kind + extra)
    back = ib.load_run(path)
    assert back.epochs == [0, 1, 2] and back.history["loss"] == [1.0, 0.5]


def test_a_trainer_appends_to_its_path(tmp_path):
    x, y = _data()
    train = DataLoader(TensorDataset(x, y), batch_size=32)
    trainer = ib.Trainer(_model(), train, epochs=2, probe=16, path=tmp_path / "t.ibrun")
    trainer.start()
    trainer.wait(timeout=60)
    assert ib.load_run(tmp_path / "t.ibrun").epochs == [0, 1, 2]
    trainer.close()


def test_a_loop_over_the_memory_budget_stops_with_advice_and_keeps_its_file(tmp_path):
    x, y = _data()
    path = tmp_path / "budget.ibrun"
    with ib.record(_model(), probe=(x[:32], y[:32]), path=path) as rec:
        per_epoch = rec.recorder.bytes_per_epoch()
    budget = rec.recorder._bytes_once() + 3 * per_epoch  # room for 3 snapshots
    with ib.record(_model(), probe=(x[:32], y[:32]), path=tmp_path / "b2.ibrun", memory_budget=budget) as rec:
        rec.snapshot(logs={"loss": 1.0})
        rec.snapshot(logs={"loss": 0.9})
        with pytest.raises(MemoryError, match="every_n_epochs=..., snapshot_epochs"):
            rec.snapshot(logs={"loss": 0.8})
    assert ib.load_run(tmp_path / "b2.ibrun").epochs == [0, 1, 2]


def test_resuming_a_schema1_file_is_refused_with_how_to_convert_it(tmp_path):
    x, y = _data()
    with ib.record(_model(), probe=(x[:16], y[:16]), name="old") as rec:
        rec.snapshot(logs={"loss": 1.0})
    path = write_schema1(rec.run, tmp_path / "old.ibrun")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="schema-1 run file.*ib.load_run\\(path\\).save\\(path\\)"):
        ib.record(_model(), probe=(x[:16], y[:16]), path=path, name="old", resume=True)
    assert path.read_bytes() == before and not (tmp_path / "old.ibrun.lock").exists()
    ib.load_run(path).save(path)  # converted, it resumes
    with ib.record(_model(), probe=(x[:16], y[:16]), path=path, name="old", resume=True) as rec:
        rec.snapshot(logs={"loss": 0.5})
    assert ib.load_run(path).history["loss"] == [1.0, 0.5]


def test_a_file_changed_behind_a_writer_is_not_overwritten(tmp_path):
    """Between two trainings of one engine the lock is released; if the file changed meanwhile, the next training's
    append is refused instead of cutting the other writer's records off."""
    x, y = _data()
    train = DataLoader(TensorDataset(x, y), batch_size=32)
    path = tmp_path / "shared.ibrun"
    engine = ib.Engine(_model(), train, epochs=1, recording=ib.Recording(16, path=path))
    engine.start().wait(timeout=60)
    with open(path, "ab") as fh:
        fh.write(_runlog.encode(_runlog.EPOCH, {"snapshot": None, "logs": {"loss": 9.0}}))
    changed = path.read_bytes()
    engine.start(epochs=1)
    engine.wait(timeout=60, raise_error=False)
    assert engine.status == "failed" and "changed since this recording last wrote it" in engine.reason
    assert path.read_bytes() == changed
