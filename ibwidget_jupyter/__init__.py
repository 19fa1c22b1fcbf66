"""The Jupyter side of ibwidget's JupyterLab extension: a server extension that reads run files and answers their
information-plane grid, and the prebuilt lab extension (``labextension/``) that shows it in a main-area tab.

Importing this package imports neither torch nor ibwidget: a Jupyter server loads it at start-up, and only a request
for a run pays for them (see :mod:`ibwidget_jupyter._grids`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_jupyter_labextension_paths", "_load_jupyter_server_extension"]

NAME = "ibwidget"  #: the lab extension's name, and the prefix of the server's endpoints (``/ibwidget/...``)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "ibwidget_jupyter"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": NAME}]


def _load_jupyter_server_extension(serverapp) -> None:
    from ibwidget_jupyter._handlers import add_handlers

    add_handlers(serverapp)
