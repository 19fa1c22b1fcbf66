"""The grid format shared with the front-end: one fixture grid written by Python, read by pytest and the node tests.

``js/tests/fixtures/grid.json`` holds a small grid (meta, float32 values and saturation as base64) and lookups
computed by :class:`ibwidget.plane._grid.Grid` (slot, block, value); ``js/tests/grid_format.test.mjs`` checks
that the front-end's functions of the same names give the same answers. When the format changes on purpose,
rewrite the fixture with ``python tests/test_grid_format.py --write``.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from test_planeview import synthetic_run

from ibwidget import _vocabulary
from ibwidget.measure import kernels as _kernels
from ibwidget.plane import _grid

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "js" / "tests" / "fixtures" / "grid.json"
FRONT_END = ROOT / "js" / "planeview.js"

# (estimator, rule, sigma asked for, target, run, epoch index, layer): off-grid sigmas snap on a log scale.
LOOKUPS = [
    ("hsic", "fixed", 5.0, "labels", 0, 2, 1),
    ("hsic", "fixed", 0.7, "output", 0, 1, 0),
    ("hsic", "fixed", 14.0, "labels", 0, 3, 2),
    ("hsic", "median_d", None, "output", 0, 3, 1),
    ("cka", "fixed", 100.0, "output", 0, 0, 2),
    ("cka", "median_d2", 3.0, "labels", 0, 2, 0),
    ("binning", "fixed", 1.0, "labels", 0, 3, 2),
    ("binning", "median_d", None, "output", 0, 1, 1),
]


def fixture_grid() -> _grid.Grid:
    """The fixture's grid: 4 snapshots of a 3-layer synthetic run on a probe of 24, three sigmas and two medians."""
    run = synthetic_run(epochs=3, m=24, widths=(40, 12, 6), name="fixture", seed=3)
    return _grid.plane_grid(
        run,
        estimators=["hsic", "cka", "binning"],
        sigmas=[0.5, 5.0, 50.0],
        sigma_rules=["fixed", "median_d2", "median_d"],
    )


def fixture_document(grid: _grid.Grid) -> dict:
    """What the fixture file holds: the grid as the widget syncs it, and the Python answers to each lookup."""
    lookups = []
    for estimator, rule, sigma, target, r, e, layer in LOOKUPS:
        slot = grid.slot_index(rule, sigma)
        block = grid.block_index(estimator, slot, target)
        x, y = (float(v) if np.isfinite(v) else None for v in grid.values[r, e, block, layer])
        query = {"estimator": estimator, "rule": rule, "sigma": sigma, "target": target}
        lookups.append({**query, "run": r, "epoch": e, "layer": layer, "slot": slot, "block": block, "x": x, "y": y})
    return {
        "meta": grid.meta,
        "grid": base64.b64encode(grid.values.astype("<f4").tobytes()).decode("ascii"),
        "saturation": base64.b64encode(grid.saturation.astype("<f4").tobytes()).decode("ascii"),
        "lookups": lookups,
    }


def _decode(text: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape)


@pytest.fixture(scope="module")
def grid():
    return fixture_grid()


@pytest.fixture(scope="module")
def stored():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_fixture_is_what_python_writes_now(grid, stored):
    """The fixture drifts from the code when the format changes: rewrite it (see the module docstring)."""
    fresh = json.loads(json.dumps(fixture_document(grid), allow_nan=False))
    hint = "the grid format changed: run `python tests/test_grid_format.py --write` and commit the fixture"
    assert stored["meta"] == fresh["meta"], hint
    assert [{k: v for k, v in d.items() if k not in ("x", "y")} for d in stored["lookups"]] == [
        {k: v for k, v in d.items() if k not in ("x", "y")} for d in fresh["lookups"]
    ], hint
    shape = grid.values.shape
    np.testing.assert_allclose(_decode(stored["grid"], shape), grid.values, rtol=1e-5, atol=1e-7, err_msg=hint)
    np.testing.assert_allclose(
        _decode(stored["saturation"], grid.saturation.shape), grid.saturation, rtol=1e-5, atol=1e-7, err_msg=hint
    )


def test_meta_carries_the_vocabulary(grid):
    meta = grid.meta
    assert (meta["format"], meta["version"]) == (_vocabulary.GRID_FORMAT, _vocabulary.GRID_VERSION)
    assert meta["palette"] == list(_vocabulary.PALETTE)
    assert meta["dashes"] == ["", "6,4", "2,3", "6,3,2,3"]
    assert meta["nan_code"] == 65535 and meta["saturation_range"] == [0.05, 0.95]
    assert meta["sigma_rules"] == {r: _kernels.SIGMA_RULES[r] for r in ("fixed", "median_d2", "median_d")}
    assert meta["target_symbols"] == {"labels": "Y", "output": "Ŷ"}
    hsic = meta["estimators"][0]
    assert hsic["label_targets"] == {"labels": hsic["label_y"], "output": hsic["label_yhat"]}
    json.dumps(meta, allow_nan=False)


def test_front_end_knows_the_format_python_writes():
    """js/planeview.js's own format name and version are the vocabulary's (it refuses any other)."""
    source = FRONT_END.read_text(encoding="utf-8")
    name = re.search(r'^export const GRID_FORMAT = "([^"]+)";$', source, re.M)
    version = re.search(r"^export const GRID_VERSION = (\d+);$", source, re.M)
    assert name and version, "js/planeview.js must export GRID_FORMAT and GRID_VERSION"
    assert (name.group(1), int(version.group(1))) == (_vocabulary.GRID_FORMAT, _vocabulary.GRID_VERSION)


def test_slot_index_snaps_on_a_log_scale_and_ignores_sigma_for_medians(grid):
    assert [grid.slot_index("fixed", s) for s in (0.5, 1.5, 1.6, 5.0, 15.0, 16.0, 1e6)] == [0, 0, 1, 1, 1, 2, 2]
    assert grid.slot_index("median_d2") == 3 and grid.slot_index("median_d", 123.0) == 4
    with pytest.raises(ValueError, match="positive sigma"):
        grid.slot_index("fixed")
    with pytest.raises(ValueError, match="sigma rule"):
        grid.slot_index("sqrt_d", 5.0)


def test_block_index_ignores_the_slot_of_an_estimator_without_sigma(grid):
    assert grid.block_index("hsic", 0, "labels") == 0 and grid.block_index("hsic", 4, "output") == 9
    assert grid.block_index("cka", 2, "output") == 10 + 2 * 2 + 1
    assert grid.block_index("binning", 0, "output") == grid.block_index("binning", 4, "output") == 21


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_grid_format.py --write   (rewrites js/tests/fixtures/grid.json)")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture_document(fixture_grid()), indent=1, ensure_ascii=False, allow_nan=False)
    FIXTURE.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE.relative_to(ROOT)}")
