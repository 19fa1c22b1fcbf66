"""The wheel's JupyterLab extension, built from js/ at every standard wheel build (so no stale bundle ships).

Editable installs skip it: `make labextension` builds the extension and links it into the environment instead.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class LabExtensionBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        js = Path(self.root) / "js"
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "the wheel carries ibwidget's JupyterLab extension, built from js/ with node and npm; install node "
                "(18 or later) with npm and build again."
            )
        installed = js / "node_modules" / ".package-lock.json"
        if not installed.is_file() or installed.stat().st_mtime < (js / "package-lock.json").stat().st_mtime:
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=js, check=True)
        subprocess.run([npm, "run", "--silent", "build:prod"], cwd=js, check=True)
        built = Path(self.root) / "ibwidget_jupyter" / "labextension"
        build_data["shared_data"][str(built)] = "share/jupyter/labextensions/ibwidget"
