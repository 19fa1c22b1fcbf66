"""The kernel-free information plane in a real Chromium: the one-file HTML offline, then PlaneView in Jupyter.

1. ``run.to_html`` opened from file:// with every non-file request aborted and the browser offline: the plane is
   drawn, play advances the epochs, each toggle (estimator, sigma, rule, target, layer) redraws the paths with the
   values ``run.trajectories`` gives for that grid point, a hostile layer name is text and runs nothing, no console
   errors. Redraw times measured in the page are printed (not asserted).
2. The same view through the kernel in JupyterLab 4 and Notebook 7: a static PlaneView (a toggle works) and a
   Trainer's live "Player" tab that receives the epochs as training runs.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics

import numpy as np
import pytest
import torch

from ibwidget._vocabulary import GRID_VERSION, SATURATION_RANGE
from ibwidget.measure import kernels
from ibwidget.plane._grid import DEFAULT_SIGMAS, REPORT_BAND_PERMUTATIONS, plane_grid
from ibwidget.plane._report import grid_html
from ibwidget.record.run import Run

from .conftest import ARTIFACTS, CHROMIUM_ARGS, _artifact_name
from .notebooks import write_notebook
from .test_lab_trainer import (
    STEP_TIMEOUT,
    assert_no_console_errors,
    open_and_run_all,
    wait_rendered,
    wait_until,
)

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"
EPOCHS = 12
LAYERS = ["conv", HOSTILE, "fc2", "fc3", "logits"]
WIDTHS = (300, 120, 40, 20, 10)


def synthetic_run(epochs=EPOCHS, m=48) -> Run:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(m, 1, 8, 8, generator=g)
    labels = torch.arange(m) % 10
    run = Run("offline demo", LAYERS, list(WIDTHS), x, labels, num_classes=10, capacity=epochs + 1)
    bases = [torch.randn(m, w, generator=g) for w in WIDTHS]
    for e in range(epochs + 1):
        grams, acts = {}, {}
        for name, base, w in zip(LAYERS, bases, WIDTHS, strict=True):
            z = torch.relu(base * (1 + 0.1 * e) + 0.2 * e * torch.randn(m, w, generator=g))
            grams[name] = kernels.gram(z)
            if w < m:
                acts[name] = z
        run.add_snapshot(e, grams, torch.randn(m, 10, generator=g) * (1 + 0.3 * e), acts)
        if e:
            run.log_epoch({"loss": 2.0 / e, "accuracy": 0.1 + 0.07 * e, "val_loss": 2.1 / e, "val_accuracy": 0.07 * e})
    return run


# -------------------------------------------------------------------------------------------- the offline page


@pytest.fixture
def offline_page(request, playwright_sync, chromium_executable, tmp_path):
    """A fresh Chromium page, offline, where every request but file:, data: and blob: is aborted and recorded."""
    browser = playwright_sync.chromium.launch(
        executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
    )
    context = browser.new_context(viewport={"width": 1000, "height": 1000})
    context.set_default_timeout(30_000)
    log = {"blocked": [], "console": [], "errors": [], "dialogs": []}

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            log["blocked"].append(url)
            r.abort()

    context.route("**/*", route)
    context.set_offline(True)
    page = context.new_page()
    page.on("console", lambda msg: log["console"].append((msg.type, msg.text)))
    page.on("pageerror", lambda err: log["errors"].append(str(err)))

    def dialog(d):
        log["dialogs"].append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    try:
        yield page, log
    finally:
        if getattr(getattr(request.node, "rep_call", None), "failed", False):
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / ".gitignore").write_text("*\n")
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"{_artifact_name(request.node.name)}.png"), full_page=True)
            (ARTIFACTS / f"{_artifact_name(request.node.name)}.log").write_text(json.dumps(log, indent=1))
        with contextlib.suppress(Exception):
            context.close()
            browser.close()


def drawn(page) -> np.ndarray:
    """The coordinates the page drew: (layers, epochs, 2) from each track's data-values (NaN where hidden)."""
    raw = page.locator("path.ibwp-track").evaluate_all("(els) => els.map((e) => e.getAttribute('data-values'))")
    return np.array([[[float(v) for v in p.split(",")] for p in d.split(";")] for d in raw])


