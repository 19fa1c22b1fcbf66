"""PyGlow's ``glow.information_bottleneck.estimator`` path."""

from ibwidget.estimators import HSIC, Estimator

__all__ = ["HSIC", "Estimator"]
