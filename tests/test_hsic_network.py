"""HSIC-bottleneck training (Ma, Lewis & Kleijn 2020) through PyGlow's ``HSICSequential`` API, on the engine."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _glow import glow_fixture  # noqa: F401 - the glow_estimator fixture
from _mnist import write_barred_mnist
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.layers import Dense, Flatten, HSICoutput
from ibwidget.measure import estimators, kernels
from ibwidget.pyglow.evaluators import HSIC, NHSIC
from ibwidget.pyglow.hsic import HSICSequential
from ibwidget.train.bottleneck import HSICBottleneck
from ibwidget.train.engine import Engine

N_TRAIN, N_TEST = 120, 20


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory, torchvision_loads):
    """Tiny MNIST idx files: noise plus a bright bar whose row depends on the class."""
    root = tmp_path_factory.mktemp("mnist")
    write_barred_mnist(root, N_TRAIN, N_TEST)
    return root


@pytest.fixture(scope="module")
def digits():
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    return train, val


def _small(criterion, beta: float = 100.0, lr: float = 0.01, head: bool = True) -> HSICSequential:
    model = HSICSequential((1, 8, 8), device="cpu", probe=128)
    model.add(Flatten())
    model.add(Dense(64, activation="tanh"))
    model.add(Dense(32, activation="tanh"))
    if head:
        model.add(HSICoutput(10))
    model.compile(loss_criterion=criterion, optimizer="SGD", regularize_coeff=beta, learning_rate=lr, momentum=0.9)
    return model


# ------------------------------------------------------------------------------------------ PyGlow's notebook


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")  # the notebook's 3, on 2 cores
def test_pyglows_hsic_network_notebook_runs_on_mnist_files(mnist_root, monkeypatch):
    """The calls of PyGlow's "HSIC Network training without backprop" notebook, imports changed to ibwidget, on
    MNIST files found through IBWIDGET_DATA: the network pre-trains, and every layer's HSIC with Y rises."""
    from ibwidget.datasets import cifar10, mnist  # noqa: F401 - the notebook imports both
    from ibwidget.information_bottleneck import Estimator
    from ibwidget.information_bottleneck.estimator import HSIC
    from ibwidget.layers import Conv2d, Dense, Dropout, Flatten, HSICoutput  # noqa: F401
    from ibwidget.models import HSICSequential, IBSequential, Network, Sequential  # noqa: F401

    monkeypatch.setenv("IBWIDGET_DATA", str(mnist_root))
    batch_size, num_workers, validation_split, num_epochs = 64, 3, 0.2, 3
    train_loader, val_loader, test_loader = mnist.load_data(
        batch_size=batch_size, num_workers=num_workers, validation_split=validation_split
    )
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = HSICSequential(input_shape=(1, 28, 28), gpu=True)
        model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
        model.add(Flatten())
        model.add(Dense(500, activation="relu"), HSIC(kernel="gaussian", gpu=True, sigma=5), regularize_coeff=100)
        model.add(Dense(200, activation="relu"))
        model.compile(loss_criterion=HSIC(kernel="gaussian", gpu=True, sigma=10), optimizer="SGD", regularize_coeff=100)
        initial = [p.detach().clone() for p in model.parameters()]
        history = model.pre_training_loop(num_epochs, train_loader, val_loader)
    no_cuda = [w for w in record if w.category is RuntimeWarning and "no CUDA device" in str(w.message)]
    assert len(no_cuda) >= (0 if torch.cuda.is_available() else 1)
    assert isinstance(model, Network) and isinstance(model.global_criterion[0], Estimator)
    assert model.loss_dict[2][1] == 100.0 and model.loss_dict[2][0].sigma == 5  # dense_1's own criterion
    group = model.engine.optimizer.param_groups[0]  # PyGlow's compile defaults
    assert type(model.engine.optimizer) is torch.optim.SGD and (group["lr"], group["momentum"]) == (0.001, 0.95)
    assert len(history["loss"]) == num_epochs and history["loss"][-1] < history["loss"][0]
    assert all(not torch.equal(p.detach(), q) for p, q in zip(model.parameters(), initial, strict=True))
    run = model.run
    assert run.layer_names == ["conv2d_1", "dense_1", "dense_2"] and run.epochs == [0, 1, 2, 3]
    assert run.config["loss"] == "hsic_bottleneck" and run.num_classes == 10
    dependence_on_y = run.trajectories("hsic_pyglow", sigma=5.0, target="labels")[:, :, 1]
    assert (dependence_on_y[-1] > dependence_on_y[0]).all(), dependence_on_y


