"""PyGlow's module path for evaluators (``glow.information_bottleneck``), kept so PyGlow notebooks run unchanged."""

from ibwidget.pyglow.evaluators import HSIC, Estimator

__all__ = ["HSIC", "Estimator"]
