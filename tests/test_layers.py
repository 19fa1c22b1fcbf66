"""Layers: output_shape matches the built module's real output; activations; validation messages."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibwidget.pyglow import layers as L


def _built(layer, input_shape):
    layer.set_input(input_shape)
    return layer


def _check_shape(layer, input_shape, batch=3):
    _built(layer, input_shape)
    torch.manual_seed(0)
    layer.eval()
    with torch.no_grad():
        out = layer(torch.randn(batch, *input_shape))
    assert tuple(out.shape) == (batch, *layer.output_shape), (layer, input_shape)
    return out


CONV2D = [
    dict(filters=4, kernel_size=3),
    dict(filters=4, kernel_size=3, stride=2),
    dict(filters=4, kernel_size=3, stride=2, padding=1),
    dict(filters=2, kernel_size=5, stride=3, padding=2, dilation=2),
    dict(filters=3, kernel_size=(3, 1), stride=(2, 1), padding=(0, 2), dilation=(1, 3)),
    dict(filters=2, kernel_size=5, padding="same", dilation=2),
    dict(filters=2, kernel_size=3, padding="valid", dilation=3),
    dict(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"),
]


@pytest.mark.parametrize("kwargs", CONV2D)
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 13, 9)])
def test_conv2d_output_shape_matches_module(kwargs, input_shape):
    layer = L.Conv2d(**kwargs)
    _check_shape(layer, input_shape)
    assert layer.conv_layer.in_channels == input_shape[0]


@pytest.mark.parametrize(
    "kwargs",
    [dict(filters=3, kernel_size=3), dict(filters=2, kernel_size=4, stride=3, padding=2, dilation=2)],
)
def test_conv1d_and_conv3d_output_shapes(kwargs):
    _check_shape(L.Conv1d(**kwargs), (2, 17))
    _check_shape(L.Conv3d(**kwargs), (2, 9, 10, 11), batch=2)


def test_conv_stride_is_applied_unlike_pyglow():
    # PyGlow computed output_shape with the stride but built nn.Conv2d without it.
    layer = _built(L.Conv2d(4, 3, 2), (1, 28, 28))
    assert layer.output_shape == (4, 13, 13)
    assert layer.conv_layer.stride == (2, 2)


POOLS = [
    (L.MaxPool2d, dict(kernel_size=2)),
    (L.MaxPool2d, dict(kernel_size=3, stride=2, padding=1)),
    (L.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    (L.MaxPool2d, dict(kernel_size=3, stride=2, ceil_mode=True)),
    (L.MaxPool2d, dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    (L.AvgPool2d, dict(kernel_size=2)),
    (L.AvgPool2d, dict(kernel_size=3, stride=2, padding=1)),
    (L.AvgPool2d, dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True)),
]


@pytest.mark.parametrize("cls,kwargs", POOLS)
@pytest.mark.parametrize("input_shape", [(2, 28, 28), (1, 7, 10)])
def test_pool2d_output_shape_matches_module(cls, kwargs, input_shape):
    _check_shape(cls(**kwargs), input_shape)


@pytest.mark.parametrize("n", [5, 6, 7, 8])
def test_pool_1d_3d_output_shapes(n):
    _check_shape(L.MaxPool1d(3, 2, padding=1, dilation=1, ceil_mode=True), (2, n))
    _check_shape(L.AvgPool1d(2), (2, n))
    _check_shape(L.MaxPool3d(2, ceil_mode=True), (1, n, n, 4), batch=2)
    _check_shape(L.AvgPool3d(3, 1, 1), (1, n, 4, 5), batch=2)


def test_pool_positional_arguments_follow_pyglow():
    layer = L.MaxPool2d(2, 1)  # PyGlow: MaxPool2d(kernel_size, stride, padding=0, dilation=1)
    assert (layer.kernel_size, layer.stride) == ((2, 2), (1, 1))
    assert L.AvgPool2d(2).stride == (2, 2)  # stride defaults to kernel_size, as in torch
    out = _check_shape(L.AvgPool2d(2, 2), (1, 4, 4))
    assert out.shape[-2:] == (2, 2)


def test_dense_flatten_dropout_batchnorm_shapes():
    dense = _built(L.Dense(7, activation="tanh"), (12,))
    assert dense.weights.in_features == 12 and dense.output_shape == (7,)
    _check_shape(dense, (12,))
    flat = _built(L.Flatten(), (16, 4, 3))
    assert flat.output_shape == (192,)
    _check_shape(flat, (16, 4, 3))
    # a non-contiguous input is fine (PyGlow's view() raised)
    assert flat(torch.randn(2, 3, 4, 16).permute(0, 3, 2, 1)).shape == (2, 192)
    _check_shape(L.Dropout(0.3), (5, 2))
    _check_shape(L.BatchNorm1d(), (6,))
    _check_shape(L.BatchNorm1d(), (6, 4))
    _check_shape(L.BatchNorm2d(momentum=None), (3, 5, 5))
    _check_shape(L.BatchNorm3d(eps=1e-3), (2, 3, 4, 5))


def test_seed_tutorial_architecture_builds():
    arch = [
        L.Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"),
        L.Flatten(),
        L.Dense(1000, activation="relu"),
        L.Dense(500, activation="relu"),
        L.Dense(200, activation="relu"),
        L.Dense(10, activation="softmax"),
    ]
    shape = (1, 28, 28)
    shapes = []
    for layer in arch:
        layer.set_input(shape)
        shape = layer.output_shape
        shapes.append(shape)
    assert shapes == [(16, 28, 28), (12544,), (1000,), (500,), (200,), (10,)]
    assert [layer.has_params for layer in arch] == [True, False, True, True, True, True]
    assert sum(layer.has_params for layer in arch) == 5  # the tutorial's (7, 1, 5, 2): five tracked layers
    net = nn.Sequential(*arch)
    probs = net(torch.randn(4, 1, 28, 28))
    assert probs.shape == (4, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))


def test_has_params_before_and_after_build():
    assert L.Dense(3).has_params and L.Conv2d(2, 3).has_params and L.BatchNorm2d().has_params
    assert not L.Flatten().has_params and not L.Dropout(0.5).has_params and not L.MaxPool2d(2).has_params
    assert _built(L.BatchNorm1d(), (4,)).has_params
    assert not _built(L.AvgPool2d(2), (1, 4, 4)).has_params


@pytest.mark.parametrize(
    "name,fn",
    [
        ("relu", F.relu),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("softmax", lambda z: F.softmax(z, dim=1)),
        ("log_softmax", lambda z: F.log_softmax(z, dim=1)),
        ("leaky_relu", F.leaky_relu),
        ("elu", F.elu),
        ("gelu", F.gelu),
        ("linear", lambda z: z),
        (None, lambda z: z),
        ("ReLU", F.relu),
    ],
)
def test_activation_names(name, fn):
    layer = _built(L.Dense(5, activation=name), (4,))
    x = torch.randn(6, 4)
    z = layer.weights(x)
    torch.testing.assert_close(layer(x), fn(z))
    torch.testing.assert_close(layer.forward_logits(x), z)
    assert layer.activation_name == ("linear" if name is None else name.lower())


def test_conv_activation_applies_after_convolution():
    layer = _built(L.Conv2d(3, 3, padding=1, activation="relu"), (2, 5, 5))
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(layer(x), F.relu(layer.conv_layer(x)))
    assert (layer(x) >= 0).all() and (layer.forward_logits(x) < 0).any()


def test_softmax_layer_can_skip_its_activation():
    layer = _built(L.Dense(10, activation="softmax"), (8,))
    x = torch.randn(5, 8)
    assert layer.apply_output_activation
    torch.testing.assert_close(layer(x).sum(1), torch.ones(5))
    layer.apply_output_activation = False
    torch.testing.assert_close(layer(x), layer.weights(x))
    torch.testing.assert_close(layer.activate(layer(x)), F.softmax(layer.weights(x), 1))


def test_callable_activation():
    layer = _built(L.Dense(3, activation=torch.square), (2,))
    x = torch.randn(4, 2)
    torch.testing.assert_close(layer(x), layer.weights(x) ** 2)
    assert layer.activation_name == "square"


def test_unknown_activation_lists_known():
    with pytest.raises(ValueError, match="Unknown activation 'swish'.*'relu'.*'softmax'"):
        L.Dense(3, activation="swish")
    with pytest.raises(ValueError, match="Unknown activation"):
        L.Conv2d(3, 3, activation="rellu")
    with pytest.raises(TypeError, match="activation must be"):
        L.Dense(3, activation=3)


def test_dense_rejects_multidim_input_and_says_flatten():
    with pytest.raises(ValueError, match=r"Add Flatten\(\)"):
        L.Dense(10).set_input((16, 28, 28))
    dense = _built(L.Dense(10), (784,))
    with pytest.raises(ValueError, match=r"\(batch, 784\).*Flatten"):
        dense(torch.randn(2, 1, 28, 28))


def test_use_before_set_input_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not built yet.*set_input"):
        L.Dense(3)(torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="not built yet"):
        L.Conv2d(3, 3)(torch.randn(2, 1, 5, 5))
    with pytest.raises(RuntimeError, match="not built yet"):
        L.MaxPool2d(2)(torch.randn(2, 1, 4, 4))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: L.Dense(0), "output_dim must be >= 1"),
        (lambda: L.Dense(-3), "output_dim must be >= 1"),
        (lambda: L.Dense(2.5), "output_dim must be an int"),
        (lambda: L.Conv2d(0, 3), "filters must be >= 1"),
        (lambda: L.Conv2d(4, 0), "kernel_size must be >= 1"),
        (lambda: L.Conv2d(4, 3, stride=0), "stride must be >= 1"),
        (lambda: L.Conv2d(4, 3, padding=-1), "padding must be >= 0"),
        (lambda: L.Conv2d(4, (3, 3, 3)), "tuple of 2 ints"),
        (lambda: L.Conv2d(4, 3, stride=2, padding="same"), "needs stride=1"),
        (lambda: L.Conv2d(4, 3, padding="full"), "'same' or 'valid'"),
        (lambda: L.Dropout(1.5), r"prob must be a probability in \[0, 1\]"),
        (lambda: L.MaxPool2d(2, padding=2), "more than half"),
        (lambda: L.BatchNorm2d(eps=0), "eps must be a positive"),
        (lambda: L.BatchNorm2d(momentum=2), "momentum must be in"),
    ],
)
def test_constructor_validation(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize(
    "layer,shape,match",
    [
        (L.Conv2d(4, 3), (784,), r"\(channels, height, width\)"),
        (L.Conv1d(4, 3), (1, 28, 28), r"\(channels, length\)"),
        (L.Conv2d(4, 7), (1, 5, 5), "does not fit"),
        (L.MaxPool2d(4), (1, 3, 3), "does not fit"),
        (L.BatchNorm2d(), (10,), r"\(channels, height, width\)"),
        (L.Dense(3), (0,), "positive int"),
        (L.Dense(3), (), "non-empty tuple"),
        (L.Flatten(), (2.0, 3), "positive int"),
    ],
)
def test_set_input_validation(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.set_input(shape)


def test_pyglow_exports_are_present():
    for name in [
        "Conv1d", "Conv2d", "Conv3d", "Dense", "Dropout", "Flatten", "MaxPool1d", "AvgPool1d", "MaxPool2d",
        "AvgPool2d", "MaxPool3d", "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "HSICoutput",
    ]:  # fmt: skip
        assert issubclass(getattr(L, name), L.Layer), name
    out = L.HSICoutput(4)
    assert out.activation_name == "softmax" and isinstance(out, L.Dense)


def test_args_clone_like_pyglow():
    for layer in [L.Dense(5, "relu"), L.Conv2d(3, 2, 2, 1, 1, "tanh"), L.MaxPool2d(2, 2), L.Dropout(0.2)]:
        clone = type(layer)(*layer.args)
        assert clone.args == layer.args and clone is not layer


def test_input_shape_accepts_torch_size_and_numpy_ints():
    np = pytest.importorskip("numpy")
    layer = _built(L.Conv2d(2, 3), torch.Size([1, 8, 8]))
    assert layer.output_shape == (2, 6, 6)
    layer = _built(L.Dense(2), (np.int64(5),))
    assert layer.input_shape == (5,) and type(layer.input_shape[0]) is int


def test_layers_pickle_and_keep_pyglow_state_dict_keys(tmp_path):
    net = nn.Sequential(
        _built(L.Conv2d(2, 3, activation="relu"), (1, 6, 6)),
        _built(L.BatchNorm2d(), (2, 4, 4)),
        _built(L.MaxPool2d(2), (2, 4, 4)),
        _built(L.Flatten(), (2, 2, 2)),
        _built(L.Dense(3, activation="softmax"), (8,)),
    ).eval()
    keys = set(net.state_dict())
    assert {"0.conv_layer.weight", "1.norm_layer.running_mean", "4.weights.weight", "4.weights.bias"} <= keys
    torch.save(net, tmp_path / "net.pt")  # whole-module save needs picklable activations
    loaded = torch.load(tmp_path / "net.pt", weights_only=False)
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(loaded(x), net(x))
