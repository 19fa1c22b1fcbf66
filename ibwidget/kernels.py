"""Public path of :mod:`ibwidget.measure.kernels`: Gram matrices, distances, kernels and sigma rules."""

from ibwidget.measure.kernels import *  # noqa: F403
from ibwidget.measure.kernels import __all__  # noqa: F401
