"""Taps: forward hooks on any nn.Module capture what a manual forward computes, and always come off."""

import pytest
import torch
from torch import nn

from ibwidget.pyglow import layers as L
from ibwidget.record.taps import Tap, default_layer_names, resolve_layers


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
        self.block = nn.ModuleDict({"inner": nn.Sequential(nn.Linear(3 * 6 * 6, 12), nn.Tanh())})
        self.fc1 = nn.Linear(12, 8)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h = self.features(x).flatten(1)
        h = self.block["inner"](h)
        return self.fc2(self.dropout(torch.relu(self.fc1(h))))


def _manual_net(net, x):
    f0 = net.features[0](x)
    f = net.features[2](net.features[1](f0))
    inner0 = net.block["inner"][0](f.flatten(1))
    inner = net.block["inner"][1](inner0)
    fc1 = net.fc1(inner)
    return {"features.0": f0, "features": f, "block.inner.0": inner0, "block.inner": inner, "fc1": fc1}


def _no_hooks(model):
    return all(len(m._forward_hooks) == 0 for m in model.modules())


def test_default_layer_names_sequential_and_nested():
    assert default_layer_names(_cnn()) == ["0", "4", "6"]
    assert default_layer_names(_Net()) == ["features.0", "features.1", "block.inner.0", "fc1", "fc2"]


def test_default_layer_names_treats_ibwidget_layers_as_units():
    shape, arch = (1, 8, 8), [L.Conv2d(2, 3, activation="relu"), L.Flatten(), L.Dense(5, "relu"), L.Dense(3)]
    for layer in arch:
        layer.set_input(shape)
        shape = layer.output_shape
    model = nn.Sequential(*arch)
    # the Layer itself (post-activation), never its inner nn.Conv2d / nn.Linear
    assert default_layer_names(model) == ["0", "2", "3"]
    assert default_layer_names(arch[2]) == [""]


def test_tap_sequential_matches_manual_forward():
    model = _cnn()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected_out = model(x)
        with Tap(model, ["0", "1", "4", "6"]) as tap:
            out = model(x)
        h = x
        manual = {}
        for i, module in enumerate(model):
            h = module(h)
            manual[str(i)] = h
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    assert list(tap.outputs) == ["0", "1", "4", "6"]
    for name, value in tap.outputs.items():
        torch.testing.assert_close(value, manual[name], rtol=0, atol=0)
    assert _no_hooks(model)


