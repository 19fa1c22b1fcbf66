"""PyGlow's module path for evaluators (``glow.information_bottleneck``), kept so PyGlow notebooks run unchanged."""

from ibwidget.pyglow.evaluators import HSIC, NHSIC, Estimator

__all__ = ["HSIC", "NHSIC", "Estimator"]
