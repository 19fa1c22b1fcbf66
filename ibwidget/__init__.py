"""ibwidget: watch a PyTorch network learn, layer by layer, in the information plane."""

from ibwidget import datasets, estimators, kernels, layers, models
from ibwidget.engine import Engine, engine_of
from ibwidget.models import IBSequential, Sequential
from ibwidget.run import Run, load_run

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "IBSequential",
    "PlaneView",
    "Run",
    "RunView",
    "Sequential",
    "Trainer",
    "datasets",
    "engine_of",
    "estimators",
    "kernels",
    "layers",
    "load_run",
    "models",
    "__version__",
]

_WIDGETS = ("Trainer", "RunView", "PlaneView")


def __getattr__(name: str):
    # The widgets import ipywidgets and bqplot: loaded on first use, so headless training and the CLI stay light.
    if name in _WIDGETS:
        from ibwidget import widget

        return getattr(widget, name)
    raise AttributeError(f"module 'ibwidget' has no attribute {name!r}")
