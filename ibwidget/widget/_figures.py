"""The bqplot figures: created once with all their marks; later only the marks' and scales' traits change."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from ibwidget._vocabulary import DIAGNOSTIC_LABELS
from ibwidget.widget._style import EPOCH_SCHEME, TRAIN_COLOR, VAL_COLOR, layer_color, run_style

_EMPTY = np.zeros(0, dtype=np.float32)
_TICKS = 6  # about this many ticks on a value axis
FIGURE_CLASSES = {
    "plane": "ibw-plane",
    "dep_x": "ibw-dep-x",
    "dep_y": "ibw-dep-y",
    "loss": "ibw-loss",
    "accuracy": "ibw-acc",
    "diagnostics": "ibw-diagnostics",
}
TITLES = {
    "plane": "Information plane",
    "dep_x": "Dependence on X",
    "dep_y": "Dependence on Y",
    "loss": "Loss",
    "accuracy": "Accuracy",
    "diagnostics": "Diagnostics",
}


@dataclass(frozen=True)
class RunData:
    """What one run shows: epochs (E,), trajectories (E, L, 2) or None, and its Keras-style history."""

    epochs: np.ndarray
    traj: np.ndarray | None
    history: dict


def _f32(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32))


def _finite_pair(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = _f32(x), _f32(y)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep], keep


def _domain(arrays: Sequence[np.ndarray], pad: float = 0.06) -> tuple[float, float] | None:
    arrays = [a[np.isfinite(a)] for a in arrays if a.size]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    lo = float(min(a.min() for a in arrays))
    hi = float(max(a.max() for a in arrays))
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.1 or 1e-3
    return lo - pad * span, hi + pad * span


def nice_ticks(lo: float, hi: float, count: int = _TICKS) -> np.ndarray:
    """Round tick values (multiples of a 1, 2 or 5 x 10^k step) inside [lo, hi], about ``count`` of them.

    The rule of the front-end's ``niceTicks`` (js/planeview.js), so both planes read alike.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        return np.zeros(0)
    if hi == lo:
        return np.array([lo])
    raw = (hi - lo) / max(1, count)
    magnitude = 10.0 ** np.floor(np.log10(raw))
    norm = raw / magnitude  # in [1, 10)
    step = (1 if norm < 1.5 else 2 if norm < 3 else 5 if norm < 7 else 10) * magnitude
    first, last = int(np.ceil(lo / step - 1e-9)), int(np.floor(hi / step + 1e-9))
    return np.array([float(f"{k * step:.12g}") for k in range(first, last + 1)])


def _epoch_ticks(top: float) -> np.ndarray:
    """Whole epochs from 0 to ``top`` at a round step (an epoch axis never repeats a label)."""
    ticks = nice_ticks(0.0, float(max(top, 1)))
    return ticks[ticks == np.round(ticks)]


def _set_epochs(scale, axis: bq.Axis, top: float) -> None:
    """An epoch scale from 0 to ``top``, its axis ticking whole epochs."""
    scale.max = float(top)
    axis.tick_values = _epoch_ticks(top)


def _set_domain(scale, domain, axis: bq.Axis | None = None) -> None:
    """Set ``scale``'s domain; ``axis`` (on that scale) then ticks at round values inside it."""
    if domain is not None:
        scale.min, scale.max = float(domain[0]), float(domain[1])
        if axis is not None:  # (no num_ticks on these axes: bqplot would thin the list, or space ticks evenly)
            axis.tick_values = nice_ticks(scale.min, scale.max)


