"""Engine reliability: one training per model, interrupts during wait(), memory accounting, non-finite losses,
batch formats and empty inputs, and a pause on an epoch's last batch."""

from __future__ import annotations

import functools
import gc
import math
import signal
import sys
import threading
import time
import weakref
from collections import OrderedDict

import pytest
import torch
from _training import D_IN, WAIT, C, hold_at, make_data, make_engine, make_loaders, make_mlp, start_long_run
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import ibwidget as ib
from ibwidget.record.recorder import Recorder, make_probe, split_batch
from ibwidget.record.recording import Recording
from ibwidget.train import engine as engine_module

# ------------------------------------------------------------------------------------------ one training per model


def test_a_model_already_training_is_refused_and_its_engine_is_reachable():
    model = make_mlp()
    first = make_engine(model, epochs=3, batch_event_interval=0)
    waiting = make_engine(model, epochs=1)  # built while nothing trains the model: allowed
    assert ib.engine_of(model) is None
    reached, release = hold_at(first, epoch=1, batch=2)
    first.start()
    try:
        assert reached.wait(WAIT)
        assert ib.engine_of(model) is first
        with pytest.raises(RuntimeError, match=r"already being trained.*ib\.engine_of\(model\)\.stop\(\)"):
            make_engine(model)
        with pytest.raises(RuntimeError, match="already being trained"):
            waiting.start()
        first.pause()
        assert ib.engine_of(model) is first  # a paused engine still trains the model
        with pytest.raises(RuntimeError, match="already being trained"):
            waiting.start()
        # training a part of the model, or a module that contains it, steps the same weights
        assert ib.engine_of(model[0]) is first and ib.engine_of(nn.Sequential(model)) is first
        with pytest.raises(RuntimeError, match="shares modules with this model"):
            ib.Engine(nn.Sequential(model[0]), *make_loaders(), probe=32)
        with pytest.raises(RuntimeError, match="shares modules with this model"):
            ib.Engine(nn.Sequential(model, nn.ReLU()), *make_loaders(), probe=32)
    finally:
        release.set()
    assert waiting.status == "idle" and waiting.run.epochs == []
    ib.engine_of(model).stop(timeout=WAIT)  # the way the message gives
    assert first.status == "stopped" and ib.engine_of(model) is None
    waiting.start().wait(timeout=WAIT)
    assert waiting.status == "finished" and ib.engine_of(model) is None


def test_rerunning_a_trainer_cell_is_refused_while_the_first_trains():
    pytest.importorskip("ipywidgets")
    torch.manual_seed(0)
    model = ib.IBSequential(input_shape=(D_IN,), device="cpu")
    model.add(ib.layers.Dense(16, activation="relu"))
    model.add(ib.layers.Dense(C))
    train, val = make_loaders()
    first = ib.Trainer(model, train, val, epochs=2, probe=32, plane_view=False)
    first.engine.batch_event_interval = 0
    reached, release = hold_at(first.engine, epoch=1)
    first.start()
    try:
        assert reached.wait(WAIT)
        with pytest.raises(RuntimeError, match="already being trained"):
            ib.Trainer(model, train, val, epochs=2, probe=32, plane_view=False)
        assert ib.engine_of(model) is first.engine
    finally:
        release.set()
    first.wait(timeout=WAIT)
    assert first.status == "finished"
    second = ib.Trainer(model, train, val, epochs=1, probe=32, plane_view=False)
    second.start()
    assert second.wait(timeout=WAIT).epochs == [0, 1]
    first.close(), second.close()


def test_a_trainer_takes_an_engine_or_a_model_and_never_duck_types():
    pytest.importorskip("ipywidgets")
    engine = make_engine(epochs=1)
    trainer = ib.Trainer(engine, plane_view=False)
    assert trainer.engine is engine and trainer.run is engine.run
    with pytest.raises(ValueError, match="pass train_loader, epochs to the Engine"):
        ib.Trainer(engine, make_loaders()[0], epochs=3, plane_view=False)
    with pytest.raises(TypeError, match="needs the training data"):
        ib.Trainer(make_mlp())
    trainer.close()

    class HasMakeEngine(nn.Sequential):  # a plain module with a method of that name is trained as any module
        def make_engine(self, *args, **kwargs):
            raise AssertionError("not an IBSequential")

    train, val = make_loaders()
    trainer = ib.Trainer(HasMakeEngine(*make_mlp()), train, val, epochs=1, probe=16, layers=["0"], plane_view=False)
    assert trainer.engine.layers == ["0"]
    trainer.close()

    model = ib.IBSequential(input_shape=(D_IN,), device="cpu")
    model.add(ib.layers.Dense(C))
    assert not model.is_compiled
    trainer = ib.Trainer(model, train, val, epochs=1, probe=16, plane_view=False, name="seq")
    assert model.is_compiled and model.engine is trainer.engine and model.run is trainer.run
    assert trainer.run.name == "seq" and trainer.run.m == 16
    trainer.close()


