"""The Trainer and RunView widgets, in process (no kernel): state after training, redraws, threads, export."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import threading
import time
import weakref

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import pytest
import torch
import traitlets
from _training import WAIT, hold_at
from torch import nn

import ibwidget as ib
from ibwidget._vocabulary import DIAGNOSTIC_LABELS
from ibwidget.measure import estimators as measure_estimators
from ibwidget.widget import RunView, Trainer
from ibwidget.widget._base import FIGURE_NAMES

EPOCHS = 3
PROBE = 64


@pytest.fixture(scope="module")
def digits():
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    return train, val


def small_model(dropout: float = 0.0, compiled: bool = True):
    """Dense(100) is wider than the probe (no activations kept: binning fails on it), the others narrower."""
    torch.manual_seed(0)
    model = ib.IBSequential(input_shape=(1, 8, 8), device="cpu")
    model.add(ib.layers.Flatten())
    model.add(ib.layers.Dense(100, activation="relu"))
    if dropout:
        model.add(ib.layers.Dropout(dropout))
    model.add(ib.layers.Dense(16, activation="relu"))
    model.add(ib.layers.Dense(10))
    if compiled:
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.05, momentum=0.9)
    return model


def all_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    seen, stack = {}, [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for name in w.keys:
            value = getattr(w, name, None)
            values = (
                value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
            )
            stack.extend(v for v in values if isinstance(v, widgets.Widget))
    return list(seen.values())


class ThreadLog:
    """Records the thread of every trait change and every comm message of a widget tree."""

    def __init__(self, root):
        self.changes: list[str] = []
        self.sends: list[str] = []
        self._ids = set()
        for w in all_widgets(root):
            self._ids.add(id(w))
            w.observe(lambda change: self.changes.append(threading.current_thread().name), names=traitlets.All)

    def patch_send(self, monkeypatch):
        original = widgets.Widget._send
        log = self

        def _send(widget, msg, buffers=None):
            if id(widget) in log._ids:
                log.sends.append(threading.current_thread().name)
            return original(widget, msg, buffers)

        monkeypatch.setattr(widgets.Widget, "_send", _send)


@pytest.fixture(scope="module")
def trained(digits):
    train, val = digits
    trainer = Trainer(small_model(), train, val, epochs=EPOCHS, probe=PROBE, name="baseline")
    log = ThreadLog(trainer)
    with pytest.MonkeyPatch.context() as mp:
        log.patch_send(mp)
        trainer.start()
        trainer.wait(timeout=120)
    yield trainer, log
    trainer.close()


def set_view(trainer, estimator="hsic", sigma=5.0, sigma_rule="fixed", target="labels", visible=None):
    c = trainer.controls
    c.estimator.value, c.sigma.value, c.sigma_rule.value, c.target.value = estimator, sigma, sigma_rule, target
    for button, show in zip(c.layers, visible or [True] * len(c.layers), strict=True):
        button.value = show
    trainer.sync()


def assert_marks_match(view, traj, run_index=0, layers=None):
    run = view.runs[run_index]
    epochs = np.asarray(run.epochs, dtype=np.float32)
    for i in layers if layers is not None else range(traj.shape[1]):
        points = view.marks["plane_points"][run_index][i]
        line = view.marks["plane_lines"][run_index][i]
        assert points.x.dtype == np.float32 and points.y.dtype == np.float32
        np.testing.assert_allclose(points.x, traj[:, i, 0].astype(np.float32), rtol=1e-6, atol=0)
        np.testing.assert_allclose(points.y, traj[:, i, 1].astype(np.float32), rtol=1e-6, atol=0)
        np.testing.assert_array_equal(points.color, epochs)
        np.testing.assert_array_equal(line.x, points.x)
        np.testing.assert_array_equal(line.y, points.y)
        np.testing.assert_allclose(view.marks["dep_x"][run_index][i].y, points.x)
        np.testing.assert_allclose(view.marks["dep_y"][run_index][i].y, points.y)
        np.testing.assert_array_equal(view.marks["dep_x"][run_index][i].x, epochs)


# ------------------------------------------------------------------------------------------ after training


def test_final_state_holds_one_point_per_layer_per_recorded_epoch(trained):
    trainer, _ = trained
    run = trainer.run
    assert run.epochs == list(range(EPOCHS + 1))
    for i in range(len(run.layer_names)):
        assert len(trainer.marks["plane_points"][0][i].x) == EPOCHS + 1
        assert list(trainer.marks["plane_points"][0][i].names) == [run.layer_names[i]] * (EPOCHS + 1)
    assert_marks_match(trainer, run.trajectories("hsic", sigma=5.0, target="labels"))


def test_run_bar_after_finishing(trained):
    trainer, _ = trained
    assert trainer.status == "finished" == trainer.status_label.value
    assert trainer.epoch_label.value == f"epoch {EPOCHS}/{EPOCHS}"
    assert trainer.progress.value == 1.0 and trainer.progress.bar_style == "success"
    assert "batches/s" in trainer.rate_label.value and "ETA 0:00" in trainer.rate_label.value
    assert trainer.device_label.value == "cpu"
    assert trainer.start_button.disabled and trainer.pause_button.disabled and trainer.stop_button.disabled
    assert repr(trainer) == f"Trainer(epoch {EPOCHS}/{EPOCHS}, 3 layers, finished)"


def test_history_lines_hold_loss_and_accuracy(trained):
    trainer, _ = trained
    history = trainer.run.history
    for key, metric in (("loss", "loss"), ("accuracy", "accuracy")):
        for split, name in (("train", metric), ("val", f"val_{metric}")):
            mark = trainer.marks[key][0][split]
            np.testing.assert_allclose(mark.y, np.float32(history[name]), rtol=1e-6)
            np.testing.assert_array_equal(mark.x, np.arange(1, EPOCHS + 1, dtype=np.float32))
            assert mark.labels == [split]


def test_training_thread_never_touches_a_widget(trained):
    _, log = trained
    assert log.changes and log.sends
    assert "ibwidget-training" not in set(log.changes) | set(log.sends)
    assert "ibwidget-ui" in set(log.changes) and "ibwidget-ui" in set(log.sends)


def test_axis_labels_name_estimator_normaliser_and_units(trained):
    trainer, _ = trained
    set_view(trainer, "hsic")
    ax, ay, colorbar = trainer.figures["plane"].axes
    assert ax.label == "HSIC(T, X) · biased, 1/(m−1)²" and ay.label == "HSIC(T, Y) · biased, 1/(m−1)²"
    assert colorbar.label == "epoch" and isinstance(colorbar, bq.ColorAxis)
    assert trainer.figures["dep_x"].axes[1].label == ax.label
    set_view(trainer, "kde_upper", target="output")
    assert trainer.figures["plane"].axes[0].label == "I(T; X) · KDE upper [bits]"
    assert trainer.figures["plane"].axes[1].label == "I(T; Ŷ) · KDE upper [bits]"
    tip = trainer.marks["plane_points"][0][0].tooltip
    assert tip.fields == ["name", "color", "x", "y"] and tip.labels[:2] == ["layer", "epoch"]
    assert tip.labels[2:] == ["I(T; X) · KDE upper [bits]", "I(T; Ŷ) · KDE upper [bits]"]
    set_view(trainer)


@pytest.mark.parametrize(
    "view",
    [
        {"estimator": "cka"},
        {"sigma": 0.7},
        {"target": "output"},
        {"sigma_rule": "median_d"},
        {"estimator": "hsic_unbiased", "sigma": 20.0, "target": "output", "sigma_rule": "sqrt_d"},
    ],
    ids=["estimator", "sigma", "target", "median-rule", "all"],
)
def test_controls_redraw_exactly_as_run_trajectories(trained, view):
    trainer, _ = trained
    set_view(trainer, **view)
    full = {"estimator": "hsic", "sigma": 5.0, "sigma_rule": "fixed", "target": "labels", **view}
    sigma = trainer.controls.sigma.value  # the log slider's own rounding of the value set
    traj = trainer.run.trajectories(
        full["estimator"], sigma=sigma, target=full["target"], sigma_rule=full["sigma_rule"]
    )
    assert_marks_match(trainer, traj)
    assert trainer.controls.sigma.disabled == full["sigma_rule"].startswith("median")
    set_view(trainer)


def test_the_chance_floor_shades_each_layers_null_band(trained):
    trainer, _ = trained
    set_view(trainer, estimator="cka", sigma_rule="median_d2")
    assert not trainer.marks["dep_y_band"][0][0].visible  # hidden until asked for
    trainer.controls.band.value = True
    trainer.sync(120)
    band = trainer.run.null_band("cka", sigma_rule="median_d2", q=0.95, permutations=100)
    epochs = np.asarray(trainer.run.epochs, dtype=np.float32)
    plane_x = trainer.figures["plane"].marks[0].scales["x"]
    for i in range(len(trainer.run.layer_names)):
        for c, key in enumerate(("dep_x_band", "dep_y_band")):
            mark = trainer.marks[key][0][i]
            assert mark.visible and mark.fill == "bottom"
            np.testing.assert_array_equal(mark.x, epochs)
            np.testing.assert_allclose(mark.y, band[:, i, c].astype(np.float32), rtol=1e-6)
        box = trainer.marks["plane_band"][0][i]
        assert box.visible and box.fill == "inside"
        np.testing.assert_allclose(box.x[1:3], band[-1, i, 0], rtol=1e-6)
        np.testing.assert_allclose(box.y[2:4], band[-1, i, 1], rtol=1e-6)
        assert box.x[0] == np.float32(plane_x.min) and box.x[0] < box.x[1]
    trainer.controls.layers[0].value = False  # a hidden layer hides its floor
    trainer.sync(120)
    assert not trainer.marks["plane_band"][0][0].visible and trainer.marks["plane_band"][0][1].visible
    trainer.controls.band.value = False
    set_view(trainer)
    assert not any(m.visible for m in trainer.marks["dep_x_band"][0] + trainer.marks["plane_band"][0])


def test_the_diagnostics_figure_shows_the_chosen_diagnostic_of_each_layer(trained):
    """Beside the plane: each layer's geometric diagnostic per recorded epoch, as ``run.diagnostics()`` holds it."""
    trainer, _ = trained
    run = trainer.run
    diagnostics = run.diagnostics()
    marks = trainer.marks["diagnostics"][0]
    for name in ("saturated_fraction", "weight_norm", "grad_snr", "mean_abs_activation"):
        trainer.controls.diagnostic.value = name
        trainer.sync()
        for i, mark in enumerate(marks):
            column = diagnostics[name][:, i]
            keep = np.isfinite(column)
            np.testing.assert_array_equal(mark.x, np.asarray(run.epochs, dtype=np.float32)[keep])
            np.testing.assert_allclose(mark.y, column[keep].astype(np.float32))
        assert trainer._figures.axes["diagnostics"][1].label == DIAGNOSTIC_LABELS[name]
        if name == "grad_snr":  # every epoch but 0, which had no step
            assert len(marks[0].y) == EPOCHS and np.all(np.asarray(marks[0].y) > 0)
    trainer.controls.diagnostic.value = "saturated_fraction"
    trainer.controls.layers[2].value = False  # the logits hidden: no layer without values is shown
    trainer.sync()
    assert trainer.figures["diagnostics"].title == "Diagnostics: saturated fraction"
    assert list(marks[0].y) == list(diagnostics["saturated_fraction"][:, 0].astype(np.float32))  # dead ReLUs
    trainer.controls.layers[2].value = True
    trainer.sync()


