"""Sequential and IBSequential: the PyGlow tutorial on digits, its dynamics against PyGlow's HSIC, evaluators, PyGlow's
MNIST classifier on MNIST files. Only the comparisons with PyGlow itself need it installed (see ``_glow``)."""

from __future__ import annotations

import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from _glow import glow_fixture  # noqa: F401 - the glow_estimator fixture
from _mnist import write_barred_mnist
from _training import WAIT
from test_engine_reliability import _interrupt_main_when

import ibwidget as ib
from ibwidget.measure import estimators, kernels
from ibwidget.pyglow import models
from ibwidget.pyglow.evaluators import HSIC, Estimator
from ibwidget.pyglow.layers import Conv2d, Dense, Dropout, Flatten
from ibwidget.record.taps import Tap

SIGMA = 5
PROBE = 64
EPOCHS = 2


def _softmax_ce_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, UserWarning) and "softmax" in str(w.message)]


def seed_tutorial_model(input_shape=(1, 8, 8), probe=PROBE, **kw) -> ib.IBSequential:
    """The seed tutorial's network, with its final softmax (on the CPU: the comparisons below are with CPU code)."""
    torch.manual_seed(0)
    model = ib.IBSequential(input_shape=input_shape, probe=probe, device="cpu", **kw)
    model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
    model.add(Flatten())
    model.add(Dense(1000, activation="relu"))
    model.add(Dense(500, activation="relu"))
    model.add(Dense(200, activation="relu"))
    model.add(Dense(10, activation="softmax"))
    return model


def _compile(model, **kw) -> list:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], **kw)
    return _softmax_ce_warnings(record)


def _probe_activations(model: ib.IBSequential):
    """(probe input, {layer: activation}, softmax output) on the model's probe, eval mode, via an independent Tap."""
    x = model.run.probe_x
    model.eval()
    try:
        with torch.no_grad(), Tap(model, model.run.layer_names) as tap:
            logits = model(x)
            acts = {n: tap.outputs[n].reshape(x.shape[0], -1) for n in model.run.layer_names}
    finally:
        model.train()
    return x, acts, torch.softmax(logits, -1)


def _glow(glow_estimator, a: torch.Tensor, b: torch.Tensor) -> float:
    m = a.shape[0]
    crit = glow_estimator.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA).criterion
    return float(crit(a.reshape(m, -1).float(), b.reshape(m, -1).float()))


def _hsic64(a: torch.Tensor, b: torch.Tensor) -> float:
    """The same criterion in float64 with ibwidget's kernels: the exact value for these float32 activations."""
    m = a.shape[0]
    Ka = kernels.gaussian(kernels.gram(a.reshape(m, -1).double()), float(SIGMA))
    Kb = kernels.gaussian(kernels.gram(b.reshape(m, -1).double()), float(SIGMA))
    return float(estimators.hsic(Ka, Kb, normalizer="pyglow"))


def _assert_exact_pair(got, h, x, probs, where) -> None:
    """[HSIC(h, x), HSIC(h, softmax output)] equal PyGlow's criterion computed exactly (float64)."""
    assert got[0] == pytest.approx(_hsic64(h, x), rel=1e-4), where
    assert got[1] == pytest.approx(_hsic64(h, probs), rel=1e-4), where


def _assert_glow_pair(glow_estimator, got, h, x, probs, where) -> None:
    """[HSIC(h, x), HSIC(h, softmax output)] equal PyGlow's own criterion."""
    assert got[0] == pytest.approx(_glow(glow_estimator, h, x), rel=1e-4), where
    assert got[1] == pytest.approx(_glow(glow_estimator, h, probs), rel=1e-4), where


def _check_output_kernel_not_saturated(probs: torch.Tensor) -> None:
    """At sigma=5 the softmax output's kernel is near 1 everywhere; while the network is still unsure (outputs ~0.1)
    it is within 1e-5 of 1, where float32 (PyGlow's included) keeps no digit of the centred kernel and no comparison
    means anything. The models below train until the output carries information (mean kernel value < 0.995)."""
    assert float(kernels.saturation(kernels.gaussian(kernels.gram(probs.double()), float(SIGMA)))) < 0.995


@pytest.fixture(scope="module")
def digits():
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    return train, val


