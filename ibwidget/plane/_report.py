"""One-file HTML reports: the PlaneView's front-end and its grid inlined into a page that works from ``file://``.

The page holds the grid as base64 in ``<script type="application/octet-stream">`` blocks (uint16 codes with a
per-block scale, at most 1/131068 of a block's range off; 65535 = NaN), the metadata as JSON in a
``<script type="application/json">`` block, and the ESM of ``js/planeview.js`` in one inline module script. It
loads nothing: a Content-Security-Policy allows only that module (by its hash), so the page works, and can only
work, offline. Every user string (run and layer names, title, notes) is escaped, and the front-end writes them with
``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import warnings
from pathlib import Path

import numpy as np

from ibwidget._version import __version__
from ibwidget._vocabulary import NAN_CODE
from ibwidget.measure._validate import clean_text
from ibwidget.plane._grid import REPORT_BAND_PERMUTATIONS, Grid, cka_payload, default_band, plane_grid
from ibwidget.record._atomic import atomic_write

__all__ = ["write_html", "grid_html", "quantize", "static_file"]

_MOUNT = '\nmountStandalone(document.getElementById("ibwp-root"));\n'
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src '{script_hash}'; \
style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="generator" content="ibwidget {version}">
<title>{title}</title>
<style>
body{{margin:18px auto;max-width:820px;padding:0 14px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,\
"DejaVu Sans",sans-serif;color:#222}}
h1{{font-size:20px;margin:0 0 6px}} .ibwp-notes{{white-space:pre-wrap;color:#444;margin:0 0 10px}}
.ibwp-report-footer{{color:#777;font-size:12px;margin-top:18px}}
</style>
</head>
<body>
<h1 class="ibwp-report-title">{title}</h1>
{notes}<div id="ibwp-root"></div>
<noscript><p>This report draws the information plane with JavaScript; please enable it.</p></noscript>
<script type="application/json" id="ibwp-meta">{meta}</script>
<script type="application/octet-stream" id="ibwp-grid">{grid}</script>
<script type="application/octet-stream" id="ibwp-scales">{scales}</script>
<script type="application/octet-stream" id="ibwp-saturation">{saturation}</script>
<script type="module">{module}</script>
<p class="ibwp-report-footer">{footer}</p>
</body>
</html>
"""


def static_file(name: str) -> Path:
    """A front-end file: ``ibwidget/static/<name>`` in an installed wheel, ``js/<name>`` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    places = (package / "static" / name, package.parent / "js" / name)
    for candidate in places:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"ibwidget's front-end file {name!r} is missing (looked in {places[0].parent} and {places[1].parent}); "
        "reinstall ibwidget."
    )


def quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float (runs, epochs, blocks, layers, 2) -> uint16 codes, and float64 scales (blocks, 2, [lo, step])."""
    v = np.asarray(values, dtype=np.float64)
    B = v.shape[2]
    finite = np.isfinite(v)
    moved = np.moveaxis(np.where(finite, v, np.nan), (2, 4), (0, 1)).reshape(B, 2, -1)
    with warnings.catch_warnings():  # an all-NaN block (an estimator unavailable everywhere) has no range
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(moved, axis=-1) if moved.shape[-1] else np.zeros((B, 2))
        hi = np.nanmax(moved, axis=-1) if moved.shape[-1] else np.zeros((B, 2))
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, lo)
    step = (hi - lo) / (NAN_CODE - 1)
    lo_b = lo[None, None, :, None, :]
    step_b = step[None, None, :, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        codes = np.where(step_b > 0, np.rint((v - lo_b) / np.where(step_b > 0, step_b, 1.0)), 0.0)
    codes = np.clip(codes, 0, NAN_CODE - 1)
    codes = np.where(finite, codes, NAN_CODE).astype("<u2")
    scales = np.stack([lo, step], axis=-1).astype("<f8")  # (B, 2, 2)
    return codes, scales


def _json_for_script(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in _JSON_ESCAPES.items():
        text = text.replace(ch, esc)
    return text


def _module_source() -> str:
    source = static_file("planeview.js").read_text(encoding="utf-8")
    lowered = source.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise RuntimeError("planeview.js must not contain '</script' or '<!--' (it is inlined into HTML).")
    return source + _MOUNT


def grid_html(grid: Grid, title: str | None = None, notes: str | None = None, runs=None) -> str:
    """The one-file HTML page of a computed grid (see :func:`write_html`); given the grid's ``runs``, it carries the
    chance floor of the view it opens on (:func:`~ibwidget.plane._grid.default_band`) and the layers' CKA at every
    epoch (:func:`~ibwidget.plane._grid.cka_payload`)."""
    meta = dict(grid.meta)
    meta["encoding"] = "u16"
    if runs is not None:
        meta["bands"] = [default_band(runs, grid, REPORT_BAND_PERMUTATIONS)]
        meta["cka"] = cka_payload(runs)
    codes, scales = quantize(grid.values)
    module = _module_source()
    digest = base64.b64encode(hashlib.sha256(module.encode("utf-8")).digest()).decode("ascii")
    names = [r["name"] for r in meta["runs"]]
    title = clean_text(title) if title is not None else "ibwidget report: " + " vs ".join(names)
    notes_html = f'<p class="ibwp-notes">{html.escape(clean_text(notes))}</p>\n' if notes else ""
    epochs = max((len(r["epochs"]) for r in meta["runs"]), default=0)
    footer = (
        f"ibwidget {__version__} · {len(meta['estimators'])} estimators × {len(meta['slots'])} sigma slots × "
        f"{len(meta['targets'])} targets × {meta['n_layers']} layers × {epochs} epochs, precomputed; "
        "this page needs no kernel and no network."
    )
    b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")  # noqa: E731
    return _PAGE.format(
        script_hash=f"sha256-{digest}",
        version=html.escape(__version__),
        title=html.escape(str(title)),
        notes=notes_html,
        meta=_json_for_script(meta),
        grid=b64(codes),
        scales=b64(scales),
        saturation=b64(grid.saturation.astype("<f4")),
        module=module,
        footer=html.escape(footer),
    )


def write_html(runs, path, title: str | None = None, notes: str | None = None, **grid_kwargs) -> Path:
    """Write the one-file HTML report of ``runs`` to ``path`` atomically; ``grid_kwargs`` go to ``plane_grid``."""
    return write_grid_html(plane_grid(runs, **grid_kwargs), path, title, notes, runs=runs)


def write_grid_html(grid: Grid, path, title: str | None = None, notes: str | None = None, runs=None) -> Path:
    """Write the one-file HTML report of a computed grid to ``path`` atomically (with ``runs``: and its default
    view's chance floor)."""
    text = grid_html(grid, title=title, notes=notes, runs=runs)
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", permissions=0o644) as fh:  # a page to share: world-readable
        fh.write(text)
    return path