def test_layer_toggle_hides_marks_and_rescales_to_visible_layers(trained):
    trainer, _ = trained
    run = trainer.run
    traj = run.trajectories("hsic", sigma=5.0)
    set_view(trainer, visible=[True, False, True])
    for key in ("plane_lines", "plane_points", "dep_x", "dep_y"):
        assert [m.visible for m in trainer.marks[key][0]] == [True, False, True]
    shown = traj[:, [0, 2], :]
    assert_marks_match(trainer, traj)  # hidden marks keep their values; only `visible` changes
    sx = trainer._figures.scales["plane"]["x"]
    assert sx.min <= shown[..., 0].min() and sx.max >= shown[..., 0].max()
    span = shown[..., 0].max() - shown[..., 0].min()
    assert sx.max - sx.min < 1.2 * span + 1e-9  # fitted to the visible layers, with a little padding
    set_view(trainer)
    assert all(m.visible for m in trainer.marks["plane_points"][0])


def assert_round_ticks(axis, data) -> None:
    """``axis`` ticks at multiples of one 1, 2 or 5 x 10^k step, inside its scale's domain, spanning ``data``."""
    ticks, scale = np.asarray(axis.tick_values, dtype=float), axis.scale
    assert len(ticks) >= 3, ticks
    assert axis.num_ticks is None, "bqplot would thin the tick values to num_ticks, or space ticks evenly"
    step = ticks[1] - ticks[0]
    mantissa = step / 10.0 ** np.floor(np.log10(step))
    assert min(abs(mantissa - c) for c in (1.0, 2.0, 5.0)) < 1e-9, (step, ticks)
    np.testing.assert_allclose(np.diff(ticks), step, rtol=1e-9)
    np.testing.assert_allclose(ticks / step, np.round(ticks / step), rtol=0, atol=1e-9)
    assert scale.min <= ticks[0] and ticks[-1] <= scale.max, (ticks, scale.min, scale.max)
    assert ticks[0] <= data.min() + step and ticks[-1] >= data.max() - step, (ticks, data.min(), data.max())