def test_pre_training_equals_pyglows_own(glow_estimator):
    """Same weights, same batches, same settings: after two epochs PyGlow 0.1.7's pre_training_loop and ours
    leave every parameter equal to float32 rounding, while training moved them by 1e-2 or more."""
    import glow.layers as glow_layers
    import glow.models as glow_models

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.arange(96) % 10
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    theirs = glow_models.HSICSequential(input_shape=(1, 8, 8), gpu=False)
    theirs.add(glow_layers.Flatten())
    theirs.add(glow_layers.Dense(20, activation="tanh"), glow_estimator.HSIC("gaussian", False, sigma=3), 50)
    theirs.add(glow_layers.Dense(10, activation="tanh"))
    theirs.compile(glow_estimator.HSIC("gaussian", False, sigma=2), "SGD", 100, learning_rate=0.01, momentum=0.9)
    ours = HSICSequential((1, 8, 8), device="cpu", probe=16)
    ours.add(Flatten())
    ours.add(Dense(20, activation="tanh"), HSIC(kernel="gaussian", sigma=3), regularize_coeff=50)
    ours.add(Dense(10, activation="tanh"))
    ours.compile(HSIC(kernel="gaussian", sigma=2), "SGD", 100, learning_rate=0.01, momentum=0.9)
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            a.copy_(b)
    start = [p.detach().clone() for p in ours.parameters()]
    theirs.pre_training_loop(2, loader, loader)
    ours.pre_training_loop(2, loader, loader, progress=False)
    for a, b, s in zip(ours.parameters(), theirs.parameters(), start, strict=True):
        moved = float((b.detach() - s).abs().max())
        assert moved > 1e-3
        assert float((a.detach() - b.detach()).abs().max()) < 1e-4 * moved


# ------------------------------------------------------------------------------------------ the objective


def test_gradients_never_cross_layers():
    """Each block gets exactly the gradient of its own term: the loss summed over blocks changes nothing."""
    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()), torch.nn.Linear(5, 4)]
    crit = HSIC(kernel="gaussian", sigma=2.0).criterion
    objective = HSICBottleneck(blocks, [crit, crit], [10.0, 3.0], num_classes=3)
    x, y = torch.randn(16, 6), torch.arange(16) % 3
    loss, _ = objective(x, y)
    loss.backward()
    summed = [p.grad.clone() for b in blocks for p in b.parameters()]
    for b in blocks:
        b.zero_grad()
    onehot = torch.nn.functional.one_hot(y, 3).float()
    z0 = blocks[0](x)
    (crit(z0, x) - 10.0 * crit(z0, onehot)).backward()
    z1 = blocks[1](z0.detach())
    (crit(z1, x) - 3.0 * crit(z1, onehot)).backward()
    alone = [p.grad for b in blocks for p in b.parameters()]
    for a, b in zip(summed, alone, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9) and b.abs().max() > 0


