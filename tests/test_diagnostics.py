"""Geometric diagnostics recorded with each snapshot: saturation of hand-built layers, activations, weight norms,
the epoch's gradient statistics against a recomputation from every step's gradient, the run file, and the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ibwidget as ib
from ibwidget._vocabulary import DIAGNOSTICS
from ibwidget.record.diagnostics import GradientMoments, nonlinearity_of

M = 64


def _probe(seed: int = 0, width: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, width, generator=g), torch.arange(M) % 3


def _diagnostics_at_epoch_0(model: nn.Module, layers: list[str], **options) -> tuple[dict, ib.Run]:
    with ib.record(model, _probe(), layers=layers, **options) as rec:
        pass
    return {k: v[0] for k, v in rec.run.diagnostics().items()}, rec.run


def test_a_saturated_tanh_layer_a_dead_relu_layer_and_a_half_dead_one():
    torch.manual_seed(0)
    big = nn.Linear(8, 40)
    with torch.no_grad():
        big.weight.mul_(100.0)  # |pre-activation| >> 3 nearly everywhere: tanh sits at ±1
    dead = nn.Linear(8, 30)
    half = nn.Linear(8, 20)
    with torch.no_grad():
        dead.weight.zero_()
        dead.bias.fill_(-100.0)
        half.weight.zero_()
        half.bias.copy_(torch.tensor([-100.0, 100.0] * 10))  # 10 units dead on every sample, 10 always alive
    sigmoid = nn.Linear(8, 40)
    with torch.no_grad():
        sigmoid.weight.mul_(100.0)

    class Four(nn.Module):
        def __init__(self):
            super().__init__()
            self.th = nn.Sequential(big, nn.Tanh())
            self.dead = nn.Sequential(dead, nn.ReLU())
            self.partly = nn.Sequential(half, nn.ReLU())
            self.sig = nn.Sequential(sigmoid, nn.Sigmoid())

        def forward(self, x):
            return torch.cat([self.th(x), self.dead(x), self.partly(x), self.sig(x)], 1)

    diag, run = _diagnostics_at_epoch_0(Four(), ["th.1", "dead.1", "partly.1", "sig.1"])
    tanh, relu, half_dead, sig = diag["saturated_fraction"]
    assert tanh > 0.9 and sig > 0.9
    assert relu == 1.0 and half_dead == 0.5  # a unit is dead when it is zero on the whole probe
    assert run.config["nonlinearities"] == ["tanh", "relu", "relu", "sigmoid"] and run.diagnostics_notes == []
    x, _ = _probe()
    with torch.no_grad():
        a = torch.tanh(big(x))
    assert diag["saturated_fraction"][0] == pytest.approx(float((a.abs() > 0.99).double().mean()), abs=1e-12)
    assert diag["mean_abs_activation"][0] == pytest.approx(float(a.abs().double().mean()), rel=1e-6)
    assert np.isnan(diag["weight_norm"]).all()  # an activation module has no weights of its own


def test_weight_norms_declared_and_unknown_nonlinearities():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    diag, run = _diagnostics_at_epoch_0(model, ["0", "2"], nonlinearities={"2": "relu"})
    expected = [float(torch.linalg.norm(model[i].weight.double())) for i in (0, 2)]
    np.testing.assert_allclose(diag["weight_norm"], expected, rtol=1e-12)  # the weight, not the bias
    assert np.isnan(diag["saturated_fraction"][0])  # a Linear's output: pre-activation, not known
    x, _ = _probe()
    with torch.no_grad():
        z = model(x)
    assert diag["saturated_fraction"][1] == float((z <= 0).all(0).double().mean())  # declared relu: dead units
    (note,) = run.diagnostics_notes
    assert "saturated fraction unknown for 0" in note and "nonlinearities={'0': 'tanh'}" in note
    with pytest.raises(ValueError, match="'fc9', which is not a tracked layer; the tracked layers are '0', '2'"):
        ib.record(model, _probe(), layers=["0", "2"], nonlinearities={"fc9": "tanh"})
    with pytest.raises(ValueError, match=r"nonlinearities\['0'\] must be one of 'tanh', 'sigmoid', 'relu', 'linear'"):
        ib.record(model, _probe(), layers=["0", "2"], nonlinearities={"0": "gelu"})


def test_nonlinearities_of_modules_and_ibsequential_layers():
    assert [nonlinearity_of(m) for m in (nn.Tanh(), nn.Sigmoid(), nn.ReLU(), nn.Identity(), nn.GELU())] == [
        "tanh",
        "sigmoid",
        "relu",
        "linear",
        None,
    ]
    model = ib.IBSequential(input_shape=(4,))
    for activation in ("tanh", "relu", None, "elu"):
        model.add(ib.layers.Dense(3, activation=activation))
    assert [nonlinearity_of(layer) for layer in model.layers] == ["tanh", "relu", "linear", None]


def test_gradient_statistics_are_the_epochs_steps_mean_and_std():
    """grad_mean = ||mean over steps of g||, grad_std = ||std over steps of g|| (population), grad_snr their ratio,
    for the weight of each layer, over the steps of the snapshot's epoch only (a skipped epoch does not leak in)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = _probe(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: dict[int, list[list[np.ndarray]]] = {}
    with ib.record(model, (x[:32], y[:32]), layers=["0", "2"], snapshot_epochs=[2, 3]) as rec:
        for epoch in (1, 2, 3):
            for start in range(0, M, 8):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[start : start + 8]), y[start : start + 8]).backward()
                rec.step()
                seen.setdefault(epoch, []).append([model[i].weight.grad.double().numpy().copy() for i in (0, 2)])
                opt.step()
            rec.snapshot({"loss": 0.0})
    diag = rec.run.diagnostics()
    assert rec.run.epochs == [0, 2, 3]
    for row, epoch in ((1, 2), (2, 3)):
        for layer in (0, 1):
            g = np.stack([step[layer] for step in seen[epoch]])
            mean, std = np.linalg.norm(g.mean(0)), np.linalg.norm(g.std(0))
            assert diag["grad_mean"][row, layer] == pytest.approx(mean, rel=1e-9)
            assert diag["grad_std"][row, layer] == pytest.approx(std, rel=1e-9)
            assert diag["grad_snr"][row, layer] == pytest.approx(mean / std, rel=1e-9)
    assert np.isnan(diag["grad_mean"][0]).all()  # epoch 0: no step yet


