"""Regenerate docs/jupyterlab-extension.png: JupyterLab (isolated settings) with the demo run open in its tab.

Run it with `make screenshot` (it makes the demo run and builds the extension first); needs Debian's chromium.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent / "notebooks"
RUN = "runs/digits.ibrun"
OUT = Path(__file__).resolve().parent / "jupyterlab-extension.png"


def main() -> None:
    if not (ROOT / RUN).is_file():
        sys.exit(f"{ROOT / RUN} is missing: run `make screenshot` (it records the demo run first).")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
            env[var] = str(Path(tmp, var.lower()))
        settings = Path(tmp, "settings", "@jupyterlab", "apputils-extension")
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
        cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"]
        cmd += [f"--LabServerApp.user_settings_dir={Path(tmp, 'settings')}", "--allow-root"]
        cmd += [f"--LabServerApp.workspaces_dir={tmp}"]
        server = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            base = f"http://127.0.0.1:{port}/"
            for _ in range(240):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{base}api/status?token={token}", timeout=2)
                    break
                time.sleep(0.25)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}lab/tree/{RUN}?reset&token={token}")
                page.locator(".ibw-run-panel circle.ibwp-point").first.wait_for(timeout=180_000)
                page.locator(".ibw-run-panel").evaluate("(e) => e.querySelector('details').open = true")
                status = page.locator(".ibw-run-status")  # every σ computed (the server fills them in)
                for _ in range(240):
                    if "computed" not in status.inner_text():
                        break
                    page.wait_for_timeout(500)
                page.wait_for_timeout(1000)
                page.screenshot(path=str(OUT))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
