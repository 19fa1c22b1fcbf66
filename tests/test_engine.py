"""ibwidget.Engine: the training thread's lifecycle, events, failures, reproducibility, and any nn.Module."""

from __future__ import annotations

import dataclasses
import inspect
import math
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _training import D_IN, WAIT, C, hold_at, make_data, make_engine, make_loaders, make_mlp, no_hooks, start_long_run
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.pyglow.callback import EvaluatorsCallback
from ibwidget.pyglow.evaluators import Estimator
from ibwidget.record.recorder import make_probe
from ibwidget.record.recording import Recording
from ibwidget.record.taps import Tap
from ibwidget.train.engine import HOOKS, BatchEvent, EpochEvent, resolve_device

# ------------------------------------------------------------------------------------------ events


def test_events_hand_over_plain_python_numbers():
    train, val = make_loaders(n_train=80, batch_size=16)  # 5 batches
    engine = make_engine(train=train, val=val, epochs=2, batch_event_interval=0)
    batches, epochs, finished, threads = [], [], [], set()

    def on_batch(ev):
        threads.add(threading.current_thread().name)
        batches.append(ev)

    engine.on("batch_end", on_batch)
    engine.on("epoch_end", epochs.append)
    engine.on("finish", finished.append)
    assert engine.status == "idle"
    engine.start()
    run = engine.wait(timeout=WAIT)
    assert run is engine.run
    assert engine.status == "finished" and finished == ["finished"] and engine.reason == ""
    assert threading.current_thread().name not in threads  # callbacks run in the training thread

    assert [(ev.epoch, ev.batch) for ev in batches] == [(e, b) for e in (1, 2) for b in range(1, 6)]
    for ev in batches:
        assert isinstance(ev, BatchEvent)
        for f in dataclasses.fields(ev):
            value = getattr(ev, f.name)
            assert type(value) in (int, float), (f.name, type(value))
        assert type(ev.loss) is float and math.isfinite(ev.loss)
        assert ev.num_batches == 5 and ev.num_epochs == 2
        assert ev.rate > 0 and ev.eta >= 0
    assert all(ev.eta == 0 for ev in batches if ev.batch == ev.num_batches)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batches[0].loss = 1.0

    assert [ev.epoch for ev in epochs] == [1, 2]
    for ev in epochs:
        assert isinstance(ev, EpochEvent)
        assert type(ev.epoch) is int and type(ev.num_epochs) is int and type(ev.snapshots) is int
        assert type(ev.seconds) is float and ev.seconds >= 0
        assert set(ev.logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert all(type(v) is float and math.isfinite(v) for v in ev.logs.values()), ev.logs
        assert 0 <= ev.logs["accuracy"] <= 1 and 0 <= ev.logs["val_accuracy"] <= 1
        assert ev.snapshots == ev.epoch + 1  # epoch 0 (before training) + one per epoch
    # the logs are the run's history
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert run.history[k] == [ev.logs[k] for ev in epochs]
    assert run.epochs == [0, 1, 2]


def test_epoch_loss_is_the_mean_training_loss_of_the_epoch():
    """The logged loss is the sample-weighted mean of the batch losses (the last batch is smaller)."""
    train, val = make_loaders(n_train=72, batch_size=16)  # batches of 16, 16, 16, 16, 8
    engine = make_engine(train=train, val=val, epochs=1, batch_event_interval=0)
    losses = []
    engine.on("batch_end", lambda ev: losses.append(ev.loss))
    engine.start().wait(timeout=WAIT)
    sizes = [16, 16, 16, 16, 8]
    assert engine.run.history["loss"][0] == pytest.approx(np.dot(losses, sizes) / sum(sizes), rel=1e-6)


def test_unknown_event_and_callback_objects():
    engine = make_engine(epochs=1)
    with pytest.raises(ValueError, match="batch_end"):
        engine.on("batch_start", print)
    with pytest.raises(TypeError, match="on_epoch_end"):
        engine.add_callback(object())

    class Recorder:
        def __init__(self):
            self.epochs, self.finished = [], []

        def on_epoch_end(self, ev):
            self.epochs.append(ev.epoch)

        def on_finish(self, status):
            self.finished.append(status)

    cb = Recorder()
    engine.add_callback(cb)
    removed = []
    engine.on("on_epoch_end", removed.append)
    engine.off("epoch_end", removed.append)
    engine.start().wait(timeout=WAIT)
    assert cb.epochs == [1] and cb.finished == ["finished"] and removed == []


# ------------------------------------------------------------------------------------------ pause / resume / stop


def test_pause_halts_batches_and_resume_continues():
    train, val = make_loaders(n_train=320, batch_size=8)  # 40 batches per epoch
    engine = make_engine(train=train, val=val, epochs=2, batch_event_interval=0)
    first, proceed = threading.Event(), threading.Event()
    count = [0]

    def on_batch(ev):
        count[0] += 1
        if count[0] == 1:
            first.set()
            proceed.wait(WAIT)  # hold the first batch until the main thread has paused

    held = []
    engine.on("batch_end", on_batch)
    engine.on("pause", held.append)
    engine.start()
    assert first.wait(WAIT)
    engine.pause()
    assert engine.status == "pausing"  # asked; the batch in flight has not ended
    proceed.set()
    deadline = time.monotonic() + WAIT
    while engine.status != "paused" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine.status == "paused" and held == [0]  # held within epoch 1: no epoch completed
    params = [p.detach().clone() for p in engine.model.parameters()]
    time.sleep(0.3)
    seen = count[0]
    time.sleep(0.3)
    assert count[0] == seen == 1  # no batch ran while paused
    assert engine.is_alive and engine.status == "paused"
    assert all(torch.equal(a, b) for a, b in zip(params, engine.model.parameters(), strict=True))
    with pytest.raises(TimeoutError):
        engine.wait(timeout=0.05)
    engine.pause()  # pausing twice is harmless
    engine.resume()
    assert engine.status in ("running", "finished")
    engine.wait(timeout=WAIT)
    assert engine.status == "finished"
    assert count[0] == 2 * len(train)
    assert engine.run.epochs == [0, 1, 2]
    engine.resume()  # resuming a finished run does nothing
    assert engine.status == "finished"


def test_stop_during_second_epoch_keeps_completed_epochs():
    engine = make_engine(epochs=4, batch_event_interval=0)
    reached, release = hold_at(engine, epoch=2)
    finished, epoch_events = [], []
    engine.on("finish", finished.append)
    engine.on("epoch_end", epoch_events.append)
    engine.start()
    assert reached.wait(WAIT)
    engine.stop(wait=False)
    assert engine.status == "stopping"
    release.set()
    engine.wait(timeout=WAIT)
    assert not engine.is_alive
    assert engine.status == "stopped" and finished == ["stopped"]
    run = engine.run
    assert run.epochs == [0, 1] and run.num_snapshots == 2
    assert len(run.history["loss"]) == len(run.history["val_accuracy"]) == 1
    assert [ev.epoch for ev in epoch_events] == [1] and engine.epoch == 1
    assert run.trajectories("hsic").shape == (2, len(run.layer_names), 2)
    # a stopped run continues where it stopped
    engine.start(epochs=1).wait(timeout=WAIT)
    assert engine.status == "finished" and run.epochs == [0, 1, 2] and len(run.history["loss"]) == 2
    assert no_hooks(engine.model)


def test_stop_while_paused():
    engine = make_engine(epochs=3, batch_event_interval=0)
    reached, release = hold_at(engine, epoch=1, batch=2)
    engine.start()
    assert reached.wait(WAIT)
    engine.pause()
    release.set()
    engine.stop(timeout=WAIT)  # wakes the paused thread and joins it
    assert not engine.is_alive and engine.status == "stopped"
    assert engine.run.epochs == [0] and engine.run.history["loss"] == []


def test_stop_joins_a_long_run():
    engine = start_long_run()
    engine.stop(timeout=WAIT)
    assert not engine.is_alive
    assert engine.status == "stopped"
    assert engine.epoch < 1000 and engine.run.num_snapshots == engine.epoch + 1
    engine.stop()  # stopping a stopped run is harmless
    assert engine.status == "stopped"


def test_start_while_running_is_refused():
    engine = make_engine(epochs=2, batch_event_interval=0)
    reached, release = hold_at(engine, epoch=1)
    engine.start()
    assert reached.wait(WAIT)
    try:
        with pytest.raises(RuntimeError, match="already"):
            engine.start()
    finally:
        release.set()
    engine.wait(timeout=WAIT)
    assert engine.status == "finished"


def test_continue_for_more_epochs():
    engine = make_engine(epochs=1)
    events = []
    engine.on("epoch_end", events.append)
    engine.start().wait(timeout=WAIT)
    assert engine.status == "finished" and engine.run.epochs == [0, 1]
    with pytest.raises(RuntimeError, match="epochs=N"):
        engine.start()
    with pytest.raises(ValueError, match="positive integer"):
        engine.start(epochs=0)
    engine.start(epochs=2).wait(timeout=WAIT)
    assert engine.status == "finished"
    assert engine.run.epochs == [0, 1, 2, 3] and engine.epoch == 3
    assert len(engine.run.history["loss"]) == 3
    assert [(ev.epoch, ev.num_epochs) for ev in events] == [(1, 1), (2, 3), (3, 3)]
    assert engine.run.trajectories("cka").shape == (4, 2, 2)
    # a continued run holds what its memory budget counted (here 5 snapshots), not a doubled buffer (8)
    engine.start(epochs=1).wait(timeout=WAIT)
    assert engine.run._dist.capacity == 5 and engine.run._outputs.capacity == 5


# ------------------------------------------------------------------------------------------ failures


class Boom(Exception):
    pass


class Exploding(nn.Module):
    """Raises in its training forward once armed."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(D_IN, 16)
        self.fc2 = nn.Linear(16, C)
        self.armed = False

    def forward(self, x):
        if self.armed and self.training:
            raise Boom("the forward pass exploded")
        return self.fc2(torch.relu(self.fc1(x)))


def test_exception_in_the_thread_fails_the_run_and_is_reraised():
    torch.manual_seed(0)
    model = Exploding()
    engine = make_engine(model, epochs=4)
    caught, finished = [], []

    def arm(ev):
        if ev.epoch == 1:
            model.armed = True  # epoch 2 raises

    engine.on("epoch_end", arm)
    engine.on("exception", caught.append)
    engine.on("finish", finished.append)
    engine.start()
    with pytest.raises(Boom, match="exploded") as info:
        engine.wait(timeout=WAIT)
    assert engine.status == "failed"
    assert "Boom" in engine.reason and "exploded" in engine.reason
    assert "Traceback" in engine.traceback and "forward" in engine.traceback and "Boom" in engine.traceback
    assert info.value is engine.error
    assert len(caught) == 1 and caught[0] is engine.error and finished == ["failed"]
    # completed epochs are kept
    assert engine.run.epochs == [0, 1] and len(engine.run.history["loss"]) == 1
    assert engine.run.trajectories("hsic").shape == (2, 2, 2)
    assert no_hooks(model)
    # a failed engine does not start again, and wait() keeps re-raising
    with pytest.raises(RuntimeError, match="failed"):
        engine.start(epochs=1)
    with pytest.raises(Boom):
        engine.wait()
    assert engine.wait(raise_error=False) is engine.run


def test_a_failing_callback_fails_the_run():
    engine = make_engine(epochs=2)

    def bad(ev):
        raise KeyError("callback bug")

    engine.on("epoch_end", bad)
    engine.start()
    with pytest.raises(KeyError, match="callback bug"):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed" and "callback bug" in engine.reason


def test_nan_loss_stops_the_run_with_a_clear_status():
    def nan_loss(output, target):
        return F.cross_entropy(output, target) * float("nan")

    engine = make_engine(epochs=3, loss=nan_loss)
    engine.start()
    with pytest.raises(FloatingPointError):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed"
    assert "nan" in engine.reason.lower() and "learning rate" in engine.reason
    assert engine.run.epochs == [0] and engine.run.history["loss"] == []


def test_huge_learning_rate_diverges_into_a_clear_failure():
    engine = make_engine(epochs=5, lr=1e30, batch_event_interval=0)
    engine.start()
    with pytest.raises(FloatingPointError):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed"
    assert ("nan" in engine.reason or "inf" in engine.reason) and "learning rate" in engine.reason
    assert len(engine.run.history["loss"]) == engine.epoch and engine.run.num_snapshots == engine.epoch + 1


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (lambda x, y: list(x), r"pair \(inputs, targets\).*got Tensor"),  # inputs only
        (lambda x, y: [{"image": a, "y": b} for a, b in zip(x, y, strict=True)], r"input key.*'image', 'y'"),
        (lambda x, y: [{"x": a, "class": b} for a, b in zip(x, y, strict=True)], r"target key.*'x', 'class'"),
    ],
)
def test_bad_batches_fail_with_a_message(samples, expected):
    x, y = make_data(32)
    loader = DataLoader(samples(x, y), batch_size=8)
    engine = make_engine(train=loader, val=None, probe_data=(x, y), epochs=1)
    engine.start()
    with pytest.raises(TypeError, match=expected):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed" and engine.run.epochs == [0]


# ------------------------------------------------------------------------------------------ reproducibility


def _seeded_run(seed: int):
    # dropout and a shuffling loader without its own generator: both draw from the seeded global RNG
    train, val = make_loaders(n_train=96, batch_size=16, shuffle=True)
    engine = make_engine(make_mlp(seed=0, dropout=0.3), train, val, epochs=2, seed=seed, device="cpu")
    engine.start().wait(timeout=WAIT)
    assert engine.status == "finished"
    return engine.run


def test_a_seed_makes_a_cpu_run_reproducible():
    a, b = _seeded_run(7), _seeded_run(7)
    assert a.history == b.history
    assert torch.equal(a.probe_x, b.probe_x) and torch.equal(a.probe_labels, b.probe_labels)
    for est, kw in (("hsic", {}), ("cka", {"target": "output"}), ("kde_upper", {"sigma": 1.0})):
        np.testing.assert_array_equal(a.trajectories(est, **kw), b.trajectories(est, **kw))
    c = _seeded_run(8)
    assert c.history["loss"] != a.history["loss"]  # the seed matters: it is not reproducible by accident


@pytest.mark.parametrize("own_generator", [True, False])
def test_training_sees_the_loaders_batches_in_its_order(own_generator):
    """The same batches, in the same order, as iterating the DataLoader: shuffled by its own seeded generator (as
    ib.datasets loaders are) or by the global RNG that the engine's seed sets."""
    x, y = make_data(64, 3)

    def loader():
        g = torch.Generator().manual_seed(5) if own_generator else None
        return DataLoader(TensorDataset(x, torch.arange(64)), batch_size=16, shuffle=True, generator=g)

    seen = []

    def loss(output, index):  # the "targets" are sample ids: record them, train on their labels
        seen.append(index.tolist())
        return F.cross_entropy(output, y[index])

    recording = Recording(16, (x, y))
    engine = ib.Engine(make_mlp(), loader(), None, epochs=2, loss=loss, metrics=(), recording=recording, seed=9)
    engine.start().wait(timeout=WAIT)
    torch.manual_seed(9)
    reference, expected = loader(), []
    for _ in range(2):
        expected += [index.tolist() for _, index in reference]
    assert seen == expected


def test_tracking_never_changes_training():
    """Snapshots (eval mode, no grad) leave weights, BatchNorm statistics and the RNG stream untouched."""

    def model():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(D_IN, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, C))

    train, _ = make_loaders(n_train=96, batch_size=16)
    tracked, plain = model(), model()
    opt = torch.optim.SGD(tracked.parameters(), lr=0.05, momentum=0.9)
    recording = Recording(32, keep_activations="all")
    engine = ib.Engine(tracked, train, None, epochs=3, optimizer=opt, seed=11, recording=recording, device="cpu")
    engine.start().wait(timeout=WAIT)
    assert engine.status == "finished" and engine.run.num_snapshots == 4

    torch.manual_seed(11)
    opt2 = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    plain.train()
    for _ in range(3):
        for x, y in train:
            opt2.zero_grad()
            F.cross_entropy(plain(x), y).backward()
            opt2.step()
    a, b = tracked.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    tracked.eval(), plain.eval()
    x, _ = make_data(20, 5)
    assert torch.equal(tracked(x), plain(x))
    assert no_hooks(tracked)


