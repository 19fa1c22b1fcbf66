"""The controls (layer toggles, estimator, sigma and its rule, target) and the plain view state they edit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ipywidgets as widgets

from ibwidget._vocabulary import DIAGNOSTIC_LABELS
from ibwidget.measure import estimators as _estimators
from ibwidget.measure import kernels as _kernels
from ibwidget.record.run import TARGETS
from ibwidget.widget._style import layer_color

SIGMA_MIN, SIGMA_MAX = 1e-2, 1e3


@dataclass(frozen=True)
class View:
    """An immutable copy of what the controls ask for."""

    estimator: str
    sigma: float
    sigma_rule: str
    target: str
    visible: tuple[bool, ...]
    band: bool = False  #: the chance floor shown
    diagnostic: str = "saturated_fraction"  #: what the Diagnostics figure shows (a name of DIAGNOSTICS)

    @property
    def params(self) -> tuple:
        """The arguments of ``Run.trajectories`` (the layer toggles do not change them)."""
        return (self.estimator, self.sigma, self.sigma_rule, self.target)


def estimator_options(first: Sequence[str]) -> list[str]:
    """``first`` (validated against the registry), then every other registered estimator."""
    if isinstance(first, str):
        first = [first]
    names = [_estimators.get(n).name for n in first]
    return list(dict.fromkeys(names + _estimators.names()))


class Controls:
    """The control widgets; their observers only edit the :class:`View` under a lock and call ``on_change``."""

    def __init__(
        self,
        layer_labels: Sequence[str],
        layer_tips: Sequence[str],
        estimators: Sequence[str],
        sigma: float,
        sigma_rule: str,
        target: str,
        on_change: Callable[[], None],
    ):
        options = estimator_options(estimators)
        if sigma_rule not in _kernels.SIGMA_RULES:
            raise ValueError(f"unknown sigma rule {sigma_rule!r}; choose one of {', '.join(_kernels.SIGMA_RULES)}.")
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}.")
        sigma = float(sigma)
        if not SIGMA_MIN <= sigma <= SIGMA_MAX:
            raise ValueError(f"sigma must be in [{SIGMA_MIN:g}, {SIGMA_MAX:g}] for the slider, got {sigma!r}.")
        self._on_change = on_change
        self._lock = threading.Lock()
        self.estimator = widgets.Dropdown(
            options=options, value=options[0], description="estimator", layout=widgets.Layout(width="250px")
        )
        self.estimator.add_class("ibw-estimator")
        self.sigma = widgets.FloatLogSlider(
            value=sigma,
            base=10,
            min=-2,
            max=3,
            step=0.001,
            description="σ",
            readout_format=".4g",
            continuous_update=False,  # True makes the front-end echo back the value snapped to the step
            layout=widgets.Layout(width="300px"),
        )
        self.sigma.add_class("ibw-sigma")
        self.sigma_rule = widgets.Dropdown(
            options=list(_kernels.SIGMA_RULES),
            value=sigma_rule,
            description="σ rule",
            tooltip="; ".join(f"{name}: {text}" for name, text in _kernels.SIGMA_RULES.items()),
            layout=widgets.Layout(width="200px"),
        )
        self.sigma_rule.add_class("ibw-sigma-rule")
        self.target = widgets.ToggleButtons(
            options=list(TARGETS),
            value=target,
            description="target Y",
            tooltips=["true labels, one-hot, linear kernel", "the network's softmax output (PyGlow)"],
            style={"button_width": "70px"},
        )
        self.target.add_class("ibw-target")
        self.band = widgets.ToggleButton(
            value=False,
            description="chance floor",
            tooltip="shade each layer's 95% quantile under permuted inputs and labels (run.null_band): below it, "
            "chance alone",
            layout=widgets.Layout(width="auto"),
        )
        self.band.add_class("ibw-band")
        self.diagnostic = widgets.Dropdown(
            options=[(label, name) for name, label in DIAGNOSTIC_LABELS.items()],
            value="saturated_fraction",
            description="diagnostic",
            tooltip="what the Diagnostics figure shows for each layer, per recorded epoch (run.diagnostics())",
            layout=widgets.Layout(width="270px"),
        )
        self.diagnostic.add_class("ibw-diagnostic")
        self.layers: list[widgets.ToggleButton] = []
        for i, (label, tip) in enumerate(zip(layer_labels, layer_tips, strict=True)):
            color = layer_color(i)
            button = widgets.ToggleButton(
                value=True,
                description=label,
                tooltip=tip,
                layout=widgets.Layout(border=f"2px solid {color}", width="auto", min_width="70px"),
                style={"text_color": color, "font_weight": "bold"},
            )
            button.add_class("ibw-layer")
            button.add_class(f"ibw-layer-{i}")
            self.layers.append(button)
        self._view = View(
            self.estimator.value, float(self.sigma.value), sigma_rule, target, tuple(True for _ in self.layers), False
        )
        self.estimator.observe(self._changed, names="value")
        self.sigma.observe(self._changed, names="value")
        self.sigma_rule.observe(self._changed, names="value")
        self.target.observe(self._changed, names="value")
        self.band.observe(self._changed, names="value")
        self.diagnostic.observe(self._changed, names="value")
        for button in self.layers:
            button.observe(self._changed, names="value")
        self.box = widgets.VBox(
            [
                widgets.HBox(self.layers, layout=widgets.Layout(flex_flow="row wrap")),
                widgets.HBox(
                    [self.estimator, self.sigma, self.sigma_rule, self.target, self.band, self.diagnostic],
                    layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
                ),
            ]
        )
        self.box.add_class("ibw-controls")

    def _changed(self, change) -> None:
        """UI callback (any kernel thread): copy the widgets' values into the view state and ask for a redraw."""
        with self._lock:
            self._view = View(
                str(self.estimator.value),
                float(self.sigma.value),
                str(self.sigma_rule.value),
                str(self.target.value),
                tuple(bool(b.value) for b in self.layers),
                bool(self.band.value),
                str(self.diagnostic.value),
            )
        self._on_change()

    def view(self) -> View:
        with self._lock:
            return self._view

    def sigma_enabled(self, view: View) -> bool:
        return _estimators.get(view.estimator).uses_sigma and not _kernels.sigma_rule(view.sigma_rule).from_data

    def __getitem__(self, name: str):
        return getattr(self, name)

    def as_dict(self) -> dict:
        return {
            "estimator": self.estimator,
            "sigma": self.sigma,
            "sigma_rule": self.sigma_rule,
            "target": self.target,
            "band": self.band,
            "diagnostic": self.diagnostic,
            "layers": list(self.layers),
        }