@pytest.mark.parametrize(
    "view", [{}, {"estimator": "cka"}, {"sigma": 0.7, "target": "output"}, {"estimator": "kde_upper"}]
)
def test_axes_tick_at_round_values_covering_the_data(trained, view):
    trainer, _ = trained
    set_view(trainer, **view)
    points = trainer.marks["plane_points"][0]
    ax, ay, _ = trainer.figures["plane"].axes
    assert_round_ticks(ax, np.concatenate([m.x for m in points]))
    assert_round_ticks(ay, np.concatenate([m.y for m in points]))
    for key in ("dep_x", "dep_y"):
        assert_round_ticks(trainer.figures[key].axes[1], np.concatenate([m.y for m in trainer.marks[key][0]]))
    for key in ("loss", "accuracy"):
        marks = trainer.marks[key][0].values()
        assert_round_ticks(trainer.figures[key].axes[1], np.concatenate([m.y for m in marks]))
    epoch_axes = [trainer.figures["plane"].axes[2]] + [trainer.figures[k].axes[0] for k in FIGURE_NAMES[1:]]
    for axis in epoch_axes:  # whole epochs, each once (a ".0f" label on 0.5-steps would repeat)
        np.testing.assert_array_equal(axis.tick_values, np.arange(EPOCHS + 1))
    set_view(trainer)


def test_layer_toggles_are_coloured_like_their_trajectories(trained):
    trainer, _ = trained
    for i, button in enumerate(trainer.controls.layers):
        color = trainer.marks["plane_lines"][0][i].colors[0]
        assert color in button.layout.border and button.style.text_color == color
        assert trainer.marks["plane_points"][0][i].stroke == color
        assert {"ibw-layer", f"ibw-layer-{i}"} <= set(button._dom_classes)
        assert button.description == trainer.run.layer_names[i]


def test_activation_estimator_error_keeps_the_previous_plot(trained):
    trainer, _ = trained
    set_view(trainer, "cka")
    before = [m.x.copy() for m in trainer.marks["plane_points"][0]]
    set_view(trainer, "binning")
    assert "binning" in trainer.notice.value and "still showing cka" in trainer.notice.value
    for mark, x in zip(trainer.marks["plane_points"][0], before, strict=True):
        np.testing.assert_array_equal(mark.x, x)
    assert trainer.figures["plane"].axes[0].label.startswith("CKA")
    assert trainer.controls.sigma.disabled  # binning uses no sigma
    assert "n/a" in trainer.saturation.value
    set_view(trainer)
    assert trainer.notice.value == ""


