"""ibwidget: watch a PyTorch network learn, layer by layer, in the information plane."""

from ibwidget import (
    datasets,
    estimators,
    kernels,
    layers,
    models,
    plane,  # noqa: F401 - registers the report writer behind Run.to_html
)
from ibwidget._version import __version__
from ibwidget.pyglow.models import IBSequential, Sequential
from ibwidget.record.recording import Recording, record
from ibwidget.record.run import Run, load_run
from ibwidget.train.engine import Engine, engine_of

__all__ = [
    "Engine",
    "IBSequential",
    "PlaneView",
    "Recording",
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
    "record",
    "__version__",
]

_WIDGETS = ("Trainer", "RunView", "PlaneView")


def __getattr__(name: str):
    # The widgets import ipywidgets and bqplot: loaded on first use, so headless training and the CLI stay light.
    if name in _WIDGETS:
        from ibwidget import widget

        return getattr(widget, name)
    raise AttributeError(f"module 'ibwidget' has no attribute {name!r}")
