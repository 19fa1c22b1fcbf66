"""Public path of :mod:`ibwidget.pyglow.models`: PyGlow's Keras-like models, and :func:`seed_model`, the seed
tutorial's network in one call."""

from ibwidget.pyglow.models import *  # noqa: F403
from ibwidget.pyglow.models import __all__ as _models_all
from ibwidget.pyglow.seed import seed_model

__all__ = [*_models_all, "seed_model"]
