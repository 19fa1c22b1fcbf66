"""Public path of :mod:`ibwidget.pyglow.models`: PyGlow's Keras-like models."""

from ibwidget.pyglow.models import *  # noqa: F403
from ibwidget.pyglow.models import __all__  # noqa: F401
