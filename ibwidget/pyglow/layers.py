"""Keras-like layers with PyGlow's argument names; each builds its torch module in ``set_input(input_shape)``.

Shapes never include the batch dimension. A layer's ``output_shape`` is computed from its input shape with
PyTorch's own formulas (stride, padding, dilation, ceil_mode), so a model can chain ``set_input`` calls.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ibwidget.measure._typing import Activation

__all__ = [
    "ACTIVATIONS",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Dense",
    "Dropout",
    "Flatten",
    "HSICoutput",
    "Layer",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "get_activation",
]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return F.softmax(x, dim=1)


def _log_softmax(x: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(x, dim=1)


_ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": _identity,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
}

ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATION_FNS)
"""Activation names a layer accepts (``None`` means ``"linear"``); softmax and log_softmax act on dim 1."""


def _activation_name(activation: object) -> str:
    """Canonical activation name for ``activation`` (a known name, None, or a callable)."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        name = activation.strip().lower()
        if name in _ACTIVATION_FNS:
            return name
        raise ValueError(
            f"Unknown activation {activation!r}. Known: {', '.join(repr(a) for a in ACTIVATIONS)} "
            "(or None for linear, or a callable)."
        )
    if callable(activation):
        return getattr(activation, "__name__", type(activation).__name__)
    raise TypeError(
        f"activation must be a name such as 'relu', None or a callable, got {type(activation).__name__} {activation!r}."
    )