def selection(page) -> dict:
    return page.locator(".ibwp-root").evaluate("(e) => ({...e.dataset})")


def expected(run: Run, sel: dict) -> np.ndarray:
    """run.trajectories at the page's grid point, (layers, epochs, 2), NaN for layers the estimator cannot read."""
    out = np.full((len(run.layer_names), run.num_snapshots, 2), np.nan)
    layers = [n for n in run.layer_names if sel["estimator"] != "binning" or n in run._acts]
    rule = sel["rule"] if sel["estimator"] != "binning" else "fixed"
    sigma, target = float(sel["sigma"]), sel["target"]
    traj = run.trajectories(sel["estimator"], sigma=sigma, target=target, sigma_rule=rule, layers=layers)
    for i, name in enumerate(layers):
        out[run.layer_names.index(name)] = traj[:, i]
    return out


def assert_drawn_equals_trajectories(page, run: Run) -> np.ndarray:
    sel = selection(page)
    got, want = drawn(page), expected(run, sel)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(sel))
    span = np.nanmax(want, axis=(0, 1)) - np.nanmin(want, axis=(0, 1))
    tol = span / 65534 + 1e-6 * np.abs(want) + 1e-300  # uint16 quantisation of the block's range, float32
    bad = np.abs(got - want) > tol
    assert not bad.any(), f"{sel}: drawn values differ from run.trajectories at {np.argwhere(bad)[:5].tolist()}"
    return got


def paths(page) -> list[str]:
    return page.locator("path.ibwp-track").evaluate_all("(els) => els.map((e) => e.getAttribute('d'))")


def epoch(page) -> int:
    return int(selection(page)["epoch"])


def redraw_ms(page) -> float:
    return float(page.evaluate("window.__ibwp_last_redraw_ms"))


