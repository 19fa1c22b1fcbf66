// Unit tests of the pure parts of js/planeview.js: `node --test js/tests/` (no browser, no dependencies).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  appendEpochs,
  blockIndex,
  decodeBase64,
  decodeValues,
  dimsOf,
  extent,
  formatTicks,
  formatValue,
  historyAt,
  linearScale,
  nearestLog,
  niceTicks,
  pathData,
  saturationAt,
  series,
  slotIndex,
  slotReady,
  valueIndex,
  viridis,
} from "../planeview.js";

// A grid like ibwidget._grid's: 2 estimators (one without sigma), 3 fixed sigmas + 1 median slot, 2 targets.
function meta(extra = {}) {
  return {
    encoding: "f32",
    n_runs: 1,
    n_epochs: 3,
    n_blocks: 10,
    n_layers: 2,
    targets: ["labels", "output"],
    sigmas: [0.5, 5, 50],
    rules: ["fixed", "median_d2"],
    slots: [
      { rule: "fixed", sigma: 0.5 },
      { rule: "fixed", sigma: 5 },
      { rule: "fixed", sigma: 50 },
      { rule: "median_d2", sigma: null },
    ],
    estimators: [
      { name: "hsic", slots: 4, base: 0 },
      { name: "binning", slots: 1, base: 8 },
    ],
    runs: [{ name: "r", layer_names: ["a", "b"], epochs: [0, 1, 2], history: {} }],
    ...extra,
  };
}

test("blockIndex: estimator base + slot * targets + target; one slot without sigma", () => {
  const m = meta();
  assert.equal(blockIndex(m, "hsic", 0, "labels"), 0);
  assert.equal(blockIndex(m, "hsic", 1, "output"), 3);
  assert.equal(blockIndex(m, "hsic", 3, "output"), 7);
  assert.equal(blockIndex(m, "binning", 2, "labels"), 8); // binning ignores the slot
  assert.equal(blockIndex(m, "binning", 3, "output"), 9);
  assert.throws(() => blockIndex(m, "nope", 0, "labels"), /unknown estimator in this grid "nope"; this grid has hsic, binning/);
  assert.throws(() => blockIndex(m, "hsic", 0, "Y"), /unknown target in this grid "Y"/);
});

test("slotIndex: the grid sigma nearest on a log scale under a scaling rule; a median rule has one slot", () => {
  const m = meta();
  assert.equal(slotIndex(m, "fixed", 0.5), 0);
  assert.equal(slotIndex(m, "fixed", 50), 2);
  assert.equal(slotIndex(m, "fixed", 15), 1); // the log midpoint of 5 and 50 is 15.8
  assert.equal(slotIndex(m, "fixed", 16), 2);
  assert.equal(slotIndex(m, "median_d2", 5), 3);
  assert.equal(slotIndex(m, "median_d2"), 3);
  assert.throws(() => slotIndex(m, "nope", 5), /unknown sigma rule in this grid "nope"; this grid has fixed, median_d2/);
  assert.throws(() => slotIndex(m, "fixed", undefined), /needs a positive sigma/);
});

test("nearestLog snaps on a log scale", () => {
  assert.equal(nearestLog([0.5, 5, 50], 5), 1);
  assert.equal(nearestLog([0.5, 5, 50], 15), 1); // the log midpoint of 5 and 50 is 15.8
  assert.equal(nearestLog([0.5, 5, 50], 16), 2);
  assert.equal(nearestLog([0.5, 5, 50], 1e-9), 0);
});

test("valueIndex and series follow the (runs, epochs, blocks, layers, 2) layout", () => {
  const m = meta();
  const dims = dimsOf(m);
  const values = new Float32Array(dims.R * dims.E * dims.B * dims.L * 2).map((_, i) => i);
  assert.equal(valueIndex(dims, 0, 1, 2, 1, 1), ((1 * 10 + 2) * 2 + 1) * 2 + 1);
  const s = series(values, dims, 0, 3, 1);
  assert.deepEqual(Array.from(s.xs), [0, 1, 2].map((e) => valueIndex(dims, 0, e, 3, 1, 0)));
  assert.deepEqual(Array.from(s.ys), [0, 1, 2].map((e) => valueIndex(dims, 0, e, 3, 1, 1)));
});

test("decodeValues: float32 bytes, and uint16 codes with per-block scales (65535 = NaN)", () => {
  const f = new Float32Array([1.5, -2, 3.25, NaN]);
  const got = decodeValues({ encoding: "f32" }, new DataView(f.buffer));
  assert.deepEqual(Array.from(got).slice(0, 3), [1.5, -2, 3.25]);
  assert.ok(Number.isNaN(got[3]));
  // 1 run, 1 epoch, 2 blocks, 1 layer: codes [b0x, b0y, b1x, b1y]
  const m = { encoding: "u16", n_blocks: 2, n_layers: 1, nan_code: 65535 };
  const codes = new Uint16Array([0, 65534, 10, 65535]);
  const scales = new Float64Array([1, 0.5, 2, 0.25, -1, 0.1, 0, 1]); // (block, coord, [lo, step])
  const v = decodeValues(m, codes, scales);
  assert.equal(v[0], 1);
  assert.equal(v[1], 2 + 65534 * 0.25);
  assert.ok(Math.abs(v[2] - 0) < 1e-6); // -1 + 10 * 0.1
  assert.ok(Number.isNaN(v[3]));
});