def test_an_ended_engine_neither_trains_nor_pins_the_model():
    model = make_mlp()
    engine = make_engine(model, epochs=1)
    engine.start().wait(timeout=WAIT)
    assert ib.engine_of(model) is None
    alive = weakref.ref(model)
    del model, engine
    gc.collect()
    assert alive() is None
    with pytest.raises(TypeError, match="nn.Module"):
        ib.engine_of("model")


def test_stop_from_a_callback_does_not_wait_for_its_own_thread():
    engine = make_engine(epochs=3)
    engine.on("epoch_end", lambda ev: engine.stop())  # wait=True by default
    engine.start().wait(timeout=WAIT)
    assert engine.status == "stopped" and engine.run.epochs == [0, 1]


# ------------------------------------------------------------------------------------------ interrupts


def _main_thread_waits_in_engine() -> bool:
    """Whether the main thread is blocked in a threading wait called from ``Engine.wait``."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename == engine_module.__file__:
            return True
        frame = frame.f_back
    return False


def _interrupt_main_when(*conditions) -> threading.Thread:
    """Send SIGINT (what a kernel interrupt is) to the main thread once per condition, each when it holds."""

    def interrupt():
        for condition in conditions:
            deadline = time.monotonic() + WAIT
            while not condition():
                if time.monotonic() > deadline:
                    return  # never interrupt outside the wait: the test then fails on its assertions
                time.sleep(0.002)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_during_wait_stops_training_and_is_reraised():
    engine = start_long_run()
    interrupter = _interrupt_main_when(_main_thread_waits_in_engine)
    with pytest.raises(KeyboardInterrupt):
        engine.wait(timeout=WAIT)
    interrupter.join(WAIT)
    assert not engine.is_alive and engine.status == "stopped"
    done = engine.epoch
    assert 1 <= done < 1000 and engine.run.num_snapshots == done + 1 and len(engine.run.history["loss"]) == done
    engine.start(epochs=1).wait(timeout=WAIT)  # one thread again, and it continues the run
    assert engine.status == "finished" and engine.epoch == done + 1 and engine.run.num_snapshots == done + 2


def test_a_second_interrupt_leaves_one_stopping_thread_that_start_refuses():
    engine = make_engine(epochs=3, batch_event_interval=0)
    reached, release = hold_at(engine, epoch=1, batch=2)  # the thread cannot stop until released
    engine.start()
    assert reached.wait(WAIT)
    interrupter = _interrupt_main_when(
        _main_thread_waits_in_engine, lambda: engine.status == "stopping" and _main_thread_waits_in_engine()
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.wait(timeout=WAIT)
        interrupter.join(WAIT)
        assert engine.is_alive and engine.status == "stopping"
        with pytest.raises(RuntimeError, match="already stopping"):
            engine.start()
        assert sum(t.name == "ibwidget-training" for t in threading.enumerate()) == 1
    finally:
        release.set()
    engine.wait(timeout=WAIT)
    assert not engine.is_alive and engine.status == "stopped" and engine.run.epochs == [0]


# ------------------------------------------------------------------------------------------ memory


def _wide_output_model(width: int = 10_000) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, 32), nn.ReLU(), nn.Linear(32, width))


def test_the_memory_budget_counts_a_10000_way_output():
    x, y = make_data(1024)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    budget = 600 * 2**20
    with pytest.raises(MemoryError, match=r"10000-wide output on a probe of 512 for 101 snapshots needs 2\d\d\d MiB"):
        ib.Engine(_wide_output_model(), loader, loader, epochs=100, recording=Recording(512, memory_budget=budget))
    engine = ib.Engine(_wide_output_model(), loader, loader, epochs=10, recording=Recording(512, memory_budget=budget))
    # 512 x 10000 float32 outputs per snapshot: 19.5 MiB, more than all the rest of it
    assert engine.recorder.bytes_per_epoch() > 512 * 10_000 * 4


@pytest.mark.parametrize("keep", ["narrow", "all", "none"])
def test_bytes_per_epoch_is_what_the_run_keeps(keep):
    x, y = make_data(128)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    engine = ib.Engine(
        _wide_output_model(), loader, None, epochs=2, recording=Recording(64, keep_activations=keep), lr=0.01
    )
    engine.start().wait(timeout=WAIT)
    assert engine.run.num_snapshots == 3
    assert engine.run.nbytes() == 3 * engine.recorder.bytes_per_epoch()


# ------------------------------------------------------------------------------------------ non-finite losses


class _Poisonable(Dataset):
    """(x, label) samples; once ``poisoned``, sample ``index`` has a NaN input."""

    def __init__(self, x, y, index: int):
        self.x, self.y, self.index, self.poisoned = x, y, index, False

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i].clone()
        if self.poisoned and i == self.index:
            x[0] = math.nan
        return x, self.y[i]


def _state(engine: ib.Engine) -> dict:
    """Parameters, buffers (BatchNorm statistics) and SGD momentum, copied."""
    state = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    for i, p in enumerate(engine.model.parameters()):
        momentum = engine.optimizer.state.get(p, {}).get("momentum_buffer")
        if momentum is not None:
            state[f"momentum.{i}"] = momentum.clone()
    return state


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.isfinite(a[k].float()).all(), k
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


def _nan_in_epoch_2_batch_5(device, deferred: bool | None, batch_event_interval: float):
    """Train 3 epochs of 8 batches of 8; from epoch 2 on, batch 5 holds a NaN input. Returns the failed engine
    and the state seen at every batch event and epoch end."""
    x, y = make_data(64)
    data = _Poisonable(x, y, index=4 * 8 + 3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, C))
    engine = ib.Engine(
        model,
        DataLoader(data, batch_size=8),
        None,
        epochs=3,
        recording=Recording(16, (x, y)),
        optimizer=functools.partial(torch.optim.SGD, momentum=0.9),
        lr=0.05,
        device=device,
    )
    engine.batch_event_interval = batch_event_interval
    if deferred is not None:
        engine._defer_loss_check = deferred
    states = {}

    def on_batch(ev):
        states[ev.epoch, ev.batch] = _state(engine)

    def on_epoch(ev):
        states[ev.epoch, "end"] = _state(engine)
        data.poisoned = True

    engine.on("batch_end", on_batch)
    engine.on("epoch_end", on_epoch)
    engine.start()
    with pytest.raises(FloatingPointError, match="nan at epoch 2, batch 5;"):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed" and "learning rate" in engine.reason
    assert engine.run.epochs == [0, 1] and len(engine.run.history["loss"]) == 1  # the completed epoch is kept
    return engine, states


def test_a_nan_loss_stops_before_its_batch_changes_the_model(device):
    engine, states = _nan_in_epoch_2_batch_5(device, None, batch_event_interval=0)
    assert (2, 5) not in states
    _assert_same_state(_state(engine), states[2, 4])  # weights, BatchNorm statistics and momentum: as before batch 5
    if device.type == "cpu":
        assert "before that batch changed the model" in engine.reason


def test_the_deferred_loss_check_restores_the_last_checked_state():
    """The device path (loss flags read at progress events), run on the CPU: every batch is a progress event."""
    engine, states = _nan_in_epoch_2_batch_5("cpu", True, batch_event_interval=0)
    _assert_same_state(_state(engine), states[2, 4])
    assert "restored to its state at the last check, after batch 4 of epoch 2" in engine.reason


def test_the_deferred_loss_check_names_the_first_bad_batch_between_events():
    """Only each epoch's last batch is a progress event: batches 5-8 ran with NaN, the error still names batch 5
    and the state is the one at the last check, the end of epoch 1."""
    engine, states = _nan_in_epoch_2_batch_5("cpu", True, batch_event_interval=1e9)
    assert [key for key in states if key[0] == 2] == []
    _assert_same_state(_state(engine), states[1, "end"])
    assert "restored to its state at the last check, before epoch 2" in engine.reason


# ------------------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize(("x_key", "y_key"), [("x", "y"), ("input", "label"), ("inputs", "targets")])
def test_dict_batches_train_as_pairs_do(x_key, y_key):
    x, y = make_data(96)
    xv, yv = make_data(48, 1)

    def dicts(a, b):
        return [{x_key: u, y_key: v, "index": i} for i, (u, v) in enumerate(zip(a, b, strict=True))]

    runs = []
    for train, val in (
        (dicts(x, y), dicts(xv, yv)),
        (list(zip(x, y, strict=True)), list(zip(xv, yv, strict=True))),
    ):
        engine = make_engine(make_mlp(), DataLoader(train, batch_size=16), DataLoader(val, batch_size=16), seed=0)
        engine.start().wait(timeout=WAIT)
        assert engine.status == "finished"
        runs.append(engine)
    with_dicts, with_pairs = runs
    assert torch.equal(with_dicts.run.probe_x, with_pairs.run.probe_x)
    assert with_dicts.run.history == with_pairs.run.history
    for a, b in zip(with_dicts.model.parameters(), with_pairs.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_split_batch_and_make_probe_formats():
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 2])
    x2 = x + 1
    for batch, expected in (((x, y, "extra"), x), ([x, y], x), ({"label": y, "inputs": x, "x": x2}, x2)):
        bx, by = split_batch(batch)
        assert bx is expected and by is y  # "x" comes before "inputs"
    with pytest.raises(TypeError, match=r"input key \(x, input, inputs\).*got the keys 'image', 'label'"):
        split_batch({"image": x, "label": y})
    with pytest.raises(TypeError, match=r"pair \(inputs, targets\).*got Tensor"):
        split_batch(x)
    samples = [{"x": torch.full((2,), float(i)), "y": i % 2} for i in range(10)]
    px, py = make_probe(samples, size=4, seed=0)
    assert px.shape == (4, 2) and torch.equal(py, px[:, 0].long() % 2)


def test_an_empty_validation_loader_as_probe_source_says_what_to_pass():
    train, _ = make_loaders()
    empty = DataLoader(TensorDataset(torch.empty(0, D_IN), torch.empty(0, dtype=torch.long)), batch_size=8)
    with pytest.raises(ValueError, match=r"no samples.*val_loader=None.*probe_data=\(x, labels\)"):
        ib.Engine(make_mlp(), train, empty, probe=32)
    with pytest.raises(ValueError, match="no samples"):
        make_probe((torch.empty(0, D_IN), torch.empty(0)), size=8)
    # as the message says: the probe from the training data, or given explicitly
    assert ib.Engine(make_mlp(), train, None, probe=32).run.m == 32
    assert ib.Engine(make_mlp(), train, empty, recording=Recording(32, make_data(40))).run.m == 32


def test_empty_layers_say_what_to_pass_and_one_name_or_module_is_accepted():
    with pytest.raises(ValueError, match=r"layers=\[\] tracks nothing.*layers=None"):
        make_engine(layers=[])
    with pytest.raises(ValueError, match="layers is empty"):
        Recorder(make_mlp(), [], *make_data(16), torch.device("cpu"))
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(D_IN, 16), act=nn.ReLU(), fc2=nn.Linear(16, C)))
    assert make_engine(model, layers="fc1").layers == ["fc1"]
    assert make_engine(model, layers=(name for name in ("fc2", "act"))).layers == ["fc2", "act"]
    engine = make_engine(model, layers=[model.fc2, "fc1"], epochs=1)
    assert engine.layers == engine.run.layer_names == ["fc2", "fc1"]
    engine.start().wait(timeout=WAIT)
    assert engine.status == "finished" and engine.run.epochs == [0, 1]


# ------------------------------------------------------------------------------------------ pause


def _blocked_in_threading_wait(thread: threading.Thread, unless_in) -> bool:
    """Whether ``thread`` is blocked in a threading wait, and not inside the function ``unless_in``."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code is unless_in.__code__:
            return False
        frame = frame.f_back
    return True