@pytest.fixture(scope="module")
def tutorial(digits):
    """The tutorial, as a PyGlow notebook runs it: softmax output, SGD, cross_entropy, HSIC(sigma=5), fit_generator."""
    train, val = digits
    model = seed_tutorial_model()
    # the tutorial's compile; lr and momentum raised from PyGlow's defaults (0.001, 0.95) so that two epochs on the
    # small digits set leave a confident output (see _check_output_kernel_not_saturated)
    warned = _compile(model, lr=0.05, momentum=0.9)
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=False, sigma=SIGMA))
    history = model.fit_generator(train, val, EPOCHS, progress=False)
    return model, history, warned


# ------------------------------------------------------------------------------------------ the tutorial


def test_softmax_with_cross_entropy_warns_once(tutorial):
    model, _, warned = tutorial
    assert len(warned) == 1
    assert "cross_entropy" in str(warned[0].message)
    assert _compile(model, lr=0.01) == []  # once per model
    assert model.layers[-1].apply_output_activation is False  # softmax is not applied twice


def test_every_new_model_warns_once():
    """A new model warns even when it takes the memory (and so the id()) of a model that warned and was freed."""
    for _ in range(10):
        model = ib.IBSequential(input_shape=(4,))
        model.add(Dense(3, activation="softmax"))
        assert len(_compile(model)) == 1
        assert _compile(model) == []
        del model  # freed at once (no reference cycle): the next model usually gets the same address


def test_tutorial_trains_and_keeps_pyglow_layout(tutorial, digits):
    model, history, _ = tutorial
    assert model.engine.status == "finished"
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == EPOCHS for v in history.values())
    assert history["loss"][-1] < history["loss"][0]  # it learns (PyGlow's double softmax stalled)
    dyn = model.evaluated_dynamics
    assert isinstance(dyn, np.ndarray) and dyn.shape == (EPOCHS, 1, 1, 5, 2)
    mean = np.mean(model.evaluated_dynamics, 1)
    assert mean.shape == (EPOCHS, 1, 5, 2) and np.isfinite(mean).all()
    # the tutorial's loop visits exactly the tracked layers
    assert list(range(model.num_layers - 1)) == list(range(5))
    assert (
        model.run.layer_names == model.tracked_layer_names == ["conv2d_1", "dense_1", "dense_2", "dense_3", "dense_4"]
    )
    assert model.run.layer_dims == [16 * 8 * 8, 1000, 500, 200, 10]
    assert model.run.m == PROBE and model.run.epochs == list(range(EPOCHS + 1))
    for layer_idx in range(model.num_layers - 1):  # the tutorial's plotting loop
        xs, ys = mean[:, 0, layer_idx, 0], mean[:, 0, layer_idx, 1]
        assert xs.shape == ys.shape == (EPOCHS,)


def test_tutorial_dynamics_equal_pyglow_hsic(tutorial):
    """Column 0: PyGlow's HSIC(T, X) on the probe; column 1: HSIC(T, softmax output), for the last epoch."""
    model, _, _ = tutorial
    x, acts, probs = _probe_activations(model)
    assert torch.allclose(probs.sum(-1), torch.ones(PROBE))
    _check_output_kernel_not_saturated(probs)
    dyn = model.evaluated_dynamics[-1, 0, 0]
    for li, name in enumerate(model.run.layer_names):
        _assert_exact_pair(dyn[li], acts[name], x, probs, name)
    # the comparison is not between constants: the values differ across layers
    assert np.ptp(dyn[:, 0]) > 1e-3 * np.abs(dyn[:, 0]).max()


def test_tutorial_dynamics_equal_glow_itself(glow_estimator, tutorial):
    """The same values from PyGlow 0.1.7's own HSIC criterion."""
    model, _, _ = tutorial
    x, acts, probs = _probe_activations(model)
    dyn = model.evaluated_dynamics[-1, 0, 0]
    for li, name in enumerate(model.run.layer_names):
        _assert_glow_pair(glow_estimator, dyn[li], acts[name], x, probs, name)


def test_predict_applies_the_skipped_softmax(tutorial):
    model, _, _ = tutorial
    x = model.run.probe_x[:16]
    probs = model.predict(x)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train()
    assert torch.allclose(probs, torch.softmax(logits, -1), atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(16))


