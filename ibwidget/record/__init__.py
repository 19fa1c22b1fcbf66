"""Record: taps (forward hooks on any module), the recorder (probe and snapshots), ``Run`` (a run's storage) and run
files. Imports only :mod:`ibwidget.measure`."""