def test_a_pause_on_an_epochs_last_batch_holds_its_end_until_resume():
    train, val = make_loaders(n_train=64, batch_size=16)  # 4 batches
    engine = make_engine(train=train, val=val, epochs=2, batch_event_interval=0)
    reached, release = threading.Event(), threading.Event()
    training_thread = []

    def on_batch(ev):
        if (ev.epoch, ev.batch) == (1, 4):
            training_thread.append(threading.current_thread())
            reached.set()
            release.wait(WAIT)

    epoch_ends = []
    engine.on("batch_end", on_batch)
    engine.on("epoch_end", epoch_ends.append)
    engine.start()
    assert reached.wait(WAIT)
    engine.pause()
    release.set()
    # wait until the training thread blocks on the pause, past the callback (no sleep: its stack tells)
    deadline = time.monotonic() + WAIT
    while not _blocked_in_threading_wait(training_thread[0], unless_in=on_batch) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert _blocked_in_threading_wait(training_thread[0], unless_in=on_batch)
    assert engine.status == "paused"  # held: the status says so only now
    assert epoch_ends == [] and engine.run.num_snapshots == 1 and engine.run.history["loss"] == []
    engine.resume()
    engine.wait(timeout=WAIT)
    assert [ev.epoch for ev in epoch_ends] == [1, 2]
    assert engine.run.epochs == [0, 1, 2] and len(engine.run.history["loss"]) == 2