def test_labels_are_one_hot_with_the_datasets_class_count():
    """A batch holding classes 0..3 of a 10-class dataset is encoded with 10 columns (PyGlow used the batch's
    largest label); the run takes the count from the dataset even when the probe lacks a class."""
    seen = []

    def record_width(z, other):
        seen.append(other.shape[1])
        return kernels.gram(z).mean() * 0 + z.sum() * 0

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    y = torch.cat([torch.arange(36) % 4, torch.tensor([9, 9, 9, 9])])  # the last batch holds class 9 only
    loader = DataLoader(TensorDataset(x, y), batch_size=36, shuffle=False)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5))
    bottleneck = HSICBottleneck([model[0]], [record_width], [1.0])
    probe = ib.Recording(16, probe_data=(x[:16], y[:16]))  # a probe without class 9
    engine = Engine(model, loader, epochs=1, recording=probe, callbacks=[bottleneck], metrics=())
    assert engine.run.num_classes == 10 and int(engine.run.probe_labels.max()) < 9  # the probe lacks class 9
    engine.start().wait(timeout=60)
    assert engine.status == "finished" and set(seen) == {6, 10}  # X has 6 columns, Y 10 in every batch
    with pytest.raises(ValueError, match="label 9 is out of range for 4 classes"):
        HSICBottleneck([model[0]], [record_width], [1.0], num_classes=4).objective(x[-4:], y[-4:])


def test_nhsic_with_gradients_equals_nhsic_without_and_its_gradient_is_right():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 5, generator=g, dtype=torch.float64)
    L = kernels.label_kernel(torch.arange(30) % 3, 3, dtype=torch.float64)  # repeated eigenvalues
    plain = estimators.nhsic(kernels.gaussian(kernels.gram(z), 2.0), L)
    t = z.clone().requires_grad_()
    graded = estimators.nhsic(kernels.gaussian(kernels.gram(t), 2.0), L)
    assert graded.requires_grad and float(graded.detach()) == pytest.approx(float(plain), rel=1e-12)
    assert torch.autograd.gradcheck(lambda a: estimators.nhsic(kernels.gaussian(kernels.gram(a), 2.0), L), (t,))


def test_nhsic_criterion_is_the_papers_with_width_sigma_sqrt_d():
    g = torch.Generator().manual_seed(2)
    z, x = torch.randn(24, 7, generator=g), torch.randn(24, 3, generator=g)
    expected = estimators.nhsic(
        kernels.gaussian(kernels.gram(z), 5.0 * math.sqrt(7)), kernels.gaussian(kernels.gram(x), 5.0 * math.sqrt(3))
    )
    assert float(NHSIC(sigma=5.0).criterion(z, x)) == pytest.approx(float(expected), rel=1e-6)
    wrong = estimators.nhsic(kernels.gaussian(kernels.gram(z), 5.0), kernels.gaussian(kernels.gram(x), 5.0))
    assert abs(float(wrong) - float(expected)) > 1e-3 * abs(float(expected))


# ------------------------------------------------------------------------------------------ the paper's claim


