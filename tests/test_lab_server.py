"""The JupyterLab extension's server half, in a real Jupyter server process: grids of run files (a growing one too),
reports, and the refusals every endpoint owes (no token, outside the root, hidden, not a run)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from _training import make_data, make_mlp

import ibwidget as ib
from ibwidget.plane._grid import plane_grid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, base: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if k not in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH")}
        for var, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTER_DATA_DIR", "data"),
        ):
            env[var] = str(base / sub)
        self.log = base / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                if self.get("api/status")[0] == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Jupyter server did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.25)

    def get(self, path: str, token: bool = True, headers: dict | None = None, timeout: float = 120):
        """(status, headers, body) of a GET, redirects not followed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token:
                hdrs["Authorization"] = f"token {self.token}"
            conn.request("GET", "/" + path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def grid(self, path: str, **query):
        return self.get("ibwidget/grid?" + urllib.parse.urlencode({"path": path, **query}))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def decode(body: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    """(header, values, saturation) of a grid answer, checked against the sizes its meta gives."""
    assert body[:4] == b"IBWG"
    (n,) = struct.unpack("<I", body[4:8])
    assert (8 + n) % 4 == 0
    header = json.loads(body[8 : 8 + n])
    meta = header["meta"]
    R, E, B, L = meta["n_runs"], meta["n_epochs"], meta["n_blocks"], meta["n_layers"]
    floats = np.frombuffer(body[8 + n :], dtype="<f4")
    assert floats.size == R * E * B * L * 2 + R * E * len(meta["slots"]) * L
    values = floats[: R * E * B * L * 2].reshape(R, E, B, L, 2)
    return header, values, floats[values.size :].reshape(R, E, len(meta["slots"]), L)


def _record(path: Path, epochs: int, seed: int = 0, name: str | None = None):
    """A small run written to ``path`` by ib.record, ``epochs`` epochs after epoch 0."""
    model = make_mlp(seed)
    x, y = make_data(64, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ib.record(model, (x, y), path=path, probe_size=32, name=name) as rec:
        for _ in range(epochs):
            _step(model, opt, x, y)
            rec.snapshot(logs={"loss": 1.0})
    return rec.run


def _step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab-server")
    root = base / "root"
    (root / "runs").mkdir(parents=True)
    (root / ".hidden").mkdir()
    server = Server(root, base)
    try:
        yield server
    finally:
        server.stop()


def _filled_answer(server: Server, path: str, deadline_s: float = 120):
    """Ask until every slot is filled (the filler computes them behind the first)."""
    deadline = time.monotonic() + deadline_s
    while True:
        status, headers, body = server.grid(path)
        assert status == 200, body
        header, values, sat = decode(body)
        if all(header["meta"]["slot_filled"]) or time.monotonic() > deadline:
            return headers, header, values, sat
        time.sleep(0.5)


def test_the_grid_of_a_run_file_is_the_one_planeview_computes(server):
    run = _record(server.root / "runs" / "a.ibrun", epochs=3, name="a")
    status, _, body = server.grid("runs/a.ibrun", slot=0)
    assert status == 200
    header, values, _ = decode(body)
    assert header["meta"]["slot_filled"][0] and header["meta"]["runs"][0]["epochs"] == [0, 1, 2, 3]
    assert header["configs"][0] == json.loads(json.dumps(run.config))
    _, header, values, sat = _filled_answer(server, "runs/a.ibrun")
    assert all(header["meta"]["slot_filled"])
    expected = plane_grid(ib.load_run(server.root / "runs" / "a.ibrun"))
    np.testing.assert_allclose(values, expected.values, rtol=1e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(sat, expected.saturation, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_a_growing_run_file_gains_epochs_and_an_unchanged_one_answers_304(server):
    path = server.root / "runs" / "growing.ibrun"
    model = make_mlp(1)
    x, y = make_data(64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with ib.record(model, (x, y), path=path, probe_size=32) as rec:
        _step(model, opt, x, y)
        rec.snapshot()
        status, headers, body = server.grid("runs/growing.ibrun", slot=0)
        assert status == 200 and decode(body)[0]["meta"]["runs"][0]["epochs"] == [0, 1]
        tag = headers["Etag"]
        _step(model, opt, x, y)
        rec.snapshot()
        status, headers, body = server.grid("runs/growing.ibrun", slot=0)
        assert status == 200 and headers["Etag"] != tag
        header, values, _ = decode(body)
        assert header["meta"]["runs"][0]["epochs"] == [0, 1, 2] and np.isfinite(values[0, 2, 0]).all()
    headers, *_ = _filled_answer(server, "runs/growing.ibrun")
    status, _, body = server.get("ibwidget/grid?path=runs/growing.ibrun", headers={"If-None-Match": headers["Etag"]})
    assert status == 304 and body == b""


def test_a_folder_compares_its_runs(server):
    folder = server.root / "compare"
    folder.mkdir()
    _record(folder / "one.ibrun", epochs=1, seed=2, name="one")
    _record(folder / "two.ibrun", epochs=2, seed=3, name="two")
    (folder / "notes.txt").write_text("not a run")
    status, _, body = server.grid("compare", slot=0)
    assert status == 200
    meta = decode(body)[0]["meta"]
    assert [r["name"] for r in meta["runs"]] == ["one", "two"] and meta["n_epochs"] == 3


def test_the_report_is_the_one_file_page_of_the_run(server):
    _record(server.root / "runs" / "r.ibrun", epochs=1, name="r")
    status, headers, body = server.get("ibwidget/report?path=runs/r.ibrun")
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="r.html"'
    page = body.decode()
    assert page.startswith("<!DOCTYPE html>") and 'id="ibwp-grid"' in page and "ibwidget report: r.ibrun" in page


def test_every_endpoint_refuses_without_authentication(server):
    _record(server.root / "runs" / "auth.ibrun", epochs=1)
    for endpoint in ("grid", "report"):
        status, _, body = server.get(f"ibwidget/{endpoint}?path=runs/auth.ibrun", token=False)
        assert status in (302, 403) and b"IBWG" not in body and b"ibwp-grid" not in body


def test_paths_outside_the_root_are_refused_also_through_symlinks(server, tmp_path):
    outside = tmp_path / "outside.ibrun"
    _record(outside, epochs=1)
    (server.root / "runs" / "link.ibrun").symlink_to(outside)
    for path in ("../outside.ibrun", "runs/link.ibrun", str(outside)):
        for endpoint in ("grid", "report"):
            query = urllib.parse.urlencode({"path": path})
            status, _, body = server.get(f"ibwidget/{endpoint}?{query}")
            assert status in (403, 404), (path, status)
            assert b"IBWG" not in body
    status, _, body = server.grid("runs/link.ibrun")
    assert status == 403 and "outside the server's root" in json.loads(body)["message"]


def test_hidden_files_are_not_served(server):
    _record(server.root / ".hidden" / "h.ibrun", epochs=1)
    status, _, body = server.grid(".hidden/h.ibrun")
    assert status == 404 and "hidden" in json.loads(body)["message"]


def test_a_file_that_is_not_a_run_gets_a_clear_error(server):
    (server.root / "runs" / "broken.ibrun").write_bytes(b"this is not a run file at all" * 10)
    status, _, body = server.grid("runs/broken.ibrun")
    assert status == 422
    message = json.loads(body)["message"]
    assert message.startswith("broken.ibrun:") and "run file" in message
    status, _, body = server.grid("runs/missing.ibrun")
    assert status == 404 and "does not exist" in json.loads(body)["message"]
    status, _, body = server.grid("runs/a.ibrun", slot="x")
    assert status == 400


def test_loading_the_server_extension_imports_no_torch():
    code = (
        "import sys, ibwidget_jupyter, ibwidget_jupyter._handlers\n"
        "assert ibwidget_jupyter._jupyter_server_extension_points() == [{'module': 'ibwidget_jupyter'}]\n"
        "print(sorted(m for m in ('torch', 'ibwidget', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_view_page_loads_the_viewer_for_its_path_and_nothing_else(server):
    folder = server.root / '"><script>alert(1)<!--'
    folder.mkdir()
    _record(folder / "v.ibrun", epochs=1)
    query = urllib.parse.urlencode({"path": folder.name})
    status, headers, body = server.get(f"ibwidget/view?{query}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert 'import { RunViewer } from "/ibwidget/static/runviewer.js";' in page
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert(1)" in page
    for name in ("runviewer.js", "planeview.js"):
        status, headers, body = server.get(f"ibwidget/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"export " in body
    assert server.get("ibwidget/static/secret.js")[0] == 404
    assert server.get("ibwidget/static/runviewer.js", token=False)[0] in (302, 403)
    assert server.get(f"ibwidget/view?{query}", token=False)[0] in (302, 403)


def test_a_run_file_written_anew_in_place_is_read_anew(server):
    path = server.root / "runs" / "again.ibrun"
    _record(path, epochs=3, seed=4, name="first")
    status, _, body = server.grid("runs/again.ibrun", slot=0)
    assert status == 200 and decode(body)[0]["meta"]["runs"][0]["name"] == "first"
    path.unlink()
    _record(path, epochs=1, seed=5, name="second")
    status, _, body = server.grid("runs/again.ibrun", slot=0)
    meta = decode(body)[0]["meta"]
    assert status == 200 and meta["runs"][0]["name"] == "second" and meta["runs"][0]["epochs"] == [0, 1]


def test_the_band_endpoint_answers_a_selections_chance_floor(server):
    _record(server.root / "runs" / "band.ibrun", epochs=2, seed=6, name="band")
    header = decode(server.grid("runs/band.ibrun", slot=0)[2])[0]
    slot = header["meta"]["slots"].index({"rule": "fixed", "sigma": 5.0})
    query = urllib.parse.urlencode({"path": "runs/band.ibrun", "estimator": "hsic", "slot": slot, "target": "labels"})
    status, headers, body = server.get(f"ibwidget/band?{query}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    band = json.loads(body)
    want = ib.load_run(server.root / "runs" / "band.ibrun").null_band(
        "hsic", sigma=5.0, permutations=band["permutations"]
    )
    np.testing.assert_allclose(np.array(band["values"], dtype=float)[0], want, rtol=1e-6, equal_nan=True)
    bad = urllib.parse.urlencode({"path": "runs/band.ibrun", "estimator": "nope", "slot": 0, "target": "labels"})
    status, _, body = server.get(f"ibwidget/band?{bad}")
    assert status == 422 and "Unknown estimator in this grid 'nope'" in json.loads(body)["message"]
    assert server.get("ibwidget/band?path=runs/band.ibrun&estimator=hsic&slot=x&target=labels")[0] == 400
    assert server.get(f"ibwidget/band?{query}", token=False)[0] in (302, 403)


def test_the_cka_endpoint_answers_every_epochs_layer_cka(server):
    _record(server.root / "runs" / "cka.ibrun", epochs=2, seed=7, name="cka")
    status, headers, body = server.get("ibwidget/cka?path=runs/cka.ibrun")
    assert status == 200 and headers["Content-Type"] == "application/json"
    (one,) = json.loads(body)["runs"]
    run = ib.load_run(server.root / "runs" / "cka.ibrun")
    assert one["names"] == run.cka_names(0) and len(one["values"]) == 3
    for i, epoch in enumerate(run.epochs):
        np.testing.assert_allclose(np.array(one["values"][i], dtype=float), run.cka_matrix(epoch, None, None))
    assert server.get("ibwidget/cka?path=runs/cka.ibrun", token=False)[0] in (302, 403)
    assert server.get("ibwidget/cka?path=../x.ibrun")[0] == 403