def get_activation(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the activation function for a name in ``ACTIVATIONS``, None (identity) or a callable."""
    name = _activation_name(activation)  # validates
    return activation if callable(activation) and not isinstance(activation, str) else _ACTIVATION_FNS[name]


def _positive_int(value, what: str, layer: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{layer}: {what} must be an int, got {type(value).__name__} {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{layer}: {what} must be {bound}, got {value}.")
    return value


def _tuple(value, rank: int, what: str, layer: str, allow_zero: bool = False) -> tuple[int, ...]:
    """Expand an int to a ``rank``-tuple and check every entry is a positive (or non-negative) int."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * rank
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != rank:
        raise ValueError(f"{layer}: {what} must be an int or a tuple of {rank} ints, got {value!r}.")
    return tuple(_positive_int(v, what, layer, allow_zero) for v in value)


def _as_shape(input_shape, layer: str) -> tuple[int, ...]:
    """Validate an input shape (without the batch dimension) and return it as a tuple of ints."""
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or len(input_shape) == 0:
        raise ValueError(
            f"{layer}.set_input: input_shape must be a non-empty tuple of positive ints without the batch "
            f"dimension, e.g. (1, 28, 28); got {input_shape!r}."
        )
    dims = []
    for d in input_shape:
        try:
            d = None if isinstance(d, bool) else operator.index(d)  # ints, numpy ints; not floats or bools
        except TypeError:
            d = None
        if d is None or d < 1:
            raise ValueError(
                f"{layer}.set_input: every dimension of input_shape must be a positive int, got {tuple(input_shape)}."
            )
        dims.append(d)
    return tuple(dims)


class Layer(nn.Module):
    """Base class of ibwidget layers: ``set_input(input_shape)`` builds the module and sets ``output_shape``."""

    # Taps treat a Layer as one unit (its output is post-activation), never descending into its torch children.
    _tap_as_leaf = True
    # Whether this layer type owns parameters, used before it is built.
    _param_layer = False

    def __init__(self) -> None:
        super().__init__()
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None
        self.args: list = []  # constructor arguments, as PyGlow kept them (``type(layer)(*layer.args)`` clones)

    @property
    def built(self) -> bool:
        """Whether ``set_input`` has been called."""
        return self.input_shape is not None

    @property
    def has_params(self) -> bool:
        """Whether this layer has parameters (the layers a model tracks)."""
        return any(True for _ in self.parameters()) or (not self.built and self._param_layer)

    def set_input(self, input_shape: int | Sequence[int]) -> None:
        """Build the torch module(s) for ``input_shape`` (no batch dimension) and set ``output_shape``."""
        shape = _as_shape(input_shape, type(self).__name__)
        self.output_shape = self._build(shape)
        self.input_shape = shape

    def _build(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def _check_built(self) -> None:
        if self.input_shape is None:
            raise RuntimeError(
                f"{type(self).__name__} is not built yet: add it to a model (model.add(layer)) or call "
                "layer.set_input(input_shape) before using it."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity; subclasses override."""
        return x


class _Activated(Layer):
    """A layer with a linear part followed by a named activation."""

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation
        self.activation_name: str = _activation_name(activation)
        self._activation_fn = get_activation(activation)
        self.apply_output_activation: bool = True  # False: forward returns pre-activation values (logits)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Apply this layer's activation to pre-activation values ``z``."""
        return self._activation_fn(z)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation output (e.g. logits of a softmax layer), whatever ``apply_output_activation`` says."""
        self._check_built()
        return self._pre_activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the layer; the activation is skipped while ``apply_output_activation`` is False."""
        z = self.forward_logits(x)
        return self._activation_fn(z) if self.apply_output_activation else z

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"


class Dense(_Activated):
    """Fully connected layer: ``output_dim`` units on a flat input; PyGlow's ``Dense(output_dim, activation)``."""

    _param_layer = True

    def __init__(self, output_dim: int, activation: Activation = None, bias: bool = True) -> None:
        super().__init__(activation)
        self.output_dim = _positive_int(output_dim, "output_dim", "Dense")
        self.bias = bool(bias)
        self.args = [output_dim, activation]
        self.output_shape = (self.output_dim,)
        self.weights: nn.Linear | None = None  # PyGlow's attribute name, kept for state_dict parity

    def _build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense expects a flat input of shape (features,), got {input_shape}. Add Flatten() before "
                "Dense (e.g. model.add(Flatten())) after convolution or pooling layers."
            )
        self.weights = nn.Linear(input_shape[0], self.output_dim, bias=self.bias)
        return (self.output_dim,)

    def _pre_activation(self, x):
        if x.dim() != 2 or x.shape[1] != self.weights.in_features:
            raise ValueError(
                f"Dense was built for inputs of shape (batch, {self.weights.in_features}), got {tuple(x.shape)}. "
                "Add Flatten() before Dense, or check the model's input_shape."
            )
        return self.weights(x)

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, activation={self.activation_name!r}"


class HSICoutput(Dense):
    """PyGlow's HSIC-network output layer: a ``Dense`` whose activation defaults to softmax."""

    def __init__(self, output_dim: int, activation: Activation = "softmax") -> None:
        super().__init__(output_dim, activation)


class Dropout(Layer):
    """Dropout with drop probability ``prob`` (PyGlow's name); shape unchanged."""

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__()
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise ValueError(f"Dropout: prob must be a probability in [0, 1], got {prob!r}. Pass e.g. Dropout(0.5).")
        self.prob = float(prob)
        self.args = [prob]
        self.dropout_layer = nn.Dropout(self.prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly zero elements with probability ``prob`` in training mode."""
        return self.dropout_layer(x)


class Flatten(Layer):
    """Flatten everything but the batch dimension: ``(C, H, W) -> (C*H*W,)``."""

    def _build(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reshape ``x`` to ``(batch, features)``."""
        return x.flatten(1)


def _conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool = False) -> int:
    """Output length of a convolution/pooling window (PyTorch's formula, including ceil_mode's last-window rule)."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _window_out(spatial, kernel, stride, padding, dilation, ceil_mode: bool = False) -> tuple[int, ...]:
    """Output spatial shape of a sliding window over ``spatial``, one entry per dimension."""
    dims = zip(spatial, kernel, stride, padding, dilation, strict=True)
    return tuple(_conv_out(n, k, s, p, d, ceil_mode) for n, k, s, p, d in dims)


_DIM_NAMES = {1: "(channels, length)", 2: "(channels, height, width)", 3: "(channels, depth, height, width)"}


def _check_rank(layer: str, input_shape, rank: int) -> None:
    if len(input_shape) != rank + 1:
        raise ValueError(
            f"{layer} expects an input shape {_DIM_NAMES[rank]} (no batch dimension), got {input_shape}. "
            + ("Give the model input_shape=(1, 28, 28) for 28x28 grey images." if rank == 2 else "")
        )


def _check_out(layer: str, input_shape, out: tuple[int, ...]) -> None:
    if any(o < 1 for o in out):
        raise ValueError(
            f"{layer}: the window does not fit the input {input_shape} (output spatial size {out}); use a smaller "
            "kernel_size or dilation, or more padding."
        )


class _Conv(_Activated):
    _param_layer = True
    _torch = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

    def __init__(
        self,
        rank: int,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int] | str,
        dilation: int | Sequence[int],
        activation: Activation,
        bias: bool,
    ) -> None:
        super().__init__(activation)
        name = type(self).__name__
        self.rank = rank
        self.filters = _positive_int(filters, "filters", name)
        self.kernel_size = _tuple(kernel_size, rank, "kernel_size", name)
        self.stride = _tuple(stride, rank, "stride", name)
        self.dilation = _tuple(dilation, rank, "dilation", name)
        if isinstance(padding, str):
            mode = padding.lower()
            if mode not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be an int, a tuple, 'same' or 'valid'; got {padding!r}.")
            if mode == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' needs stride=1 (PyTorch); pass an int padding instead.")
            self.padding = (0,) * rank if mode == "valid" else mode
        else:
            self.padding = _tuple(padding, rank, "padding", name, allow_zero=True)
        self.bias = bool(bias)
        self.args = [filters, kernel_size, stride, padding, dilation, activation]
        self.conv_layer: nn.Module | None = None  # PyGlow's attribute name

    def _build(self, input_shape):
        name = type(self).__name__
        _check_rank(name, input_shape, self.rank)
        spatial = input_shape[1:]
        if self.padding == "same":
            out = tuple(spatial)
        else:
            out = _window_out(spatial, self.kernel_size, self.stride, self.padding, self.dilation)
        _check_out(name, input_shape, out)
        self.conv_layer = self._torch[self.rank](
            in_channels=input_shape[0],
            out_channels=self.filters,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias,
        )
        return (self.filters, *out)

    def _pre_activation(self, x):
        return self.conv_layer(x)

    def extra_repr(self) -> str:
        return (
            f"filters={self.filters}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, activation={self.activation_name!r}"
        )


class Conv1d(_Conv):
    """1-D convolution over ``(channels, length)`` inputs; in_channels is inferred from the input shape."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        activation: Activation = None,
        bias: bool = True,
    ) -> None:
        super().__init__(1, filters, kernel_size, stride, padding, dilation, activation, bias)


class Conv2d(_Conv):
    """2-D convolution over ``(channels, height, width)`` inputs; in_channels is inferred from the input shape."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        activation: Activation = None,
        bias: bool = True,
    ) -> None:
        super().__init__(2, filters, kernel_size, stride, padding, dilation, activation, bias)


class Conv3d(_Conv):
    """3-D convolution over ``(channels, depth, height, width)`` inputs."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        activation: Activation = None,
        bias: bool = True,
    ) -> None:
        super().__init__(3, filters, kernel_size, stride, padding, dilation, activation, bias)


