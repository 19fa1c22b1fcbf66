"""The server extension's endpoints, under ``{base_url}ibwidget/``; each one needs Jupyter's authentication and
the ``contents`` read permission, and answers only for paths inside the server's root.

``GET grid?path=P[&slot=K]``: the information-plane grid of the run file P, or of the ``.ibrun`` files in the folder
P (runs compared), as :func:`ibwidget_jupyter._grids.encode` lays it out; slot K (the σ the viewer shows) computed
for every epoch first. An ``ETag`` lets a viewer that follows a growing file ask again cheaply (304 when nothing
changed). ``GET band?path=P&estimator=E&slot=K&target=T``: the chance floor of one selection (JSON, see
:func:`ibwidget.plane._grid.band_payload`). ``GET cka?path=P``: the runs' layer-to-layer CKA at every epoch (JSON,
:func:`ibwidget.plane._grid.cka_payload`). ``GET report?path=P``: the one-file HTML report of the same runs, as a
download. ``GET view?path=P``:
a page of its own that shows and follows them (``static/<module>.js`` serves its modules).

Errors are JSON ``{"message": ...}``: 400 for a bad query, 403 for a path outside the root (symlinks resolved),
404 for a missing or hidden path (hidden files as the contents manager's ``allow_hidden`` says), 422 for a file or
folder that holds no readable run.
"""

from __future__ import annotations

import asyncio
import html
import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import ensure_async, url_path_join

from ibwidget_jupyter import NAME

# One worker: requests are computed one after another, off the event loop; each session's filler thread computes
# the slots not viewed behind them.
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ibwidget-server")
_SESSIONS = None  # the Sessions, made at the first request (importing ibwidget, and torch, only then)


def _sessions():
    global _SESSIONS
    if _SESSIONS is None:
        from ibwidget_jupyter._grids import Sessions

        _SESSIONS = Sessions()
    return _SESSIONS


class _RunHandler(JupyterHandler):
    auth_resource = "contents"

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json")
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], tornado.web.HTTPError) and exc_info[1].log_message:
            message = exc_info[1].log_message
        self.finish(json.dumps({"message": message}))

    async def _resolve(self) -> Path:
        """The real path of the ``path`` argument, inside the root and not hidden (else the HTTP error)."""
        path = self.get_argument("path", "").strip("/")
        if "\x00" in path:
            raise tornado.web.HTTPError(400, "the path holds a NUL character.")
        contents = self.contents_manager
        root = os.path.realpath(getattr(contents, "root_dir", self.settings.get("server_root_dir", ".")))
        full = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([root, full]) != root:
            raise tornado.web.HTTPError(403, f"{path or '/'} is outside the server's root.")
        if not os.path.exists(full):
            raise tornado.web.HTTPError(404, f"{path or '/'} does not exist.")
        if not getattr(contents, "allow_hidden", False) and await ensure_async(contents.is_hidden(path)):
            raise tornado.web.HTTPError(404, f"{path} is hidden (the server does not show hidden files).")
        return Path(full)

    def _slot(self, required: bool) -> int | None:
        """The ``slot`` argument, a whole number (None when absent and not ``required``), else a 400."""
        text = self.get_argument("slot", None)
        if text is None and not required:
            return None
        if text is None or not text.isdigit():
            raise tornado.web.HTTPError(400, f"slot must be a whole number, got {text!r}.")
        return int(text)

    def _finish_json(self, payload) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, allow_nan=False))

    async def _in_worker(self, fn, *args):
        from ibwidget_jupyter._grids import RunProblem

        try:
            return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, fn, *args)
        except RunProblem as exc:
            raise tornado.web.HTTPError(422, str(exc)) from exc


class GridHandler(_RunHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        slot = self._slot(required=False)
        path = await self._resolve()
        tag, body = await self._in_worker(lambda: _sessions().get(path).answer(slot))
        self.set_header("ETag", tag)
        self.set_header("Cache-Control", "no-cache")
        if self.request.headers.get("If-None-Match") == tag:
            self.set_status(304)
            self.finish()
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(body)

    def compute_etag(self) -> None:  # the ETag is the grid's version, set above
        return None


class BandHandler(_RunHandler):
    """``GET band?path=P&estimator=E&slot=K&target=T``: the chance floor of that selection (JSON)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        request = {
            "estimator": self.get_argument("estimator", ""),
            "slot": self._slot(required=True),
            "target": self.get_argument("target", ""),
        }
        path = await self._resolve()
        self._finish_json(await self._in_worker(lambda: _sessions().get(path).band(request)))


class CkaHandler(_RunHandler):
    """``GET cka?path=P``: the runs' layer-to-layer CKA at every recorded epoch (JSON)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        path = await self._resolve()
        self._finish_json(await self._in_worker(lambda: _sessions().get(path).cka()))


class ReportHandler(_RunHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        path = await self._resolve()
        title = f"ibwidget report: {path.name}"
        page = await self._in_worker(lambda: _sessions().get(path).report(title))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{path.stem or "runs"}.html"')
        self.finish(page)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body style="margin: 12px; font-family: system-ui, sans-serif">
<div id="ibw-view"></div>
<script type="module">
import {{ RunViewer }} from {module};
new RunViewer(document.getElementById("ibw-view"), {{ path: {path}, baseUrl: {base} }});
</script>
</body>
</html>
"""
#: the front-end modules the view page loads (found beside the installed ibwidget, or in a source checkout's js/)
FRONT_END = ("runviewer.js", "planeview.js")


def _script_value(value: str) -> str:
    """``value`` as a JavaScript string literal that cannot close the <script> it sits in."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def front_end_file(name: str) -> Path:
    """``ibwidget/static/<name>`` of the installed package, or ``js/<name>`` beside a source checkout's package
    (found without importing ibwidget, so without torch)."""
    spec = importlib.util.find_spec("ibwidget")
    if spec is None or spec.origin is None:
        raise tornado.web.HTTPError(500, "ibwidget is not installed beside its server extension.")
    package = Path(spec.origin).parent
    for candidate in (package / "static" / name, package.parent / "js" / name):
        if candidate.is_file():
            return candidate
    raise tornado.web.HTTPError(500, f"ibwidget's front-end file {name} is missing; reinstall ibwidget.")


class ViewHandler(_RunHandler):
    """``GET view?path=P``: a page of its own with the viewer of P (Notebook 7 opens a folder's comparison here)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        path = await self._resolve()
        base = self.settings["base_url"]
        relative = os.path.relpath(path, os.path.realpath(self.contents_manager.root_dir)).replace(os.sep, "/")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            _PAGE.format(
                title=html.escape(f"ibwidget: {path.name or 'runs'}"),
                module=_script_value(url_path_join(base, NAME, "static", "runviewer.js")),
                path=_script_value("" if relative == "." else relative),
                base=_script_value(base),
            )
        )


class FrontEndHandler(JupyterHandler):
    """``GET static/<module>``: the viewer's ES modules, for the view page."""

    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        if name not in FRONT_END:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.finish(front_end_file(name).read_bytes())


def add_handlers(serverapp) -> None:
    base = url_path_join(serverapp.web_app.settings["base_url"], NAME)
    serverapp.web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "grid"), GridHandler),
            (url_path_join(base, "report"), ReportHandler),
            (url_path_join(base, "band"), BandHandler),
            (url_path_join(base, "cka"), CkaHandler),
            (url_path_join(base, "view"), ViewHandler),
            (url_path_join(base, "static", r"([a-z]+\.js)"), FrontEndHandler),
        ],
    )
