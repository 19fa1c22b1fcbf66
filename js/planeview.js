// ibwidget PlaneView: a kernel-free information plane (anywidget ESM; also inlined into one-file HTML reports).
//
// The synced state is a precomputed grid (see ibwidget/plane/_grid.py): every estimator x sigma slot x target x layer x
// epoch x 2 coordinates, so every toggle and the epoch player run here, with no kernel round trip.
//   meta        JSON: format and version (others are refused in the view), axes of the grid, runs (names, layer
//               names, epochs, history), estimator labels, and the vocabulary it is drawn with (palette, dashes,
//               NaN code, saturation range: ibwidget/_vocabulary.py)
//   grid        bytes: float32 (runs, epochs, blocks, layers, 2), or uint16 codes with `scales` (one-file HTML)
//   saturation  bytes: float32 (runs, epochs, slots, layers), mean off-diagonal Gaussian kernel value
// User strings (run, layer names) only ever reach the page through textContent, never as markup.
// The pure helpers are named exports (tested with `node --test js/tests/`, against a fixture grid Python wrote); the
// DOM code is small builders sharing one view object, wired together by `render`.

const SVG_NS = "http://www.w3.org/2000/svg";
// The grid format this front-end reads (ibwidget/_vocabulary.py: GRID_FORMAT, GRID_VERSION); it refuses others.
// Everything else the vocabulary defines (palette, dashes, NaN code, saturation range) comes in the grid's meta.
export const GRID_FORMAT = "ibwidget.planegrid";
export const GRID_VERSION = 2;
const VIRIDIS = [
  [68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
  [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37],
];
export const TRAIL = 8; // steps of the fading trail behind each layer's current point
export const SPEEDS = [1, 2, 5, 10, 20]; // epochs per second

// ------------------------------------------------------------------------------------------------ pure helpers

/** Why this front-end cannot draw `meta` (another format or version), or "" when it can. */
export function formatProblem(meta) {
  if (!meta || meta.format !== GRID_FORMAT) {
    return `not an ibwidget plane grid (format ${JSON.stringify(meta ? meta.format : meta)}, expected "${GRID_FORMAT}")`;
  }
  if (meta.version !== GRID_VERSION) {
    const newer = meta.version > GRID_VERSION;
    return (
      `this grid is format version ${meta.version}; this view reads version ${GRID_VERSION} only: ` +
      (newer ? "update ibwidget to view it" : "recompute the grid (or the report) with this ibwidget")
    );
  }
  return "";
}

/** The colour of layer l (meta.palette, cycled). */
export function layerColour(meta, l) {
  return meta.palette[l % meta.palette.length];
}

/** The stroke-dasharray of run r of a comparison (meta.dashes, cycled). */
export function runDash(meta, r) {
  return meta.dashes[r % meta.dashes.length];
}

/** The gauge track's CSS background: red outside meta.saturation_range, yellow at its ends, green inside. */
export function gaugeBackground(meta) {
  const [low, high] = meta.saturation_range.map((v) => v * 100);
  const inner = (f) => (low + f * (high - low)).toFixed(1);
  return `linear-gradient(90deg,#c0392b,#f1c40f ${low.toFixed(1)}%,#27ae60 ${inner(0.25)}%,#27ae60 ${inner(0.75)}%,#f1c40f ${high.toFixed(1)}%,#c0392b)`;
}

/** " — σ too large" / " — σ too small" outside meta.saturation_range, else "". */
export function saturationHint(meta, s) {
  const [low, high] = meta.saturation_range;
  return s > high ? " — σ too large" : s < low ? " — σ too small" : "";
}

/** Bytes of a DataView / ArrayBuffer / typed array / base64 string, as a Uint8Array (no copy where possible). */
export function bytesOf(value) {
  if (value == null) return new Uint8Array(0);
  if (typeof value === "string") return decodeBase64(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer instanceof ArrayBuffer) return new Uint8Array(value.buffer);
  throw new TypeError("ibwidget: expected binary data, got " + typeof value);
}

/** Base64 -> Uint8Array (browser atob, or node's Buffer). */
export function decodeBase64(text) {
  const clean = String(text).replace(/\s+/g, "");
  if (typeof atob === "function") {
    const raw = atob(clean);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  return new Uint8Array(Buffer.from(clean, "base64"));
}

function aligned(bytes, size) {
  // Typed-array views need an aligned offset: copy when the buffer slice is not.
  return bytes.byteOffset % size === 0 ? bytes : bytes.slice();
}

/** Float32 view of little-endian float32 bytes. */
export function float32Of(bytes) {
  const b = aligned(bytesOf(bytes), 4);
  return new Float32Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 4));
}

/**
 * The grid's values as a Float32Array, from float32 bytes (meta.encoding "f32") or from uint16 codes with a
 * float64 (blocks, 2 coordinates, [lo, step]) table of scales ("u16": value = lo + code * step, meta.nan_code = NaN).
 */
export function decodeValues(meta, gridBytes, scaleBytes) {
  if ((meta.encoding || "f32") === "f32") return float32Of(gridBytes);
  if (meta.encoding !== "u16") throw new Error("ibwidget: unknown grid encoding " + meta.encoding);
  const b = aligned(bytesOf(gridBytes), 2);
  const codes = new Uint16Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 2));
  const s = aligned(bytesOf(scaleBytes), 8);
  const scales = new Float64Array(s.buffer, s.byteOffset, Math.floor(s.byteLength / 8));
  const out = new Float32Array(codes.length);
  const nanCode = meta.nan_code;
  const L = meta.n_layers;
  const B = meta.n_blocks;
  const perBlock = L * 2;
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === nanCode) {
      out[i] = NaN;
      continue;
    }
    const c = i & 1;
    const block = Math.floor(i / perBlock) % B;
    const k = (block * 2 + c) * 2;
    out[i] = scales[k] + code * scales[k + 1];
  }
  return out;
}

function unknownName(what, name, names) {
  return new Error(`ibwidget: unknown ${what} ${JSON.stringify(name)}; this grid has ${names.join(", ")}`);
}

/** Index of `name` in `names`, or an Error that lists the names there are. */
function indexOf(names, name, what) {
  const i = names.indexOf(name);
  if (i < 0) throw unknownName(what, name, names);
  return i;
}

/**
 * The block of (estimator name, slot index, target name); an estimator without sigma ignores the slot.
 * Python's Grid.block_index(estimator, slot, target) is the same function.
 */
export function blockIndex(meta, estimator, slot, target) {
  const names = meta.estimators.map((e) => e.name);
  const e = meta.estimators[indexOf(names, estimator, "estimator in this grid")];
  const t = indexOf(meta.targets, target, "target in this grid");
  return e.base + (e.slots > 1 ? slot : 0) * meta.targets.length + t;
}

/**
 * The slot of a median rule (sigma ignored), or of the grid sigma nearest `sigma` (log scale) under a scaling rule.
 * Python's Grid.slot_index(rule, sigma) is the same function.
 */
export function slotIndex(meta, rule, sigma) {
  const slots = [];
  meta.slots.forEach((s, i) => {
    if (s.rule === rule) slots.push(i);
  });
  if (!slots.length) throw unknownName("sigma rule in this grid", rule, meta.rules);
  const sigmas = slots.map((i) => meta.slots[i].sigma);
  if (sigmas[0] === null || sigmas[0] === undefined) return slots[0];
  if (!(sigma > 0 && Number.isFinite(sigma))) {
    throw new Error(`ibwidget: the ${JSON.stringify(rule)} rule needs a positive sigma, got ${sigma}`);
  }
  return slots[nearestLog(sigmas, sigma)];
}

/** Index of the grid value nearest to v on a log scale (the sigma slider snaps to it). */
export function nearestLog(values, v) {
  let best = 0;
  let bestD = Infinity;
  for (let i = 0; i < values.length; i++) {
    const d = Math.abs(Math.log(values[i]) - Math.log(v));
    if (d < bestD) {
      bestD = d;
      best = i;
    }
  }
  return best;
}

/** Flat index of (run, epoch, block, layer, coordinate) in the values array. */
export function valueIndex(dims, r, e, b, l, c) {
  return (((r * dims.E + e) * dims.B + b) * dims.L + l) * 2 + c;
}

export function dimsOf(meta) {
  return { R: meta.n_runs, E: meta.n_epochs, B: meta.n_blocks, L: meta.n_layers, S: meta.slots.length };
}

