"""Train: the training loop in a background thread (pause, resume, stop, callbacks) and the resolution of optimizers,
losses and metrics. Imports :mod:`ibwidget.record` and :mod:`ibwidget.measure`."""
