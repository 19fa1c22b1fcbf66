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

#: Per-layer geometric diagnostics recorded with every snapshot (``Run.diagnostics()``), in the order the views list
#: them: the saturated fraction, mean |activation| and weight norm of the layer, and its weights' gradient over the
#: epoch (norm of the mean, norm of the standard deviation, their ratio). See :mod:`ibwidget.record.diagnostics`.
DIAGNOSTICS = ("saturated_fraction", "mean_abs_activation", "weight_norm", "grad_mean", "grad_std", "grad_snr")
#: What the views call each diagnostic.
DIAGNOSTIC_LABELS = {
    "saturated_fraction": "saturated fraction",
    "mean_abs_activation": "mean |activation|",
    "weight_norm": "weight norm",
    "grad_mean": "gradient mean (norm)",
    "grad_std": "gradient std (norm)",
    "grad_snr": "gradient SNR",
}
#: What a layer's output is, for its saturated fraction (declare one with ``nonlinearities={...}``): a linear layer
#: (e.g. the logits) has none to measure.
NONLINEARITIES = ("tanh", "sigmoid", "relu", "linear")

#: The precomputed plane grid's format (``meta["format"]``, ``meta["version"]``), read by js/planeview.js.
GRID_FORMAT = "ibwidget.planegrid"
GRID_VERSION = 2
#: uint16 code of a missing value in the one-file report's quantised grid.
NAN_CODE = 65535