def test_a_pause_while_an_epoch_is_recorded_reads_pausing_until_that_epoch_has_ended():
    """The window the status must not lie in: a pause that arrives after the last batch's gate (validation and the
    recording hooks run) lets that epoch complete; ``paused`` is said only once the thread holds, after its event."""
    train, val = make_loaders(n_train=64, batch_size=16)
    engine = make_engine(train=train, val=val, epochs=3, batch_event_interval=0)
    in_hook, release = threading.Event(), threading.Event()
    order = []

    class SlowEpochEnd:
        def on_train_epoch_end(self, engine, epoch, logs):
            if epoch == 1:
                in_hook.set()
                release.wait(WAIT)

    engine.add_callback(SlowEpochEnd())
    engine.on("epoch_end", lambda ev: order.append(("epoch_end", ev.epoch, engine.status)))
    engine.on("pause", lambda epoch: order.append(("pause", epoch, engine.status)))
    engine.start()
    assert in_hook.wait(WAIT)
    engine.pause()
    assert engine.status == "pausing" and engine.epoch == 0
    release.set()
    deadline = time.monotonic() + WAIT
    while engine.status != "paused" and time.monotonic() < deadline:
        time.sleep(0.002)
    assert order == [("epoch_end", 1, "pausing"), ("pause", 1, "paused")]
    held_epoch, held_snapshots = engine.epoch, engine.run.num_snapshots
    time.sleep(0.3)
    assert (
        (engine.epoch, engine.run.num_snapshots, engine.status)
        == (held_epoch, held_snapshots, "paused")
        == (
            1,
            2,
            "paused",
        )
    )
    engine.resume()
    engine.wait(timeout=WAIT)
    assert engine.run.epochs == [0, 1, 2, 3] and engine.status == "finished"


