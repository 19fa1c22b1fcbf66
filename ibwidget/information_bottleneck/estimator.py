"""PyGlow's ``glow.information_bottleneck.estimator`` path."""

from ibwidget.pyglow.evaluators import HSIC, NHSIC, Estimator

__all__ = ["HSIC", "NHSIC", "Estimator"]
