"""PyGlow's ``glow.information_bottleneck.estimator`` path."""

from ibwidget.pyglow.evaluators import HSIC, Estimator

__all__ = ["HSIC", "Estimator"]
