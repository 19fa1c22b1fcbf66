"""Plane: information-plane trajectories, saturation and the precomputed grid from a run's snapshots, and the
one-file HTML report. Imports :mod:`ibwidget.record` and :mod:`ibwidget.measure`."""

from ibwidget.plane._report import write_html
from ibwidget.record.run import set_report_writer

set_report_writer(write_html)