def test_fit_generator_again_continues_the_run(digits):
    train, val = digits
    model = _small_model()
    _compile(model, lr=0.05, momentum=0.9)
    model.attach_evaluator(HSIC(kernel="gaussian", sigma=SIGMA))
    model.fit_generator(train, val, 1, progress=False)
    run = model.run
    history = model.fit_generator(train, val, 2, progress=False)
    assert model.run is run and run.epochs == [0, 1, 2, 3]
    assert len(history["loss"]) == 3 and model.evaluated_dynamics.shape == (3, 1, 1, 2, 2)
    with pytest.raises(RuntimeError, match="before the first fit"):
        model.attach_evaluator(HSIC(kernel="gaussian", sigma=SIGMA))


def _main_thread_waits_in(function) -> bool:
    """Whether the main thread is blocked in a threading wait called from ``function``."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None and frame.f_code is not function.__code__:
        frame = frame.f_back
    return frame is not None


def test_an_interrupt_during_fit_generator_stops_training_and_is_reraised(digits):
    train, val = digits
    model = _small_model()
    _compile(model, lr=0.05, momentum=0.9)
    interrupter = _interrupt_main_when(
        lambda: model.engine is not None and model.engine.epoch >= 1 and _main_thread_waits_in(models._follow)
    )
    with pytest.raises(KeyboardInterrupt):
        model.fit_generator(train, val, 1000, progress=False)
    interrupter.join(WAIT)
    engine, run = model.engine, model.run
    assert not engine.is_alive and engine.status == "stopped"
    done = engine.epoch
    assert 1 <= done < 1000 and run.num_snapshots == done + 1 and len(run.history["loss"]) == done
    history = model.fit_generator(train, val, 1, progress=False)  # the same run continues
    assert model.run is run and engine.status == "finished" and len(history["loss"]) == done + 1


# ------------------------------------------------------------------------------------------ batches mode


@pytest.fixture(scope="module")
def batches_run(digits):
    """mode="batches" on the tutorial's model, with what each training forward saw (input, tracked layers' outputs,
    final logits) recorded independently by forward hooks."""
    train, val = digits
    model = seed_tutorial_model(mode="batches")
    _compile(model, lr=0.05, momentum=0.9)
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=False, sigma=SIGMA))
    names = model.tracked_layer_names
    current: dict = {}
    seen: list[dict] = []

    def layer_hook(name):
        def hook(module, args, output):
            current[name] = output.detach().clone()

        return hook

    def model_hook(module, args, output):  # runs after the layers' hooks of the same forward
        if module.training and torch.is_grad_enabled():
            seen.append({"x": args[0].detach().clone(), "out": output.detach().clone(), "acts": dict(current)})
        current.clear()

    handles = [getattr(model, n).register_forward_hook(layer_hook(n)) for n in names]
    handles.append(model.register_forward_hook(model_hook))
    try:
        model.fit_generator(train, val, EPOCHS, progress=False)
    finally:
        for h in handles:
            h.remove()
    return model, seen, len(train)


def _last_batches(batches_run):
    """(batch index, input, tracked activations, softmax output) of the last epoch's last two batches, whose output
    is confident by then."""
    _, seen, num_batches = batches_run
    for b in (num_batches - 2, num_batches - 1):
        batch = seen[num_batches * (EPOCHS - 1) + b]
        probs = torch.softmax(batch["out"], -1)
        _check_output_kernel_not_saturated(probs)
        yield b, batch["x"], batch["acts"], probs


def test_batches_mode_keeps_pyglow_per_batch_layout_and_values(batches_run):
    """mode="batches": one row per training batch, measured on that batch (train mode) against the softmax output."""
    model, seen, num_batches = batches_run
    dyn = model.evaluated_dynamics
    assert dyn.shape == (EPOCHS, num_batches, 1, 5, 2) and np.isfinite(dyn).all()
    assert np.mean(dyn, 1).shape == (EPOCHS, 1, 5, 2)
    assert len(seen) == EPOCHS * num_batches
    for b, x, acts, probs in _last_batches(batches_run):
        for li, name in enumerate(model.tracked_layer_names):
            _assert_exact_pair(dyn[EPOCHS - 1, b, 0, li], acts[name], x, probs, (b, name))
    assert all(not m._forward_hooks for m in model.modules())


class _ShrinkingLoader:
    """A loader whose epochs have 4, 3, 2 ... batches (as a sampler that varies its length would give)."""

    def __init__(self, loader):
        self.batches, self.epoch = list(loader)[:4], 0

    def __iter__(self):
        self.epoch += 1
        return iter(self.batches[: max(1, 5 - self.epoch)])

    def __len__(self):
        return max(1, 4 - self.epoch)


def test_batches_mode_with_varying_batch_counts_saves_and_pads(digits, tmp_path):
    train, val = digits
    model = seed_tutorial_model(mode="batches")
    _compile(model, lr=0.05, momentum=0.9)
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=False, sigma=SIGMA))
    model.fit_generator(_ShrinkingLoader(train), val, 3, progress=False)
    dyn = model.evaluated_dynamics
    assert dyn.shape == (3, 4, 1, 5, 2)
    assert np.isfinite(dyn[0]).all() and np.isfinite(dyn[1, :3]).all() and np.isnan(dyn[1, 3:]).all()
    assert np.isfinite(dyn[2, :2]).all() and np.isnan(dyn[2, 2:]).all()
    loaded = ib.load_run(model.run.save(tmp_path / "ragged.ibrun"))
    assert [len(b) for b in loaded.batch_dynamics] == [4, 3, 2]
    for a, b in zip(model.run.batch_dynamics, loaded.batch_dynamics, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_mode_values_equal_glow_itself(glow_estimator, batches_run):
    model = batches_run[0]
    dyn = model.evaluated_dynamics
    for b, x, acts, probs in _last_batches(batches_run):
        for li, name in enumerate(model.tracked_layer_names):
            _assert_glow_pair(glow_estimator, dyn[EPOCHS - 1, b, 0, li], acts[name], x, probs, (b, name))


# ------------------------------------------------------------------------------------------ custom evaluators


class LinearCKA(Estimator):
    """A user's criterion on activations (PyGlow style): linear CKA, counting its calls."""

    def __init__(self, gpu=False, **kwargs):
        super().__init__(gpu, **kwargs)
        self.calls = 0

    def criterion(self, x, y):
        self.calls += 1
        xc, yc = x - x.mean(0), y - y.mean(0)
        return (xc.T @ yc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())


