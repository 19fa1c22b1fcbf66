"""What Trainer and RunView share: controls, figures, the UI thread, redraws from stored snapshots, export."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence

import ipywidgets as widgets
import numpy as np

from ibwidget._vocabulary import SATURATION_RANGE
from ibwidget.measure import estimators as _estimators
from ibwidget.widget._applier import _Applier, _Batch
from ibwidget.widget._controls import Controls, View
from ibwidget.widget._figures import Figures, RunData
from ibwidget.widget._viewmodel import OnDemand, PlaneModel, band_of, fast_builder
from ibwidget.widget.planeview import PlaneView, live_plane_view

FIGURE_NAMES = ("plane", "dep_x", "dep_y", "loss", "accuracy", "diagnostics")
#: between two figures' save requests: Chromium dropped one of six SVG downloads started together (bqplot clicks a
#: data-URL link per figure), now and then
_SAVE_SPACING_S = 0.2
_EXPORTS = {"trainer": [("PNG", "png"), ("SVG", "svg"), ("run file", "run")], "view": [("PNG", "png"), ("SVG", "svg")]}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "ibwidget"


def _label(cls: str, value: str = "", **layout) -> widgets.Label:
    label = widgets.Label(value, layout=widgets.Layout(**layout) if layout else widgets.Layout())
    label.add_class(cls)
    return label


def _layer_labels(runs) -> tuple[list[str], list[str]]:
    count = max(len(run.layer_names) for run in runs)
    labels, tips = [], []
    for i in range(count):
        names = list(dict.fromkeys(run.layer_names[i] for run in runs if i < len(run.layer_names)))
        labels.append(" / ".join(names))
        tips.append(f"layer {i}: {' / '.join(names)} (show or hide in every figure)")
    return labels, tips


def _history(run) -> dict[str, list[float]]:
    """A copy of ``run.history`` (the training thread appends to it; dict and list copies are atomic)."""
    return {k: list(v) for k, v in dict(run.history).items()}


def _walk(root: widgets.Widget) -> list[widgets.Widget]:
    """Every widget reachable from ``root`` through synced traits (children, marks, scales, layout, ...)."""
    seen: dict[int, widgets.Widget] = {}
    stack = [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for name in w.keys:
            value = getattr(w, name, None)
            if isinstance(value, widgets.Widget):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(v for v in value if isinstance(v, widgets.Widget))
            elif isinstance(value, dict):
                stack.extend(v for v in value.values() if isinstance(v, widgets.Widget))
    return list(seen.values())


def _figure_rows(figs: dict) -> list[widgets.Widget]:
    """The figures laid out: the plane beside the two dependence plots and the diagnostics, then loss and
    accuracy."""
    wrap = widgets.Layout(flex_flow="row wrap")
    return [
        widgets.HBox([figs["plane"], widgets.VBox([figs["dep_x"], figs["dep_y"]]), figs["diagnostics"]], layout=wrap),
        widgets.HBox([figs["loss"], figs["accuracy"]], layout=widgets.Layout(flex_flow="row wrap")),
    ]


class _Pending(Exception):
    """A view off the grid whose exact values are being computed, with no grid value near it to show meanwhile."""


class _RunsBox(widgets.VBox):
    """Base of :class:`Trainer` and :class:`RunView` (private)."""

    _export_kind = "view"

    def _setup(
        self,
        runs: Sequence,
        display_names: Sequence[str],
        estimators,
        sigma: float,
        sigma_rule: str,
        target: str,
        epoch_max: int,
        compare: bool,
        live: bool = False,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """Build every widget (main thread). The UI thread is started by the subclass with ``_applier.start()``."""
        self._runs = list(runs)
        self._display_names = list(display_names)
        self._epoch_max = int(epoch_max)
        self._sat_cache: dict = {}
        self._sat_key: tuple | None = None
        self._sat_next = 0.0
        self._good_params: tuple | None = None
        self._drawn: tuple | None = None
        self._notice_kind = ""
        self.last_error = ""
        self._applier = _Applier(self._apply, self._show_error)
        self._model = PlaneModel(
            self._runs,
            fast_builder(estimators, sigma, sigma_rule, live=live),
            {"estimator": None, "sigma": sigma, "rule": sigma_rule, "target": target},
            on_ready=None if live else self._request_redraw,  # saved runs: the grid fills in behind the first view
            busy=busy,
        )
        self._model.listen(self._request_redraw)  # slots filled in: the view may be one of them
        self._on_demand = OnDemand(self._request_redraw)
        self._bands = OnDemand(self._request_redraw, compute=band_of)  # the chance floor, when it is shown
        self._grid_listeners: list[Callable[[bool], None]] = []  # called from this UI thread after each catch-up
        labels, tips = _layer_labels(self._runs)
        self._controls = Controls(labels, tips, estimators, sigma, sigma_rule, target, self._request_redraw)
        self._figures = Figures(self._display_names, [r.layer_names for r in self._runs], self._epoch_max, compare)
        self.notice = _label("ibw-notice", "", min_width="200px")
        self.saturation = _label("ibw-saturation", "", min_width="200px")
        self.export_format = widgets.Dropdown(
            options=_EXPORTS[self._export_kind], value="png", layout=widgets.Layout(width="110px")
        )
        self.export_format.add_class("ibw-export-format")
        self.export_button = widgets.Button(description="Export", icon="download", tooltip="save figures / run file")
        self.export_button.add_class("ibw-export")
        self.export_button.on_click(lambda _: self._applier.put("export", self.export_format.value))
        self._estimators = estimators
        self._figure_box = widgets.VBox(_figure_rows(self._figures.figures))
        self._plane_view: PlaneView | None = None

    def _body(self, plane_view: bool) -> widgets.Widget:
        """The figures; with ``plane_view``, in a tab beside a second one, "Player": the kernel-free PlaneView of
        the same grid (epoch player, σ fan, chance floor, layer CKA), sent each catch-up's new epochs from this UI
        thread."""
        if not plane_view:
            return self._figure_box
        view = self._plane_view = live_plane_view(self._model, wake=lambda: self._applier.put("planeview"))
        self._grid_listeners.append(lambda final: view.refresh(full=final))
        tabs = widgets.Tab(children=[self._figure_box, view], titles=["Figures", "Player"])
        tabs.add_class("ibw-tabs")
        return tabs

    # ------------------------------------------------------------------------------------------ public

    @property
    def controls(self) -> Controls:
        """The control widgets: ``estimator``, ``sigma``, ``sigma_rule``, ``target``, ``layers`` (a list)."""
        return self._controls

    @property
    def figures(self) -> dict:
        """The bqplot figures by name: plane, dep_x, dep_y, loss, accuracy, diagnostics."""
        return dict(self._figures.figures)

    @property
    def marks(self) -> dict:
        """Marks by figure: ``plane_lines``/``plane_points``/``dep_x``/``dep_y`` [run][layer]; ``loss``/``accuracy``
        [run]["train"|"val"]."""
        return self._figures.marks

    @property
    def runs(self) -> list:
        return list(self._runs)

    @property
    def plane_view(self) -> PlaneView | None:
        """The :class:`~ibwidget.PlaneView` in the "Player" tab (None with ``plane_view=False``)."""
        return self._plane_view

    def sync(self, timeout: float | None = 10.0) -> None:
        """Block until every pending update (the widths shown, training events, control changes, values computed
        on demand) is applied to the widgets. The other widths of the grid fill in behind (for a Trainer, once
        training pauses or ends); :meth:`wait_filled` waits for them too."""
        self._applier.sync(timeout)  # control changes applied: the figures say which widths they show
        if not self._model.wait_idle(timeout, viewed_only=True):
            raise TimeoutError(f"the view's grid was not computed within {timeout} s.")
        self._applier.sync(timeout)  # ... and are redrawn with them
        for worker, what in ((self._on_demand, "values off the grid"), (self._bands, "chance floor")):
            if not worker.wait_idle(timeout):
                raise TimeoutError(f"the view's {what} did not arrive within {timeout} s.")
        self._applier.sync(timeout)

    def wait_filled(self, timeout: float | None = 60.0) -> bool:
        """Block until every width of the grid is computed and applied (widths fill in behind the first view; a
        Trainer's, once training pauses or ends); False on timeout, or while a training keeps them waiting."""
        if not self._model.wait_idle(timeout):
            return False
        self._applier.put("redraw")  # the UI thread sends the filled grid (a Player tab) and redraws
        self._applier.sync(timeout)
        return all(self._model.slot_filled())

    def save_png(self, path=None) -> list[str]:
        """Ask the front-end (bqplot ``Figure.save_png``) to save each figure; returns the file names.

        ``path``: a folder (each figure as ``<folder>/<figure>.png``) or a prefix (``<prefix>-<figure>.png``).
        The browser writes the files (into its downloads folder); nothing happens without a live front-end.
        """
        return self._save("png", path)

    def save_svg(self, path=None) -> list[str]:
        """Like :meth:`save_png`, as SVG (bqplot ``Figure.save_svg``)."""
        return self._save("svg", path)

    def close(self) -> None:
        """Stop the UI thread and close this widget and every widget inside it."""
        if hasattr(self, "_applier"):  # absent if __init__ failed
            self._applier.close()
        if hasattr(self, "_on_demand"):
            self._on_demand.close()
        if hasattr(self, "_bands"):
            self._bands.close()
        if hasattr(self, "_model"):  # a grid still filling in holds the runs until it ends
            self._model.close()
        for w in _walk(self):
            if w is not self:
                w.close()
        super().close()

    # ------------------------------------------------------------------------------------------ internals

    def _add_runs(self, runs: Sequence, display_names: Sequence[str]) -> None:
        """UI thread: add ``runs`` to the view. Their grid is computed (the other runs' values stay); the layer
        toggles and figures are rebuilt around them, keeping the estimator, σ, rule, target and hidden layers."""
        self._model.add_runs(runs)
        self._runs = [*self._runs, *runs]
        self._display_names = list(display_names)
        self._epoch_max = max(self._epoch_max, *((r.epochs[-1] if r.epochs else 0) for r in runs))
        view = self._controls.view()
        labels, tips = _layer_labels(self._runs)
        old_controls, old_figures = self._controls, self._figures
        controls = Controls(
            labels, tips, self._estimators, view.sigma, view.sigma_rule, view.target, self._request_redraw
        )
        if view.estimator in controls.estimator.options:
            controls.estimator.value = view.estimator
        controls.band.value, controls.diagnostic.value = view.band, view.diagnostic
        for button, visible in zip(controls.layers, view.visible, strict=False):
            button.value = visible
        self._controls = controls
        self._figures = Figures(self._display_names, [r.layer_names for r in self._runs], self._epoch_max, True)
        self._figure_box.children = _figure_rows(self._figures.figures)
        for w in (*_walk(old_controls.box), *old_figures.all_widgets()):
            w.close()
        self._drawn = None

    def _request_redraw(self) -> None:
        self._applier.put("redraw")

    def _save(self, ext: str, path) -> list[str]:
        names = self._export_names(ext, path)
        for i, (key, filename) in enumerate(names.items()):
            if i:
                time.sleep(_SAVE_SPACING_S)
            fig = self._figures.figures[key]
            fig.save_png(filename) if ext == "png" else fig.save_svg(filename)
        return list(names.values())

    def _export_names(self, ext: str, path) -> dict[str, str]:
        if path is None:
            return {k: f"{_safe_name(self._display_names[0])}-{k}.{ext}" for k in FIGURE_NAMES}
        p = os.fspath(path)
        if os.path.isdir(p) or p.endswith(("/", os.sep)):
            return {k: os.path.join(p, f"{k}.{ext}") for k in FIGURE_NAMES}
        if p.lower().endswith("." + ext):
            p = p[: -len(ext) - 1]
        return {k: f"{p}-{k}.{ext}" for k in FIGURE_NAMES}

    def _export(self, fmt: str) -> None:
        if fmt in ("png", "svg"):
            files = self._save(fmt, None)
            self._set_notice("export", f"asked the browser to save {len(files)} {fmt.upper()} files ({files[0]}, …)")
        elif fmt == "run":
            path = self.save_run(f"{_safe_name(self._display_names[0])}.ibrun")
            self._set_notice("export", f"saved the run to {os.path.abspath(path)}")

    def _set_notice(self, kind: str, text: str) -> None:
        self._notice_kind = kind
        self.notice.value = text

    def _show_error(self, exc: BaseException, tb: str) -> None:
        """The UI thread's last resort: any unexpected error shows here instead of killing the thread."""
        self.last_error = tb
        self._set_notice("error", f"display error: {type(exc).__name__}: {exc}")

    def _compute(self, params: tuple) -> tuple[list[RunData], str]:
        """Every run's data for ``params``: a grid lookup, or exact values computed on demand (meanwhile the nearest
        grid slot, with a note). Raises the on-demand computation's error, or :class:`_Pending` with nothing to show."""
        estimator, sigma, rule, _ = params
        slot = self._model.slot(rule, sigma)
        if slot is not None:
            self._model.view("figures", [slot[0]])  # computed first, and for every new epoch
        found = self._model.lookup(*params)
        if found is not None and found.exact:
            values, note = found.values, ""
        elif found is not None and found.pending and slot is not None and slot[1]:  # on the grid, being computed
            values, note = found.values, f"σ = {sigma:.4g}: showing σ = {found.sigma:.4g} until this σ is computed."
        else:
            exact = self._on_demand.get(params, self._runs)
            if isinstance(exact, BaseException):
                raise exact
            if exact is not None:
                values, note = exact, ""
            elif found is not None:
                values, note = (
                    found.values,
                    f"σ = {sigma:.4g}: showing the nearest grid σ = {found.sigma:.4g} until the exact values arrive.",
                )
            else:
                raise _Pending(f"computing {estimator}…")
        data = []
        for run, traj in zip(self._runs, values, strict=True):
            history = _history(run)
            if traj.shape[0] == 0:
                data.append(RunData(np.zeros(0, np.float32), None, history))
                continue
            epochs = np.asarray(run.epochs[: traj.shape[0]], dtype=np.float32)
            data.append(RunData(epochs, traj[: len(epochs)], history))
        return data, note

    def _redraw(self, view: View) -> None:
        """Look ``view`` up in the grid (or take its values computed on demand) and apply it; errors keep the last
        plot."""
        params, note = view.params, ""
        try:
            data, note = self._compute(params)
            self._good_params = params
        except Exception as exc:  # noqa: BLE001 - e.g. binning on a layer without activations
            note = str(exc) if isinstance(exc, _Pending) else f"{params[0]}: {exc}"
            if self._good_params is not None and self._good_params != params:
                note += f" — still showing {self._good_params[0]}."
                params = self._good_params
                try:
                    data, _ = self._compute(params)
                except Exception:  # noqa: BLE001 - the last view's values are gone too: show loss and accuracy
                    data = [RunData(np.zeros(0, np.float32), None, _history(run)) for run in self._runs]
            else:  # nothing drawable yet: still show loss and accuracy
                data = [RunData(np.zeros(0, np.float32), None, _history(run)) for run in self._runs]
        estimator, _, _, target = params
        spec = _estimators.get(estimator)
        y_name = "Y" if target == "labels" else "Ŷ"
        with self._figures.hold():
            self._figures.set_labels(spec.axis_label("T", "X"), spec.axis_label("T", y_name))
            self._figures.update_trajectories(data, view.visible, self._epoch_max, self._band(view, params))
            self._figures.update_history(data, self._epoch_max)
            diagnostics = [(list(run.epochs), run.diagnostics()) for run in self._runs]
            self._figures.update_diagnostics(diagnostics, view.diagnostic, view.visible, self._epoch_max)
        self._controls.sigma.disabled = not self._controls.sigma_enabled(view)
        if note:
            self._set_notice("estimator", note)
        elif self._notice_kind in ("estimator", "error"):
            self._set_notice("", "")
        self._drawn = (params, tuple(self._model.counts))

    def _band(self, view: View, params: tuple) -> list | None:
        """The chance floor of the values drawn, when shown and computed (it is queued otherwise, and says so)."""
        if not view.band:
            return None
        found = self._bands.get(params, self._runs)
        if isinstance(found, BaseException):
            self._set_notice("band", f"chance floor: {found}")
            return None
        if found is None:
            self._set_notice("band", "computing the chance floor…")
        elif self._notice_kind == "band":
            self._set_notice("", "")
        return found

    def _update_saturation(self, view: View, force: bool = False) -> None:
        """The gauge: mean off-diagonal Gaussian kernel value over the visible layers at the last epoch.

        ``Run.saturation`` costs about one redraw; while only new epochs arrive it is refreshed at most once per
        ten times its own cost, so that the gauge never takes more than a tenth of a core from training.
        """
        key = (view.estimator, view.sigma, view.sigma_rule, view.visible)
        now = time.perf_counter()
        if not force and key == self._sat_key and now < self._sat_next:
            return
        self._sat_key = key
        self._sat_compute(view)
        self._sat_next = now + 10.0 * (time.perf_counter() - now)

    def _sat_compute(self, view: View) -> None:
        spec = _estimators.get(view.estimator)
        if not spec.uses_sigma or spec.needs == "activations":
            self.saturation.value = f"kernel saturation: n/a ({spec.name} uses no kernel)"
            return
        values = []
        slot = self._model.slot(view.sigma_rule, view.sigma)
        for r, run in enumerate(self._runs):
            n = run.num_snapshots
            if n == 0:
                continue
            key = (id(run), view.sigma, view.sigma_rule, n)
            row = None
            if slot is not None and slot[1] and self._model.counts[r] == n:  # on the grid: a lookup
                row = self._model.saturation[r, n - 1, slot[0], : len(run.layer_names)]
                row = row if np.isfinite(row).all() else None  # that slot is still to be computed
            if row is None:
                if key not in self._sat_cache:
                    self._sat_cache = {k: v for k, v in self._sat_cache.items() if k[0] != id(run)}
                    self._sat_cache[key] = np.asarray(run.saturation(view.sigma, view.sigma_rule))[n - 1]
                row = self._sat_cache[key]
            values += [float(row[i]) for i in range(len(row)) if i >= len(view.visible) or view.visible[i]]
        if not values:
            self.saturation.value = "kernel saturation: -"
            return
        s = float(np.mean(values))
        low, high = SATURATION_RANGE
        hint = " — σ too large" if s > high else " — σ too small" if s < low else ""
        if math.isnan(s):
            hint = ""
        self.saturation.value = f"kernel saturation {s:.2f}{hint}"

    def _apply(self, batch: _Batch) -> None:
        """UI thread: apply one coalesced batch of requests."""
        view = self._controls.view()
        final = batch.finish is not None or batch.full
        if batch.status or final:
            self._model.poke()  # training paused or ended: the filler may compute the slots not viewed
        if final or not batch.more_pending:
            self._model.catch_up()  # new epochs' grid slices, computed once for every plane
        counts = tuple(self._model.counts)
        if batch.redraw or batch.data or self._drawn is None or self._drawn[1] != counts:
            self._redraw(view)
        if not batch.more_pending:
            self._update_saturation(view, force=final)
        for listener in self._grid_listeners if (final or not batch.more_pending) else ():
            listener(final)  # e.g. a Trainer's PlaneView tab: sends the new slices; the whole grid once the run ends
        for fmt in batch.exports:
            self._export(fmt)
        if batch.full:
            self._resend_all()

    def _resend_all(self) -> None:
        """Send every widget's whole state once (nbclient keeps only messages sent while a cell runs)."""
        for w in _walk(self):
            w.send_state()
