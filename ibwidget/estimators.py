"""Public path of the estimators (:mod:`ibwidget.measure.estimators`) and PyGlow's evaluator classes
(:mod:`ibwidget.pyglow.evaluators`)."""

from ibwidget.measure.estimators import *  # noqa: F403
from ibwidget.measure.estimators import __all__ as _functions
from ibwidget.pyglow.evaluators import HSIC, NHSIC, Estimator

__all__ = [*_functions, "Estimator", "HSIC", "NHSIC"]