/** The trajectory of one (run, block, layer): xs and ys over the first n epochs (NaN where unavailable). */
export function series(values, dims, r, b, l, n) {
  const count = n === undefined ? dims.E : n;
  const xs = new Float64Array(count);
  const ys = new Float64Array(count);
  for (let e = 0; e < count; e++) {
    const i = valueIndex(dims, r, e, b, l, 0);
    xs[e] = values[i];
    ys[e] = values[i + 1];
  }
  return { xs, ys };
}

/** [lo, hi] of the finite values of the arrays, widened by `pad` of the span (a flat range gets a margin). */
export function extent(arrays, pad = 0.05) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const v = a[i];
      if (Number.isFinite(v)) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  if (lo === Infinity) return [0, 1];
  if (hi - lo <= 1e-12 * Math.max(Math.abs(lo), Math.abs(hi), 1e-300)) {
    const m = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return [lo - m, hi + m];
  }
  const span = hi - lo;
  return [lo - pad * span, hi + pad * span];
}

/** Round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 6) {
  if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi < lo) return [];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag; // in [1, 10)
  const s = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const first = Math.ceil(lo / s - 1e-9);
  const last = Math.floor(hi / s + 1e-9);
  const ticks = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * s).toPrecision(12)));
  return ticks;
}

/** A linear map from [d0, d1] to [r0, r1], with .invert. */
export function linearScale(d0, d1, r0, r1) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  const f = (v) => r0 + (v - d0) * k;
  f.invert = (p) => (k === 0 ? d0 : d0 + (p - r0) / k);
  f.domain = [d0, d1];
  f.range = [r0, r1];
  return f;
}

/** SVG path data through the points (sx(xs[i]), sy(ys[i])) for i < n; a NaN point breaks the line. */
export function pathData(xs, ys, sx, sy, n) {
  const count = n === undefined ? xs.length : Math.min(n, xs.length);
  let d = "";
  let pen = false;
  for (let i = 0; i < count; i++) {
    const x = xs[i];
    const y = ys[i];
    if (!(Number.isFinite(x) && Number.isFinite(y))) {
      pen = false;
      continue;
    }
    d += (pen ? "L" : "M") + sx(x).toFixed(2) + "," + sy(y).toFixed(2);
    pen = true;
  }
  return d;
}

/** A short, readable number: 4 significant digits, exponent form when very small or large. */
export function formatValue(v, digits = 4) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 1).replace("e+", "e");
  return String(Number(v.toPrecision(digits)));
}

/** Tick labels for ticks of one axis: as few digits as tell them apart. */
export function formatTicks(ticks) {
  if (ticks.length < 2) return ticks.map((t) => formatValue(t));
  const step = Math.abs(ticks[1] - ticks[0]);
  const big = Math.max(...ticks.map(Math.abs));
  if (big >= 1e5 || (big > 0 && big < 1e-3)) {
    const digits = Math.max(1, Math.min(6, Math.ceil(Math.log10(big / step)) + 1));
    return ticks.map((t) => (t === 0 ? "0" : t.toExponential(digits - 1).replace("e+", "e")));
  }
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  return ticks.map((t) => t.toFixed(decimals));
}

/** The viridis colour at t in [0, 1], as #rrggbb. */
export function viridis(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
}

/** Mean saturation over the visible (run, layer) pairs at epoch index e (each run clamped to its last epoch). */
export function saturationAt(sat, dims, meta, slot, e, visibleLayers, visibleRuns) {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < dims.R; r++) {
    if (visibleRuns && !visibleRuns[r]) continue;
    const count = meta.runs[r].epochs.length;
    if (!count) continue;
    const ee = Math.min(e, count - 1);
    for (let l = 0; l < dims.L; l++) {
      if (visibleLayers && !visibleLayers[l]) continue;
      const v = sat[((r * dims.E + ee) * dims.S + slot) * dims.L + l];
      if (Number.isFinite(v)) {
        sum += v;
        n++;
      }
    }
  }
  return n ? sum / n : NaN;
}

/** The σ fan's slots: every slot of `rule` that has a σ (a scaling rule), by increasing σ; none for a median rule. */
export function fanSlots(meta, rule) {
  const out = [];
  meta.slots.forEach((s, i) => {
    if (s.rule === rule && s.sigma !== null && s.sigma !== undefined) out.push(i);
  });
  return out.sort((a, b) => meta.slots[a].sigma - meta.slots[b].sigma);
}

/** Whether the kernel of (run r, layer l) at `slot` and epoch index e is informative: its mean off-diagonal value
 * lies within meta.saturation_range (near 1 the kernel is all ones, near 0 the identity: it tells nothing). */
export function informative(sat, dims, meta, slot, r, e, l) {
  const v = sat[((r * dims.E + e) * dims.S + slot) * dims.L + l];
  const [low, high] = meta.saturation_range;
  return Number.isFinite(v) && v >= low && v <= high;
}

/** [smallest, largest] σ of the fan's `slots` where (r, l) is informative at epoch index e, or null if none. */
export function informativeRange(sat, dims, meta, slots, r, e, l) {
  const sigmas = slots.filter((k) => informative(sat, dims, meta, k, r, e, l)).map((k) => meta.slots[k].sigma);
  return sigmas.length ? [Math.min(...sigmas), Math.max(...sigmas)] : null;
}

/** The chance floor (a payload of meta.bands, or one received since) for this selection, or null. */
export function bandFor(bands, est, slot, target) {
  return (
    (bands || []).find((b) => b.estimator === est.name && b.target === target && (est.slots <= 1 || b.slot === slot)) ||
    null
  );
}

/**
 * Append k epochs to a one-run grid: values (1, E, B, L, 2) + (k, B, L, 2) and saturation likewise; returns the
 * new arrays (epoch-major, so this is a concatenation).
 */
export function appendEpochs(values, sat, newValues, newSat) {
  const v = new Float32Array(values.length + newValues.length);
  v.set(values, 0);
  v.set(newValues, values.length);
  const s = new Float32Array(sat.length + newSat.length);
  s.set(sat, 0);
  s.set(newSat, sat.length);
  return { values: v, saturation: s };
}

/** The history value of `key` at snapshot epoch `epoch` (history lists start with epoch 1; epoch 0 has none). */
export function historyAt(history, key, epoch) {
  const values = history && history[key];
  if (!values || epoch < 1 || epoch - 1 >= values.length) return NaN;
  const v = values[epoch - 1];
  return v === null || v === undefined ? NaN : v;
}

// ------------------------------------------------------------------------------------------------ DOM

const CSS = `
.ibwp-root{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#222;
  max-width:780px;outline:none;position:relative}
.ibwp-root:focus-visible{box-shadow:0 0 0 2px #4a90d9;border-radius:4px}
.ibwp-title{font-weight:600;font-size:14px;margin:2px 0 6px}
.ibwp-row{display:flex;flex-wrap:wrap;align-items:center;gap:6px 10px;margin:4px 0}
.ibwp-row label{display:inline-flex;align-items:center;gap:4px}
.ibwp-root select,.ibwp-root button{font:inherit}
.ibwp-root button{border:1px solid #bbb;background:#f6f6f6;border-radius:3px;padding:2px 8px;cursor:pointer}
.ibwp-root button[aria-pressed="false"]{opacity:.45;text-decoration:line-through}
.ibwp-swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.ibwp-sigma{width:160px}.ibwp-scrub{flex:1 1 200px;min-width:120px}
.ibwp-epoch{min-width:110px;font-variant-numeric:tabular-nums}
.ibwp-sigma-value{min-width:70px;font-variant-numeric:tabular-nums}
.ibwp-svg{width:100%;height:auto;display:block;background:#fff;user-select:none}
.ibwp-svg text{font-size:11px;fill:#333}
.ibwp-svg .ibwp-axis-label{font-size:12px;fill:#111}
.ibwp-svg .ibwp-grid-line{stroke:#eee}
.ibwp-svg .ibwp-axis-line{stroke:#666}
.ibwp-svg .ibwp-layers *{pointer-events:none}
.ibwp-gauge{display:flex;align-items:center;gap:8px}
.ibwp-gauge-track{width:160px;height:10px;background:#ddd;border-radius:5px;position:relative}
.ibwp-gauge-fill{position:absolute;top:-3px;width:3px;height:16px;background:#111;border-radius:1px}
.ibwp-tooltip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #999;
  border-radius:3px;padding:3px 6px;font-size:12px;white-space:pre;display:none;z-index:10}
.ibwp-note{color:#a15c00;min-height:1em}
.ibwp-readout,.ibwp-history{color:#444;min-height:1.35em;font-variant-numeric:tabular-nums}
.ibwp-plot{position:relative}
.ibwp-fan-note{color:#444;min-height:1.35em}
.ibwp-cka{align-items:flex-start}.ibwp-cka-caption{color:#444}.ibwp-cka-map text{font-size:10px;fill:#333}
`;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs, cls) {
  const node = document.createElementNS(SVG_NS, tag);
  if (cls) node.setAttribute("class", cls);
  if (attrs) for (const k in attrs) node.setAttribute(k, attrs[k]);
  return node;
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = label;
  select.appendChild(o);
  return o;
}

