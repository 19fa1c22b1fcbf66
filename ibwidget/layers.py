"""Public path of :mod:`ibwidget.pyglow.layers`: PyGlow's Keras-like layers."""

from ibwidget.pyglow.layers import *  # noqa: F403
from ibwidget.pyglow.layers import __all__  # noqa: F401