def test_a_loop_that_reports_no_steps_has_no_gradient_statistics():
    moments = GradientMoments([nn.Linear(2, 2)], torch.device("cpu"))
    assert np.isnan(moments.take()["grad_snr"].numpy()).all()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    with ib.record(model, _probe(), layers=["0"]) as rec:
        rec.snapshot({})
    diag = rec.run.diagnostics()
    assert np.isnan(diag["grad_mean"]).all() and np.isfinite(diag["weight_norm"]).all()


def test_diagnostics_survive_the_run_file_appended_and_saved_whole(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = _probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with ib.record(model, (x, y), layers=["1", "2"], path=tmp_path / "a.ibrun") as rec:
        for _ in range(2):
            for part in (slice(0, M // 2), slice(M // 2, M)):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[part]), y[part]).backward()
                rec.step()
                opt.step()
            rec.snapshot({"loss": 1.0})
    want = rec.run.diagnostics()
    for path in (tmp_path / "a.ibrun", rec.run.save(tmp_path / "b.ibrun")):
        got = ib.load_run(path).diagnostics()
        assert set(got) == set(DIAGNOSTICS)
        for name in DIAGNOSTICS:
            np.testing.assert_array_equal(got[name], want[name])
    assert np.isfinite(want["grad_snr"][1:, 1]).all()  # the Linear's; the ReLU module has no weights:
    assert np.isnan(want["weight_norm"][:, 0]).all() and np.isnan(want["grad_mean"][:, 0]).all()
    with pytest.raises(ValueError, match="unknown diagnostics"):
        rec.run.add_diagnostics({"grad_norm": np.zeros(2)})
    with pytest.raises(ValueError, match="has 3 values for 2 layers"):
        rec.run.add_diagnostics({"grad_mean": np.zeros(3)})


def test_the_engine_reports_every_step_of_every_epoch():
    torch.manual_seed(0)
    train, val, _ = ib.datasets.ib12.load_data(batch_size=512)
    model = ib.IBSequential(input_shape=(12,))
    for width in (10, 7, 5):
        model.add(ib.layers.Dense(width, activation="tanh"))
    model.add(ib.layers.Dense(2))
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.1)
    steps = []

    class Count:
        def on_after_backward(self, engine):
            steps.append(engine.epoch)

    engine = model.make_engine(train, val, 2, probe=256, callbacks=[Count()])
    engine.start()
    engine.wait()
    run = engine.run
    diag = run.diagnostics()
    assert len(steps) == 2 * len(train)
    assert run.config["nonlinearities"] == ["tanh", "tanh", "tanh", "linear"] and run.diagnostics_notes == []
    assert np.isnan(diag["grad_mean"][0]).all() and (diag["grad_mean"][1:] > 0).all()
    assert np.isnan(diag["saturated_fraction"][:, -1]).all() and (diag["saturated_fraction"][:, :3] < 0.5).all()
    assert all(v.shape == (3, 4) for v in diag.values())


def test_a_big_layers_gradient_statistics_come_from_a_fixed_sample_of_its_weights():
    """Above the sample size, the norms are estimated (unbiased) from a seeded sample of the weights, scaled by the
    layer's size over the sample's: close to the exact ones, and exact when the sample is the whole layer."""
    torch.manual_seed(0)
    layer = nn.Linear(300, 300)  # 90,000 weights
    g = torch.Generator().manual_seed(1)
    base = torch.randn(300, 300, generator=g) * torch.linspace(0.1, 3.0, 300)  # heterogeneous rows
    exact = GradientMoments([layer], torch.device("cpu"), 10**9)
    sampled = GradientMoments([layer], torch.device("cpu"), 20_000)
    assert exact._layers[0][2] == 1.0 and sampled._layers[0][2] == pytest.approx(90_000 / 20_000)
    grads = [base + torch.randn(300, 300, generator=g) for _ in range(6)]
    for grad in grads:
        layer.weight.grad = grad
        exact.add()
        sampled.add()
    want, got = exact.take(), sampled.take()
    stack = torch.stack(grads).double()
    assert float(want["grad_mean"][0]) == pytest.approx(float(stack.mean(0).norm()), rel=1e-9)
    assert float(want["grad_std"][0]) == pytest.approx(float(stack.std(0, correction=0).norm()), rel=1e-9)
    for name in ("grad_mean", "grad_std", "grad_snr"):
        assert float(got[name][0]) == pytest.approx(float(want[name][0]), rel=0.05), name


def test_diagnostics_recorded_on_the_models_device_equal_a_recomputation(device):
    """On the recording's device (CUDA where there is one): the engine's side-stream snapshot and the per-step sums
    give what the weights, activations and every step's gradient say, read back on the host."""
    torch.manual_seed(0)
    train, val, _ = ib.datasets.ib12.load_data(batch_size=512)
    model = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 2))
    steps: list[np.ndarray] = []

    class Grads:
        def on_after_backward(self, engine):
            steps.append(engine.model[2].weight.grad.detach().double().cpu().numpy().copy())

    engine = ib.Engine(
        model, train, val, epochs=1, layers=["1", "2"], lr=0.5, device=device, probe=256, callbacks=[Grads()]
    )
    engine.start().wait(timeout=120)
    run = engine.run
    diag = run.diagnostics()
    assert engine.device.type == device.type and len(steps) == len(train)
    with torch.no_grad():
        a = model[1](model[0](run.probe_x.to(engine.device))).double().cpu()
    assert diag["saturated_fraction"][-1, 0] == pytest.approx(float((a.abs() > 0.99).double().mean()), abs=1e-12)
    assert diag["mean_abs_activation"][-1, 0] == pytest.approx(float(a.abs().mean()), rel=1e-5)
    assert diag["weight_norm"][-1, 1] == pytest.approx(float(model[2].weight.double().norm()), rel=1e-6)
    g = np.stack(steps)
    assert diag["grad_mean"][-1, 1] == pytest.approx(np.linalg.norm(g.mean(0)), rel=1e-9)
    assert diag["grad_std"][-1, 1] == pytest.approx(np.linalg.norm(g.std(0)), rel=1e-9)
    assert np.isnan(diag["weight_norm"][:, 0]).all()  # the Tanh module: no weights, no gradients
    assert run.config["nonlinearities"] == ["tanh", None] and "unknown for 2" in run.diagnostics_notes[0]
