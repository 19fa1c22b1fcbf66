"""Resolve ``compile(optimizer=..., loss=..., metrics=...)`` arguments: names (PyGlow's too), objects, classes."""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Hashable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

# PyGlow 0.1.7's Network.compile defaults (learning_rate=0.001, momentum=0.95), kept when not given.
DEFAULT_LR = 0.001
DEFAULT_MOMENTUM = 0.95

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
_OPTIMIZER_NAMES = ("SGD", "Adam", "AdamW", "RMSprop")
_HAS_MOMENTUM = ("sgd", "rmsprop")


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}. Pass e.g. lr=0.01.")
    return float(lr)


def resolve_optimizer(optimizer, params, lr: float | None = None, **kwargs) -> torch.optim.Optimizer:
    """Build an optimizer from a name ('SGD', 'Adam', 'AdamW', 'RMSprop'), an instance, or a class/factory."""
    if "learning_rate" in kwargs:  # PyGlow's keyword
        learning_rate = kwargs.pop("learning_rate")
        if lr is not None and learning_rate is not None and learning_rate != lr:
            raise ValueError(f"Got lr={lr!r} and learning_rate={learning_rate!r}; pass only one of them.")
        lr = lr if lr is not None else learning_rate
    kwargs = {k: v for k, v in kwargs.items() if not (k == "momentum" and v is None)}
    if lr is not None:
        lr = _check_lr(lr)

    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None or kwargs:
            given = ["lr"] * (lr is not None) + sorted(kwargs)
            warnings.warn(
                f"optimizer is an already-built {type(optimizer).__name__}; ignoring {', '.join(given)}. "
                "Set them when you build the optimizer, or pass its name, e.g. optimizer='SGD'.",
                UserWarning,
                stacklevel=2,
            )
        own = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = _param_list(params)
        if params and not any(id(p) in own for p in params):
            raise ValueError(
                f"The {type(optimizer).__name__} passed holds none of this model's parameters, so training would not "
                "update the model. Build it from this model, e.g. torch.optim.SGD(model.parameters(), lr=0.01)."
            )
        return optimizer

    params = _param_list(params)
    if not params:
        raise ValueError("No parameters to optimize: add layers with parameters to the model before compiling.")

    if isinstance(optimizer, str):
        key = optimizer.strip().lower()
        if key not in _OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}. Known: {', '.join(repr(n) for n in _OPTIMIZER_NAMES)} "
                "(case-insensitive), or a torch.optim.Optimizer instance or class."
            )
        cls = _OPTIMIZERS[key]
        kwargs["lr"] = DEFAULT_LR if lr is None else lr
        if key == "sgd":
            kwargs.setdefault("momentum", DEFAULT_MOMENTUM)
        elif key not in _HAS_MOMENTUM and "momentum" in kwargs:
            warnings.warn(
                f"{cls.__name__} has no momentum argument; ignoring momentum={kwargs.pop('momentum')!r} "
                "(PyGlow ignored it too). Use betas=(b1, b2) to change Adam's moment decay.",
                UserWarning,
                stacklevel=2,
            )
        return _construct(cls, params, kwargs, f"optimizer {optimizer!r}")

    if callable(optimizer):  # an Optimizer subclass, or a factory such as functools.partial(torch.optim.SGD, lr=0.1)
        if lr is not None:
            kwargs["lr"] = lr
        name = getattr(optimizer, "__name__", type(optimizer).__name__)
        built = _construct(optimizer, params, kwargs, f"optimizer {name}")
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(
                f"The optimizer factory {name} returned {type(built).__name__}, not a torch.optim.Optimizer; "
                "it must be called as factory(params, **kwargs) and return an optimizer."
            )
        return built

    raise TypeError(
        f"optimizer must be a name ({', '.join(repr(n) for n in _OPTIMIZER_NAMES)}), a torch.optim.Optimizer "
        f"instance, or an optimizer class/factory; got {type(optimizer).__name__} {optimizer!r}."
    )


def _param_list(params) -> list:
    if params is None:
        return []
    if isinstance(params, torch.Tensor):
        raise TypeError("params must be an iterable of tensors (e.g. model.parameters()), not a single tensor.")
    return list(params)


def _construct(factory, params, kwargs, what: str):
    try:
        return factory(params, **kwargs)
    except TypeError as err:
        raise TypeError(f"Could not build {what} with arguments {sorted(kwargs)}: {err}") from err


_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "crossentropy": nn.CrossEntropyLoss,
    "nll": nn.NLLLoss,
    "mse": nn.MSELoss,
}
_LOSS_NAMES = ("cross_entropy", "nll", "mse")


def _loss_key(loss) -> str | None:
    """Canonical key ('crossentropy', 'nll', 'mse') of a loss name or object; None if not one of those."""
    if isinstance(loss, str):
        key = loss.strip().lower().replace("_", "")
        key = key[: -len("loss")] if key.endswith("loss") and key != "loss" else key
        return key if key in _LOSSES else None
    for key, cls in _LOSSES.items():
        if isinstance(loss, cls):
            return key
    functional = {F.cross_entropy: "crossentropy", F.nll_loss: "nll", F.mse_loss: "mse"}
    try:
        return functional.get(loss)
    except TypeError:  # unhashable callable
        return None