def test_tap_nested_module_matches_manual_forward():
    net = _Net().eval()
    x = torch.randn(4, 1, 8, 8)
    names = ["features.0", "features", "block.inner.0", "block.inner", "fc1"]
    with Tap(net, names) as tap:
        out = net(x)
    ref = net(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    manual = _manual_net(net, x)
    assert set(tap.outputs) == set(names)
    for name in names:
        torch.testing.assert_close(tap.outputs[name], manual[name], rtol=0, atol=0)
    assert _no_hooks(net)


def test_tap_does_not_change_outputs_or_gradients():
    net = _Net().eval()
    x = torch.randn(4, 1, 8, 8)
    net(x).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with Tap(net, None) as tap:
        net(x).sum().backward()
    for p, g in zip(net.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    assert all(not t.requires_grad and t.grad_fn is None for t in tap.outputs.values())
    assert list(tap.names) == default_layer_names(net)


def test_hooks_removed_when_forward_raises():
    model = _cnn()
    tap = Tap(model, ["0", "4"])
    with pytest.raises(RuntimeError):
        with tap:
            assert not _no_hooks(model) and tap.active
            model(torch.randn(2, 3, 8, 8))  # wrong channel count
    assert _no_hooks(model) and not tap.active
    # and when the error is raised by the user's code between forwards
    with pytest.raises(KeyError):
        with Tap(model, ["0"]):
            model(torch.randn(2, 1, 8, 8))
            raise KeyError("boom")
    assert _no_hooks(model)


def test_hooks_removed_when_reduce_raises():
    model = _cnn()

    def bad_reduce(name, t):
        raise ValueError("bad reduce")

    with pytest.raises(ValueError, match="bad reduce"):
        with Tap(model, ["4"], reduce=bad_reduce):
            model(torch.randn(2, 1, 8, 8))
    assert _no_hooks(model)


def test_preexisting_hooks_are_left_alone():
    model = _cnn()
    seen = []
    handle = model[4].register_forward_hook(lambda m, a, o: seen.append(o.shape))
    with Tap(model, ["4"]):
        model(torch.randn(2, 1, 8, 8))
    assert len(model[4]._forward_hooks) == 1
    model(torch.randn(2, 1, 8, 8))
    assert len(seen) == 2
    handle.remove()


def test_reduce_transforms_on_the_fly():
    model = _cnn()
    x = torch.randn(6, 1, 8, 8)
    calls = []

    def gram(name, t):
        calls.append(name)
        z = t.flatten(1)
        return z @ z.T

    with Tap(model, ["0", "6"], reduce=gram) as tap:
        model(x)
    with Tap(model, ["0", "6"]) as raw:
        model(x)
    assert sorted(calls) == ["0", "6"]
    for name in ["0", "6"]:
        z = raw.outputs[name].flatten(1)
        assert tap.outputs[name].shape == (6, 6)
        torch.testing.assert_close(tap.outputs[name], z @ z.T)


def test_tuple_outputs_take_first_tensor():
    class _Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            seq, _ = self.lstm(x)
            return self.head(seq[:, -1])

    net = _Wrap()
    x = torch.randn(2, 4, 3)
    with Tap(net, ["lstm"]) as tap:
        net(x)
    torch.testing.assert_close(tap.outputs["lstm"], net.lstm(x)[0])


def test_clear_and_reuse():
    model = _cnn()
    tap = Tap(model, ["6"])
    with tap:
        model(torch.randn(2, 1, 8, 8))
        assert set(tap.outputs) == {"6"}
        tap.clear()
        assert tap.outputs == {}
        model(torch.randn(3, 1, 8, 8))
        assert tap.outputs["6"].shape == (3, 10)
    with tap:  # re-entering after exit works and starts empty
        assert tap.outputs == {}
        model(torch.randn(4, 1, 8, 8))
    assert tap.outputs["6"].shape == (4, 10)
    with tap, pytest.raises(RuntimeError, match="already active"):
        tap.__enter__()
    assert _no_hooks(model)


def test_unknown_layer_names_are_helpful():
    net = _Net()
    with pytest.raises(
        ValueError, match=r"Unknown layer 'fc3'\. Did you mean 'fc2', 'fc1'.*Available layers: 'features'"
    ):
        resolve_layers(net, ["fc3"])
    with pytest.raises(ValueError, match=r"Did you mean 'features.0'"):
        Tap(net, ["feature.0"])
    with pytest.raises(ValueError, match="listed twice"):
        resolve_layers(net, ["fc1", "fc1"])
    with pytest.raises(TypeError, match="must be strings"):
        resolve_layers(net, [3])
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layers(net, [nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="no submodule with parameters"):
        resolve_layers(nn.Sequential(nn.ReLU(), nn.Flatten()))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        default_layer_names("model")


def test_resolve_layers_accepts_modules_and_single_name():
    net = _Net()
    assert resolve_layers(net, [net.fc1, "fc2"]) == [("fc1", net.fc1), ("fc2", net.fc2)]
    assert resolve_layers(net, "features.0") == [("features.0", net.features[0])]
    assert [n for n, _ in resolve_layers(net)] == default_layer_names(net)


# ------------------------------------------------------------------------------------------ what the engine stores


class _ConvNet(nn.Module):
    """A conv layer, then a block holding a nested Sequential; BatchNorm and Dropout make train mode differ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Sequential(nn.Linear(64, 24), nn.Tanh()))
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        return self.head(self.block(self.features(x)))


def _eval_activations(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Activations of the named submodules in eval mode, captured with plain forward hooks, flattened, float64."""
    found, modules = {}, dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda m, a, out, n=n: found.__setitem__(n, out.detach().flatten(1).double()))
        for n in names
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return found


def test_stored_grams_are_those_of_the_eval_mode_activations():
    """Per epoch and tracked layer (a conv layer, a Sequential nested in a module, a leaf inside it), the Gram the
    run stores equals Z Z^T of the activations captured separately in eval mode, to 1e-5 of its largest entry."""
    from ibwidget import Engine, datasets
    from ibwidget.measure._packed import unpack

    train, val, _ = datasets.digits.load_data(batch_size=64, seed=0)
    model = _ConvNet()
    names = ["features.0", "block.2", "block.2.0"]
    engine = Engine(model, train, val, epochs=2, layers=names, probe=64, lr=0.05, device="cpu")
    probe_x = engine.run.probe_x
    expected = [_eval_activations(model, names, probe_x)]  # epoch 0, before training
    engine.on("epoch_end", lambda ev: expected.append(_eval_activations(model, names, probe_x)))
    engine.start().wait(timeout=120)
    run = engine.run
    assert engine.status == "finished" and run.epochs == [0, 1, 2] and run.layer_dims == [256, 24, 24]
    snap = run.snapshots()  # the 24-unit layers keep their activations only: their distances are computed from them
    assert snap.derived_layers == (1, 2)
    for epoch, acts in enumerate(expected):
        for i, name in enumerate(names):
            norms = snap.norms[epoch, i].double()
            dist = unpack(snap.dist[epoch, i].double(), run.m)
            stored = 0.5 * (norms[:, None] + norms[None, :] - dist)
            Z = acts[name]
            G = Z @ Z.T
            error = (stored - G).abs().max() / G.abs().max()
            assert error < 1e-5, (epoch, name, float(error))
    # the tracking of these layers sees what training changed: the last epoch differs from the first
    assert not torch.allclose(expected[0]["block.2"], expected[-1]["block.2"])