def test_saturation_gauge(trained):
    trainer, _ = trained
    set_view(trainer, sigma=1000.0)
    assert "too large" in trainer.saturation.value
    set_view(trainer, sigma=0.01)
    assert "too small" in trainer.saturation.value
    set_view(trainer)
    value = float(trainer.saturation.value.split()[2])
    sat = trainer.run.saturation(trainer.controls.sigma.value)[-1].mean()
    assert value == pytest.approx(sat, abs=0.006)


def test_saturation_gauge_hints_switch_at_its_thresholds(trained):
    """Just inside and just outside (0.05, 0.95): the hint appears exactly when the reading leaves the range."""
    trainer, _ = trained

    def sigma_for(target: float) -> float:  # saturation grows with sigma: bisect log sigma
        lo, hi = math.log(1e-3), math.log(1e4)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if trainer.run.saturation(math.exp(mid))[-1].mean() < target else (lo, mid)
        return math.exp(0.5 * (lo + hi))

    for target, hint in ((0.97, "too large"), (0.93, ""), (0.06, ""), (0.04, "too small")):
        set_view(trainer, sigma=sigma_for(target))
        reading = trainer.saturation.value
        assert float(reading.split()[2]) == pytest.approx(target, abs=0.005), reading
        assert (hint in reading) if hint else ("—" not in reading), reading
    set_view(trainer)


def test_css_classes_for_the_browser_tests(trained):
    trainer, _ = trained
    expected = {
        trainer: "ibw-trainer",
        trainer.start_button: "ibw-start",
        trainer.pause_button: "ibw-pause",
        trainer.stop_button: "ibw-stop",
        trainer.status_label: "ibw-status",
        trainer.epoch_label: "ibw-epoch",
        trainer.device_label: "ibw-device",
        trainer.progress: "ibw-progress",
        trainer.controls.estimator: "ibw-estimator",
        trainer.controls.sigma: "ibw-sigma",
        trainer.controls.sigma_rule: "ibw-sigma-rule",
        trainer.controls.target: "ibw-target",
        trainer.figures["plane"]: "ibw-plane",
        trainer.figures["dep_x"]: "ibw-dep-x",
        trainer.figures["dep_y"]: "ibw-dep-y",
        trainer.figures["loss"]: "ibw-loss",
        trainer.figures["accuracy"]: "ibw-acc",
        trainer.figures["diagnostics"]: "ibw-diagnostics",
        trainer.controls.diagnostic: "ibw-diagnostic",
        trainer.export_button: "ibw-export",
    }
    tree = {id(w) for w in all_widgets(trainer)}
    for widget, cls in expected.items():
        assert cls in widget._dom_classes and id(widget) in tree, cls
    assert [f.title for f in trainer.figures.values()] == [
        "Information plane",
        "Dependence on X",
        "Dependence on Y",
        "Loss",
        "Accuracy",
        "Diagnostics: saturated fraction · none for dense_3",  # the logits: linear, nothing saturates
    ]
    assert all(f.animation_duration == 0 for f in trainer.figures.values())
    options = list(trainer.controls.estimator.options)
    assert options[:2] == ["hsic", "cka"] and set(options) == set(ib.estimators.names())
    assert set(trainer.controls.sigma_rule.options) == set(ib.kernels.SIGMA_RULES)
    assert trainer.controls["target"].options == ("labels", "output")


def test_export_png_svg_and_run_file(trained, tmp_path, monkeypatch):
    trainer, _ = trained
    sent = []
    monkeypatch.setattr(bq.Figure, "send", lambda fig, msg, buffers=None: sent.append((fig, msg)))
    files = trainer.save_png(tmp_path)
    names = ("plane", "dep_x", "dep_y", "loss", "accuracy", "diagnostics")
    assert files == [str(tmp_path / f"{k}.png") for k in names]
    assert [m["type"] for _, m in sent] == ["save_png"] * 6 and [m["filename"] for _, m in sent] == files
    assert [f for f, _ in sent] == list(trainer.figures.values())
    sent.clear()
    assert trainer.save_svg(tmp_path / "fig.svg")[0] == str(tmp_path / "fig-plane.svg")
    assert sent[0][1]["type"] == "save_svg"
    monkeypatch.chdir(tmp_path)
    trainer.export_format.value = "run"
    trainer.export_button.click()
    trainer.sync()
    assert (tmp_path / "baseline.ibrun").is_file() and "saved the run" in trainer.notice.value
    assert ib.load_run(tmp_path / "baseline.ibrun").epochs == trainer.run.epochs
    trainer.export_format.value = "png"
    sent.clear()
    trainer.export_button.click()
    trainer.sync()
    assert [m["filename"] for _, m in sent][0] == "baseline-plane.png"
    assert trainer.save_run(tmp_path / "again.ibrun").is_file()


def test_ui_thread_errors_show_and_do_not_kill_it(trained, monkeypatch):
    trainer, _ = trained

    def boom(*args, **kwargs):
        raise RuntimeError("figure broke")

    monkeypatch.setattr(trainer._figures, "update_history", boom)
    trainer.controls.sigma.value = 2.0
    trainer.sync()
    assert trainer.notice.value.startswith("display error: RuntimeError: figure broke")
    assert "figure broke" in trainer.last_error
    monkeypatch.undo()
    set_view(trainer)
    assert trainer.notice.value == "" and trainer._applier.alive


# ------------------------------------------------------------------------------------------ other runs


