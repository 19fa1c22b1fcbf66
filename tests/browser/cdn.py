"""Local stand-ins for the public CDN files that an nbconvert HTML page with widgets loads.

An exported page asks for:

* require.js from cdnjs (nbconvert's ``require_js_url``);
* ``@jupyter-widgets/html-manager@*/dist/embed-amd.js`` from unpkg (it bundles @jupyter-widgets/base and controls,
  plus font files it loads relative to itself);
* each third-party widget module the state names (bqplot, bqscales, anywidget), which the HTML manager's require
  loader fetches from ``https://cdn.jsdelivr.net/npm/<module>@<version>/dist/index.js``;
* MathJax 2 from cdnjs (for the markdown's formulas; no widget needs it).

The widget modules come from the installed wheels: each ships the same AMD bundle as an nbextension in
``<sys.prefix>/share/jupyter/nbextensions/<module>/index.js``. require.js and the HTML manager are in no wheel; they
are fetched once from the npm registry with ``npm pack`` (``requirejs@2``, ``@jupyter-widgets/html-manager@1``: the
major that renders ipywidgets 8 state, ``version_major`` 2) into a cache folder. MathJax is answered with a stub.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

NPM_PACKAGES = {"requirejs": "requirejs@^2", "html-manager": "@jupyter-widgets/html-manager@^1"}
NBEXTENSIONS = Path(sys.prefix) / "share" / "jupyter" / "nbextensions"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
# A MathJax stand-in: the page's own MathJax setup checks `window.MathJax` first, so an empty script is enough.
MATHJAX_STUB = b"/* MathJax stub for an offline test: formulas stay as TeX source */\n"
_PACKAGE_FILE = re.compile(r"^/(?:npm/)?((?:@[^/@]+/)?[^/@]+)@([^/]+)/(.+)$")  # /npm/<name>@<version>/<file>


class NpmUnavailable(RuntimeError):
    """npm is missing or could not fetch a package."""


def npm_pack(spec: str, cache: Path) -> Path:
    """Unpacked ``npm pack <spec>`` in ``cache`` (reused when there); returns the package folder."""
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    target = cache / key
    if (target / "package.json").is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise NpmUnavailable("npm is not installed (Debian: apt-get install -y npm); it fetches " + spec)
    work = cache / f"{key}.download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proc = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    if proc.returncode != 0:
        raise NpmUnavailable(f"npm pack {spec} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    filename = json.loads(proc.stdout)[0]["filename"]
    with tarfile.open(work / filename) as tar:
        tar.extractall(work / "unpacked", filter="data")
    shutil.rmtree(target, ignore_errors=True)
    (work / "unpacked" / "package").rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


@dataclass
class CdnFiles:
    """Maps CDN URLs to local files; records what it served, stubbed and refused."""

    requirejs: Path  # the requirejs package folder (require.js at its root)
    html_manager: Path  # the @jupyter-widgets/html-manager package folder (dist/embed-amd.js)
    nbextensions: Path = NBEXTENSIONS
    served: dict[str, Path] = field(default_factory=dict)
    stubbed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @classmethod
    def fetch(cls, cache: Path) -> CdnFiles:
        cache.mkdir(parents=True, exist_ok=True)
        return cls(
            requirejs=npm_pack(NPM_PACKAGES["requirejs"], cache),
            html_manager=npm_pack(NPM_PACKAGES["html-manager"], cache),
        )

    def version(self, folder: Path) -> str:
        return json.loads((folder / "package.json").read_text())["version"]

    def local_file(self, url: str) -> Path | None:
        """The local file standing in for ``url``, or None."""
        path = unquote(urlsplit(url).path)
        if path.endswith(("/require.min.js", "/require.js")) and "require" in path:
            return self.requirejs / "require.js"
        match = _PACKAGE_FILE.match(path)
        if not match:
            return None
        name, _version, rest = match.groups()
        if name == "@jupyter-widgets/html-manager":
            candidate = self.html_manager / rest
        else:  # a widget module: <name>@<version>/dist/<file>.js -> nbextensions/<name>/<file>.js
            rest = rest[len("dist/") :] if rest.startswith("dist/") else rest
            candidate = self.nbextensions / name / rest
        if ".." in Path(rest).parts:
            return None
        return candidate if candidate.is_file() else None

    def handle(self, route) -> None:
        """A Playwright route handler: local pages go through; CDN files are answered locally; the rest aborts."""
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("file", "data", "blob") or parts.hostname in LOCAL_HOSTS:
            # The HTML manager's icon fonts are requested relative to the page; answer them from its dist/.
            font = self.html_manager / "dist" / Path(unquote(parts.path)).name
            if parts.scheme == "http" and font.suffix in _FONTS and font.is_file():
                self.served[url] = font
                route.fulfill(path=str(font), content_type=_content_type(font))
            else:
                route.continue_()
            return
        if "mathjax" in url.lower():
            self.stubbed.append(url)
            route.fulfill(status=200, body=MATHJAX_STUB, content_type="application/javascript")
            return
        local = self.local_file(url)
        if local is None:
            self.refused.append(url)
            route.abort("blockedbyclient")
            return
        self.served[url] = local
        route.fulfill(path=str(local), content_type=_content_type(local), headers={"Access-Control-Allow-Origin": "*"})


_FONTS = (".woff", ".woff2", ".ttf", ".eot")


def _content_type(path: Path) -> str:
    return {
        ".js": "application/javascript",
        ".css": "text/css",
        ".woff": "font/woff",
        ".woff2": "font/woff2",
        ".ttf": "font/ttf",
        ".eot": "application/vnd.ms-fontobject",
        ".svg": "image/svg+xml",
        ".map": "application/json",
    }.get(path.suffix, "application/octet-stream")
