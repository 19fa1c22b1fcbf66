"""Public path of :mod:`ibwidget.pyglow.models` and :mod:`ibwidget.pyglow.hsic`: PyGlow's Keras-like models (``Network``
is PyGlow's name for their base class), its HSIC-bottleneck network, and :func:`seed_model`, the seed tutorial's
network in one call."""

from ibwidget.pyglow.hsic import HSICSequential
from ibwidget.pyglow.models import *  # noqa: F403
from ibwidget.pyglow.models import Sequential
from ibwidget.pyglow.models import __all__ as _models_all
from ibwidget.pyglow.seed import seed_model

#: PyGlow's base class of its models (``glow.models.Network``): here, :class:`Sequential`
Network = Sequential

__all__ = [*_models_all, "HSICSequential", "Network", "seed_model"]