class _Exploding(nn.Module):
    """Fails in the third training batch of epoch 2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 18 + 3:
                raise RuntimeError("boom in the model")
        return self.net(x)


def test_a_failed_run_keeps_its_figures_and_a_readable_status(digits):
    train, val = digits
    assert len(train) == 18
    trainer = Trainer(_Exploding(), train, val, epochs=4, probe=PROBE, layers=["net.1", "net.3"], lr=0.05)
    trainer.start()
    run = trainer.wait(timeout=60)
    assert trainer.status == "failed: RuntimeError: boom in the model" == trainer.status_label.value
    assert isinstance(trainer.engine.error, RuntimeError)
    assert run.epochs == [0, 1] and trainer.epoch_label.value == "epoch 1/4"
    assert_marks_match(trainer, run.trajectories())
    assert trainer.progress.bar_style == "danger" and trainer.start_button.disabled
    trainer.close()


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition(), "timed out"


def test_the_run_bar_says_paused_only_once_nothing_shown_will_move(digits):
    """A pause that arrives while an epoch is being recorded reads ``pausing`` until that epoch is drawn and the
    training thread holds; at the moment the label turns ``paused`` the plane and the epoch label are final."""
    train, val = digits
    trainer = Trainer(small_model(), train, val, epochs=3, probe=PROBE)
    in_hook, release = threading.Event(), threading.Event()

    class SlowEpochEnd:  # runs after the recording hook: the epoch's snapshot is taken, the epoch not yet ended
        def on_train_epoch_end(self, engine, epoch, logs):
            if epoch == 1:
                in_hook.set()
                release.wait(30)

    trainer.engine.add_callback(SlowEpochEnd())
    seen = []

    def on_status(change):  # the UI thread, at the moment the label changes
        if change["new"] == "paused":
            points = len(trainer.marks["plane_points"][0][0].x)
            seen.append((trainer.epoch_label.value, points, trainer.run.num_snapshots))

    trainer.status_label.observe(on_status, "value")
    trainer.start()
    assert in_hook.wait(30)
    trainer.pause()
    trainer.sync()
    assert trainer.status_label.value == "pausing" and trainer.pause_button.description == "Resume"
    release.set()
    _until(lambda: trainer.status_label.value == "paused")
    assert seen == [("epoch 1/3", 2, 2)]
    trainer.resume()
    trainer.wait(timeout=60)
    assert trainer.status_label.value == "finished" and len(trainer.marks["plane_points"][0][0].x) == 4


def test_pause_resume_stop_and_continue(digits):
    train, val = digits
    trainer = Trainer(small_model(), train, val, epochs=4, probe=PROBE)
    at_epoch = {1: threading.Event(), 2: threading.Event()}

    def hold(event):  # training thread: only engine calls here
        if event.epoch == 1:
            trainer.engine.pause()
            at_epoch[1].set()
        elif event.epoch == 2:
            trainer.engine.stop(wait=False)
            at_epoch[2].set()

    trainer.engine.on("epoch_end", hold)
    trainer.start()
    assert at_epoch[1].wait(30)
    trainer.pause()  # already pausing by the callback; harmless
    _until(lambda: trainer.status == "paused")
    trainer.sync()
    assert trainer.status_label.value == "paused" and trainer.pause_button.description == "Resume"
    assert trainer.epoch_label.value == "epoch 1/4" and not trainer.pause_button.disabled
    assert len(trainer.marks["plane_points"][0][0].x) == 2
    trainer.pause_button.click()  # resume, as a user would
    assert at_epoch[2].wait(30)
    trainer.wait(timeout=30)
    assert trainer.status_label.value == "stopped" and trainer.epoch_label.value == "epoch 2/4"
    assert len(trainer.marks["plane_points"][0][0].x) == 3 and not trainer.start_button.disabled
    trainer.engine.off("epoch_end", hold)
    trainer.start_button.click()  # continue the stopped run to its 4 epochs
    trainer.sync()
    trainer.wait(timeout=60)
    assert trainer.status == "finished" and trainer.epoch_label.value == "epoch 4/4"
    assert_marks_match(trainer, trainer.run.trajectories())
    trainer.close()


def test_plain_module_with_autostart(digits):
    train, val = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    trainer = Trainer(model, train, val, epochs=2, probe=PROBE, layers=["1", "3"], lr=0.1, device="cpu", autostart=True)
    run = trainer.wait(timeout=60)
    assert trainer.status == "finished" and run.layer_names == ["1", "3"]
    assert [b.description for b in trainer.controls.layers] == ["1", "3"]
    assert_marks_match(trainer, run.trajectories())
    trainer.close()


def test_uncompiled_ibsequential_gets_the_default_compile(digits):
    train, val = digits
    model = small_model(compiled=False)
    trainer = Trainer(model, train, val, epochs=1, probe=PROBE)
    group = trainer.engine.optimizer.param_groups[0]
    assert type(trainer.engine.optimizer).__name__ == "SGD" and group["lr"] == 0.01 and group["momentum"] == 0.9
    assert model.engine is trainer.engine
    assert repr(trainer) == "Trainer(epoch 0/1, 3 layers, idle)" and trainer.status == "idle"
    assert trainer.status_label.value == "idle" and trainer.epoch_label.value == "epoch 0/1"
    assert not trainer.start_button.disabled and trainer.pause_button.disabled
    trainer.close()
    with pytest.raises(ValueError, match="layer toggles"):
        Trainer(small_model(), train, val, epochs=1, probe=PROBE, layers=["dense_1"])
    with pytest.raises(ValueError, match="estimator"):
        Trainer(small_model(), train, val, epochs=1, probe=PROBE, estimators=("nope",))


@pytest.mark.parametrize("options", [{"lr": 0.5}, {"optimizer": "Adam"}, {"loss": "nll"}])
def test_a_model_still_training_is_refused_before_its_optimizer_is_replaced(digits, options):
    train, val = digits
    model = small_model()
    first = Trainer(model, train, val, epochs=2, probe=PROBE, plane_view=False, batch_event_interval=0)
    optimizer, loss = model._optimizer, model._loss
    reached, release = hold_at(first.engine, epoch=1, batch=2)
    first.start()
    try:
        assert reached.wait(WAIT)
        with pytest.raises(RuntimeError, match=r"already being trained.*ib\.engine_of\(model\)\.stop\(\)"):
            Trainer(model, train, val, epochs=1, probe=PROBE, plane_view=False, **options)
        assert model._optimizer is optimizer is first.engine.optimizer and model._loss is loss
        assert type(optimizer).__name__ == "SGD" and optimizer.param_groups[0]["lr"] == 0.05
        assert model.engine is first.engine
    finally:
        release.set()
    assert first.wait(timeout=WAIT).epochs == [0, 1, 2] and first.status == "finished"
    first.close()


def test_runview_overlays_runs_with_a_legend(trained, digits, tmp_path):
    trainer, _ = trained
    train, val = digits
    other = Trainer(small_model(dropout=0.3), train, val, epochs=2, probe=PROBE, name="dropout")
    other.start()
    run_b = other.wait(timeout=60)
    path = trainer.run.save(tmp_path / "baseline.ibrun")
    view = RunView([path, run_b])
    assert "ibw-runview" in view._dom_classes
    assert repr(view) == "RunView(2 runs: baseline, dropout; 3 layers)"
    assert [r.name for r in view.runs] == ["baseline", "dropout"]
    for r, run in enumerate(view.runs):  # drawn at construction, on the caller's thread
        assert_marks_match(view, run.trajectories(), run_index=r)
    styles = [view.marks["plane_lines"][r][0].line_style for r in range(2)]
    markers = [view.marks["plane_points"][r][0].marker for r in range(2)]
    assert len(set(styles)) == 2 and len(set(markers)) == 2
    assert "baseline" in view.legend.value and "dropout" in view.legend.value
    assert [m.labels[0] for m in view.marks["legend"]] == ["baseline", "dropout"] * 2
    assert view.marks["loss"][1]["val"].labels == ["dropout · val"]
    assert view.marks["plane_points"][1][0].names[0] == "dropout · dense_1"
    assert view._figures.scales["plane"]["color"].max == float(EPOCHS)
    view.controls.layers[0].value = False
    view.controls.estimator.value = "cka"
    view.sync()
    for r, run in enumerate(view.runs):
        assert not view.marks["plane_points"][r][0].visible and view.marks["plane_points"][r][1].visible
        assert_marks_match(view, run.trajectories("cka"), run_index=r)
    tabs = view.children[-1]  # the figures, and the Player: a PlaneView of the same grid (fan, floor, CKA)
    assert tabs.titles == ("Figures", "Player") and tabs.children[1] is view.plane_view
    assert view.plane_view.values is view._model.values and view.plane_view.meta["n_runs"] == 2
    alone = RunView(trainer.run, plane_view=False)
    assert alone.plane_view is None and alone.children[-1] is alone._figure_box
    assert alone.marks["plane_points"][0][0].x.shape == (EPOCHS + 1,)
    alone.close()
    with pytest.raises(TypeError, match="RunView takes"):
        RunView([42])
    view.close()
    other.close()


# ------------------------------------------------------------------------------------------ closing


@pytest.mark.parametrize("kind", ["PlaneView", "RunView", "Trainer"])
def test_a_closed_view_frees_its_run(digits, tmp_path, kind):
    """Closing a view, and dropping it, frees its runs: nothing outside the view (anywidget's watch of a front-end
    file, the UI thread) keeps it. Runs here from the editable install, where anywidget watches files."""
    train, val = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    trainer = Trainer(model, train, val, epochs=1, probe=16, layers=["1"], lr=0.1, device="cpu", autostart=True)
    run = trainer.wait(timeout=60)
    if kind == "Trainer":
        view = trainer
    else:  # a run read back from its file: only the view refers to it
        path = run.save(tmp_path / "run.ibrun")
        trainer.close()
        run = ib.load_run(path)
        view = ib.PlaneView(run, estimators=["hsic"], sigmas=[5.0]) if kind == "PlaneView" else RunView(run)
    freed = weakref.ref(run)
    view.close()
    del view, trainer, run, model
    gc.collect()
    assert freed() is None, [type(r).__name__ for r in gc.get_referrers(freed())]


GATE = "ibw_gated_product"


def test_toggles_are_lookups_into_the_one_grid_both_planes_read(trained):
    """Estimator, target, a grid sigma and a median rule: each is read from the grid (no computation on demand),
    equal to ``Run.trajectories`` to float32 precision; the Player tab shows the same grid object."""
    trainer, _ = trained
    model = trainer._model
    assert trainer.plane_view.values is model.values  # each epoch's slice computed once, for both planes
    grid_sigma = model.builder.sigmas[3]
    views = [{"estimator": "cka"}, {"target": "output"}, {"sigma": grid_sigma}, {"sigma_rule": "median_d"}, {}]
    for view in views:
        set_view(trainer, **view)
        full = {"estimator": "hsic", "sigma": 5.0, "sigma_rule": "fixed", "target": "labels", **view}
        params = (full["estimator"], full["sigma"], full["sigma_rule"], full["target"])
        assert params not in trainer._on_demand._results, params  # served by the grid
        traj = trainer.run.trajectories(
            full["estimator"], sigma=full["sigma"], target=full["target"], sigma_rule=full["sigma_rule"]
        )
        assert_marks_match(trainer, traj)
        found = model.lookup(*params)
        assert found.exact and not found.pending
        np.testing.assert_array_equal(trainer.marks["plane_points"][0][0].x, found.values[0][:, 0, 0])
        assert trainer.notice.value == ""


def test_off_grid_views_show_the_nearest_slot_then_arrive_from_a_worker(trained, monkeypatch):
    """A user's estimator (not in the grid) and an off-grid sigma are computed off the UI thread: meanwhile the
    figures keep the last plot (estimator) or show the nearest grid slot (sigma), then the exact values."""
    trainer, _ = trained
    entered, release = threading.Event(), threading.Event()
    monkeypatch.setattr(measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY))

    @ib.estimators.register(GATE, overwrite=True)
    def gated_product(K, L):  # the worker waits here until the test has read the interim state
        entered.set()
        assert release.wait(60), "the test never released the worker"
        return (K * L).mean()

    run = trainer.run
    view = RunView(run)
    assert view.wait_filled(60)  # the grid of a saved run fills in behind the first view
    try:
        hsic = run.trajectories("hsic", sigma=5.0)
        view.controls.estimator.value = GATE
        assert entered.wait(60), "the slow estimator never started"
        view._applier.sync()
        assert f"computing {GATE}" in view.notice.value and "still showing hsic" in view.notice.value
        assert_marks_match(view, hsic)  # the last plot stays while the worker computes
        view.controls.estimator.value, view.controls.sigma.value = "hsic", 0.7
        view._applier.sync()  # the worker is still busy: the nearest grid sigma shows
        k, exact = view._model.slot("fixed", 0.7)
        nearest = view._model.builder.slots[k][1]
        assert not exact and nearest != 0.7
        assert_marks_match(view, run.trajectories("hsic", sigma=nearest))
        assert f"nearest grid σ = {nearest:.4g}" in view.notice.value
        release.set()
        view.sync()  # waits for the worker too
        assert_marks_match(view, run.trajectories("hsic", sigma=0.7))
        assert view.notice.value == ""
        view.controls.estimator.value = GATE
        view.sync()
        assert_marks_match(view, run.trajectories(GATE, sigma=0.7))
        assert view.figures["plane"].axes[0].label == ib.estimators.get(GATE).axis_label("T", "X")
    finally:
        view.close()


def test_live_epochs_are_computed_once_for_both_planes(digits, monkeypatch):
    """While training, each new epoch's viewed width is computed once (on the UI thread) and read by both planes;
    the other widths once training has ended, each (epoch, width) once."""
    train, val = digits
    trainer = Trainer(small_model(), train, val, epochs=2, probe=PROBE, name="once")
    builder = trainer._model.builder
    computed: list[tuple[int, int, str, str]] = []
    compute = builder.compute

    def counted(run, start=0, stop=None, slots=None, slotless=True):
        stop_ = run.snapshots().num_snapshots if stop is None else stop
        widths = range(len(builder.slots)) if slots is None else slots
        status = trainer.engine.status
        computed.extend((e, k, threading.current_thread().name, status) for e in range(start, stop_) for k in widths)
        return compute(run, start, stop, slots, slotless)

    monkeypatch.setattr(builder, "compute", counted)
    trainer.start()
    run = trainer.wait(timeout=120)
    assert trainer.wait_filled(60)
    try:
        assert trainer.status == "finished"
        pairs = [(e, k) for e, k, _, _ in computed]
        assert len(pairs) == len(set(pairs))  # no (epoch, width) computed twice
        viewed = builder.nearest_slot("fixed", 5.0)
        assert {(e, k) for e, k in pairs if k == viewed} == {(e, viewed) for e in range(run.num_snapshots)}
        assert {thread for e, k, thread, _ in computed if k == viewed} == {"ibwidget-ui"}  # each epoch as it came
        others = {(thread, status) for e, k, thread, status in computed if k != viewed}
        assert others and {status for _, status in others} <= {"finished"}, others  # never while training
        everything = {(e, k) for e in range(run.num_snapshots) for k in range(len(builder.slots))}
        assert set(pairs) == everything  # every width of every epoch, in the end
        assert trainer.plane_view.values is trainer._model.values
        assert trainer.plane_view.values.shape[1] == run.num_snapshots == 3
        assert_marks_match(trainer, run.trajectories("hsic", sigma=5.0))
    finally:
        trainer.close()


def test_a_runview_opens_before_its_grid_is_computed(trained, monkeypatch):
    """A saved run's grid fills in behind the first view: the constructor returns with that view drawn exactly
    while the grid is still being computed (held here by a fast estimator that waits), and lookups follow."""
    trainer, _ = trained
    release = threading.Event()
    monkeypatch.setattr(measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY))

    def gated_packed(stats, targets):
        assert release.wait(60), "the test never released the grid"
        return torch.stack([stats.trace_with(t) for t in targets], -1)

    ib.estimators.register("ibw_gated_fast", lambda K, L: (K * L).mean(), packed=gated_packed, overwrite=True)
    view = RunView(trainer.run, estimators=["hsic", "ibw_gated_fast"])
    try:
        assert not view._model.ready.is_set()
        assert_marks_match(view, trainer.run.trajectories("hsic", sigma=5.0))
        assert view.plane_view.meta == {} and view.plane_view.grid == b""  # the Player says "no grid yet"
        release.set()
        view.sync()
        assert view._model.ready.is_set() and view._model.lookup("hsic", 5.0, "fixed", "labels").exact
        assert view.wait_filled(60)  # the Player is sent the grid once it is there
        np.testing.assert_array_equal(np.frombuffer(view.plane_view.grid, "<f4"), view._model.values.ravel())
    finally:
        release.set()
        view.close()


def test_a_view_of_binning_alone_keeps_one_width(trained):
    """Binning takes no width: the grid keeps only the gauge's (each width is a pass over every kernel, m² values a
    layer and epoch: 27 of them filled a RunView of a 4096-sample probe in 9 minutes)."""
    trainer, _ = trained
    view = RunView(trainer.run, estimators=("binning_saxe", "binning"))
    try:
        assert view._model.builder.slots == [("fixed", 5.0)]
        assert [s.name for s in view._model.builder.specs] == ["binning_saxe", "binning"]
        assert view.saturation.value.startswith("kernel saturation")
        view.controls.sigma.value = 1.0  # off the grid: computed on demand, the plane unchanged
        view.sync()
        assert view.last_error == ""
        traj = trainer.run.trajectories("binning_saxe", layers=trainer.run.layer_names[1:])
        np.testing.assert_allclose(view.marks["plane_points"][0][1].x, traj[:, 0, 0], rtol=1e-6)
    finally:
        view.close()
    kernels = RunView(trainer.run, estimators=("hsic",), plane_view=False)
    assert len(kernels._model.builder.slots) > 20
    kernels.close()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values are a Linux feature")
def test_view_threads_yield_the_cores_to_training(digits):
    """The UI thread and the on-demand worker run at a lower priority than the training thread (a higher nice
    value), so that view work never takes a core from training; the training thread keeps the process's."""
    train, val = digits
    trainer = Trainer(small_model(), train, val, epochs=1, probe=PROBE)
    training_nice = []
    trainer.engine.on("epoch_end", lambda ev: training_nice.append(os.getpriority(os.PRIO_PROCESS, 0)))
    trainer.start()
    trainer.wait(timeout=60)
    trainer._on_demand.get(("renyi_mi", 5.0, "fixed", "labels"), trainer.runs)  # starts its worker
    trainer.sync()
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    ui = os.getpriority(os.PRIO_PROCESS, trainer._applier._thread.native_id)
    worker = os.getpriority(os.PRIO_PROCESS, trainer._on_demand._thread.native_id)
    assert ui == worker == min(19, base + 10)
    assert training_nice == [base]
    trainer.close()