function now() {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

let viewCount = 0;

const W = 720;
const H = 470;
const M = { left: 78, right: 92, top: 16, bottom: 58 };

// A view is one object shared by the builders below: { model, uid, ui (its DOM nodes), state, raf }. Each builder
// makes or redraws one part; `render` wires them together.

function labelled(text, node) {
  const l = el("label");
  l.append(text, node);
  return l;
}

function button(cls, text, tip) {
  const b = el("button", cls, text);
  b.type = "button";
  if (tip) b.title = tip;
  return b;
}

/** The selection controls: estimator, sigma rule, sigma slider, target. */
function buildControls(ui) {
  ui.estSelect = el("select", "ibwp-estimator");
  ui.ruleSelect = el("select", "ibwp-rule");
  ui.sigmaInput = el("input", "ibwp-sigma");
  ui.sigmaInput.type = "range";
  ui.sigmaInput.step = "1";
  ui.sigmaValue = el("span", "ibwp-sigma-value");
  ui.targetSelect = el("select", "ibwp-target");
  ui.fanInput = el("input", "ibwp-fan-toggle");
  ui.fanInput.type = "checkbox";
  const fan = labelled("σ fan ", ui.fanInput);
  fan.title = "draw each layer at every σ of the rule at once; solid where the kernel is informative at this epoch";
  ui.bandInput = el("input", "ibwp-band-toggle");
  ui.bandInput.type = "checkbox";
  ui.ckaInput = el("input", "ibwp-cka-toggle");
  ui.ckaInput.type = "checkbox";
  ui.ckaNote = el("span", "ibwp-cka-note");
  const cka = labelled("layer CKA ", ui.ckaInput);
  cka.title = "a heatmap of linear CKA between the input, every layer and the output, at the epoch shown (Kornblith et al. 2019)";
  ui.bandNote = el("span", "ibwp-band-note");
  const band = labelled("chance floor ", ui.bandInput);
  band.title =
    "shade, per layer, the 95% quantile of this estimator when the inputs and labels are permuted: a point inside its box is indistinguishable from chance";
  ui.controls.append(
    labelled("estimator ", ui.estSelect),
    labelled("rule ", ui.ruleSelect),
    labelled("σ ", ui.sigmaInput),
    ui.sigmaValue,
    labelled("target ", ui.targetSelect),
    fan,
    band,
    ui.bandNote,
    cka,
    ui.ckaNote,
  );
}

/** The epoch player: play / pause, steps, the scrubber, the epoch label and the speed. */
function buildPlayer(ui) {
  ui.playButton = button("ibwp-play", "▶ Play", "play / pause (space)");
  ui.backButton = button("ibwp-step-back", "◀", "previous epoch (←)");
  ui.fwdButton = button("ibwp-step-fwd", "▶|", "next epoch (→)");
  ui.scrub = el("input", "ibwp-scrub");
  ui.scrub.type = "range";
  ui.scrub.min = "0";
  ui.scrub.step = "1";
  ui.scrub.setAttribute("aria-label", "epoch");
  ui.epochLabel = el("span", "ibwp-epoch");
  ui.speedSelect = el("select", "ibwp-speed");
  for (const s of SPEEDS) option(ui.speedSelect, s, s + " epoch" + (s === 1 ? "" : "s") + "/s");
  ui.speedSelect.value = "5";
  ui.player.append(ui.playButton, ui.backButton, ui.fwdButton, ui.scrub, ui.epochLabel, labelled("speed ", ui.speedSelect));
}

/** The kernel saturation gauge. */
function buildGauge(ui) {
  ui.gaugeTrack = el("div", "ibwp-gauge-track");
  ui.gaugeFill = el("div", "ibwp-gauge-fill");
  ui.gaugeTrack.appendChild(ui.gaugeFill);
  ui.gaugeText = el("span", "ibwp-gauge-text");
  ui.gauge.append(el("span", "ibwp-gauge-label", "kernel saturation"), ui.gaugeTrack, ui.gaugeText);
  ui.gauge.title = "mean off-diagonal Gaussian kernel value of the visible layers at this epoch: near 1, sigma is too large; near 0, too small";
}

/** The plot's SVG skeleton: gradient and clip, grid, axes, layers, colour bar, labels, hover ring, tooltip. */
function buildPlot(ui, uid) {
  ui.svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, "ibwp-svg");
  const defs = svgEl("defs");
  const gradient = svgEl("linearGradient", { id: uid + "-grad", x1: "0", y1: "1", x2: "0", y2: "0" });
  for (let i = 0; i <= 10; i++) gradient.appendChild(svgEl("stop", { offset: i / 10, "stop-color": viridis(i / 10) }));
  defs.appendChild(gradient);
  const clip = svgEl("clipPath", { id: uid + "-clip" });
  clip.appendChild(svgEl("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom }));
  defs.appendChild(clip);
  ui.svg.appendChild(defs);
  ui.gridG = svgEl("g", null, "ibwp-grid");
  ui.axesG = svgEl("g", null, "ibwp-axes");
  ui.layersG = svgEl("g", { "clip-path": `url(#${uid}-clip)` }, "ibwp-layers");
  ui.cbarG = svgEl("g", null, "ibwp-colorbar");
  ui.xLabel = svgEl("text", { x: (M.left + W - M.right) / 2, y: H - 14, "text-anchor": "middle" }, "ibwp-axis-label ibwp-xlabel");
  ui.yLabel = svgEl(
    "text",
    { transform: `translate(16,${(M.top + H - M.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" },
    "ibwp-axis-label ibwp-ylabel",
  );
  ui.emptyText = svgEl("text", { x: (M.left + W - M.right) / 2, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle" }, "ibwp-empty");
  ui.svg.append(ui.gridG, ui.axesG, ui.layersG, ui.cbarG, ui.xLabel, ui.yLabel, ui.emptyText);
  ui.hoverRing = svgEl("circle", { r: 8, fill: "none", stroke: "#111", "stroke-width": 1.5, display: "none" }, "ibwp-hover");
  ui.svg.appendChild(ui.hoverRing);
  ui.plot.append(ui.svg, ui.tooltip);
}

/** The DOM of a view (not yet in the page): the root and every part, by name. */
function buildDom(uid) {
  const root = el("div", "ibwp-root");
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab: our keys, not the notebook's
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "information plane: space plays or pauses, arrow keys step through epochs");
  root.appendChild(el("style", null, CSS));
  const ui = {
    root,
    title: el("div", "ibwp-title"),
    controls: el("div", "ibwp-row ibwp-controls"),
    layerRow: el("div", "ibwp-row ibwp-toggles"),
    player: el("div", "ibwp-row ibwp-player"),
    plot: el("div", "ibwp-plot"),
    tooltip: el("div", "ibwp-tooltip"),
    gauge: el("div", "ibwp-row ibwp-gauge"),
    fanNote: el("div", "ibwp-fan-note"),
    ckaBox: el("div", "ibwp-row ibwp-cka"),
    readout: el("div", "ibwp-readout"),
    historyLine: el("div", "ibwp-history"),
    note: el("div", "ibwp-note"),
  };
  root.append(ui.title, ui.controls, ui.layerRow, ui.player, ui.plot, ui.ckaBox, ui.gauge, ui.fanNote, ui.historyLine, ui.readout, ui.note);
  buildControls(ui);
  buildPlayer(ui);
  buildGauge(ui);
  buildPlot(ui, uid);
  return ui;
}

function initialState() {
  return {
    meta: null,
    dims: null,
    values: new Float32Array(0),
    sat: new Float32Array(0),
    est: 0,
    rule: null, // the selection is chosen from the grid on its first load
    sigmaIndex: 0,
    target: 0,
    epoch: 0,
    follow: true, // at the last epoch: move along as live epochs arrive
    playing: false,
    speed: 5,
    visibleLayers: [],
    visibleRuns: [],
    showCka: false, // the layer-to-layer CKA heatmap
    cka: null, // its data, received (a report's meta.cka holds it)
    ckaCells: [], // per heatmap: {r, cells: [[rect]]}
    showBand: false, // the chance floor of the selection
    bands: [], // chance floors received (a report's meta.bands holds its default view's)
    band: null, // the one for the selection, when there is one
    fan: false, // the σ fan: every σ of the rule at once
    fanSlots: [], // the slots it draws (none while it is off or does not apply)
    items: [], // per drawn (run, layer): {r, l, g, fanG, fans, track, dots, trail, point, xs, ys, n}
    sx: null,
    sy: null,
    configured: false,
  };
}

function recordRedraw(view, kind, ms) {
  const g = globalThis;
  g.__ibwp_last_redraw_ms = ms;
  g.__ibwp_redraws = g.__ibwp_redraws || [];
  g.__ibwp_redraws.push([kind, ms]);
  if (g.__ibwp_redraws.length > 500) g.__ibwp_redraws.shift();
  view.ui.root.dataset.redrawMs = ms.toFixed(3);
}

/** Show why there is nothing to draw, in the widget itself (not only in the console). */
function showProblem(view, text) {
  const { ui, state } = view;
  state.meta = null;
  ui.note.textContent = text;
  ui.emptyText.textContent = text;
  ui.root.dataset.problem = text;
}

/** Read the model's grid into the state (refusing a format this front-end does not read), then configure. */
function loadGrid(view) {
  const { model, ui, state } = view;
  const meta = model.get("meta");
  if (!meta || !meta.estimators || !meta.estimators.length) {
    state.meta = null;
    ui.note.textContent = "no grid yet";
    return;
  }
  const problem = formatProblem(meta);
  if (problem) {
    showProblem(view, problem);
    return;
  }
  delete ui.root.dataset.problem;
  ui.emptyText.textContent = "";
  state.meta = JSON.parse(JSON.stringify(meta)); // a private copy: live appends extend it
  state.dims = dimsOf(state.meta);
  state.values = decodeValues(state.meta, model.get("grid"), model.get("scales"));
  state.sat = float32Of(model.get("saturation"));
  const expected = state.dims.R * state.dims.E * state.dims.B * state.dims.L * 2;
  if (state.values.length !== expected) {
    showProblem(view, `grid holds ${state.values.length} values, expected ${expected}`);
    return;
  }
  configure(view);
}

/** The selection after a (re)load: the grid's default the first time, else the current one kept in range. */
function chooseSelection(state, keepEst) {
  const meta = state.meta;
  const last = Math.max(0, state.dims.E - 1);
  if (!state.configured) {
    const d = meta.default || {};
    state.est = Math.min(d.estimator || 0, meta.estimators.length - 1);
    state.rule = d.rule && meta.rules.includes(d.rule) ? d.rule : meta.rules[0];
    state.sigmaIndex = meta.sigmas.length ? nearestLog(meta.sigmas, d.sigma || 5) : 0;
    state.target = Math.max(0, meta.targets.indexOf(d.target || meta.targets[0]));
    state.epoch = last;
  } else {
    state.est = keepEst !== "" ? Math.min(Number(keepEst), meta.estimators.length - 1) : 0;
    if (!meta.rules.includes(state.rule)) state.rule = meta.rules[0];
    state.sigmaIndex = Math.min(state.sigmaIndex, Math.max(0, meta.sigmas.length - 1));
    state.target = Math.min(state.target, meta.targets.length - 1);
    state.epoch = state.follow ? last : Math.min(state.epoch, last);
  }
}

/** Options of the selection controls, from the grid's axes. */
function fillControls(view) {
  const { ui, state } = view;
  const meta = state.meta;
  const keepEst = ui.estSelect.value;
  ui.estSelect.textContent = "";
  meta.estimators.forEach((e, i) => {
    option(ui.estSelect, i, e.name).title = e.description || e.label_x;
  });
  ui.ruleSelect.textContent = "";
  for (const r of meta.rules) option(ui.ruleSelect, r, r).title = (meta.sigma_rules || {})[r] || "";
  ui.targetSelect.textContent = "";
  for (const t of meta.targets) option(ui.targetSelect, t, `${t} (${meta.target_symbols[t]})`);
  ui.sigmaInput.min = "0";
  ui.sigmaInput.max = String(Math.max(0, meta.sigmas.length - 1));
  ui.gaugeTrack.style.background = gaugeBackground(meta);
  chooseSelection(state, keepEst);
  ui.estSelect.value = String(state.est);
  ui.ruleSelect.value = state.rule;
  ui.sigmaInput.value = String(state.sigmaIndex);
  ui.targetSelect.value = meta.targets[state.target];
}

/** A show / hide button for item `index` of state[key] (visibleLayers or visibleRuns); data-`kind` names it. */
function toggleButton(view, kind, key, index) {
  const { state } = view;
  const b = button(`ibwp-${kind}-toggle`);
  b.dataset[kind] = String(index);
  b.setAttribute("aria-pressed", String(state[key][index]));
  b.addEventListener("click", () => {
    state[key][index] = !state[key][index];
    b.setAttribute("aria-pressed", String(state[key][index]));
    fullRedraw(view, kind);
  });
  return b;
}

/** One show / hide button per layer (and per run of a comparison); their names are text only. */
function buildToggles(view) {
  const { ui, state } = view;
  const meta = state.meta;
  ui.layerRow.textContent = "";
  for (let l = 0; l < meta.n_layers; l++) {
    const names = [...new Set(meta.runs.filter((r) => l < r.layer_names.length).map((r) => r.layer_names[l]))];
    const b = toggleButton(view, "layer", "visibleLayers", l);
    const sw = el("span", "ibwp-swatch");
    sw.style.background = layerColour(meta, l);
    b.append(sw, document.createTextNode(names.join(" / ")));
    b.title = `layer ${l}: ${names.join(" / ")} (show or hide)`;
    ui.layerRow.appendChild(b);
  }
  if (meta.n_runs < 2) return;
  meta.runs.forEach((run, r) => {
    const b = toggleButton(view, "run", "visibleRuns", r);
    const sample = svgEl("svg", { width: 30, height: 10 });
    sample.appendChild(svgEl("line", { x1: 1, y1: 5, x2: 29, y2: 5, stroke: "#333", "stroke-width": 2, "stroke-dasharray": runDash(meta, r) }));
    b.append(sample, document.createTextNode(" " + run.name));
    ui.layerRow.appendChild(b);
  });
}

/** Controls, title, toggles and drawn items for the loaded grid; then a full redraw. */
function configure(view) {
  const { ui, state } = view;
  const meta = state.meta;
  fillControls(view);
  ui.title.textContent = meta.runs.map((r) => r.name).join(" vs ") + " — information plane";
  if (state.visibleLayers.length !== meta.n_layers) state.visibleLayers = new Array(meta.n_layers).fill(true);
  if (state.visibleRuns.length !== meta.n_runs) state.visibleRuns = new Array(meta.n_runs).fill(true);
  buildToggles(view);
  ui.scrub.max = String(Math.max(0, state.dims.E - 1));
  buildItems(view);
  state.configured = true;
  fullRedraw(view, "load");
}

/** The SVG of each (run, layer): track, epoch dots, fading trail, current point. */
function buildItems(view) {
  const { ui, state } = view;
  const { meta, dims } = state;
  ui.layersG.textContent = "";
  state.items = [];
  for (let r = 0; r < dims.R; r++) {
    for (let l = 0; l < Math.min(dims.L, meta.runs[r].layer_names.length); l++) {
      const colour = layerColour(meta, l);
      const g = svgEl("g", { "data-run": r, "data-layer": l }, "ibwp-layer");
      const track = svgEl(
        "path",
        { fill: "none", stroke: colour, "stroke-width": 1.5, "stroke-opacity": 0.3, "stroke-dasharray": runDash(meta, r), "data-run": r, "data-layer": l },
        "ibwp-track",
      );
      const dotsG = svgEl("g", null, "ibwp-dots");
      const n = meta.runs[r].epochs.length;
      const dots = [];
      for (let e = 0; e < n; e++) {
        const c = svgEl("circle", { r: 2.6, fill: viridis(dims.E > 1 ? e / (dims.E - 1) : 1) }, "ibwp-dot");
        dotsG.appendChild(c);
        dots.push(c);
      }
      const trail = [];
      const trailG = svgEl("g", null, "ibwp-trail");
      for (let k = 0; k < TRAIL; k++) {
        const seg = svgEl("line", { stroke: colour, "stroke-width": 3.2 - (2.2 * k) / TRAIL, "stroke-linecap": "round", "stroke-opacity": (0.9 * (TRAIL - k)) / TRAIL }, "ibwp-trail-seg");
        trailG.appendChild(seg);
        trail.push(seg);
      }
      const point = svgEl("circle", { r: 6, fill: colour, stroke: "#fff", "stroke-width": 1.5, "data-run": r, "data-layer": l }, "ibwp-point");
      const fanG = svgEl("g", null, "ibwp-fan");
      const bandRect = svgEl("rect", { fill: colour, "fill-opacity": 0.1, stroke: colour, "stroke-opacity": 0.35, display: "none", "data-layer": l }, "ibwp-band");
      g.append(bandRect, fanG, track, dotsG, trailG, point);
      ui.layersG.appendChild(g);
      state.items.push({ r, l, g, bandRect, fanG, fans: [], track, dots, trail, point, xs: null, ys: null, n });
    }
  }
}

/** Whether every epoch of a slot is in the grid (a live or freshly opened view computes the viewed σ first). */
export function slotReady(meta, slot) {
  return !meta.slot_filled || meta.slot_filled[slot] !== false;
}

/** Tell the kernel which slot this view shows, once per change: it computes that slot first, and every epoch. */
function askForSlot(view, slot) {
  if (view.sentSlot === slot || !view.model.send) return;
  view.sentSlot = slot;
  view.model.send({ type: "view", slot });
}

/** The selected estimator, its slot and block, and the slot of the saturation gauge. */
function currentBlock(state) {
  const { meta } = state;
  const est = meta.estimators[state.est];
  const satSlot = slotIndex(meta, state.rule, meta.sigmas[state.sigmaIndex]);
  const slot = est.slots > 1 ? satSlot : 0;
  return { est, slot, satSlot, block: blockIndex(meta, est.name, slot, meta.targets[state.target]) };
}

function drawAxes(ui, sx, sy) {
  ui.gridG.textContent = "";
  ui.axesG.textContent = "";
  const [x0, x1] = sx.domain;
  const [y0, y1] = sy.domain;
  const xt = niceTicks(x0, x1, 6);
  const yt = niceTicks(y0, y1, 6);
  const xl = formatTicks(xt);
  const yl = formatTicks(yt);
  const bottom = H - M.bottom;
  const right = W - M.right;
  xt.forEach((t, i) => {
    const x = sx(t);
    ui.gridG.appendChild(svgEl("line", { x1: x, x2: x, y1: M.top, y2: bottom }, "ibwp-grid-line"));
    ui.axesG.appendChild(svgEl("line", { x1: x, x2: x, y1: bottom, y2: bottom + 5 }, "ibwp-axis-line"));
    ui.axesG.appendChild(svgEl("text", { x, y: bottom + 18, "text-anchor": "middle" }, "ibwp-tick")).textContent = xl[i];
  });
  yt.forEach((t, i) => {
    const y = sy(t);
    ui.gridG.appendChild(svgEl("line", { x1: M.left, x2: right, y1: y, y2: y }, "ibwp-grid-line"));
    ui.axesG.appendChild(svgEl("line", { x1: M.left - 5, x2: M.left, y1: y, y2: y }, "ibwp-axis-line"));
    ui.axesG.appendChild(svgEl("text", { x: M.left - 8, y: y + 4, "text-anchor": "end" }, "ibwp-tick")).textContent = yl[i];
  });
  ui.axesG.appendChild(svgEl("rect", { x: M.left, y: M.top, width: right - M.left, height: bottom - M.top, fill: "none" }, "ibwp-axis-line"));
}

/** The longest run's epoch numbers (the epoch axis of the player and of the colour bar). */
function longestEpochs(meta) {
  return meta.runs.reduce((a, r) => (r.epochs.length > a.length ? r.epochs : a), []);
}

function drawColorbar(view) {
  const { ui, state, uid } = view;
  const { meta, dims } = state;
  ui.cbarG.textContent = "";
  const x = W - M.right + 22;
  const top = M.top;
  const bottom = H - M.bottom;
  ui.cbarG.appendChild(svgEl("rect", { x, y: top, width: 12, height: bottom - top, fill: `url(#${uid}-grad)` }, "ibwp-colorbar-rect"));
  const epochs = longestEpochs(meta);
  const e0 = epochs.length ? epochs[0] : 0;
  const e1 = epochs.length ? epochs[epochs.length - 1] : 1;
  const ticks = niceTicks(e0, e1, 5).filter((t) => Number.isInteger(t));
  const sc = linearScale(0, Math.max(1, dims.E - 1), bottom, top);
  for (const t of ticks) {
    const idx = epochs.indexOf(t);
    if (idx < 0) continue;
    const y = sc(idx);
    ui.cbarG.appendChild(svgEl("line", { x1: x + 12, x2: x + 16, y1: y, y2: y }, "ibwp-axis-line"));
    ui.cbarG.appendChild(svgEl("text", { x: x + 19, y: y + 4 }, "ibwp-tick")).textContent = String(t);
  }
  const name = svgEl("text", { transform: `translate(${x - 6},${(top + bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, "ibwp-axis-label");
  name.textContent = "epoch";
  ui.cbarG.appendChild(name);
  state.cbarMarker = svgEl("path", { fill: "#111" }, "ibwp-colorbar-marker");
  state.cbarScale = sc;
  state.cbarX = x;
  ui.cbarG.appendChild(state.cbarMarker);
}

/** Tracks and dots of every item on the scales; returns whether a visible one has a value. */
function drawTracks(state, sx, sy) {
  let anyValue = false;
  for (const it of state.items) {
    it.g.setAttribute("display", it.visible ? "inline" : "none");
    it.track.setAttribute("d", pathData(it.xs, it.ys, sx, sy));
    it.track.setAttribute("data-values", Array.from(it.xs, (x, e) => `${x},${it.ys[e]}`).join(";"));
    for (let e = 0; e < it.dots.length; e++) {
      const ok = Number.isFinite(it.xs[e]) && Number.isFinite(it.ys[e]);
      const c = it.dots[e];
      if (ok) {
        c.setAttribute("cx", sx(it.xs[e]).toFixed(2));
        c.setAttribute("cy", sy(it.ys[e]).toFixed(2));
        if (it.visible) anyValue = true;
      }
      c.dataset.ok = ok ? "1" : "0";
    }
  }
  return anyValue;
}

/** The sigma slider, rule and note for the selected estimator (what does not apply is disabled). */
function describeSelection(view, est) {
  const { ui, state } = view;
  const meta = state.meta;
  const sigma = meta.sigmas[state.sigmaIndex];
  const scaling = meta.slots.some((s) => s.rule === state.rule && s.sigma !== null);
  const sigmaApplies = est.uses_sigma && scaling;
  ui.sigmaInput.disabled = !sigmaApplies;
  ui.ruleSelect.disabled = !est.uses_sigma;
  const scalingRules = new Set(meta.slots.filter((s) => s.sigma !== null).map((s) => s.rule));
  const rule = scalingRules.size > 1 ? ` (${state.rule})` : "";
  ui.sigmaValue.textContent = !est.uses_sigma ? "σ: n/a" : sigmaApplies ? `σ = ${formatValue(sigma, 3)}${rule}` : `σ: ${state.rule}`;
  ui.sigmaValue.title = (meta.sigma_rules || {})[state.rule] || "";
  const missing = [];
  est.available.forEach((row, r) =>
    row.forEach((ok, l) => {
      if (!ok && l < meta.runs[r].layer_names.length) missing.push(meta.runs[r].layer_names[l]);
    }),
  );
  ui.note.textContent = est.note || (missing.length ? `${est.name}: not available for ${missing.join(", ")}` : "");
  return sigma;
}

/** Everything that depends on the selection: series, scales, axes, tracks, dots; then the epoch. */
function fullRedraw(view, kind) {
  const { ui, state } = view;
  if (!state.meta) return;
  const t0 = now();
  const { meta, dims } = state;
  const { est, block, satSlot } = currentBlock(state);
  askForSlot(view, satSlot);
  const xsAll = [];
  const ysAll = [];
  const target = meta.targets[state.target];
  const slots = fanSlots(meta, state.rule);
  state.fanSlots = state.fan && est.uses_sigma && slots.length > 1 ? slots : [];
  ui.fanInput.disabled = !est.uses_sigma || slots.length < 2;
  state.band = state.showBand ? bandFor([...(meta.bands || []), ...state.bands], est, satSlot, target) : null;
  if (state.showBand && !state.band) askForBand(view, est, satSlot, target);
  ui.bandNote.textContent =
    !state.showBand || state.band ? "" : view.model.send ? "computing…" : "(this page holds it for its first view only)";
  for (const it of state.items) {
    const s = series(state.values, dims, it.r, block, it.l, it.n);
    it.xs = s.xs;
    it.ys = s.ys;
    it.visible = state.visibleLayers[it.l] && state.visibleRuns[it.r];
    it.fanSeries = state.fanSlots.map((k) => series(state.values, dims, it.r, blockIndex(meta, est.name, k, target), it.l, it.n));
    if (it.visible) {
      for (const f of [s, ...it.fanSeries, ...bandSeries(state.band, it)]) {
        xsAll.push(f.xs);
        ysAll.push(f.ys);
      }
    }
  }
  const [x0, x1] = extent(xsAll);
  const [y0, y1] = extent(ysAll);
  state.sx = linearScale(x0, x1, M.left, W - M.right);
  state.sy = linearScale(y0, y1, H - M.bottom, M.top);
  drawAxes(ui, state.sx, state.sy);
  const anyValue = drawTracks(state, state.sx, state.sy);
  drawFanPaths(state, state.sx, state.sy);
  ui.xLabel.textContent = est.label_x;
  ui.yLabel.textContent = est.label_targets[target];
  const computing = est.uses_sigma && !slotReady(meta, satSlot);
  ui.emptyText.textContent = anyValue
    ? ""
    : computing
      ? "computing this σ…"
      : dims.E
        ? "no values for this selection"
        : "waiting for the first epoch";
  ui.root.dataset.computing = computing ? "1" : "";
  drawColorbar(view);
  buildCka(view);
  const sigma = describeSelection(view, est);
  Object.assign(ui.root.dataset, { estimator: est.name, rule: state.rule, sigma: String(sigma), target, block: String(block) });
  epochRedraw(view, null);
  recordRedraw(view, kind || "full", now() - t0);
}

/** The chance floor of an item over its epochs as a series ([] without one). */
function bandSeries(band, it) {
  if (!band || !band.values[it.r]) return [];
  const rows = band.values[it.r];
  const pick = (c) => Float64Array.from({ length: it.n }, (_, e) => (rows[e] && rows[e][it.l] && rows[e][it.l][c] !== null ? rows[e][it.l][c] : NaN));
  return [{ xs: pick(0), ys: pick(1) }];
}

/** Ask the kernel (or the server) for the chance floor of this selection, once per selection. */
function askForBand(view, est, slot, target) {
  const key = `${est.name}|${slot}|${target}`;
  if (!view.model.send || view.askedBand === key) return;
  view.askedBand = key;
  view.ui.root.dataset.bandPending = key;
  view.model.send({ type: "band", estimator: est.name, slot, target });
}

/** A chance floor computed on request arrives: keep it, and draw it if the selection is still its own. */
function receiveBand(view, band) {
  view.state.bands.push(band);
  delete view.ui.root.dataset.bandPending;
  view.askedBand = null;
  fullRedraw(view, "band");
}

/** The CKA heatmaps' data arrives (for the epochs recorded when it was computed). */
function receiveCka(view, cka) {
  view.state.cka = cka;
  view.askedCka = null;
  fullRedraw(view, "cka");
}

/** Each item's chance floor at epoch index e: the box from the axes' origin to the band's (x, y). */
function drawBand(view, e) {
  const { ui, state } = view;
  const { sx, sy, band } = state;
  let shown = 0;
  for (const it of state.items) {
    const ee = Math.min(e, it.n - 1);
    const v = band && ee >= 0 && band.values[it.r] && band.values[it.r][ee] ? band.values[it.r][ee][it.l] : null;
    const ok = it.visible && v && v[0] !== null && v[1] !== null;
    it.bandRect.setAttribute("display", ok ? "inline" : "none");
    if (!ok) continue;
    const x0 = sx(sx.domain[0]);
    const y0 = sy(sy.domain[0]);
    const x1 = Math.max(x0, sx(Math.min(v[0], sx.domain[1])));
    const y1 = Math.min(y0, sy(Math.min(v[1], sy.domain[1])));
    it.bandRect.setAttribute("x", x0.toFixed(2));
    it.bandRect.setAttribute("y", y1.toFixed(2));
    it.bandRect.setAttribute("width", (x1 - x0).toFixed(2));
    it.bandRect.setAttribute("height", (y0 - y1).toFixed(2));
    it.bandRect.dataset.x = String(v[0]);
    it.bandRect.dataset.y = String(v[1]);
    shown++;
  }
  ui.root.dataset.band = band ? `${band.estimator}|${band.slot}|${band.target}` : "";
  ui.bandInput.title = band ? `chance floor: ${Math.round(band.q * 100)}% quantile over ${band.permutations} permutations` : ui.bandInput.title;
  return shown;
}

/** The CKA data for the view: received, else the page's own; null when neither covers every epoch held. */
function ckaData(state) {
  const data = state.cka || state.meta.cka || null;
  if (!data) return null;
  const complete = state.meta.runs.every((run, r) => data.runs[r] && data.runs[r].values.length >= run.epochs.length);
  return complete ? data : null;
}

/** One heatmap per visible run (names as text), cells coloured at each epoch by drawCka; asks for the data once
 * per epoch count when the view has none that covers every epoch. */
function buildCka(view) {
  const { ui, state } = view;
  ui.ckaBox.textContent = "";
  state.ckaCells = [];
  const data = state.showCka ? ckaData(state) : null;
  if (state.showCka && !data && view.model.send && view.askedCka !== state.dims.E) {
    view.askedCka = state.dims.E;
    view.model.send({ type: "cka" });
  }
  ui.ckaNote.textContent = !state.showCka || data ? "" : view.model.send ? "computing…" : "(not in this page)";
  if (!data) return;
  const cell = 22;
  data.runs.forEach((run, r) => {
    if (!state.visibleRuns[r] || !run.names.length) return;
    const n = run.names.length;
    const pad = 84;
    const svg = svgEl("svg", { width: pad + n * cell + 4, height: pad + n * cell + 4, "data-run": r }, "ibwp-cka-map");
    const cells = [];
    run.names.forEach((name, i) => {
      const left = svgEl("text", { x: pad - 4, y: pad + i * cell + cell * 0.65, "text-anchor": "end" }, "ibwp-tick");
      left.textContent = name;
      const top = svgEl("text", { transform: `translate(${pad + i * cell + cell * 0.65},${pad - 4}) rotate(-60)` }, "ibwp-tick");
      top.textContent = name;
      svg.append(left, top);
      cells.push(
        run.names.map((_, j) => {
          const rect = svgEl("rect", { x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1, "data-i": i, "data-j": j }, "ibwp-cka-cell");
          rect.appendChild(svgEl("title"));
          svg.appendChild(rect);
          return rect;
        }),
      );
    });
    const caption = el("div", "ibwp-cka-caption", (data.runs.length > 1 ? state.meta.runs[r].name + ": " : "") + "linear CKA");
    const box = el("div", "ibwp-cka-one");
    box.append(caption, svg);
    ui.ckaBox.appendChild(box);
    state.ckaCells.push({ r, names: run.names, values: run.values, cells });
  });
}

/** The heatmaps at epoch index e (each run clamped to its last epoch). */
function drawCka(view, e) {
  const { state } = view;
  for (const { r, names, values, cells } of state.ckaCells) {
    const ee = Math.min(e, state.meta.runs[r].epochs.length - 1);
    const m = values[ee] || [];
    cells.forEach((row, i) =>
      row.forEach((rect, j) => {
        const v = m[i] ? m[i][j] : null;
        const ok = v !== null && v !== undefined && Number.isFinite(v);
        rect.setAttribute("fill", ok ? viridis(Math.min(1, Math.max(0, v))) : "#eee");
        rect.dataset.value = ok ? String(v) : "";
        rect.firstChild.textContent = `${names[i]} × ${names[j]}: ${ok ? formatValue(v, 3) : "–"}`;
      }),
    );
  }
}

/** One thin path per σ of the fan for each item (none while the fan is off). */
function drawFanPaths(state, sx, sy) {
  const { meta } = state;
  for (const it of state.items) {
    it.fanG.textContent = "";
    it.fans = state.fanSlots.map((k, i) => {
      const { xs, ys } = it.fanSeries[i];
      const path = svgEl(
        "path",
        { d: pathData(xs, ys, sx, sy), fill: "none", stroke: layerColour(meta, it.l), "stroke-width": 1, "data-slot": k, "data-sigma": meta.slots[k].sigma },
        "ibwp-fan-line",
      );
      it.fanG.appendChild(path);
      return path;
    });
  }
}

/** The fan at epoch index e: solid where the kernel is informative then, faint and dashed where not; the note says
 * each visible layer's informative σ range. */
function drawFanEpoch(view, e) {
  const { ui, state } = view;
  const { meta, dims, fanSlots: slots } = state;
  const parts = [];
  for (const it of state.items) {
    const ee = Math.min(e, it.n - 1);
    it.fans.forEach((path, i) => {
      const ok = ee >= 0 && informative(state.sat, dims, meta, slots[i], it.r, ee, it.l);
      path.setAttribute("stroke-opacity", ok ? "0.6" : "0.12");
      path.setAttribute("stroke-dasharray", ok ? "" : "3,3");
      path.dataset.informative = ok ? "1" : "0";
    });
    if (!slots.length || !it.visible || ee < 0) continue;
    const range = informativeRange(state.sat, dims, meta, slots, it.r, ee, it.l);
    const who = (meta.n_runs > 1 ? meta.runs[it.r].name + " " : "") + meta.runs[it.r].layer_names[it.l];
    parts.push(`${who}: ${range ? `σ ${formatValue(range[0], 3)}–${formatValue(range[1], 3)}` : "none"}`);
  }
  const [low, high] = meta.saturation_range;
  ui.fanNote.textContent = parts.length ? `informative σ (kernel mean ${low}–${high}) · ` + parts.join(" · ") : "";
}

/** Each item's current point and fading trail at epoch index e (each run clamped to its last epoch). */
function drawPoints(state, e) {
  const { meta, sx, sy } = state;
  for (const it of state.items) {
    const ee = Math.min(e, it.n - 1);
    for (let k = 0; k < it.dots.length; k++) {
      const show = k <= ee && it.dots[k].dataset.ok === "1";
      it.dots[k].setAttribute("display", show ? "inline" : "none");
    }
    const x = it.xs[ee];
    const y = it.ys[ee];
    const ok = ee >= 0 && Number.isFinite(x) && Number.isFinite(y);
    it.point.setAttribute("display", ok ? "inline" : "none");
    if (ok) {
      it.point.setAttribute("cx", sx(x).toFixed(2));
      it.point.setAttribute("cy", sy(y).toFixed(2));
    }
    it.point.setAttribute("data-x", String(x));
    it.point.setAttribute("data-y", String(y));
    it.point.setAttribute("data-epoch", String(ee >= 0 ? meta.runs[it.r].epochs[ee] : -1));
    for (let k = 0; k < TRAIL; k++) {
      const seg = it.trail[k];
      const a = ee - k - 1;
      const b = ee - k;
      if (a < 0 || !Number.isFinite(it.xs[a]) || !Number.isFinite(it.ys[a]) || !Number.isFinite(it.xs[b]) || !Number.isFinite(it.ys[b])) {
        seg.setAttribute("display", "none");
        continue;
      }
      seg.setAttribute("display", "inline");
      seg.setAttribute("x1", sx(it.xs[a]).toFixed(2));
      seg.setAttribute("y1", sy(it.ys[a]).toFixed(2));
      seg.setAttribute("x2", sx(it.xs[b]).toFixed(2));
      seg.setAttribute("y2", sy(it.ys[b]).toFixed(2));
    }
  }
}

/** The saturation gauge at epoch index e: the mean over visible layers, with a hint outside the informative range. */
function drawGauge(view, e) {
  const { ui, state } = view;
  const { est, satSlot } = currentBlock(state);
  if (!est.uses_kernel || !est.uses_sigma) {
    ui.gaugeFill.style.display = "none";
    ui.gaugeText.textContent = `n/a (${est.name} uses no kernel)`;
    ui.root.dataset.saturation = "";
    return;
  }
  const s = saturationAt(state.sat, state.dims, state.meta, satSlot, e, state.visibleLayers, state.visibleRuns);
  ui.gaugeFill.style.display = Number.isFinite(s) ? "block" : "none";
  ui.gaugeFill.style.left = `calc(${(Math.min(1, Math.max(0, s)) * 100).toFixed(1)}% - 1px)`;
  ui.gaugeText.textContent = Number.isFinite(s) ? `${s.toFixed(2)}${saturationHint(state.meta, s)}` : "–";
  ui.root.dataset.saturation = Number.isFinite(s) ? String(s) : "";
}

/** The training history of each visible run at epoch index e. */
function drawHistory(view, e, epochNumber) {
  const { ui, state } = view;
  const meta = state.meta;
  const parts = [];
  meta.runs.forEach((run, r) => {
    if (!state.visibleRuns[r] || !run.epochs.length) return;
    const ep = run.epochs[Math.min(e, run.epochs.length - 1)];
    const bits = [];
    for (const key of ["loss", "accuracy", "val_loss", "val_accuracy"]) {
      const v = historyAt(run.history, key, ep);
      if (Number.isFinite(v)) bits.push(`${key} ${formatValue(v, 3)}`);
    }
    const who = meta.n_runs > 1 ? run.name + (ep !== epochNumber ? ` (epoch ${ep})` : "") + ": " : "";
    if (bits.length) parts.push(who + bits.join(" · "));
  });
  ui.historyLine.textContent = parts.length ? `epoch ${epochNumber}: ` + parts.join(" | ") : "";
}

/** What depends on the epoch: points, trails, dots shown, colour-bar marker, labels, gauge, history. */
function epochRedraw(view, kind) {
  const { ui, state } = view;
  if (!state.meta) return;
  const t0 = now();
  const e = Math.max(0, Math.min(state.epoch, state.dims.E - 1));
  drawPoints(state, e);
  const epochs = longestEpochs(state.meta);
  const epochNumber = epochs.length ? epochs[e] : 0;
  ui.epochLabel.textContent = `epoch ${epochNumber} / ${epochs.length ? epochs[epochs.length - 1] : 0}`;
  ui.root.dataset.epoch = String(epochNumber);
  ui.scrub.value = String(e);
  if (state.cbarMarker) state.cbarMarker.setAttribute("d", `M${state.cbarX - 1},${state.cbarScale(e)}l-7,-5v10z`);
  drawGauge(view, e);
  drawBand(view, e);
  drawFanEpoch(view, e);
  drawCka(view, e);
  drawHistory(view, e, epochNumber);
  if (kind) recordRedraw(view, kind, now() - t0);
}

// ------------------------------------------------------------------------------------------------ player

function setEpoch(view, e, kind = "epoch") {
  const { state } = view;
  if (!state.meta) return;
  const last = Math.max(0, state.dims.E - 1);
  state.epoch = Math.max(0, Math.min(last, e));
  state.follow = state.epoch === last;
  epochRedraw(view, kind);
}

function setPlaying(view, on) {
  const { ui, state, raf } = view;
  if (!state.meta) return;
  state.playing = on;
  ui.playButton.textContent = on ? "❚❚ Pause" : "▶ Play";
  ui.root.dataset.playing = on ? "1" : "0";
  cancelAnimationFrame(raf.id);
  if (!on) return;
  if (state.epoch >= state.dims.E - 1) setEpoch(view, 0, "epoch");
  raf.last = now();
  raf.id = requestAnimationFrame((t) => tick(view, t));
}

function tick(view, t) {
  const { state, raf } = view;
  if (!state.playing) return;
  const interval = 1000 / state.speed;
  if (t - raf.last >= interval) {
    raf.last = t - Math.min(interval, t - raf.last - interval);
    if (state.epoch >= state.dims.E - 1) {
      setPlaying(view, false);
      return;
    }
    setEpoch(view, state.epoch + 1, "play");
  }
  raf.id = requestAnimationFrame((t2) => tick(view, t2));
}

// ------------------------------------------------------------------------------------------------ hover

/** The drawn point (item, epoch index) nearest the pointer, within 14 px, or null. */
function nearestPoint(state, px, py) {
  let best = null;
  let bestD = 14 * 14;
  for (const it of state.items) {
    if (!it.visible) continue;
    const upto = Math.min(state.epoch, it.n - 1);
    for (let k = 0; k <= upto; k++) {
      const x = it.xs[k];
      const y = it.ys[k];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      const dx = state.sx(x) - px;
      const dy = state.sy(y) - py;
      const d = dx * dx + dy * dy;
      if (d <= bestD) {
        bestD = d;
        best = { it, k };
      }
    }
  }
  return best;
}

function hideHover(ui) {
  ui.tooltip.style.display = "none";
  ui.hoverRing.setAttribute("display", "none");
}

function hover(view, ev) {
  const { ui, state } = view;
  if (!state.meta || !state.sx) return;
  const rect = ui.svg.getBoundingClientRect();
  if (!rect.width) return;
  const best = nearestPoint(state, ((ev.clientX - rect.left) / rect.width) * W, ((ev.clientY - rect.top) / rect.height) * H);
  if (!best) {
    hideHover(ui);
    return;
  }
  const { it, k } = best;
  const { meta } = state;
  const { est } = currentBlock(state);
  const run = meta.runs[it.r];
  const lines = [
    (meta.n_runs > 1 ? run.name + " · " : "") + run.layer_names[it.l],
    `epoch ${run.epochs[k]}`,
    `${est.label_x}: ${formatValue(it.xs[k], 5)}`,
    `${est.label_targets[meta.targets[state.target]]}: ${formatValue(it.ys[k], 5)}`,
  ];
  ui.tooltip.textContent = lines.join("\n");
  ui.readout.textContent = lines.join(" · ");
  ui.tooltip.style.display = "block";
  const cx = state.sx(it.xs[k]);
  const cy = state.sy(it.ys[k]);
  ui.hoverRing.setAttribute("cx", cx.toFixed(2));
  ui.hoverRing.setAttribute("cy", cy.toFixed(2));
  ui.hoverRing.setAttribute("display", "inline");
  ui.tooltip.style.left = `${Math.min((cx / W) * rect.width + 12, rect.width - 220)}px`;
  ui.tooltip.style.top = `${(cy / H) * rect.height + 12}px`;
}

// ------------------------------------------------------------------------------------------------ events

/** The player's key: space plays or pauses, arrows step, Home / End jump. Returns whether it was handled. */
function handleKey(view, ev) {
  const { ui, state } = view;
  const tag = ev.target && ev.target.tagName ? ev.target.tagName.toLowerCase() : "";
  const own = ev.target === ui.root || tag === "svg" || (ev.target && ev.target.closest && ev.target.closest("svg"));
  if (ev.key === " " || ev.key === "Spacebar") {
    if (!own && ev.target !== ui.scrub) return false;
    setPlaying(view, !state.playing);
    return true;
  }
  if (!own) return false;
  const steps = { ArrowRight: state.epoch + 1, ArrowUp: state.epoch + 1, ArrowLeft: state.epoch - 1, ArrowDown: state.epoch - 1 };
  steps.Home = 0;
  steps.End = state.dims ? state.dims.E - 1 : 0;
  if (!Object.hasOwn(steps, ev.key)) return false;
  setEpoch(view, steps[ev.key], "key");
  return true;
}

function bindEvents(view) {
  const { ui, state } = view;
  const on = (node, type, fn) => node.addEventListener(type, fn);
  on(ui.estSelect, "change", () => {
    state.est = Number(ui.estSelect.value);
    fullRedraw(view, "estimator");
  });
  on(ui.ruleSelect, "change", () => {
    state.rule = ui.ruleSelect.value;
    fullRedraw(view, "rule");
  });
  on(ui.sigmaInput, "input", () => {
    state.sigmaIndex = Number(ui.sigmaInput.value);
    fullRedraw(view, "sigma");
  });
  on(ui.targetSelect, "change", () => {
    state.target = Math.max(0, state.meta.targets.indexOf(ui.targetSelect.value));
    fullRedraw(view, "target");
  });
  on(ui.fanInput, "change", () => {
    state.fan = ui.fanInput.checked;
    fullRedraw(view, "fan");
  });
  on(ui.bandInput, "change", () => {
    state.showBand = ui.bandInput.checked;
    fullRedraw(view, "band");
  });
  on(ui.ckaInput, "change", () => {
    state.showCka = ui.ckaInput.checked;
    fullRedraw(view, "cka");
  });
  on(ui.scrub, "input", () => setEpoch(view, Number(ui.scrub.value), "scrub"));
  on(ui.playButton, "click", () => setPlaying(view, !state.playing));
  on(ui.backButton, "click", () => setEpoch(view, state.epoch - 1, "step"));
  on(ui.fwdButton, "click", () => setEpoch(view, state.epoch + 1, "step"));
  on(ui.speedSelect, "change", () => {
    state.speed = Number(ui.speedSelect.value) || 5;
  });
  on(ui.svg, "mousemove", (ev) => hover(view, ev));
  on(ui.svg, "mouseleave", () => hideHover(ui));
  on(ui.svg, "mousedown", () => ui.root.focus({ preventScroll: true }));
  on(ui.root, "keydown", (ev) => {
    if (!handleKey(view, ev)) return;
    ev.preventDefault();
    ev.stopPropagation();
  });
}

// ------------------------------------------------------------------------------------------------ live data

/** Epochs appended by a live run (a custom message with two buffers); anything out of step asks for a resync. */
function appendLive(view, msg, buffers) {
  const { model, ui, state } = view;
  if (!msg || msg.type !== "append") return;
  const meta = state.meta;
  if (!meta || meta.n_runs !== 1 || msg.start !== meta.n_epochs || !buffers || buffers.length < 2) {
    if (model.send) model.send({ type: "resync", have: meta ? meta.n_epochs : -1 });
    return;
  }
  const grown = appendEpochs(state.values, state.sat, float32Of(buffers[0]), float32Of(buffers[1]));
  state.values = grown.values;
  state.sat = grown.saturation;
  meta.n_epochs += msg.count;
  meta.runs[0].epochs = meta.runs[0].epochs.concat(msg.epochs || []);
  if (msg.history) meta.runs[0].history = msg.history;
  if (msg.estimators) msg.estimators.forEach((patch, i) => Object.assign(meta.estimators[i], patch));
  if (msg.slot_filled) meta.slot_filled = msg.slot_filled;
  state.dims = dimsOf(meta);
  ui.scrub.max = String(Math.max(0, state.dims.E - 1));
  if (state.follow && !state.playing) state.epoch = state.dims.E - 1;
  buildItems(view);
  fullRedraw(view, "append");
}

const SYNCED = ["change:meta", "change:grid", "change:saturation", "change:scales"];

/** Follow the model: a changed grid reloads (once per burst of changes), appended epochs extend it. */
function bindModel(view) {
  const { model } = view;
  let reloadQueued = false;
  const queueReload = () => {
    if (reloadQueued) return;
    reloadQueued = true;
    Promise.resolve().then(() => {
      reloadQueued = false;
      loadGrid(view);
    });
  };
  const onCustom = (msg, buffers) => {
    if (msg && msg.type === "band") receiveBand(view, msg.band);
    else if (msg && msg.type === "cka") receiveCka(view, msg.cka);
    else appendLive(view, msg, buffers);
  };
  for (const event of SYNCED) model.on(event, queueReload);
  model.on("msg:custom", onCustom);
  return () => {
    for (const event of SYNCED) model.off(event, queueReload);
    model.off("msg:custom", onCustom);
  };
}

/** Render a PlaneView into `el` from an anywidget-like `model` (get / on / off / send). Returns a cleanup. */
export function render({ model, el: host }) {
  const uid = "ibwp" + ++viewCount;
  const view = { model, uid, ui: buildDom(uid), state: initialState(), raf: { id: 0, last: 0 } };
  host.appendChild(view.ui.root);
  bindEvents(view);
  const unbind = bindModel(view);
  loadGrid(view);
  return () => {
    view.state.playing = false;
    cancelAnimationFrame(view.raf.id);
    unbind();
    view.ui.root.remove();
  };
}

/** A minimal anywidget-like model over fixed state (the one-file HTML has no kernel). */
export function staticModel(state) {
  const handlers = new Map();
  return {
    get: (key) => state[key],
    set: (key, value) => {
      state[key] = value;
      for (const fn of handlers.get("change:" + key) || []) fn();
    },
    on: (event, fn) => {
      if (!handlers.has(event)) handlers.set(event, []);
      handlers.get(event).push(fn);
    },
    off: (event, fn) => {
      const list = handlers.get(event) || [];
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    },
    send: () => {},
    save_changes: () => {},
    /** A message for the view, as a kernel's custom message would bring it. */
    receive: (msg, buffers = []) => {
      for (const fn of handlers.get("msg:custom") || []) fn(msg, buffers);
    },
  };
}

/** Mount the view of a one-file HTML report: reads the grid embedded in <script> blocks of the page. */
export function mountStandalone(host, doc = document) {
  const text = (id) => {
    const node = doc.getElementById(id);
    return node ? node.textContent : "";
  };
  const meta = JSON.parse(text("ibwp-meta"));
  const model = staticModel({
    meta,
    grid: decodeBase64(text("ibwp-grid")),
    scales: decodeBase64(text("ibwp-scales")),
    saturation: decodeBase64(text("ibwp-saturation")),
  });
  model.send = null; // nobody computes anything for this page: it holds what it shows
  return render({ model, el: host });
}

export default { render };
