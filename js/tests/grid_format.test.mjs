// The grid format shared with Python: js/tests/fixtures/grid.json is written by tests/test_grid_format.py (which
// fails when it drifts from what ibwidget writes); here the front-end reads it and must agree with Python's answers.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  GRID_FORMAT,
  GRID_VERSION,
  blockIndex,
  decodeValues,
  dimsOf,
  fanSlots,
  float32Of,
  formatProblem,
  gaugeBackground,
  informative,
  informativeRange,
  layerColour,
  runDash,
  saturationHint,
  series,
  slotIndex,
} from "../planeview.js";

const fixture = JSON.parse(readFileSync(new URL("./fixtures/grid.json", import.meta.url), "utf8"));
const { meta } = fixture;

test("the fixture is a grid of the format and version this front-end reads", () => {
  assert.equal(meta.format, GRID_FORMAT);
  assert.equal(meta.version, GRID_VERSION);
  assert.equal(formatProblem(meta), "");
});

test("formatProblem refuses another version or format, saying what to do", () => {
  assert.match(formatProblem({ ...meta, version: GRID_VERSION + 1 }), /version 3; this view reads version 2 only: update ibwidget/);
  assert.match(formatProblem({ ...meta, version: 1 }), /version 1; .*recompute the grid/);
  assert.match(formatProblem({ ...meta, format: "other" }), /not an ibwidget plane grid \(format "other"/);
  assert.match(formatProblem({}), /not an ibwidget plane grid/);
  assert.match(formatProblem(null), /not an ibwidget plane grid/);
});

test("slotIndex and blockIndex give Python's Grid.slot_index and Grid.block_index for every lookup", () => {
  assert.ok(fixture.lookups.length >= 8);
  for (const q of fixture.lookups) {
    const slot = slotIndex(meta, q.rule, q.sigma === null ? undefined : q.sigma);
    assert.equal(slot, q.slot, JSON.stringify(q));
    assert.equal(blockIndex(meta, q.estimator, slot, q.target), q.block, JSON.stringify(q));
  }
});

test("the decoded values and each series hold what Python computed, NaN where Python has none", () => {
  const values = decodeValues(meta, Buffer.from(fixture.grid, "base64"));
  const dims = dimsOf(meta);
  assert.equal(values.length, dims.R * dims.E * dims.B * dims.L * 2);
  for (const q of fixture.lookups) {
    const s = series(values, dims, q.run, q.block, q.layer);
    for (const [got, want] of [[s.xs[q.epoch], q.x], [s.ys[q.epoch], q.y]]) {
      if (want === null) assert.ok(Number.isNaN(got), JSON.stringify(q));
      else assert.equal(got, Math.fround(want), JSON.stringify(q));
    }
  }
});

test("colours, dashes and the saturation hint come from the grid's meta", () => {
  assert.equal(layerColour(meta, 0), "#1f77b4");
  assert.equal(layerColour(meta, 11), meta.palette[1]);
  assert.equal(layerColour({ palette: ["#000"] }, 5), "#000");
  assert.equal(runDash(meta, 1), "6,4");
  assert.equal(runDash(meta, 4), "");
  assert.deepEqual(meta.saturation_range, [0.05, 0.95]);
  assert.equal(saturationHint(meta, 0.96), " — σ too large");
  assert.equal(saturationHint(meta, 0.95), "");
  assert.equal(saturationHint(meta, 0.01), " — σ too small");
  assert.equal(saturationHint(meta, 0.5), "");
  assert.equal(saturationHint({ saturation_range: [0.2, 0.3] }, 0.5), " — σ too large");
  assert.equal(
    gaugeBackground(meta),
    "linear-gradient(90deg,#c0392b,#f1c40f 5.0%,#27ae60 27.5%,#27ae60 72.5%,#f1c40f 95.0%,#c0392b)",
  );
});

test("the σ fan takes every σ of a scaling rule, and marks where each layer's kernel is informative", () => {
  const fixed = fanSlots(meta, "fixed");
  const want = meta.slots.map((s, i) => [s, i]).filter(([s]) => s.rule === "fixed").map(([, i]) => i);
  assert.deepEqual([...fixed].sort((a, b) => a - b), want);
  assert.ok(fixed.length >= 2);
  for (let k = 1; k < fixed.length; k++) assert.ok(meta.slots[fixed[k]].sigma > meta.slots[fixed[k - 1]].sigma);
  assert.deepEqual(fanSlots(meta, "median_d2"), []);
  const sat = float32Of(Buffer.from(fixture.saturation, "base64"));
  const dims = dimsOf(meta);
  const seen = { yes: 0, no: 0 };
  for (let e = 0; e < dims.E; e++) {
    for (let l = 0; l < dims.L; l++) {
      const inside = fixed.filter((k) => {
        const v = sat[((0 * dims.E + e) * dims.S + k) * dims.L + l];
        return v >= 0.05 && v <= 0.95;
      });
      for (const k of fixed) {
        const ok = informative(sat, dims, meta, k, 0, e, l);
        assert.equal(ok, inside.includes(k));
        seen[ok ? "yes" : "no"]++;
      }
      const range = informativeRange(sat, dims, meta, fixed, 0, e, l);
      const sigmas = inside.map((k) => meta.slots[k].sigma);
      assert.deepEqual(range, sigmas.length ? [Math.min(...sigmas), Math.max(...sigmas)] : null);
    }
  }
  assert.ok(seen.yes > 0 && seen.no > 0, JSON.stringify(seen)); // the fixture has both, so the test can tell
});
