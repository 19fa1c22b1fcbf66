"""Static export: notebook 01, executed and exported as ``make html`` does, opened in Chromium with no kernel.

The page is served by a plain local HTTP server (no Jupyter). Every request that leaves localhost is intercepted:
the CDN files nbconvert's page loads (require.js, the widgets HTML manager, bqplot/bqscales/anywidget) are answered
from local files (see ``cdn.py``), MathJax with a stub, anything else is refused and fails the test. The information
plane must be drawn from the embedded widget state with every recorded point.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from .cdn import CdnFiles, NpmUnavailable
from .conftest import ARTIFACTS, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_hsic_training_dynamics.ipynb"
EPOCHS, PROBE = 3, 64
PARAMETERS = {"EPOCHS": EPOCHS, "PROBE": PROBE, "DATASET": "digits", "DEVICE": "cpu"}
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
RENDER_TIMEOUT = 90_000  # ms


@pytest.fixture(scope="module")
def cdn(request) -> CdnFiles:
    """require.js and the HTML manager from the npm registry (cached under .pytest_cache), widget JS from wheels."""
    try:
        return CdnFiles.fetch(Path(request.config.cache.mkdir("ibwidget-cdn")))
    except NpmUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; under CI the static-export test must run", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Notebook 01 with small parameters, executed and exported by ``ibwidget._export`` (what ``make html`` runs)."""
    from ibwidget import _export

    out = tmp_path_factory.mktemp("html")
    data = tmp_path_factory.mktemp("no-data")  # no MNIST files here: the notebook takes the offline digits
    old = os.environ.get("IBWIDGET_DATA")
    os.environ["IBWIDGET_DATA"] = str(data)
    try:
        (html,) = _export.export([NOTEBOOK], out, PARAMETERS, timeout=300)
    finally:
        if old is None:
            os.environ.pop("IBWIDGET_DATA", None)
        else:
            os.environ["IBWIDGET_DATA"] = old
    return html


@pytest.fixture
def static_server(exported):
    """A plain HTTP server for the export folder on 127.0.0.1 (records every path it was asked for)."""
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    handler = functools.partial(Handler, directory=str(exported.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requested
    finally:
        server.shutdown()
        server.server_close()


def embedded_state(html: str) -> dict:
    match = re.search(rf'<script type="{re.escape(WIDGET_STATE)}">(.*?)</script>', html, re.S)
    assert match, "no widget state embedded in the page"
    return json.loads(match.group(1))["state"]


def recorded_points(state: dict) -> dict[str, int]:
    """For each information plane in the state (by its figure id): how many points its Scatter marks hold."""
    out = {}
    for fid, model in state.items():
        if "ibw-plane" not in model["state"].get("_dom_classes", []):
            continue
        total = 0
        for ref in model["state"]["marks"]:
            mark = state[ref.removeprefix("IPY_MODEL_")]
            if mark["model_name"] != "ScatterModel":
                continue
            buffers = {tuple(b["path"]): b for b in mark.get("buffers", [])}
            x = buffers[("x", "value")]
            total += len(base64.b64decode(x["data"])) // 4  # float32
        out[fid] = total
    return out


def test_exported_page_draws_the_recorded_plane_without_kernel_or_network(
    exported, static_server, cdn, playwright_sync, chromium_executable, tmp_path, request
):
    html = exported.read_text(encoding="utf-8")
    state = embedded_state(html)
    assert "Using the offline digits data" in html
    layers = 5  # Conv2d and the four Dense layers of the seed model
    points = recorded_points(state)
    # Two planes: the live Trainer's final state and the RunView of the saved run; epoch 0 to EPOCHS each.
    assert sorted(points.values()) == [layers * (EPOCHS + 1)] * 2, points

    base, served_locally = static_server
    context = playwright_sync.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=str(chromium_executable),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1600},
    )
    requests: list[str] = []
    errors: list[str] = []
    try:
        context.route("**/*", cdn.handle)
        page = context.pages[0] if context.pages else context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + exported.name)
        page.wait_for_function(
            "n => document.querySelectorAll('.ibw-plane path.dot').length >= n",
            arg=2 * layers * (EPOCHS + 1),
            timeout=RENDER_TIMEOUT,
        )
        planes = page.locator(".ibw-plane")
        assert planes.count() == 2
        for i in range(2):
            plane = planes.nth(i)
            assert plane.locator("path.dot").count() == layers * (EPOCHS + 1)
            assert plane.locator("path.line").count() >= layers
            # every point is drawn, with a size, inside its figure
            bad = plane.locator("path.dot").evaluate_all(
                """els => els.filter(e => {
                    const r = e.getBoundingClientRect(), f = e.closest('.ibw-plane').getBoundingClientRect();
                    const x = r.left + r.width / 2, y = r.top + r.height / 2;
                    return !(r.width > 0 && x >= f.left && x <= f.right && y >= f.top && y <= f.bottom);
                }).length"""
            )
            assert bad == 0
        assert page.locator(".ibw-trainer .ibw-status").first.inner_text().strip() == "finished"
        assert page.locator(".ibw-trainer .ibw-epoch").first.inner_text().strip() == f"epoch {EPOCHS}/{EPOCHS}"
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / ".gitignore").write_text("*\n")
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / "static_html.png"), full_page=True)
        shutil.copy(exported, ARTIFACTS / "static_html.html")
        (ARTIFACTS / "static_html.log").write_text(
            "\n".join(["requests:", *requests, "", "page errors:", *errors, "", f"refused: {cdn.refused}"])
        )
        raise
    finally:
        with contextlib.suppress(Exception):
            context.close()

    external = [u for u in requests if u.startswith(("http://", "https://")) and not u.startswith(base)]
    handled = set(cdn.served) | set(cdn.stubbed) | set(cdn.refused)
    assert not cdn.refused, f"requests to the network that no local file answers: {cdn.refused}"
    assert set(external) <= handled, f"requests that escaped the interception: {set(external) - handled}"
    names = {p.name for p in cdn.served.values()}
    assert {"require.js", "embed-amd.js"} <= names, names
    modules = {p.parent.name for p in cdn.served.values() if p.is_relative_to(cdn.nbextensions)}
    assert {"bqplot", "bqscales"} <= modules, modules
    assert not any(p.startswith("/api/") for p in served_locally), "the static page talked to a Jupyter API"
    assert not errors, errors
