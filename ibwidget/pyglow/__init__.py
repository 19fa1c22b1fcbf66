"""PyGlow's API on ibwidget: Keras-like layers and models (``ibwidget.layers``, ``ibwidget.models``) and PyGlow's
evaluators (``ibwidget.estimators.HSIC``). Imports :mod:`ibwidget.train`, :mod:`ibwidget.record` and
:mod:`ibwidget.measure`."""