def test_one_file_html_offline(offline_page, tmp_path):
    page, log = offline_page
    run = synthetic_run()
    html_path = run.to_html(tmp_path / "report.html", notes=f"notes with {HOSTILE}")
    page.goto(html_path.as_uri())
    page.wait_for_selector("circle.ibwp-point")
    timings: dict[str, list[float]] = {}

    def timed(kind: str) -> None:
        timings.setdefault(kind, []).append(redraw_ms(page))

    # The plane: one track and one current point per layer, axes labelled with the estimator, a colour bar.
    assert page.locator("path.ibwp-track").count() == len(LAYERS)
    assert page.locator("circle.ibwp-point").count() == len(LAYERS)
    assert all(d.startswith("M") and d.count("L") == EPOCHS for d in paths(page))
    assert page.locator("text.ibwp-xlabel").text_content().startswith("HSIC(T, X)")
    assert page.locator("text.ibwp-ylabel").text_content().startswith("HSIC(T, Y)")
    assert page.locator(".ibwp-colorbar-rect").count() == 1 and page.locator("text.ibwp-tick").count() > 6
    assert epoch(page) == EPOCHS  # it opens on the last epoch
    first = assert_drawn_equals_trajectories(page, run)
    points = page.locator("circle.ibwp-point").evaluate_all("(els) => els.map((e) => [+e.dataset.x, +e.dataset.y])")
    np.testing.assert_allclose(points, first[:, -1], rtol=1e-6)
    assert "loss" in page.locator(".ibwp-history").inner_text()
    assert re.search(r"\d\.\d\d", page.locator(".ibwp-gauge-text").inner_text())

    # The player: Home, then space plays; the epoch label advances; space pauses; arrows step.
    root = page.locator(".ibwp-root")
    root.focus()
    page.keyboard.press("Home")
    assert epoch(page) == 0 and page.locator(".ibwp-epoch").inner_text().startswith("epoch 0 /")
    page.keyboard.press("Space")
    wait_until(page, lambda: epoch(page) >= 3, 10_000, "play to advance three epochs")
    page.keyboard.press("Space")
    assert selection(page)["playing"] == "0"
    held = epoch(page)
    page.wait_for_timeout(400)
    assert epoch(page) == held, "the player moved while paused"
    page.keyboard.press("ArrowRight")
    assert epoch(page) == held + 1
    timed("epoch step")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert epoch(page) == held - 1
    timed("epoch step")
    page.locator(".ibwp-play").click()  # the button too
    wait_until(page, lambda: epoch(page) == EPOCHS and selection(page)["playing"] == "0", 15_000, "play to the end")

    # Each toggle changes the drawn paths to run.trajectories at the new grid point.
    def toggle(kind, action):
        before = paths(page)
        action()
        wait_until(page, lambda: paths(page) != before, 5_000, f"a redraw after the {kind} toggle")
        timed(kind)
        return assert_drawn_equals_trajectories(page, run)

    toggle("estimator", lambda: page.locator("select.ibwp-estimator").select_option(label="cka"))
    assert page.locator("text.ibwp-xlabel").text_content().startswith("CKA(T, X)")
    sigma = page.locator("input.ibwp-sigma")
    sigma_before = selection(page)["sigma"]

    def sigma_down():
        sigma.focus()
        for _ in range(4):
            page.keyboard.press("ArrowLeft")

    toggle("sigma", sigma_down)
    assert float(selection(page)["sigma"]) < float(sigma_before)
    assert page.locator(".ibwp-sigma-value").inner_text() == f"σ = {float(selection(page)['sigma']):.3g}"
    toggle("target", lambda: page.locator("select.ibwp-target").select_option("output"))
    assert page.locator("text.ibwp-ylabel").text_content().startswith("CKA(T, Ŷ)")
    toggle("rule", lambda: page.locator("select.ibwp-rule").select_option("median_d2"))
    assert sigma.is_disabled()
    toggle("estimator", lambda: page.locator("select.ibwp-estimator").select_option(label="kde_upper"))
    assert "bits" in page.locator("text.ibwp-xlabel").text_content()
    binning = toggle("estimator", lambda: page.locator("select.ibwp-estimator").select_option(label="binning"))
    assert np.isnan(binning[:2]).all() and not np.isnan(binning[2:]).any()  # activations only for narrow layers
    assert "n/a" in page.locator(".ibwp-gauge-text").inner_text()
    toggle("estimator", lambda: page.locator("select.ibwp-estimator").select_option(label="hsic"))

    # Layer toggles hide their layers; the axes rescale to the layers left.
    before = paths(page)
    for layer in range(4):
        page.locator(f'button.ibwp-layer-toggle[data-layer="{layer}"]').click()
        timed("layer")
        assert page.locator(f'g.ibwp-layer[data-layer="{layer}"]').get_attribute("display") == "none"
        assert page.locator(f'button.ibwp-layer-toggle[data-layer="{layer}"]').get_attribute("aria-pressed") == "false"
    assert page.locator("circle.ibwp-point:visible").count() == 1
    assert paths(page)[4] != before[4], "the plane did not rescale to the visible layer"
    page.locator('button.ibwp-layer-toggle[data-layer="1"]').click()
    assert page.locator("circle.ibwp-point:visible").count() == 2

    # The hostile layer name is text in the toggle and the tooltip; no <img>, no dialog, no script ran from it.
    assert page.get_by_text(HOSTILE, exact=True).count() >= 1
    assert HOSTILE in page.locator(".ibwp-toggles").inner_text()
    assert page.get_by_text(f"notes with {HOSTILE}").count() == 1
    point = page.locator('circle.ibwp-point[data-layer="1"]')
    point.hover(force=True)  # hover is found from coordinates: the marks take no pointer events
    wait_until(page, lambda: HOSTILE in page.locator(".ibwp-tooltip").inner_text(), 5_000, "the hover tooltip")
    assert "epoch" in page.locator(".ibwp-readout").inner_text()
    assert page.locator("img").count() == 0
    assert log["dialogs"] == [], "a dialog opened: script ran from a user string"

    # The σ fan: every fixed σ of each visible layer at once, solid where the kernel is informative at the epoch
    # shown (its mean off-diagonal value within the saturation range), as run.saturation says.
    page.locator("select.ibwp-estimator").select_option(label="hsic")
    page.locator("select.ibwp-rule").select_option("fixed")
    page.locator("input.ibwp-fan-toggle").check()
    timed("fan")
    sigmas = list(DEFAULT_SIGMAS)
    fans = page.locator("g.ibwp-layer[data-layer='1'] path.ibwp-fan-line")
    assert fans.count() == len(sigmas)
    assert page.locator("path.ibwp-fan-line").count() == len(LAYERS) * len(sigmas)
    shown = page.locator("g.ibwp-layer[data-layer='1'] path.ibwp-fan-line").evaluate_all(
        "(els) => els.map((e) => [Number(e.dataset.sigma), e.dataset.informative === '1', e.getAttribute('d')])"
    )
    low, high = SATURATION_RANGE
    last = run.num_snapshots - 1
    verdicts = []
    for sigma, informative, d in shown:
        mean_k = float(run.saturation(sigma=sigma)[last, 1])
        if abs(mean_k - low) > 1e-4 and abs(mean_k - high) > 1e-4:  # clear of the edges, where float32 may differ
            assert informative == (low <= mean_k <= high), (sigma, mean_k)
        verdicts.append(informative)
        assert d.startswith("M")
    assert any(verdicts) and not all(verdicts), "a fan over 0.05 ... 500 has widths on both sides"
    note = page.locator(".ibwp-fan-note").inner_text()
    assert note.startswith("informative σ") and HOSTILE in note
    page.locator("input.ibwp-fan-toggle").uncheck()
    assert page.locator("path.ibwp-fan-line").count() == 0 and page.locator(".ibwp-fan-note").inner_text() == ""

    # The chance floor: the page holds it for the view it opens on (hsic, fixed σ = 5, labels); a box per visible
    # layer up to the band's (x, y) at the epoch shown, as run.null_band computes it.
    page.locator("input.ibwp-sigma").evaluate(
        "(e, i) => { e.value = String(i); e.dispatchEvent(new Event('input')); }", DEFAULT_SIGMAS.index(5.0)
    )
    page.locator("select.ibwp-target").select_option("labels")
    page.locator("input.ibwp-band-toggle").check()
    boxes = page.locator("rect.ibwp-band[display='inline']")
    wait_until(page, lambda: boxes.count() == 2, 5_000, "a chance floor box per visible layer (1 and 4)")
    band = run.null_band("hsic", sigma=5.0, permutations=REPORT_BAND_PERMUTATIONS)[-1]
    for box in boxes.all():
        layer = int(box.get_attribute("data-layer"))
        assert float(box.get_attribute("data-x")) == pytest.approx(band[layer, 0], rel=1e-9)
        assert float(box.get_attribute("data-y")) == pytest.approx(band[layer, 1], rel=1e-9)
        assert float(box.get_attribute("width")) > 0 and float(box.get_attribute("height")) > 0
    assert page.locator(".ibwp-band-note").inner_text() == ""
    page.locator("select.ibwp-estimator").select_option(label="cka")  # not the first view: the page has no floor
    assert boxes.count() == 0 and "first view only" in page.locator(".ibwp-band-note").inner_text()
    page.locator("input.ibwp-band-toggle").uncheck()

    # The layers' CKA heatmap follows the epoch player: at each epoch, run.cka_matrix (linear) of that epoch.
    page.locator("input.ibwp-cka-toggle").check()
    names = run.cka_names(0)
    cells = page.locator("rect.ibwp-cka-cell")
    assert cells.count() == len(names) ** 2
    assert page.locator(".ibwp-cka-map text").all_text_contents()[0] == names[0]
    assert HOSTILE in page.locator(".ibwp-cka-map").first.text_content()  # a layer name as text, nothing run

    def heatmap() -> np.ndarray:
        flat = cells.evaluate_all("(els) => els.map((e) => Number(e.dataset.value))")
        return np.array(flat).reshape(len(names), len(names))

    shown = epoch(page)
    np.testing.assert_allclose(heatmap(), run.cka_matrix(shown, None, None), rtol=1e-12)
    page.locator("button.ibwp-step-back").click()
    assert epoch(page) == shown - 1
    np.testing.assert_allclose(heatmap(), run.cka_matrix(shown - 1, None, None), rtol=1e-12)
    page.locator("input.ibwp-cka-toggle").uncheck()
    assert cells.count() == 0

    # Offline: nothing was requested; no console errors.
    assert log["blocked"] == [], f"the page tried the network: {log['blocked']}"
    errors = [t for kind, t in log["console"] if kind == "error"] + log["errors"]
    assert not errors, errors
    size = html_path.stat().st_size
    print(f"\none-file HTML: {size / 1e3:.0f} kB for {EPOCHS + 1} epochs x {len(LAYERS)} layers")
    for kind, values in timings.items():
        print(f"redraw in the browser, {kind}: median {statistics.median(values):.2f} ms, max {max(values):.2f} ms")