# ------------------------------------------------------------------------------------------ resources and devices


def test_memory_budget_is_refused_with_advice():
    with pytest.raises(MemoryError) as info:
        make_engine(epochs=50, probe=64, memory_budget=100_000)
    msg = str(info.value)
    assert "smaller probe" in msg and "fewer layers" in msg and "memory_budget" in msg
    engine = make_engine(epochs=1, probe=64, memory_budget=2**30)
    for m in (64, 32, 16):  # the bytes per snapshot at this probe and at smaller ones, as bench_storage prints them
        per = engine.recorder.bytes_per_epoch(m) / 2**20
        assert f"{per:.1f} MiB a snapshot" in msg if m == 64 else f"probe={m}: {per:.1f} MiB" in msg
    assert engine.recorder.bytes_per_epoch(16) < engine.recorder.bytes_per_epoch(32) < engine.recorder.bytes_per_epoch()
    # within budget it starts; asking for too many more epochs later is refused the same way, state unchanged
    engine = make_engine(epochs=1, probe=32, memory_budget=200_000)
    engine.start().wait(timeout=WAIT)
    with pytest.raises(MemoryError, match="smaller probe"):
        engine.start(epochs=10_000)
    assert engine.status == "finished" and engine.run.epochs == [0, 1]


def test_device_auto_picks_cuda_only_when_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    engine = make_engine(epochs=1)
    assert engine.device.type == expected and engine.run.config["device"].startswith(expected)
    assert engine.run.probe_x.device.type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")


