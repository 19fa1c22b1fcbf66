"""Real-browser fixtures: an isolated Jupyter server and a fresh headless Debian Chromium per test.

The suite skips (with a reason) only where /usr/bin/chromium is missing and $CI is unset; under CI a missing browser
is an error, because ``make test`` installs it (target ``browser-deps``). Never run ``playwright install`` here.
On a failing test the page's screenshot and a log (console, page errors, server log tail) are written to
``tests/browser/artifacts/<test>.png`` and ``.log``.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
# Lab extensions the widget needs; found in sys.prefix/share/jupyter/labextensions (kept on the data path).
REQUIRED_LABEXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "bqplot")
# Front-end -> (URL of a notebook, page whose config lists the lab extensions it loads).
FRONTENDS = {
    "lab": ("lab/tree/{name}?reset", "lab"),  # JupyterLab 4; ?reset drops any saved workspace layout
    "notebook": ("notebooks/{name}", "tree"),  # Notebook 7
}
USER_SETTINGS = {
    # No news/update checks: there is no internet, and their toasts would cover the page.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (``item.rep_setup`` / ``rep_call``) so fixtures can see failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --------------------------------------------------------------------------------------------------- the server


@dataclass
class JupyterServer:
    url: str  # ends with "/"
    token: str
    frontend: str  # a key of FRONTENDS
    root: Path
    log: Path
    proc: subprocess.Popen = field(repr=False)

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0):
        """Call the REST API; returns the decoded JSON (or None for an empty answer)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def page_url(self, path: str) -> str:
        """A browser URL for ``path`` (may carry its own query) that logs in with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path.lstrip('/')}{sep}token={self.token}"

    def notebook_url(self, name: str) -> str:
        """The browser URL that opens notebook ``name`` (relative to the root) in this server's front-end."""
        return self.page_url(FRONTENDS[self.frontend][0].format(name=name))

    def shutdown_kernels(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for kernel in self.api("GET", "api/kernels") or []:
                with contextlib.suppress(OSError, ValueError):
                    self.api("DELETE", f"api/kernels/{kernel['id']}", timeout=10)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _write_user_settings(settings_dir: Path) -> None:
    for plugin, values in USER_SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        target = settings_dir / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values, indent=2))


def _wait_ready(server: JupyterServer, deadline: float) -> None:
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("GET", "api/status", timeout=2)  # raises unless 200
            return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter server did not answer /api/status in time:\n{server.log_tail()}")
        time.sleep(0.25)


def _federated_extensions(server: JupyterServer, path: str) -> set[str]:
    """Names of the prebuilt lab extensions the page at ``path`` will load (from its jupyter-config-data)."""
    req = urllib.request.Request(server.url + path)
    req.add_header("Authorization", f"token {server.token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        page = resp.read().decode()
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, f"no jupyter-config-data in /{path}"
    config = json.loads(html.unescape(match.group(1)))
    return {ext["name"] for ext in config.get("federated_extensions", [])}


def _stop(server: JupyterServer) -> None:
    with contextlib.suppress(OSError, ValueError):
        server.api("POST", "api/shutdown", timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=15)
    # Only the process group this fixture started (start_new_session: pgid == pid), never anything by name.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if server.proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=5)
    # Kernels the server failed to reap still sit in the same group; make sure none outlives the test session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session", params=list(FRONTENDS))
def frontend(request) -> str:
    """Each browser test runs once per front-end: JupyterLab 4, then Notebook 7."""
    return request.param


@pytest.fixture(scope="session")
def jupyter_server(frontend, chromium_executable, tmp_path_factory) -> Iterator[JupyterServer]:
    """An isolated Jupyter server for one front-end, shared by that front-end's tests.

    One server per front-end, not one for both: jupyter_server's static-file cache is keyed by file name only, so
    once /static/lab/X.woff2 was served, /static/notebook/X.woff2 (same hashed name) answers 403.
    """
    base = tmp_path_factory.mktemp(f"jupyter-{frontend}")
    root, settings, workspaces = base / "root", base / "user-settings", base / "workspaces"
    for d in (root, settings, workspaces):
        d.mkdir()
    _write_user_settings(settings)
    port, token = free_port(), secrets.token_hex(24)
    env = dict(os.environ)
    # Isolated config/runtime/data/IPython dirs. The data *dir* is the user one; jupyter_core still searches
    # sys.prefix/share/jupyter, which holds the venv's lab extensions and kernelspec (checked below).
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data"),
        ("IPYTHONDIR", "ipython"),
    ):
        env[var] = str(base / sub)
        (base / sub).mkdir()
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabServerApp.user_settings_dir={settings}",
        f"--LabServerApp.workspaces_dir={workspaces}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = base / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = JupyterServer(
        url=f"http://127.0.0.1:{port}/", token=token, frontend=frontend, root=root, log=log, proc=proc
    )
    try:
        _wait_ready(server, time.monotonic() + 60)
        app_page = FRONTENDS[frontend][1]
        missing = set(REQUIRED_LABEXTENSIONS) - _federated_extensions(server, app_page)
        assert not missing, f"/{app_page} would not load lab extensions {sorted(missing)}; check the data path"
        specs = server.api("GET", "api/kernelspecs")
        assert "python3" in specs["kernelspecs"], f"no python3 kernelspec: {sorted(specs['kernelspecs'])}"
        yield server
    finally:
        _stop(server)


# -------------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: install it with `make browser-deps` (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI the browser suite must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def playwright_sync(chromium_executable):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@dataclass
class BrowserPage:
    """A page plus everything it logged."""

    page: object  # playwright.sync_api.Page
    console: list[tuple[str, str, str]] = field(default_factory=list)  # (type, text, url:line)
    page_errors: list[str] = field(default_factory=list)

    def console_errors(self, ignore: tuple[re.Pattern, ...] = ()) -> list[str]:
        """Console messages of level 'error' and uncaught page errors, less those matching ``ignore``."""
        found = [f"console: {text} ({where})" for kind, text, where in self.console if kind == "error"]
        found += [f"pageerror: {err}" for err in self.page_errors]
        return [msg for msg in found if not any(p.search(msg) for p in ignore)]


def _artifact_name(nodeid_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid_name).strip("_")


@pytest.fixture
def browser_page(request, playwright_sync, chromium_executable, jupyter_server, tmp_path) -> Iterator[BrowserPage]:
    """A fresh Chromium (own user-data-dir) with one page; console and page errors are collected."""
    context = playwright_sync.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=str(chromium_executable),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1600},
    )
    context.set_default_timeout(30_000)
    page = context.pages[0] if context.pages else context.new_page()
    bp = BrowserPage(page=page)

    def on_console(msg):
        loc = msg.location or {}
        bp.console.append((msg.type, msg.text, f"{loc.get('url', '')}:{loc.get('lineNumber', '')}"))

    page.on("console", on_console)
    page.on("pageerror", lambda err: bp.page_errors.append(err.stack or str(err)))
    try:
        yield bp
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / ".gitignore").write_text("*\n")
            stem = ARTIFACTS / _artifact_name(request.node.name)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
            lines = [f"url: {getattr(page, 'url', '?')}", "", "== console =="]
            lines += [f"[{kind}] {text} ({where})" for kind, text, where in bp.console]
            lines += [
                "",
                "== page errors ==",
                *bp.page_errors,
                "",
                "== server log (tail) ==",
                jupyter_server.log_tail(),
            ]
            stem.with_suffix(".log").write_text("\n".join(lines))
        with contextlib.suppress(Exception):
            context.close()
        jupyter_server.shutdown_kernels()