def _small_model(**kw) -> ib.IBSequential:
    torch.manual_seed(1)
    model = ib.IBSequential(input_shape=(1, 8, 8), **{"probe": PROBE, "device": "cpu", **kw})
    model.add(Conv2d(4, 3, padding=1, activation="relu"))
    model.add(Flatten())
    model.add(Dropout(0.1))
    model.add(Dense(10, activation="softmax"))
    return model


def test_custom_estimator_is_evaluated_each_epoch(digits):
    train, val = digits
    model = _small_model()
    _compile(model, lr=0.05, momentum=0.9)
    custom = LinearCKA()
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=False, sigma=SIGMA))
    model.attach_evaluator(custom)
    model.fit_generator(train, val, EPOCHS, progress=False)
    names = model.run.layer_names
    assert names == ["conv2d_1", "dense_1"]  # Flatten and Dropout are not tracked
    # one call per snapshot (epoch 0 included), layer and column
    assert custom.calls == (EPOCHS + 1) * len(names) * 2
    dyn = model.evaluated_dynamics
    assert dyn.shape == (EPOCHS, 1, 2, len(names), 2)
    x, acts, probs = _probe_activations(model)
    for li, name in enumerate(names):
        h = acts[name]
        expected = [float(custom.criterion(h, x.reshape(PROBE, -1))), float(custom.criterion(h, probs))]
        np.testing.assert_allclose(dyn[-1, 0, 1, li], expected, rtol=1e-5)
        # and the HSIC evaluator beside it is still PyGlow's criterion
        _assert_exact_pair(dyn[-1, 0, 0, li], h, x, probs, name)
    assert ((dyn[:, 0, 1] >= 0) & (dyn[:, 0, 1] <= 1 + 1e-6)).all()  # CKA's range