test("decodeBase64 round-trips bytes", () => {
  const bytes = decodeBase64("AAEC/w==");
  assert.deepEqual(Array.from(bytes), [0, 1, 2, 255]);
});

test("extent ignores NaN, pads, and widens a flat range", () => {
  assert.deepEqual(extent([new Float64Array([0, 10, NaN])], 0), [0, 10]);
  const [lo, hi] = extent([new Float64Array([0, 10])], 0.1);
  assert.ok(Math.abs(lo + 1) < 1e-12 && Math.abs(hi - 11) < 1e-12);
  const [a, b] = extent([new Float64Array([2, 2])]);
  assert.ok(a < 2 && b > 2);
  assert.deepEqual(extent([new Float64Array([NaN])]), [0, 1]);
});

test("niceTicks: round steps inside the range", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.013, 0.087, 4), [0.02, 0.04, 0.06, 0.08]);
  const t = niceTicks(-3.2, 7.9, 6);
  assert.ok(t.length >= 4 && t.length <= 12);
  for (const v of t) assert.ok(v >= -3.2 && v <= 7.9);
  assert.deepEqual(niceTicks(1, 1), [1]);
  assert.deepEqual(niceTicks(NaN, 1), []);
});

test("formatTicks and formatValue are short and distinct", () => {
  assert.deepEqual(formatTicks([0, 0.2, 0.4]), ["0.0", "0.2", "0.4"]);
  assert.deepEqual(formatTicks([0.02, 0.04]), ["0.02", "0.04"]);
  const tiny = formatTicks([1e-5, 2e-5, 3e-5]);
  assert.equal(new Set(tiny).size, 3);
  assert.equal(formatValue(0.123456), "0.1235");
  assert.equal(formatValue(NaN), "–");
  assert.equal(formatValue(1.5e-6), "1.500e-6");
});

test("linearScale maps and inverts", () => {
  const s = linearScale(0, 10, 100, 200);
  assert.equal(s(5), 150);
  assert.equal(s.invert(150), 5);
  const flip = linearScale(0, 1, 400, 0);
  assert.equal(flip(1), 0);
});

test("pathData: M then L, NaN breaks the line, n limits the points", () => {
  const id = (v) => v;
  assert.equal(pathData([0, 1, 2], [0, 1, 4], id, id), "M0.00,0.00L1.00,1.00L2.00,4.00");
  assert.equal(pathData([0, NaN, 2, 3], [0, 0, 2, 3], id, id), "M0.00,0.00M2.00,2.00L3.00,3.00");
  assert.equal(pathData([0, 1, 2], [0, 1, 2], id, id, 2), "M0.00,0.00L1.00,1.00");
  assert.equal(pathData([], [], id, id), "");
});

test("viridis endpoints and clamping", () => {
  assert.equal(viridis(0), "#440154");
  assert.equal(viridis(1), "#fde725");
  assert.equal(viridis(2), "#fde725");
  assert.equal(viridis(NaN), "#440154");
});

test("saturationAt averages visible layers at an epoch, clamped to each run's last", () => {
  const m = meta();
  const dims = dimsOf(m);
  const sat = new Float32Array(dims.R * dims.E * dims.S * dims.L);
  const at = (e, s, l) => (e * dims.S + s) * dims.L + l;
  sat[at(2, 1, 0)] = 0.2;
  sat[at(2, 1, 1)] = 0.6;
  assert.ok(Math.abs(saturationAt(sat, dims, m, 1, 2, [true, true], [true]) - 0.4) < 1e-7);
  assert.ok(Math.abs(saturationAt(sat, dims, m, 1, 9, [false, true], [true]) - 0.6) < 1e-7);
  assert.ok(Number.isNaN(saturationAt(sat, dims, m, 1, 2, [false, false], [true])));
});

test("appendEpochs concatenates epoch-major arrays", () => {
  const out = appendEpochs(new Float32Array([1, 2]), new Float32Array([9]), new Float32Array([3, 4]), new Float32Array([8]));
  assert.deepEqual(Array.from(out.values), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(out.saturation), [9, 8]);
});

test("historyAt: history lists start at epoch 1", () => {
  const h = { loss: [0.9, 0.5, null] };
  assert.ok(Number.isNaN(historyAt(h, "loss", 0)));
  assert.equal(historyAt(h, "loss", 2), 0.5);
  assert.ok(Number.isNaN(historyAt(h, "loss", 3)));
  assert.ok(Number.isNaN(historyAt(h, "accuracy", 1)));
});

test("slotReady: a slot still being computed says so; grids without the flag (reports) are whole", () => {
  assert.equal(slotReady(meta(), 2), true);
  const filling = meta({ slot_filled: [false, true, false, false] });
  assert.equal(slotReady(filling, 1), true);
  assert.equal(slotReady(filling, 0), false);
  assert.equal(slotReady(filling, 3), false);
});