def test_bottleneck_trained_network_classifies_after_its_output_layer_is_fitted(digits):
    """Ma, Lewis & Kleijn: hidden layers trained by the HSIC bottleneck alone, then an output layer fitted on them,
    classify well above chance (digits: 10 classes). Pre-training leaves the output layer as it is, the output
    fit leaves the hidden layers as they are, and every hidden layer's dependence on Y rose."""
    train, val = digits
    torch.manual_seed(0)
    model = _small(HSIC(kernel="gaussian", sigma=5))
    head, hidden = model.head, [model.dense_1, model.dense_2]
    head_before = [p.detach().clone() for p in head.parameters()]
    pre = model.pre_training_loop(4, train, val, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(head.parameters(), head_before, strict=True))
    assert pre["loss"][-1] < pre["loss"][0]
    hidden_after = [p.detach().clone() for layer in hidden for p in layer.parameters()]
    post = model.post_training_loop(4, train, val, progress=False)
    hidden_now = [p.detach() for layer in hidden for p in layer.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(hidden_now, hidden_after, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(head.parameters(), head_before, strict=True))
    assert post["val_accuracy"][-1] > 0.5, post["val_accuracy"]  # chance: 0.1
    run = model.run
    assert run.epochs == list(range(9))
    on_y = run.trajectories("hsic", sigma_rule="median_d2", target="labels")[:, :2, 1]
    assert (on_y[4] > on_y[0]).all(), on_y  # after pre-training, both hidden layers depend more on Y
    assert model.predict(next(iter(val))[0]).sum(-1).allclose(torch.ones(1))  # probabilities: the softmax


def test_a_trainer_shows_an_hsic_network_live_and_the_output_fit_continues_its_run(digits):
    train, val = digits
    torch.manual_seed(0)
    model = _small(NHSIC(sigma=5.0), beta=2.0, lr=0.1)
    trainer = ib.Trainer(model, train, val, epochs=2, probe=64)
    trainer.start()
    run = trainer.wait(timeout=120)
    assert trainer.status == "finished", trainer.engine.traceback
    assert run is model.run and run.config["loss"] == "hsic_bottleneck"
    assert [len(m.x) for m in trainer.marks["plane_points"][0]] == [3] * len(run.layer_names)
    model.post_training_loop(1, train, val, progress=False)
    trainer.sync()
    assert run.epochs == [0, 1, 2, 3] and trainer.epoch_label.value.startswith("epoch 3/")
    assert len(trainer.marks["plane_points"][0][0].x) == 4
    trainer.close()


# ------------------------------------------------------------------------------------------ misuse


def test_misuse_is_reported_with_what_to_do():
    model = HSICSequential((1, 8, 8), device="cpu")
    model.add(Flatten())
    model.add(Dense(8))
    with pytest.raises(ValueError, match="layer dense_1 has no HSIC criterion.*compile\\(loss_criterion"):
        model.compile()
    with pytest.raises(TypeError, match="Estimator such as HSIC"):
        model.add(Dense(4), "hsic")
    with pytest.raises(ValueError, match="output layer.*without a criterion"):
        model.add(HSICoutput(10), HSIC(kernel="gaussian", sigma=5))
    model.add(HSICoutput(10))
    with pytest.raises(ValueError, match="HSICoutput layer comes last"):
        model.add(Dense(4))
    model.compile(loss_criterion=HSIC(kernel="gaussian", sigma=5))
    headless = _small(HSIC(kernel="gaussian", sigma=5), head=False)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    with pytest.raises(ValueError, match="add\\(HSICoutput\\(10\\)\\) last"):
        headless.post_training_loop(1, DataLoader(TensorDataset(x, y), batch_size=16))
    with pytest.raises(ValueError, match="one criterion and one beta per block"):
        HSICBottleneck([torch.nn.Linear(2, 2)], [None, None], [1.0])
    with pytest.raises(ValueError, match="no block has a criterion"):
        HSICBottleneck([torch.nn.Linear(2, 2)], [None], [1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_pre_training_on_cuda_matches_the_cpu(digits):
    """The objective, the one-hot labels and the criteria run on the model's device: one epoch on CUDA leaves the
    parameters where one epoch on the CPU does, to float32 rounding of the reductions."""
    train, _ = digits
    trained = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = HSICSequential((1, 8, 8), device=device, probe=64)
        model.add(Flatten())
        model.add(Dense(32, activation="tanh"))
        model.add(Dense(16, activation="tanh"))
        model.compile(loss_criterion=NHSIC(sigma=5.0), regularize_coeff=2.0, learning_rate=0.05, momentum=0.9)
        start = [p.detach().cpu().clone() for p in model.parameters()]
        model.pre_training_loop(1, train, progress=False)
        assert model.engine.status == "finished", model.engine.traceback
        trained.append([p.detach().cpu() for p in model.parameters()])
    for a, b, s in zip(*trained, start, strict=True):
        moved = float((a - s).abs().max())
        assert moved > 1e-4 and float((a - b).abs().max()) < 1e-2 * moved