def test_attach_evaluator_rejects_non_estimators():
    model = _small_model()
    with pytest.raises(TypeError, match="Estimator"):
        model.attach_evaluator(lambda x, y: 0.0)
    with pytest.raises(ValueError, match="sigma"):
        HSIC(kernel="gaussian")


def test_evaluated_dynamics_is_none_before_fit_or_without_evaluators(digits):
    train, val = digits
    model = _small_model()
    assert model.evaluated_dynamics is None and model.run is None
    _compile(model, lr=0.05)
    model.fit_generator(train, val, 1, progress=False)
    assert model.evaluated_dynamics is None  # nothing attached: nothing evaluated, but the run has every snapshot
    assert model.run.trajectories("hsic").shape == (2, 2, 2)


# ------------------------------------------------------------------------------------------ devices and misuse


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA fallback")
def test_gpu_true_without_cuda_warns_and_uses_the_cpu():
    with pytest.warns(RuntimeWarning, match="CPU"):
        model = ib.IBSequential(input_shape=(1, 8, 8), gpu=True)
    assert model.device.type == "cpu"
    with pytest.warns(RuntimeWarning, match="CPU"):
        ev = HSIC(kernel="gaussian", gpu=True, sigma=SIGMA)
    assert ev.device.type == "cpu"


def test_device_auto(digits):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ib.IBSequential(input_shape=(1, 8, 8)).device.type == expected
    assert ib.IBSequential(input_shape=(1, 8, 8), gpu=False).device.type == "cpu"


def test_misuse_is_reported():
    model = ib.IBSequential(input_shape=(1, 8, 8))
    with pytest.raises(TypeError, match="ibwidget layer"):
        model.add(torch.nn.Linear(3, 3))
    with pytest.raises(RuntimeError, match="add layers"):
        model.compile()
    model.add(Flatten())
    model.add(Dense(10))
    with pytest.raises(RuntimeError, match="compile the model first"):
        model.fit_generator([], None, 1)


def test_fit_on_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 1, 8, 8, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    model = _small_model(probe=16)
    _compile(model, lr=0.05)
    history = model.fit(x, y, batch_size=32, num_epochs=2, validation_split=0.25, progress=False)
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2
    assert model.run.m == 16
    with pytest.raises(ValueError, match="one label per sample"):
        model.fit(x, y[:-1])


# ------------------------------------------------------------------------------------------ MNIST files

N_TRAIN, N_TEST = 120, 20


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory, torchvision_loads):
    """Tiny MNIST idx files (uncompressed, as torchvision reads them from MNIST/raw/)."""
    root = tmp_path_factory.mktemp("mnist")
    return root, write_barred_mnist(root, N_TRAIN, N_TEST)


def test_mnist_files_through_ibsequential(mnist_root):
    root, files = mnist_root
    train, val, test = ib.datasets.mnist.load_data(batch_size=16, root=root, download=False)
    assert len(train.dataset) + len(val.dataset) == N_TRAIN and len(test.dataset) == N_TEST
    model = seed_tutorial_model(input_shape=(1, 28, 28), probe=16)
    _compile(model, lr=0.01, momentum=0.9)
    model.attach_evaluator(HSIC(kernel="gaussian", gpu=False, sigma=SIGMA))
    history = model.fit_generator(train, val, 1, progress=False)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    run = model.run
    assert run.epochs == [0, 1] and run.m == 16 and run.probe_x.shape == (16, 1, 28, 28)
    assert run.layer_dims == [16 * 28 * 28, 1000, 500, 200, 10]
    assert model.evaluated_dynamics.shape == (1, 1, 1, 5, 2) and np.isfinite(model.evaluated_dynamics).all()
    # the probe is real MNIST-file data: each row is a normalised training image, with its label
    images, labels = files["train"]
    normalised = (images.reshape(N_TRAIN, -1) / 255.0 - 0.1307) / 0.3081
    for row, label in zip(run.probe_x.reshape(16, -1).numpy(), run.probe_labels.tolist(), strict=True):
        match = np.flatnonzero(np.abs(normalised - row).max(1) < 1e-5)
        assert len(match) == 1 and labels[match[0]] == label


