"""Jupyter widgets: :class:`Trainer` (train and watch live) and :class:`RunView` (compare saved runs)."""

from ibwidget.widget.runview import RunView
from ibwidget.widget.trainer import Trainer

__all__ = ["Trainer", "RunView"]
