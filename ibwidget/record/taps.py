"""Capture the outputs of named submodules of any ``nn.Module`` with forward hooks.

Hooks are resources: ``Tap`` keeps every handle and removes them all on exit, even when the forward raised.
Captured outputs are detached, so tapping never changes the model's outputs or gradients.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ibwidget.record._distributed import FSDP1_PREFIX, clean_name

__all__ = ["Tap", "default_layer_names", "resolve_layers"]

_Reduce = Callable[[str, torch.Tensor], torch.Tensor]


def _is_unit(module: nn.Module) -> bool:
    """A module tapped as a whole: a leaf, or one that asks to be treated as a leaf (ibwidget layers)."""
    return getattr(module, "_tap_as_leaf", False) or next(module.children(), None) is None


def _units(model: nn.Module):
    """Yield ``(name, module)`` for tappable units, in registration order, never descending into a unit."""
    if _is_unit(model):
        yield "", model
        return
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        if _is_unit(module):
            skip.append(name + ".")
            yield name, module


def default_layer_names(model: nn.Module) -> list[str]:
    """Names of every leaf module with parameters, in registration order (as in ``model.named_modules()``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return [name for name, module in _units(model) if any(True for _ in module.parameters())]


def resolve_layers(model: nn.Module, names: Iterable[str | nn.Module] | None = None) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` pairs for ``names`` (strings or submodules); None means the default layers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if names is None:
        names = default_layer_names(model)
        if not names:
            raise ValueError(
                f"{type(model).__name__} has no submodule with parameters to tap; pass layer names explicitly, "
                f"chosen from: {_available(model)}."
            )
    elif isinstance(names, str | nn.Module):
        names = [names]
    modules = dict(model.named_modules())
    by_id = {id(m): n for n, m in modules.items()}
    wrapped = {clean_name(n): n for n in modules if FSDP1_PREFIX in n}  # names as written, under the FSDP wrapper
    out: list[tuple[str, nn.Module]] = []
    seen: set[str] = set()
    for name in names:
        if isinstance(name, nn.Module):
            if id(name) not in by_id:
                raise ValueError(f"The {type(name).__name__} module passed in layers is not a submodule of the model.")
            name = by_id[id(name)]
        elif not isinstance(name, str):
            raise TypeError(f"Layer names must be strings (as in model.named_modules()), got {name!r}.")
        name = name if name in modules else wrapped.get(name, name)
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown layer {name!r}.{hint} Available layers: {_available(model)}.")
        if name in seen:
            raise ValueError(f"Layer {name!r} is listed twice; list each layer once.")
        seen.add(name)
        out.append((name, modules[name]))
    return out


def _available(model: nn.Module, limit: int = 40) -> str:
    names = [n for n, _ in model.named_modules() if n]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "") if names else "(none)"


def _first_tensor(output) -> torch.Tensor | None:
    """The module output itself, or the first tensor of a tuple/list output (e.g. an LSTM's)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


class Tap:
    """Context manager that records the detached outputs of the named submodules during forward passes.

    ``with Tap(model, ["features.0", "fc1"]) as tap: model(x)`` leaves ``tap.outputs`` = {name: tensor}.
    A module called several times in one forward keeps its last output. ``reduce(name, tensor)`` transforms
    each capture on the fly (under ``no_grad``), e.g. to a Gram matrix, so large activations are not kept.
    """

    def __init__(
        self, model: nn.Module, names: Iterable[str | nn.Module] | None = None, reduce: _Reduce | None = None
    ) -> None:
        if reduce is not None and not callable(reduce):
            raise TypeError(f"reduce must be a callable reduce(name, tensor) -> tensor, got {type(reduce).__name__}.")
        self.model = model
        self.layers: list[tuple[str, nn.Module]] = resolve_layers(model, names)
        self.reduce = reduce
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    @property
    def names(self) -> list[str]:
        """The tapped layer names, in the order given."""
        return [name for name, _ in self.layers]

    @property
    def active(self) -> bool:
        """Whether the hooks are currently installed."""
        return bool(self._handles)

    def _hook(self, name: str):
        def hook(module, args, output):
            tensor = _first_tensor(output)
            if tensor is None:
                raise TypeError(
                    f"Tap: layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, which holds "
                    "no tensor; tap a submodule that returns a tensor instead."
                )
            tensor = tensor.detach()
            if self.reduce is not None:
                with torch.no_grad():
                    tensor = self.reduce(name, tensor)
            self.outputs[name] = tensor

        return hook

    def __enter__(self) -> Tap:
        if self._handles:
            raise RuntimeError("This Tap is already active; a Tap cannot be entered twice at once.")
        self.outputs = {}
        try:
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this Tap installed (safe to call more than once)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def clear(self) -> None:
        """Forget the captured outputs (the hooks stay installed)."""
        self.outputs = {}

    def __repr__(self) -> str:
        return f"Tap({type(self.model).__name__}, names={self.names!r}, active={self.active})"
