"""ibwidget: watch a PyTorch network learn, layer by layer, in the information plane."""

from ibwidget import estimators, kernels

__version__ = "0.1.0"

__all__ = ["estimators", "kernels", "__version__"]