def test_resume_while_pausing_cancels_the_pause_and_stop_while_pausing_stops():
    train, val = make_loaders(n_train=64, batch_size=16)
    engine = make_engine(train=train, val=val, epochs=2, batch_event_interval=0)
    reached, release = threading.Event(), threading.Event()
    held = []

    def on_batch(ev):
        if (ev.epoch, ev.batch) == (1, 1):
            reached.set()
            release.wait(WAIT)

    engine.on("batch_end", on_batch)
    engine.on("pause", held.append)
    engine.start()
    assert reached.wait(WAIT)
    engine.pause()
    engine.resume()  # before the thread reached its gate: it never holds
    assert engine.status == "running"
    release.set()
    engine.wait(timeout=WAIT)
    assert held == [] and engine.status == "finished" and engine.run.epochs == [0, 1, 2]

    reached.clear(), release.clear()
    engine.on("batch_end", lambda ev: (reached.set(), release.wait(WAIT)) if (ev.epoch, ev.batch) == (3, 1) else None)
    engine.start(epochs=2)
    assert reached.wait(WAIT)
    engine.pause()
    engine.stop(wait=False)
    assert engine.status == "stopping"
    release.set()
    engine.wait(timeout=WAIT)
    assert held == [] and engine.status == "stopped" and engine.run.epochs == [0, 1, 2]