def test_engine_rejects_bad_arguments():
    train, val = make_loaders()
    with pytest.raises(TypeError, match="nn.Module"):
        ib.Engine(lambda x: x, train, val)
    with pytest.raises(ValueError, match="epochs"):
        ib.Engine(make_mlp(), train, val, epochs=-1)
    with pytest.raises(ValueError, match="mode"):
        EvaluatorsCallback(mode="epochs")
    with pytest.raises(ValueError, match="probe"):
        ib.Engine(make_mlp(), train, val, probe=2)
    with pytest.raises(TypeError, match="Estimator"):
        EvaluatorsCallback([object()])

    class RootParameterOnly(nn.Module):  # parameters, but no submodule that owns any
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(D_IN, C))
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(x @ self.w)

    with pytest.raises(ValueError, match="no layer with parameters"):
        ib.Engine(RootParameterOnly(), train, val, lr=0.1)
    assert ib.Engine(RootParameterOnly(), train, val, lr=0.1, layers=["act"], probe=16).layers == ["act"]


# ------------------------------------------------------------------------------------------ any nn.Module


@pytest.fixture(scope="module")
def digits():
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    return train, val


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU())
        self.fc1 = nn.Linear(6 * 8 * 8, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        h = self.features(x).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.mark.parametrize(
    ("make", "layers", "dims"),
    [
        (_cnn, ["0", "4", "6"], [8 * 8 * 8, 32, 10]),
        (_cnn, ["1", "2", "5"], [8 * 8 * 8, 8 * 4 * 4, 32]),  # parameter-free modules can be tapped by name
        (Net, ["features.0", "fc1", "fc2"], [6 * 8 * 8, 24, 10]),
    ],
)
def test_any_nn_module_trains_and_is_tracked(digits, make, layers, dims):
    train, val = digits
    model = make()
    engine = ib.Engine(model, train, val, epochs=2, layers=layers, probe=64, lr=0.05)
    engine.start().wait(timeout=WAIT)
    assert engine.status == "finished"
    run = engine.run
    assert run.layer_names == layers and run.layer_dims == dims and run.epochs == [0, 1, 2] and run.m == 64
    for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(run.history[k]) == 2 and all(math.isfinite(v) for v in run.history[k])
    assert run.history["val_accuracy"][-1] > 0.3  # it learned something (chance is 0.1)
    traj = run.trajectories("hsic", sigma=5.0)
    assert traj.shape == (3, 3, 2) and np.isfinite(traj).all()
    assert no_hooks(model)
    # the model's outputs are the same whether a Tap is listening or not
    model.eval()
    x = run.probe_x[:32]
    with torch.no_grad():
        plain = model(x)
        with Tap(model, layers) as tap:
            tapped = model(x)
        assert set(tap.outputs) == set(layers)
    assert torch.equal(plain, tapped)
    assert no_hooks(model)


def test_default_layers_are_the_modules_with_parameters(digits):
    train, val = digits
    engine = ib.Engine(_cnn(), train, val, epochs=0, probe=32)
    assert engine.layers == ["0", "4", "6"] and engine.run.layer_names == ["0", "4", "6"]
    engine.start().wait(timeout=WAIT)  # zero epochs: only the epoch-0 snapshot
    assert engine.status == "finished" and engine.run.epochs == [0]


def test_unknown_layer_name_is_a_helpful_error(digits):
    train, val = digits
    with pytest.raises(ValueError, match=r"Unknown layer 'fc3'.*Did you mean.*fc1.*Available layers"):
        ib.Engine(Net(), train, val, epochs=1, layers=["features.0", "fc3"], probe=32)
    with pytest.raises(ValueError, match=r"'features\.0'"):
        ib.Engine(Net(), train, val, epochs=1, layers=["feature.0"], probe=32)


def test_a_layer_the_forward_never_calls_is_refused(digits):
    class Unused(Net):
        def __init__(self):
            super().__init__()
            self.spare = nn.Linear(4, 4)

    train, val = digits
    model = Unused()
    with pytest.raises(RuntimeError, match="'spare' was not called"):
        ib.Engine(model, train, val, epochs=1, layers=["fc1", "spare"], probe=32)
    assert no_hooks(model)


def test_probe_is_a_fixed_seeded_subset_of_the_validation_data(digits):
    train, val = digits
    a = ib.Engine(_cnn(), train, val, epochs=1, probe=48, seed=3)
    b = ib.Engine(_cnn(), train, val, epochs=1, probe=48, seed=3)
    c = ib.Engine(_cnn(), train, val, epochs=1, probe=48, seed=4)
    assert a.run.m == 48 and torch.equal(a.run.probe_x, b.run.probe_x)
    assert not torch.equal(a.run.probe_x, c.run.probe_x)
    # every probe row is a validation sample, with its label
    vx, vy = val.dataset.tensors
    flat = vx.reshape(len(vx), -1)
    for row, label in zip(a.run.probe_x.cpu().reshape(48, -1), a.run.probe_labels.cpu(), strict=True):
        hits = (flat == row).all(1).nonzero().flatten()
        assert len(hits) >= 1 and int(vy[hits[0]]) == int(label)


# ------------------------------------------------------------------------------------------ callbacks


class _HookLog:
    """Every Lightning-style hook, logged with the run's snapshot count at that moment."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name not in HOOKS:
            raise AttributeError(name)
        return lambda engine, *args: self.calls.append((name, *args[:1], engine.run.num_snapshots))


def test_callbacks_hooks_run_in_lightning_order_after_the_recording():
    train, val = make_loaders(n_train=64, batch_size=32)  # 2 batches an epoch
    log = _HookLog()
    engine = make_engine(train=train, val=val, epochs=2, callbacks=[log])
    assert engine.callbacks == [engine.recording, log]
    engine.start().wait(timeout=WAIT)
    per_epoch = [("on_train_batch_start", 0), ("on_after_backward", 0), ("on_train_batch_end", 0)]
    expected = [("setup", 0), ("on_fit_start", 2, 0), ("on_train_start", 1)]
    for epoch in (1, 2):  # the recording's snapshot of the epoch is in the run when the next hook sees it
        batches = [(name, epoch) for name, _ in per_epoch] * 2
        expected += [("on_train_epoch_start", epoch, epoch), *[(n, e, epoch) for n, e in batches]]
        # the snapshot begun after the last step is in the run once validation is done
        expected += [("on_train_steps_end", epoch, epoch), ("on_train_epoch_end", epoch, epoch + 1)]
    expected += [("teardown", 3)]
    # the batch hooks receive the batch's inputs (or nothing), not the epoch: compare names there
    assert [c[0] for c in log.calls] == [c[0] for c in expected]
    per_batch = ("on_train_batch_start", "on_after_backward", "on_train_batch_end")
    assert [c for c in log.calls if c[0] not in per_batch] == [c for c in expected if c[0] not in per_batch]
    log.calls.clear()
    engine.start(epochs=1).wait(timeout=WAIT)
    assert log.calls[0] == ("on_fit_start", 3, 3) and log.calls[1] == ("on_train_start", 3)  # no second epoch 0
    assert engine.run.epochs == [0, 1, 2, 3]


def test_the_recording_is_the_callback_that_owns_the_run():
    train, val = make_loaders()
    recording = Recording(16, keep_activations="all", name="recorded", config={"note": "x"})
    engine = ib.Engine(make_mlp(), train, val, epochs=2, lr=0.05, recording=recording)
    assert engine.run is recording.run and engine.recorder is recording.recorder and engine.callbacks[0] is recording
    assert (engine.run.name, engine.run.m, engine.run.config["note"], engine.run.config["lr"]) == (
        "recorded",
        16,
        "x",
        0.05,
    )
    engine.start().wait(timeout=WAIT)
    assert engine.run.epochs == [0, 1, 2] and len(engine.run.history["loss"]) == 2
    with pytest.raises(RuntimeError, match="new Recording"):
        ib.Engine(make_mlp(), train, val, recording=recording)
    with pytest.raises(ValueError, match=r"Recording\(probe=\.\.\.\)"):
        ib.Engine(make_mlp(), train, val, probe=16, recording=Recording())
    with pytest.raises(TypeError, match="defines any of setup"):
        ib.Engine(make_mlp(), train, val, probe=16, callbacks=[object()])


def test_old_keywords_still_work_with_a_deprecation_warning():
    train, val = make_loaders()
    x, y = make_data(40, seed=3)
    with pytest.warns(DeprecationWarning) as caught:
        engine = ib.Engine(
            make_mlp(),
            train,
            val,
            epochs=1,
            probe=16,
            probe_data=(x, y),
            keep_activations="all",
            memory_budget=10**8,
            name="old",
            config={"note": 1},
            momentum=0.5,
            batch_event_interval=0,
            evaluators=[_MeanCriterion()],
            mode="batches",
        )
    said = " ".join(str(w.message) for w in caught)
    for old in ("probe_data", "keep_activations", "memory_budget", "name", "config", "momentum"):
        assert f"{old}=" in said
    assert "Recording(" in said and "functools.partial" in said and "EvaluatorsCallback" in said
    assert all(w.filename == __file__ for w in caught)  # the warning points at the caller's line
    recording = engine.recording
    assert (recording.keep_activations, recording.memory_budget, engine.run.name) == ("all", 10**8, "old")
    assert torch.equal(engine.run.probe_x, make_probe((x, y), 16, seed=0)[0])
    assert engine.run.config["note"] == 1 and engine.run.config["mode"] == "batches"
    assert engine.optimizer.param_groups[0]["momentum"] == 0.5 and engine.batch_event_interval == 0
    (pyglow,) = [c for c in engine.callbacks if isinstance(c, EvaluatorsCallback)]
    assert pyglow.mode == "batches" and isinstance(pyglow.evaluators[0], _MeanCriterion)
    engine.start().wait(timeout=WAIT)
    assert len(engine.run.batch_dynamics) == 1


class _MeanCriterion(Estimator):
    """A custom criterion: mean of the layer's activations, whatever the other side."""

    def criterion(self, x, y):
        return x.mean()


def test_pyglow_evaluators_are_a_callback_any_engine_takes():
    train, val = make_loaders(n_train=64, batch_size=16)  # 4 batches an epoch
    model = make_mlp()
    engine = make_engine(model, train, val, epochs=2, callbacks=[EvaluatorsCallback([_MeanCriterion()])])
    engine.start().wait(timeout=WAIT)
    values = np.asarray(engine.run.custom_dynamics["_MeanCriterion"])
    assert values.shape == (3, len(engine.layers), 2)
    model.eval()
    with torch.no_grad(), Tap(model, engine.layers, reduce=lambda n, t: t.reshape(t.shape[0], -1)) as tap:
        model(engine.run.probe_x)
    final = [float(tap.outputs[n].mean()) for n in engine.layers]
    np.testing.assert_allclose(values[-1, :, 0], final, rtol=1e-6)
    np.testing.assert_allclose(values[-1, :, 1], final, rtol=1e-6)

    batches = make_engine(train=train, val=val, epochs=2, callbacks=[EvaluatorsCallback([_MeanCriterion()], "batches")])
    batches.start().wait(timeout=WAIT)
    assert [a.shape for a in batches.run.batch_dynamics] == [(4, 1, len(batches.layers), 2)] * 2
    assert batches.run.config["mode"] == "batches" and no_hooks(batches.model)


def test_the_engine_constructor_takes_about_ten_settings():
    keywords = [p for p in inspect.signature(ib.Engine).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert len(keywords) <= 11, [p.name for p in keywords]


def test_compile_trains_through_torch_compile_and_the_probe_stays_eager():
    """compile=True: the same training as eager (same seed, same batches) through a compiled forward; the snapshot
    hooks see eager modules, so the run is the same too."""
    eager = make_engine(epochs=2, probe=32)
    compiled = make_engine(epochs=2, probe=32)
    compiled.compile = True
    for engine in (eager, compiled):
        engine.start().wait(timeout=600)  # the first compiled batch compiles: tens of seconds on a CPU
        assert engine.status == "finished", engine.traceback
    assert eager._compiled is None and compiled._compiled is not None and compiled._compiled is not compiled.forward
    assert compiled.run.config.get("compile") is True and "compile" not in eager.run.config
    np.testing.assert_allclose(compiled.run.history["loss"], eager.run.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(compiled.run.trajectories("hsic"), eager.run.trajectories("hsic"), rtol=1e-3)
    assert no_hooks(compiled.model)
    with pytest.raises(TypeError, match="compile must be True or False"):
        eager.compile = "yes"