class _Pool(Layer):
    _torch = {
        ("max", 1): nn.MaxPool1d,
        ("max", 2): nn.MaxPool2d,
        ("max", 3): nn.MaxPool3d,
        ("avg", 1): nn.AvgPool1d,
        ("avg", 2): nn.AvgPool2d,
        ("avg", 3): nn.AvgPool3d,
    }

    def __init__(
        self,
        kind: str,
        rank: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None,
        padding: int | Sequence[int],
        dilation: int | Sequence[int],
        ceil_mode: bool,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kind = kind
        self.rank = rank
        self.kernel_size = _tuple(kernel_size, rank, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else _tuple(stride, rank, "stride", name)
        self.padding = _tuple(padding, rank, "padding", name, allow_zero=True)
        self.dilation = _tuple(dilation, rank, "dilation", name)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        for k, p, d in zip(self.kernel_size, self.padding, self.dilation, strict=True):
            if 2 * p > d * (k - 1) + 1:
                raise ValueError(
                    f"{name}: padding {self.padding} is more than half the (dilated) kernel size {self.kernel_size}; "
                    "PyTorch rejects that. Use padding <= kernel_size // 2."
                )
        self.pooling_layer: nn.Module | None = None  # PyGlow's attribute name

    def _build(self, input_shape):
        name = type(self).__name__
        _check_rank(name, input_shape, self.rank)
        out = _window_out(input_shape[1:], self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        _check_out(name, input_shape, out)
        cls = self._torch[(self.kind, self.rank)]
        extra = {"dilation": self.dilation} if self.kind == "max" else {"count_include_pad": self.count_include_pad}
        self.pooling_layer = cls(self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode, **extra)
        return (input_shape[0], *out)

    def forward(self, x):
        """Pool over the spatial dimensions."""
        self._check_built()
        return self.pooling_layer(x)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_Pool):
    """1-D max pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__("max", 1, kernel_size, stride, padding, dilation, ceil_mode)
        self.args = [kernel_size, stride, padding, dilation]


class MaxPool2d(_Pool):
    """2-D max pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__("max", 2, kernel_size, stride, padding, dilation, ceil_mode)
        self.args = [kernel_size, stride, padding, dilation]


class MaxPool3d(_Pool):
    """3-D max pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__("max", 3, kernel_size, stride, padding, dilation, ceil_mode)
        self.args = [kernel_size, stride, padding, dilation]


class AvgPool1d(_Pool):
    """1-D average pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__("avg", 1, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
        self.args = [kernel_size, stride, padding]


class AvgPool2d(_Pool):
    """2-D average pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__("avg", 2, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
        self.args = [kernel_size, stride, padding]


class AvgPool3d(_Pool):
    """3-D average pooling; ``stride`` defaults to ``kernel_size``."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__("avg", 3, kernel_size, stride, padding, 1, ceil_mode, count_include_pad)
        self.args = [kernel_size, stride, padding]


class _BatchNorm(Layer):
    _param_layer = True
    _torch = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
    _ranks = {1: (1, 2), 2: (3,), 3: (4,)}

    def __init__(self, rank: int, eps: float, momentum) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
            raise ValueError(f"{name}: eps must be a positive number, got {eps!r}.")
        if momentum is not None and (
            isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0 <= momentum <= 1
        ):
            raise ValueError(f"{name}: momentum must be in [0, 1] or None (cumulative average), got {momentum!r}.")
        self.rank = rank
        self.eps = float(eps)
        self.momentum = momentum
        self.args = [eps, momentum]
        self.norm_layer: nn.Module | None = None  # PyGlow's attribute name

    def _build(self, input_shape):
        name = type(self).__name__
        if len(input_shape) not in self._ranks[self.rank]:
            want = "(features,) or (channels, length)" if self.rank == 1 else _DIM_NAMES[self.rank]
            raise ValueError(f"{name} expects an input shape {want} (no batch dimension), got {input_shape}.")
        self.norm_layer = self._torch[self.rank](input_shape[0], eps=self.eps, momentum=self.momentum)
        return input_shape

    def forward(self, x):
        """Normalise with batch statistics in training mode and running statistics in eval mode."""
        self._check_built()
        return self.norm_layer(x)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over ``(features,)`` or ``(channels, length)`` inputs."""

    def __init__(self, eps: float = 1e-05, momentum: float | None = 0.1) -> None:
        super().__init__(1, eps, momentum)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over ``(channels, height, width)`` inputs."""

    def __init__(self, eps: float = 1e-05, momentum: float | None = 0.1) -> None:
        super().__init__(2, eps, momentum)


class BatchNorm3d(_BatchNorm):
    """Batch normalisation over ``(channels, depth, height, width)`` inputs."""

    def __init__(self, eps: float = 1e-05, momentum: float | None = 0.1) -> None:
        super().__init__(3, eps, momentum)