def test_sync_waits_for_the_widths_shown_and_wait_filled_for_the_rest(trained, monkeypatch):
    """``sync()`` returns once the widths on show are drawn, while the other widths still fill in behind (held here
    by a gated fast estimator in the filler's thread); a σ the controls move to is computed first and drawn exactly;
    ``wait_filled()`` returns once every width is in."""
    trainer, _ = trained
    release = threading.Event()
    monkeypatch.setattr(measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY))

    def gated_packed(stats, targets):
        if threading.current_thread().name == "ibwidget-grid-fill":
            assert release.wait(60), "the test never released the grid"
        return torch.stack([stats.trace_with(t) for t in targets], -1)

    ib.estimators.register("ibw_gated_rest", lambda K, L: (K * L).mean(), packed=gated_packed, overwrite=True)
    view = RunView(trainer.run, estimators=["ibw_gated_rest", "hsic"])
    try:
        view.sync(30)  # the first view's width is drawn; the filler is held at the gate
        assert_marks_match(view, trainer.run.trajectories("ibw_gated_rest", sigma=5.0))
        assert not all(view._model.slot_filled())
        release.set()
        sigma = view._model.builder.sigmas[20]
        view.controls.sigma.value = sigma
        view.sync(30)  # that width is computed next and drawn exactly
        assert_marks_match(view, trainer.run.trajectories("ibw_gated_rest", sigma=sigma))
        assert view.wait_filled(60) and all(view._model.slot_filled())
    finally:
        release.set()
        view.close()


_OPEN_AT_EXIT = """
import torch, ibwidget as ib
from ibwidget.measure import kernels
from ibwidget.record.run import Run
g = torch.Generator().manual_seed(0)
m, widths, names = 1024, (80, 70), ["a", "b"]
run = Run("exit", names, list(widths), torch.rand(m, 8, generator=g), torch.arange(m) % 10)
for e in range(6):
    grams = {n: kernels.gram(torch.randn(m, w, generator=g)) for n, w in zip(names, widths)}
    run.add_snapshot(e, grams, torch.randn(m, 10, generator=g))
view = ib.RunView(run, estimators=("hsic",))  # its grid fills in behind, in torch, when the script ends
print("opened", flush=True)
"""


def test_a_script_that_ends_with_a_view_open_exits_cleanly():
    """The grid's filler is inside torch when the interpreter ends: it is stopped first (it aborted the process,
    'terminate called without an active exception', exit status 134)."""
    done = subprocess.run([sys.executable, "-c", _OPEN_AT_EXIT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "opened", done.stderr[-2000:]
    assert "terminate called" not in done.stderr
