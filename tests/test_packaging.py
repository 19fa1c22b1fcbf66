"""The wheel as users get it: built from this checkout (hatch_build.py builds the lab extension into it), installed
into a fresh environment, both extensions found."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd, **kw) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # without colour codes


def test_the_wheel_installs_the_lab_extension_and_the_server_extension(tmp_path):
    if shutil.which("npm") is None:
        reason = "building the wheel builds its JupyterLab extension, which needs npm"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path / "dist"))
    (wheel,) = (tmp_path / "dist").glob("ibwidget-*.whl")
    # a fresh environment that sees this one's packages (jupyterlab, torch) after its own, but not its editable
    # ibwidget: the wheel's copy is the one imported
    env = tmp_path / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", str(env))
    python = env / "bin" / "python"
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    labextensions = _run(str(python), "-m", "jupyterlab.labextensions", "list", env=clean)
    assert re.search(rf"{re.escape(str(env))}/share/jupyter/labextensions\s+ibwidget v[\d.]+ enabled OK", labextensions)
    assert "(python, ibwidget)" in labextensions
    servers = _run(str(python), "-m", "jupyter_server.extension.serverextension", "list", env=clean)
    assert re.search(r"ibwidget_jupyter enabled\s+- Validating ibwidget_jupyter...\s+ibwidget_jupyter\s+OK", servers)
    found = _run(  # run from elsewhere than this checkout, whose ibwidget/ would shadow the installed one
        str(python),
        "-c",
        "import ibwidget_jupyter._handlers as h, ibwidget\n"
        "print(ibwidget.__file__)\nprint(h.front_end_file('runviewer.js'))\nprint(h.front_end_file('planeview.js'))",
        cwd=tmp_path,
    ).split()
    assert found[0].startswith(str(site)) and all(p.startswith(str(site / "ibwidget" / "static")) for p in found[1:])
