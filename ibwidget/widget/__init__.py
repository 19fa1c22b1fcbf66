"""Jupyter widgets: :class:`Trainer` (train and watch live), :class:`RunView` (compare saved runs) and
:class:`PlaneView` (the information plane with its toggles and epoch player in the browser)."""

from ibwidget.widget.planeview import PlaneView
from ibwidget.widget.runview import RunView
from ibwidget.widget.trainer import Trainer

__all__ = ["Trainer", "RunView", "PlaneView"]
