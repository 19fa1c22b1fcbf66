"""ibwidget: watch a PyTorch network learn, layer by layer, in the information plane."""

from ibwidget import datasets, estimators, kernels, layers, models
from ibwidget.engine import Engine
from ibwidget.models import IBSequential, Sequential
from ibwidget.run import Run, load_run

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "IBSequential",
    "Run",
    "Sequential",
    "datasets",
    "estimators",
    "kernels",
    "layers",
    "load_run",
    "models",
    "__version__",
]