def test_one_file_html_redraw_time_100_epochs(offline_page, tmp_path):
    """The reference size: 100 epochs x 5 layers with the default grid; redraw times printed, not asserted."""
    page, log = offline_page
    run = synthetic_run(epochs=100, m=16)
    html_path = run.to_html(tmp_path / "big.html")
    page.goto(html_path.as_uri())
    page.wait_for_selector("circle.ibwp-point")
    samples: dict[str, list[float]] = {"toggle": [], "epoch step": []}
    options = page.locator("select.ibwp-estimator option").all_inner_texts()
    for k in range(6):
        page.locator("select.ibwp-estimator").select_option(label=options[(k + 1) % len(options)])
        samples["toggle"].append(redraw_ms(page))
        page.locator("select.ibwp-target").select_option(["labels", "output"][k % 2])
        samples["toggle"].append(redraw_ms(page))
    page.locator(".ibwp-root").focus()
    for _ in range(20):
        page.keyboard.press("ArrowLeft")
        samples["epoch step"].append(redraw_ms(page))
    assert len(drawn(page)[0]) == 101
    frame = page.evaluate(
        """() => new Promise((done) => {
            const sel = document.querySelector("select.ibwp-target");
            const t0 = performance.now();
            sel.value = sel.value === "labels" ? "output" : "labels";
            sel.dispatchEvent(new Event("change"));
            requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
        })"""
    )
    print(f"\n100 epochs x 5 layers, one-file HTML {html_path.stat().st_size / 1e6:.2f} MB")
    for kind, values in samples.items():
        print(f"redraw in the browser, {kind}: median {statistics.median(values):.2f} ms, max {max(values):.2f} ms")
    print(f"toggle to the next painted frame: {frame:.1f} ms")
    assert log["blocked"] == [] and log["dialogs"] == []
    assert not [t for kind, t in log["console"] if kind == "error"] + log["errors"]