class Figures:
    """The six figures of a Trainer/RunView and their marks (one Lines + one Scatter per layer per run)."""

    def __init__(self, run_names: Sequence[str], run_layers: Sequence[Sequence[str]], epoch_max: int, compare: bool):
        self.run_names = list(run_names)
        self.run_layers = [list(names) for names in run_layers]
        self.compare = compare
        self.num_layers = max(len(names) for names in self.run_layers)
        self.scales: dict[str, dict[str, bq.Scale]] = {}
        self.axes: dict[str, list[bq.Axis]] = {}
        self.tooltips: list[list[bq.Tooltip]] = []
        self.marks: dict[str, list] = {
            "plane_lines": [],
            "plane_points": [],
            "dep_x": [],
            "dep_y": [],
            "plane_band": [],  # per run, per layer: the chance floor's box at the last epoch
            "dep_x_band": [],  # per run, per layer: the chance floor over the epochs, shaded from 0
            "dep_y_band": [],
            "loss": [],
            "accuracy": [],
            "diagnostics": [],  # per run, per layer: the chosen diagnostic over the epochs
            "legend": [],
        }
        self.figures: dict[str, bq.Figure] = {}
        self._build_plane(epoch_max)
        for key in ("dep_x", "dep_y"):
            self._build_dependence(key, epoch_max)
        for key in ("loss", "accuracy"):
            self._build_history(key, epoch_max)
        self._build_dependence("diagnostics", epoch_max)  # the same per-layer lines over the epochs
        for key, fig in self.figures.items():
            fig.add_class(FIGURE_CLASSES[key])

    # ------------------------------------------------------------------------------------------ building

    def _figure(self, key, marks, axes, width, height, right=20, legend="top-left") -> bq.Figure:
        fig = bq.Figure(
            marks=marks,
            axes=axes,
            title=TITLES[key],
            animation_duration=0,
            fig_margin={"top": 40, "bottom": 48, "left": 72, "right": right},
            legend_location=legend,
            layout=widgets.Layout(width=width, height=height, min_width="260px"),
        )
        self.figures[key] = fig
        return fig

    def _build_plane(self, epoch_max: int) -> None:
        sx, sy = bq.LinearScale(), bq.LinearScale()
        sc = bq.ColorScale(scheme=EPOCH_SCHEME, min=0.0, max=float(max(epoch_max, 1)))
        self.scales["plane"] = {"x": sx, "y": sy, "color": sc}
        ax = bq.Axis(scale=sx, label="dependence on X", tick_format=".3~g", grid_lines="dashed")
        ay = bq.Axis(
            scale=sy,
            side="left",
            label="dependence on Y",
            tick_format=".3~g",
            grid_lines="dashed",
            label_offset="55px",
        )
        ac = bq.ColorAxis(scale=sc, side="right", label="epoch", tick_format=".0f", tick_values=_epoch_ticks(sc.max))
        self.axes["plane"] = [ax, ay, ac]
        lines_all, points_all = [], []
        bands = self._band_marks("plane_band", sx, sy, fill="inside")
        for r, layers in enumerate(self.run_layers):
            style, marker = run_style(r)
            lines, points, tips = [], [], []
            for i, name in enumerate(layers):
                color = layer_color(i)
                lines.append(
                    bq.Lines(
                        x=_EMPTY,
                        y=_EMPTY,
                        scales={"x": sx, "y": sy},
                        colors=[color],
                        line_style=style,
                        stroke_width=2,
                        labels=[name],
                        display_legend=False,
                    )
                )
                tip = bq.Tooltip(
                    fields=["name", "color", "x", "y"],
                    formats=["", ".0f", ".4g", ".4g"],
                    labels=["layer", "epoch", "vs X", "vs Y"],
                )
                tips.append(tip)
                points.append(
                    bq.Scatter(
                        x=_EMPTY,
                        y=_EMPTY,
                        color=_EMPTY,
                        scales={"x": sx, "y": sy, "color": sc},
                        marker=marker,
                        default_size=42,
                        stroke=color,
                        stroke_width=1.5,
                        names=[],
                        names_unique=False,
                        display_names=False,
                        tooltip=tip,
                        labels=[name],
                    )
                )
            self.marks["plane_lines"].append(lines)
            self.marks["plane_points"].append(points)
            self.tooltips.append(tips)
            lines_all += lines
            points_all += points
        self._figure("plane", bands + lines_all + points_all, [ax, ay, ac], "540px", "440px", right=80)

    def _band_marks(self, key: str, sx, sy, fill: str) -> list:
        """Hidden filled Lines, one per (run, layer), for the chance floor (drawn under the trajectories)."""
        out = []
        for layers in self.run_layers:
            marks = [
                bq.Lines(
                    x=_EMPTY,
                    y=_EMPTY,
                    scales={"x": sx, "y": sy},
                    colors=[layer_color(i)],
                    fill=fill,
                    fill_colors=[layer_color(i)],
                    fill_opacities=[0.12],
                    opacities=[0.35],
                    stroke_width=1,
                    visible=False,
                    display_legend=False,
                )
                for i in range(len(layers))
            ]
            self.marks[key].append(marks)
            out += marks
        return out

    def _build_dependence(self, key: str, epoch_max: int) -> None:
        sx, sy = bq.LinearScale(min=0.0, max=float(max(epoch_max, 1))), bq.LinearScale()
        self.scales[key] = {"x": sx, "y": sy}
        ax = bq.Axis(scale=sx, label="epoch", tick_format=".0f", tick_values=_epoch_ticks(sx.max))
        ay = bq.Axis(scale=sy, side="left", label=TITLES[key], tick_format=".3~g", label_offset="55px")
        self.axes[key] = [ax, ay]
        all_marks = self._band_marks(f"{key}_band", sx, sy, fill="bottom") if key != "diagnostics" else []
        for r, layers in enumerate(self.run_layers):
            style, marker = run_style(r)
            marks = [
                bq.Lines(
                    x=_EMPTY,
                    y=_EMPTY,
                    scales={"x": sx, "y": sy},
                    colors=[layer_color(i)],
                    line_style=style,
                    marker=marker,
                    marker_size=18,
                    stroke_width=2,
                    labels=[name],
                    display_legend=False,
                )
                for i, name in enumerate(layers)
            ]
            self.marks[key].append(marks)
            all_marks += marks
        if self.compare and key != "diagnostics":  # one legend entry per run, in its line style
            for r, name in enumerate(self.run_names):
                style, marker = run_style(r)
                entry = bq.Lines(
                    x=_EMPTY,
                    y=_EMPTY,
                    scales={"x": sx, "y": sy},
                    colors=["#333333"],
                    line_style=style,
                    marker=marker,
                    marker_size=18,
                    labels=[name],
                    display_legend=True,
                )
                self.marks["legend"].append(entry)
                all_marks.append(entry)
        self._figure(key, all_marks, [ax, ay], "400px", "300px")

    def _build_history(self, key: str, epoch_max: int) -> None:
        sx, sy = bq.LinearScale(min=0.0, max=float(max(epoch_max, 1))), bq.LinearScale()
        self.scales[key] = {"x": sx, "y": sy}
        ax = bq.Axis(scale=sx, label="epoch", tick_format=".0f", tick_values=_epoch_ticks(sx.max))
        ay = bq.Axis(scale=sy, side="left", label=key, tick_format=".3~g", label_offset="50px")
        self.axes[key] = [ax, ay]
        all_marks = []
        for r, name in enumerate(self.run_names):
            style, marker = run_style(r)
            prefix = f"{name} · " if self.compare else ""
            pair = {
                split: bq.Lines(
                    x=_EMPTY,
                    y=_EMPTY,
                    scales={"x": sx, "y": sy},
                    colors=[color],
                    line_style=style,
                    marker=marker,
                    marker_size=14,
                    stroke_width=2,
                    labels=[prefix + split],
                    display_legend=True,
                )
                for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR))
            }
            self.marks[key].append(pair)
            all_marks += list(pair.values())
        self._figure(
            key, all_marks, [ax, ay], "400px", "300px", legend="top-right" if key == "loss" else "bottom-right"
        )

    # ------------------------------------------------------------------------------------------ updating

    def all_widgets(self) -> list:
        """Every bqplot widget here (figures, marks, scales, axes, tooltips)."""
        out = list(self.figures.values())
        for fig in self.figures.values():
            out += list(fig.marks) + list(fig.axes)
        for scales in self.scales.values():
            out += list(scales.values())
        out += [t for tips in self.tooltips for t in tips]
        return out

    def set_labels(self, x_label: str, y_label: str) -> None:
        ax, ay, _ = self.axes["plane"]
        ax.label, ay.label = x_label, y_label
        self.axes["dep_x"][1].label = x_label
        self.axes["dep_y"][1].label = y_label
        for tips in self.tooltips:
            for tip in tips:
                tip.labels = ["layer", "epoch", x_label, y_label]

    def update_trajectories(
        self,
        data: Sequence[RunData | None],
        visible: Sequence[bool],
        epoch_max: int,
        bands: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Set every layer's marks from ``data`` (one entry per run) and fit the scales to the visible layers (and
        their chance floor, ``bands``, per run (epochs, layers, 2) or None: hidden)."""
        xs, ys, epochs_seen = [], [], [0.0]
        for r, d in enumerate(data):
            if d is None or d.traj is None:
                continue
            epochs = _f32(d.epochs)
            epochs_seen.append(float(epochs.max()) if epochs.size else 0.0)
            for i, name in enumerate(self.run_layers[r]):
                show = bool(visible[i]) if i < len(visible) else True
                x, y, keep = _finite_pair(d.traj[:, i, 0], d.traj[:, i, 1])
                ep = epochs[keep]
                line, points = self.marks["plane_lines"][r][i], self.marks["plane_points"][r][i]
                label = f"{self.run_names[r]} · {name}" if self.compare else name
                line.x, line.y, line.visible = x, y, show
                points.x, points.y, points.color, points.visible = x, y, ep, show
                if len(points.names) != len(x):
                    points.names = [label] * len(x)
                ex, vx, _ = _finite_pair(epochs, d.traj[:, i, 0])
                ey, vy, _ = _finite_pair(epochs, d.traj[:, i, 1])
                dx, dy = self.marks["dep_x"][r][i], self.marks["dep_y"][r][i]
                dx.x, dx.y, dx.visible = ex, vx, show
                dy.x, dy.y, dy.visible = ey, vy, show
                if show:
                    xs.append(x)
                    ys.append(y)
                band = None if bands is None or r >= len(bands) else bands[r]
                if show and band is not None and band.shape[0]:
                    xs.append(_f32(band[-1:, i, 0]))  # the plane shows the last epoch's box
                    ys.append(_f32(band[-1:, i, 1]))
        top = float(max(epoch_max, max(epochs_seen), 1))
        plane, (ax, ay, ac) = self.scales["plane"], self.axes["plane"]
        _set_domain(plane["x"], _domain(xs), ax)
        _set_domain(plane["y"], _domain(ys), ay)
        _set_epochs(plane["color"], ac, top)
        for key, c, values in (("dep_x", 0, xs), ("dep_y", 1, ys)):
            _set_epochs(self.scales[key]["x"], self.axes[key][0], top)
            floors = [
                _f32(b[:, i, c]) for b in bands or [] for i in range(b.shape[1]) if i < len(visible) and visible[i]
            ]
            _set_domain(self.scales[key]["y"], _domain(values + floors), self.axes[key][1])
        self._update_bands(bands, data, visible)

    def _update_bands(self, bands: Sequence[np.ndarray] | None, data: Sequence[RunData | None], visible) -> None:
        """The chance floor: shaded from 0 under each dependence curve, and on the plane the box from the axes'
        lower corner to the last epoch's (x, y)."""
        plane = self.scales["plane"]
        for r, layers in enumerate(self.run_layers):
            band = None if bands is None or r >= len(bands) else bands[r]
            d = data[r] if r < len(data) else None
            for i in range(len(layers)):
                box = self.marks["plane_band"][r][i]
                curves = self.marks["dep_x_band"][r][i], self.marks["dep_y_band"][r][i]
                show = band is not None and d is not None and (bool(visible[i]) if i < len(visible) else True)
                if not show or band.shape[0] == 0:
                    for mark in (box, *curves):
                        mark.visible = False
                    continue
                epochs = _f32(d.epochs)[: band.shape[0]]
                for c, curve in enumerate(curves):
                    e, v, _ = _finite_pair(epochs, band[: len(epochs), i, c])
                    curve.x, curve.y, curve.visible = e, v, bool(len(e))
                bx, by = (float(band[len(epochs) - 1, i, c]) for c in (0, 1))
                x0 = plane["x"].min if plane["x"].min is not None else 0.0
                y0 = plane["y"].min if plane["y"].min is not None else 0.0
                ok = math.isfinite(bx) and math.isfinite(by)
                box.x = _f32([x0, bx, bx, x0, x0]) if ok else _EMPTY
                box.y = _f32([y0, y0, by, by, y0]) if ok else _EMPTY
                box.visible = ok

    def update_history(self, data: Sequence[RunData | None], epoch_max: int) -> None:
        """Loss and accuracy, train and val, per run (history index k is epoch k + 1)."""
        top = float(max(epoch_max, 1))
        for key, metric in (("loss", "loss"), ("accuracy", "accuracy")):
            values = []
            for r, d in enumerate(data):
                if d is None:
                    continue
                for split, name in (("train", metric), ("val", f"val_{metric}")):
                    series = d.history.get(name) or []
                    x, y, _ = _finite_pair(np.arange(1, len(series) + 1), series)
                    mark = self.marks[key][r][split]
                    mark.x, mark.y = x, y
                    values.append(y)
                    top = max(top, float(len(series)))
            _set_epochs(self.scales[key]["x"], self.axes[key][0], top)
            _set_domain(self.scales[key]["y"], _domain(values), self.axes[key][1])

    def update_diagnostics(
        self, runs: Sequence[tuple[Sequence[int], dict]], name: str, visible: Sequence[bool], epoch_max: int
    ) -> None:
        """The Diagnostics figure: per run ``(epochs, run.diagnostics())``, diagnostic ``name`` of each layer over
        the epochs; the title names the visible layers that have none (unknown nonlinearity, no weights...)."""
        values, missing = [], []
        for r, (epochs, diagnostics) in enumerate(runs):
            series = diagnostics.get(name)
            for i, layer in enumerate(self.run_layers[r]):
                show = bool(visible[i]) if i < len(visible) else True
                column = series[:, i] if series is not None and series.shape[0] else np.zeros(0)
                e, v, _ = _finite_pair(np.asarray(epochs, dtype=np.float32)[: len(column)], column)
                mark = self.marks["diagnostics"][r][i]
                mark.x, mark.y, mark.visible = e, v, show
                if show and len(v):
                    values.append(v)
                elif show and len(column):
                    missing.append(layer)
        label = DIAGNOSTIC_LABELS.get(name, name)
        self.axes["diagnostics"][1].label = label
        none = f" · none for {', '.join(dict.fromkeys(missing))}" if missing else ""
        self.figures["diagnostics"].title = f"{TITLES['diagnostics']}: {label}{none}"
        _set_epochs(self.scales["diagnostics"]["x"], self.axes["diagnostics"][0], float(max(epoch_max, 1)))
        _set_domain(self.scales["diagnostics"]["y"], _domain(values), self.axes["diagnostics"][1])

    @contextlib.contextmanager
    def hold(self):
        """Batch every trait change of the figures into one message per widget."""
        with contextlib.ExitStack() as stack:
            for w in self.all_widgets():
                stack.enter_context(w.hold_sync())
            yield