# ------------------------------------------------------------------------------------------ plain Sequential


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")  # the notebook's 3, on 2 cores
def test_plain_sequential_trains_as_pyglows_mnist_classifier(mnist_root, monkeypatch, capsys):
    """PyGlow's MNIST classifier notebook, its calls made on ibwidget's modules (data found through IBWIDGET_DATA):
    a plain Sequential with dropout and a final softmax, compiled with PyGlow's defaults, trained by fit_generator
    through the same engine as IBSequential, with tqdm progress, returning the history."""
    from ibwidget.datasets import mnist
    from ibwidget.pyglow.models import Sequential

    root, _ = mnist_root
    monkeypatch.setenv("IBWIDGET_DATA", str(root))
    train_loader, val_loader, test_loader = mnist.load_data(batch_size=16, num_workers=3, validation_split=0.2)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = Sequential(input_shape=(1, 28, 28), gpu=True)
        model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
        model.add(Flatten())
        model.add(Dropout(0.4))
        model.add(Dense(500, activation="relu"))
        model.add(Dropout(0.4))
        model.add(Dense(200, activation="relu"))
        model.add(Dropout(0.2))
        model.add(Dense(10, activation="softmax"))
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"])
        initial = [p.detach().clone() for p in model.parameters()]
        history = model.fit_generator(train_loader, val_loader, 2, show_plot=False)
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(_softmax_ce_warnings(record)) == 1  # the final softmax is skipped, once
    no_cuda = [w for w in record if w.category is RuntimeWarning and "no CUDA device" in str(w.message)]
    assert len(no_cuda) == (0 if torch.cuda.is_available() else 1)
    group = model.engine.optimizer.param_groups[0]  # PyGlow's compile defaults
    assert type(model.engine.optimizer) is torch.optim.SGD and (group["lr"], group["momentum"]) == (0.001, 0.95)
    # it trained: two epochs of history, every parameter moved, through the engine
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 and np.isfinite(v).all() for v in history.values())
    assert all(not torch.equal(p.detach(), q) for p, q in zip(model.parameters(), initial, strict=True))
    assert isinstance(model.engine, ib.Engine) and model.engine.status == "finished"
    assert model.run.history == history and model.run.epochs == [0, 1, 2]
    assert model.run.layer_names == ["conv2d_1", "dense_1", "dense_2", "dense_3"]
    # tqdm: a bar per epoch on stderr, a line per epoch on stdout
    out, err = capsys.readouterr()
    assert "Epoch 1/2" in err and "Epoch 2/2" in err
    for epoch in (1, 2):
        line = next(line for line in out.splitlines() if line.startswith(f"Epoch {epoch}/2 - "))
        assert f"val_loss: {history['val_loss'][epoch - 1]:.4f}" in line
    # after fit: predictions on the test set are probabilities (the softmax the loss skipped)
    x, _ = next(iter(test_loader))
    probs = model.predict(x)
    assert probs.shape == (16, 10) and torch.allclose(probs.sum(-1), torch.ones(16, device=probs.device))


def test_plain_sequential_fit_takes_pyglows_arguments():
    """PyGlow's fit(x_train, y_train, batch_size, num_epochs, validation_split, show_plot) on numpy arrays, and the
    constructor flags PyGlow's models take; show_plot draws nothing and says where the curves are."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    y = (x.reshape(120, -1).sum(1) > 0).astype(np.int64)
    torch.manual_seed(0)
    model = ib.models.Sequential(input_shape=(1, 8, 8), probe=16, device="cpu", track_dynamics=True)
    model.add(Flatten())
    model.add(Dense(2))
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.05)
    with pytest.warns(UserWarning, match="show_plot=True draws no plot.*history"):
        history = model.fit(x, y, 32, 2, 0.25, True)
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2
    assert model.run.m == 16 and len(model.run.probe_labels) == 16
    # PyGlow's positional order: (input_shape, gpu) and (input_shape, gpu, track_dynamics, save_dynamics)
    assert ib.models.Sequential((4,), False).device.type == "cpu"
    assert ib.models.IBSequential((4,), False, False, False).device.type == "cpu"  # the flags: accepted, ignored
    with pytest.raises(TypeError, match="devcie"):  # a mistyped argument is not swallowed
        ib.models.Sequential(input_shape=(4,), devcie="cpu")
