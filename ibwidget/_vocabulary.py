"""The one vocabulary: every name the layers, the views and the front-end (``js/planeview.js``) share, defined once.

The grid's ``meta`` carries what the front-end needs of it (format, version, palette, dashes, the NaN code), and the
front-end refuses a format version it does not know.
"""

from __future__ import annotations

#: What Y is: the true labels (one-hot, linear kernel) or the network's softmax output (PyGlow's choice).
TARGETS = ("labels", "output")
#: The symbol each target is written with on an axis: I(T;Y) against the labels, I(T;Ŷ) against the output.
TARGET_SYMBOLS = {"labels": "Y", "output": "Ŷ"}

#: Kernels a representation's Gram matrix can be turned into.
KERNELS = ("gaussian", "linear")

#: Sigma rules live in their registry, :mod:`ibwidget.measure.kernels` (``SIGMA_RULES``, ``register_sigma_rule``):
#: each carries its computation, so a rule is added in one place.

#: Layer i is drawn in PALETTE[i % 10] everywhere (category10).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: Run r of a comparison uses LINE_STYLES[r] (cycled); SVG_DASHES gives each its stroke-dasharray.
LINE_STYLES = ("solid", "dashed", "dotted", "dash_dotted")
SVG_DASHES = {"solid": "", "dashed": "6,4", "dotted": "2,3", "dash_dotted": "6,3,2,3"}

#: Where a Gaussian kernel is informative (its mean off-diagonal value): outside it sigma is too small or too large
#: (the saturation gauge, and the sigma fan's marked range).
SATURATION_RANGE = (0.05, 0.95)

#: The precomputed plane grid's format (``meta["format"]``, ``meta["version"]``), read by js/planeview.js.
GRID_FORMAT = "ibwidget.planegrid"
GRID_VERSION = 2
#: uint16 code of a missing value in the one-file report's quantised grid.
NAN_CODE = 65535