def test_one_file_html_refuses_a_grid_version_it_does_not_read(offline_page, tmp_path):
    """A grid of another format version: the page says so in the view (what to do), draws nothing, throws nothing."""
    page, log = offline_page
    grid = plane_grid(synthetic_run(epochs=2, m=16), estimators=["hsic"], sigmas=[5.0])
    grid.meta["version"] += 1
    path = tmp_path / "newer.html"
    path.write_text(grid_html(grid), encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_selector(".ibwp-root[data-problem]")
    want = f"this grid is format version {grid.meta['version']}; this view reads version {GRID_VERSION} only"
    assert page.locator(".ibwp-note").text_content().startswith(want)
    assert "update ibwidget" in page.locator("text.ibwp-empty").text_content()
    assert page.locator("circle.ibwp-point").count() == 0 and page.locator("path.ibwp-track").count() == 0
    assert log["blocked"] == [] and not [t for kind, t in log["console"] if kind == "error"] + log["errors"]


# -------------------------------------------------------------------------------------------- through the kernel

_NOTEBOOK_RUN = """
import torch
import ibwidget as ib
from ibwidget.measure import kernels
from ibwidget.record.run import Run

g = torch.Generator().manual_seed(0)
m, widths, names = 32, (40, 20, 10), ["dense0", "dense1", "logits"]
run = Run("kernel demo", names, list(widths), torch.rand(m, 1, 8, 8, generator=g), torch.arange(m) % 10)
bases = [torch.randn(m, w, generator=g) for w in widths]
for e in range(6):
    grams = {n: kernels.gram(torch.relu(b + 0.2 * e * torch.randn(m, w, generator=g)))
             for n, b, w in zip(names, bases, widths)}
    run.add_snapshot(e, grams, torch.randn(m, 10, generator=g))
view = ib.PlaneView(run, estimators=["hsic", "cka"], sigmas=[1.0, 5.0, 25.0])
view
"""
_NOTEBOOK_RUNVIEW = """
ib.RunView(run)
"""
_NOTEBOOK_TRAINER = """
from ibwidget.cli import seed_model
import ibwidget.widget.planeview as pv
pv._FULL_SYNC_BYTES = 0  # every new epoch travels as an append message (the path of big grids), not a resend
train, val, _ = ib.datasets.digits.load_data(batch_size=32)
model = seed_model((1, 8, 8))
model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
trainer = ib.Trainer(model, train, val, epochs=8, probe=64)
trainer
"""


def test_planeview_in_jupyter(frontend, jupyter_server, browser_page):
    """A PlaneView through the kernel (a toggle redraws it), a RunView's Player tab (σ fan, layer CKA from the
    kernel), and a Trainer's Player tab filled live by training."""
    name = f"planeview_{frontend}.ipynb"
    write_notebook(jupyter_server.root / name, _NOTEBOOK_RUN, _NOTEBOOK_RUNVIEW, _NOTEBOOK_TRAINER)
    page = browser_page.page
    open_and_run_all(page, jupyter_server, name, n_cells=3)

    # The static view: drawn, and a toggle changes its paths in the browser.
    wait_rendered(page, ".ibwp-root circle.ibwp-point")
    view = page.locator(".ibwp-root").first
    wait_until(page, lambda: view.locator("circle.ibwp-point").count() == 3, STEP_TIMEOUT, "3 points in the view")
    assert view.locator("text.ibwp-xlabel").text_content().startswith("HSIC(T, X)")
    tracks = view.locator("path.ibwp-track")
    before = tracks.evaluate_all("(els) => els.map((e) => e.getAttribute('d'))")
    assert all(d.count("L") == 5 for d in before)
    view.locator("select.ibwp-estimator").select_option(label="cka")
    wait_until(
        page,
        lambda: tracks.evaluate_all("(els) => els.map((e) => e.getAttribute('d'))") != before,
        STEP_TIMEOUT,
        "a redraw after the estimator toggle",
    )
    assert view.locator("text.ibwp-xlabel").text_content().startswith("CKA(T, X)")
    print(f"\n{frontend}: PlaneView toggle redraw {float(page.evaluate('window.__ibwp_last_redraw_ms')):.2f} ms")
    # The chance floor and the layers' CKA, which the kernel computes when the page asks for them.
    view.locator("input.ibwp-band-toggle").check()
    boxes = view.locator("rect.ibwp-band[display='inline']")
    wait_until(page, lambda: boxes.count() == 3, STEP_TIMEOUT, "the kernel's chance floor: a box per layer")
    assert all(float(b.get_attribute("width")) > 0 for b in boxes.all())
    view.locator("input.ibwp-cka-toggle").check()
    cells = view.locator("rect.ibwp-cka-cell")
    wait_until(page, lambda: cells.count() >= 16, STEP_TIMEOUT, "the kernel's CKA heatmap")  # input, 3 layers(, out)
    diagonal = view.locator("rect.ibwp-cka-cell[data-i='1'][data-j='1']").get_attribute("data-value")
    assert float(diagonal) == pytest.approx(1.0)
    view.locator("input.ibwp-cka-toggle").uncheck()
    view.locator("input.ibwp-band-toggle").uncheck()

    # The RunView: its Player tab is a PlaneView of the figures' grid, with the σ fan and the kernel's layer CKA.
    wait_rendered(page, ".ibw-runview .lm-TabBar-tab")
    runview = page.locator(".ibw-runview").first
    runview.locator(".lm-TabBar-tab", has_text="Player").click()
    player = runview.locator(".ibwp-root")
    wait_until(page, lambda: player.is_visible(), STEP_TIMEOUT, "the RunView's Player tab to show the PlaneView")
    wait_until(page, lambda: player.locator("circle.ibwp-point").count() == 3, STEP_TIMEOUT, "3 points in its Player")
    player.locator("input.ibwp-fan-toggle").check()
    fans = player.locator("g.ibwp-layer[data-layer='1'] path.ibwp-fan-line")
    wait_until(page, lambda: fans.count() == len(DEFAULT_SIGMAS), STEP_TIMEOUT, "a fan line per fixed σ of the grid")
    assert player.locator(".ibwp-fan-note").inner_text() != ""
    player.locator("input.ibwp-cka-toggle").check()
    cells = player.locator("rect.ibwp-cka-cell")
    wait_until(page, lambda: cells.count() >= 16, STEP_TIMEOUT, "the kernel's CKA heatmap in the RunView's Player")
    values = [float(v) for v in cells.evaluate_all("(els) => els.map((e) => e.getAttribute('data-value'))")]
    diagonal = player.locator("rect.ibwp-cka-cell[data-i='2'][data-j='2']").get_attribute("data-value")
    assert float(diagonal) == pytest.approx(1.0)
    assert all(0.0 < v <= 1.0 + 1e-9 for v in values) and min(values) < 0.99

    # The Trainer: open its Player tab, start training, and watch the epochs arrive in the browser.
    wait_rendered(page, ".ibw-trainer .ibw-start")
    trainer = page.locator(".ibw-trainer").first
    trainer.locator(".lm-TabBar-tab", has_text="Player").click()
    player = trainer.locator(".ibwp-root")
    wait_until(page, lambda: player.is_visible(), STEP_TIMEOUT, "the Player tab to show the PlaneView")
    start = trainer.locator(".ibw-start")
    (start if start.evaluate("(e) => e.tagName") == "BUTTON" else start.locator("button")).first.click()
    seen: list[int] = []

    def sample():
        text = player.locator(".ibwp-epoch").inner_text()
        match = re.search(r"/ (\d+)", text)
        last = int(match.group(1)) if match else -1
        if not seen or last != seen[-1]:
            seen.append(last)
        return last >= 8

    wait_until(page, sample, 4 * STEP_TIMEOUT, lambda: f"the Player to reach epoch 8 (saw {seen})", poll_ms=100)
    assert len(seen) >= 3, f"epochs did not arrive one by one in the Player: {seen}"
    kinds = {kind for kind, _ in page.evaluate("window.__ibwp_redraws")}
    assert "append" in kinds, f"no epoch arrived as an append message: {kinds}"
    assert player.locator("circle.ibwp-point").count() == 5  # the seed model's tracked layers: conv + 4 dense

    # Training has ended: the widths not viewed are filled in behind; the Player's σ slider reaches them.
    sigma = player.locator("input.ibwp-sigma")
    sigma.focus()
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    wait_until(
        page,
        lambda: player.get_attribute("data-computing") == "" and player.locator("circle.ibwp-point").count() == 5,
        STEP_TIMEOUT,
        "the Player to draw the σ it moved to",
    )
    assert player.locator("text.ibwp-empty").text_content() == ""
    assert_no_console_errors(browser_page)