def resolve_loss(loss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return a loss ``fn(output, target)`` for 'cross_entropy' (on logits), 'nll', 'mse', or a callable/module."""
    if isinstance(loss, str):
        key = _loss_key(loss)
        if key is None:
            extra = " PyGlow's 'HSIC_loss' belongs to its HSIC network, which ibwidget does not provide." * (
                loss.strip().lower().replace("_", "") == "hsicloss"
            )
            raise ValueError(
                f"Unknown loss {loss!r}. Known: {', '.join(repr(n) for n in _LOSS_NAMES)} (PyGlow's 'NLLLoss' and "
                f"torch names such as 'CrossEntropyLoss' also work), or pass a callable loss(output, target).{extra}"
            )
        return _LOSSES[key]()
    if callable(loss):
        return loss
    raise TypeError(
        f"loss must be a name ({', '.join(repr(n) for n in _LOSS_NAMES)}) or a callable loss(output, target); "
        f"got {type(loss).__name__} {loss!r}."
    )


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of rows whose argmax matches the target; works on logits and probabilities alike."""
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("accuracy needs two tensors: accuracy(output, target).")
    if not output.is_floating_point() and target.is_floating_point() and output.dim() + 1 == target.dim():
        output, target = target, output  # PyGlow's argument order was (y_true, y_pred)
    with torch.no_grad():
        if output.dim() != 2:
            raise ValueError(
                f"accuracy expects class scores of shape (batch, classes), got {tuple(output.shape)}; "
                "for one-output binary models, write a custom metric with the right threshold."
            )
        if target.dim() == 2:  # one-hot or soft targets
            target = target.argmax(dim=1)
        if target.dim() != 1 or target.shape[0] != output.shape[0]:
            raise ValueError(
                f"accuracy: target shape {tuple(target.shape)} does not match output shape {tuple(output.shape)}; "
                "pass class indices of shape (batch,) or one-hot targets of shape (batch, classes)."
            )
        if output.shape[0] == 0:
            raise ValueError("accuracy of an empty batch is undefined.")
        return (output.argmax(dim=1) == target.to(output.device)).float().mean().item()


_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {"accuracy": accuracy}
_METRIC_ALIASES = {"acc": "accuracy"}


def resolve_metrics(metrics) -> dict[str, Callable[[torch.Tensor, torch.Tensor], float]]:
    """Map metric names (['accuracy']) or callables to a dict name -> fn(output, target) -> float."""
    if metrics is None:
        return {}
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        if isinstance(metrics, str) or callable(metrics):
            metrics = [metrics]
        if not isinstance(metrics, Iterable):
            raise TypeError(f"metrics must be a list such as ['accuracy'], got {type(metrics).__name__}.")
        items = []
        for metric in metrics:
            if isinstance(metric, str):
                items.append((metric, metric))
            elif callable(metric) and not isinstance(metric, type):
                items.append((getattr(metric, "__name__", type(metric).__name__), metric))
            else:
                raise TypeError(f"Each metric must be a name such as 'accuracy' or a callable, got {metric!r}.")
    out: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {}
    for name, metric in items:
        if isinstance(metric, str):
            key = metric.strip().lower()
            key = _METRIC_ALIASES.get(key, key)
            if key not in _METRICS:
                raise ValueError(
                    f"Unknown metric {metric!r}. Known: {', '.join(repr(k) for k in _METRICS)} (alias 'acc'), "
                    "or pass a callable metric(output, target) -> float."
                )
            name, metric = (key if name == metric else name), _METRICS[key]
        elif not callable(metric):
            raise TypeError(f"Metric {name!r} must be a name or a callable, got {type(metric).__name__}.")
        if name in out:
            raise ValueError(f"Metric {name!r} is given twice; list each metric once.")
        out[name] = metric
    return out


_warned: set[tuple] = set()
_warned_lock = threading.Lock()


def _warn_once(key: tuple, message: str, stacklevel: int) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)


def check_output_activation(
    last_layer_activation_name: str | None, loss, *, once_key: Hashable = None, stacklevel: int = 3
) -> bool:
    """Return True when the final activation must be skipped before the loss (softmax + cross_entropy); warn once.

    ``loss`` is a loss name or the resolved loss. The warning is issued once per
    ``(activation, loss, once_key)`` for the whole process (pass e.g. ``once_key=id(model)`` for once per model).
    """
    act = "linear" if last_layer_activation_name is None else str(last_layer_activation_name).lower()
    key = _loss_key(loss)
    if act == "softmax" and key == "crossentropy":
        _warn_once(
            (act, key, once_key),
            "The last layer applies softmax and the loss is cross_entropy, which applies log-softmax itself; "
            "softmax twice caps the loss (PyGlow's stalled near 1.46). ibwidget skips the final softmax in the "
            "training forward, so the loss sees logits. To silence this, end the model with a layer without "
            "activation, e.g. Dense(10).",
            stacklevel,
        )
        return True
    if act == "softmax" and key == "nll":
        _warn_once(
            (act, key, once_key),
            "The last layer applies softmax but the nll loss expects log-probabilities; use "
            "activation='log_softmax' (or no activation with loss='cross_entropy').",
            stacklevel,
        )
    return False
