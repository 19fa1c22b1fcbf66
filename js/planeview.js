// ibwidget PlaneView: a kernel-free information plane (anywidget ESM; also inlined into one-file HTML reports).
//
// The synced state is a precomputed grid (see ibwidget/_grid.py): every estimator x sigma slot x target x layer x
// epoch x 2 coordinates, so every toggle and the epoch player run here, with no kernel round trip.
//   meta        JSON: axes of the grid, runs (names, layer names, epochs, history), estimator labels
//   grid        bytes: float32 (runs, epochs, blocks, layers, 2), or uint16 codes with `scales` (one-file HTML)
//   saturation  bytes: float32 (runs, epochs, slots, layers), mean off-diagonal Gaussian kernel value
// User strings (run, layer names) only ever reach the page through textContent, never as markup.
// The pure helpers are named exports (tested with `node --test js/tests/`); the DOM code is `render`.

const SVG_NS = "http://www.w3.org/2000/svg";
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const DASHES = ["", "6,4", "2,3", "6,3,2,3"];
const VIRIDIS = [
  [68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
  [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37],
];
const NAN_CODE = 65535;
export const TRAIL = 8; // steps of the fading trail behind each layer's current point
export const SPEEDS = [1, 2, 5, 10, 20]; // epochs per second

// ------------------------------------------------------------------------------------------------ pure helpers

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
 * float64 (blocks, 2 coordinates, [lo, step]) table of scales ("u16": value = lo + code * step, 65535 = NaN).
 */
export function decodeValues(meta, gridBytes, scaleBytes) {
  if ((meta.encoding || "f32") === "f32") return float32Of(gridBytes);
  if (meta.encoding !== "u16") throw new Error("ibwidget: unknown grid encoding " + meta.encoding);
  const b = aligned(bytesOf(gridBytes), 2);
  const codes = new Uint16Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 2));
  const s = aligned(bytesOf(scaleBytes), 8);
  const scales = new Float64Array(s.buffer, s.byteOffset, Math.floor(s.byteLength / 8));
  const out = new Float32Array(codes.length);
  const L = meta.n_layers;
  const B = meta.n_blocks;
  const perBlock = L * 2;
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === NAN_CODE) {
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

/** The block of (estimator index, slot index, target index); estimators without sigma have one slot. */
export function blockIndex(meta, est, slot, target) {
  const e = meta.estimators[est];
  const s = e.slots > 1 ? slot : 0;
  return e.base + s * meta.targets.length + target;
}

/** The slot of a rule: for fixed / sqrt_d the one with sigma meta.sigmas[sigmaIndex]; a median rule has one. */
export function slotIndex(meta, rule, sigmaIndex) {
  const sigma = meta.sigmas[sigmaIndex];
  let first = -1;
  for (let i = 0; i < meta.slots.length; i++) {
    const s = meta.slots[i];
    if (s.rule !== rule) continue;
    if (first < 0) first = i;
    if (s.sigma === null || s.sigma === undefined || s.sigma === sigma) return i;
  }
  return first;
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
.ibwp-gauge-track{width:160px;height:10px;background:linear-gradient(90deg,#c0392b,#f1c40f 15%,#27ae60 35%,#27ae60 65%,#f1c40f 85%,#c0392b);
  border-radius:5px;position:relative}
.ibwp-gauge-fill{position:absolute;top:-3px;width:3px;height:16px;background:#111;border-radius:1px}
.ibwp-tooltip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #999;
  border-radius:3px;padding:3px 6px;font-size:12px;white-space:pre;display:none;z-index:10}
.ibwp-note{color:#a15c00;min-height:1em}
.ibwp-readout,.ibwp-history{color:#444;min-height:1.35em;font-variant-numeric:tabular-nums}
.ibwp-plot{position:relative}
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

/** Render a PlaneView into `el` from an anywidget-like `model` (get / on / off / send). Returns a cleanup. */
export function render({ model, el: host }) {
  const uid = "ibwp" + ++viewCount;
  const root = el("div", "ibwp-root");
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab: our keys, not the notebook's
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "information plane: space plays or pauses, arrow keys step through epochs");
  const style = el("style");
  style.textContent = CSS;
  root.appendChild(style);

  const title = el("div", "ibwp-title");
  const controls = el("div", "ibwp-row ibwp-controls");
  const layerRow = el("div", "ibwp-row ibwp-toggles");
  const player = el("div", "ibwp-row ibwp-player");
  const plot = el("div", "ibwp-plot");
  const tooltip = el("div", "ibwp-tooltip");
  const gauge = el("div", "ibwp-row ibwp-gauge");
  const readout = el("div", "ibwp-readout");
  const historyLine = el("div", "ibwp-history");
  const note = el("div", "ibwp-note");
  root.append(title, controls, layerRow, player, plot, gauge, historyLine, readout, note);

  // controls
  const estSelect = el("select", "ibwp-estimator");
  const ruleSelect = el("select", "ibwp-rule");
  const sigmaInput = el("input", "ibwp-sigma");
  sigmaInput.type = "range";
  sigmaInput.step = "1";
  const sigmaValue = el("span", "ibwp-sigma-value");
  const targetSelect = el("select", "ibwp-target");
  const labelled = (text, node) => {
    const l = el("label");
    l.append(text, node);
    return l;
  };
  const sigmaLabel = labelled("σ ", sigmaInput);
  controls.append(
    labelled("estimator ", estSelect),
    labelled("rule ", ruleSelect),
    sigmaLabel,
    sigmaValue,
    labelled("target ", targetSelect),
  );
  // player
  const playButton = el("button", "ibwp-play", "▶ Play");
  playButton.type = "button";
  playButton.title = "play / pause (space)";
  const backButton = el("button", "ibwp-step-back", "◀");
  backButton.type = "button";
  backButton.title = "previous epoch (←)";
  const fwdButton = el("button", "ibwp-step-fwd", "▶|");
  fwdButton.type = "button";
  fwdButton.title = "next epoch (→)";
  const scrub = el("input", "ibwp-scrub");
  scrub.type = "range";
  scrub.min = "0";
  scrub.step = "1";
  scrub.setAttribute("aria-label", "epoch");
  const epochLabel = el("span", "ibwp-epoch");
  const speedSelect = el("select", "ibwp-speed");
  for (const s of SPEEDS) option(speedSelect, s, s + " epoch" + (s === 1 ? "" : "s") + "/s");
  speedSelect.value = "5";
  player.append(playButton, backButton, fwdButton, scrub, epochLabel, labelled("speed ", speedSelect));
  // gauge
  const gaugeTrack = el("div", "ibwp-gauge-track");
  const gaugeFill = el("div", "ibwp-gauge-fill");
  gaugeTrack.appendChild(gaugeFill);
  const gaugeText = el("span", "ibwp-gauge-text");
  gauge.append(el("span", "ibwp-gauge-label", "kernel saturation"), gaugeTrack, gaugeText);
  gauge.title = "mean off-diagonal Gaussian kernel value of the visible layers at this epoch: near 1, sigma is too large; near 0, too small";

  // svg skeleton
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" }, "ibwp-svg");
  const defs = svgEl("defs");
  const gradient = svgEl("linearGradient", { id: uid + "-grad", x1: "0", y1: "1", x2: "0", y2: "0" });
  for (let i = 0; i <= 10; i++) gradient.appendChild(svgEl("stop", { offset: i / 10, "stop-color": viridis(i / 10) }));
  defs.appendChild(gradient);
  const clip = svgEl("clipPath", { id: uid + "-clip" });
  clip.appendChild(svgEl("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom }));
  defs.appendChild(clip);
  svg.appendChild(defs);
  const gridG = svgEl("g", null, "ibwp-grid");
  const axesG = svgEl("g", null, "ibwp-axes");
  const layersG = svgEl("g", { "clip-path": `url(#${uid}-clip)` }, "ibwp-layers");
  const cbarG = svgEl("g", null, "ibwp-colorbar");
  const xLabel = svgEl("text", { x: (M.left + W - M.right) / 2, y: H - 14, "text-anchor": "middle" }, "ibwp-axis-label ibwp-xlabel");
  const yLabel = svgEl(
    "text",
    { transform: `translate(16,${(M.top + H - M.bottom) / 2}) rotate(-90)`, "text-anchor": "middle" },
    "ibwp-axis-label ibwp-ylabel",
  );
  const emptyText = svgEl("text", { x: (M.left + W - M.right) / 2, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle" }, "ibwp-empty");
  svg.append(gridG, axesG, layersG, cbarG, xLabel, yLabel, emptyText);
  const hoverRing = svgEl("circle", { r: 8, fill: "none", stroke: "#111", "stroke-width": 1.5, display: "none" }, "ibwp-hover");
  svg.appendChild(hoverRing);
  plot.append(svg, tooltip);
  host.appendChild(root);

  // ---------------------------------------------------------------------------------------------- state
  const state = {
    meta: null,
    dims: null,
    values: new Float32Array(0),
    sat: new Float32Array(0),
    est: 0,
    rule: "fixed",
    sigmaIndex: 0,
    target: 0,
    epoch: 0,
    follow: true, // at the last epoch: move along as live epochs arrive
    playing: false,
    speed: 5,
    visibleLayers: [],
    visibleRuns: [],
    items: [], // per drawn (run, layer): {r, l, g, track, dots, trail, point, xs, ys, n}
    sx: null,
    sy: null,
    configured: false,
  };
  let rafId = 0;
  let lastStep = 0;

  const setMs = (kind, ms) => {
    const g = globalThis;
    g.__ibwp_last_redraw_ms = ms;
    g.__ibwp_redraws = g.__ibwp_redraws || [];
    g.__ibwp_redraws.push([kind, ms]);
    if (g.__ibwp_redraws.length > 500) g.__ibwp_redraws.shift();
    root.dataset.redrawMs = ms.toFixed(3);
  };

  function load() {
    const meta = model.get("meta");
    if (!meta || !meta.estimators || !meta.estimators.length) {
      state.meta = null;
      note.textContent = "no grid yet";
      return;
    }
    state.meta = JSON.parse(JSON.stringify(meta)); // a private copy: live appends extend it
    state.dims = dimsOf(state.meta);
    state.values = decodeValues(state.meta, model.get("grid"), model.get("scales"));
    state.sat = float32Of(model.get("saturation"));
    const expected = state.dims.R * state.dims.E * state.dims.B * state.dims.L * 2;
    if (state.values.length !== expected) {
      note.textContent = `grid holds ${state.values.length} values, expected ${expected}`;
      state.meta = null;
      return;
    }
    configure();
  }

  function configure() {
    const meta = state.meta;
    // estimator, rule, sigma, target controls (kept when the grid is reloaded with the same axes)
    const keepEst = estSelect.value;
    estSelect.textContent = "";
    meta.estimators.forEach((e, i) => {
      option(estSelect, i, e.name).title = e.description || e.label_x;
    });
    ruleSelect.textContent = "";
    for (const r of meta.rules) option(ruleSelect, r, r);
    targetSelect.textContent = "";
    for (const t of meta.targets) option(targetSelect, t, t === "labels" ? "labels (Y)" : "output (Ŷ)");
    sigmaInput.min = "0";
    sigmaInput.max = String(Math.max(0, meta.sigmas.length - 1));
    if (!state.configured) {
      const d = meta.default || {};
      state.est = Math.min(d.estimator || 0, meta.estimators.length - 1);
      state.rule = d.rule && meta.rules.includes(d.rule) ? d.rule : meta.rules[0];
      state.sigmaIndex = meta.sigmas.length ? nearestLog(meta.sigmas, d.sigma || 5) : 0;
      state.target = Math.max(0, meta.targets.indexOf(d.target || "labels"));
      state.epoch = Math.max(0, state.dims.E - 1);
    } else {
      state.est = keepEst !== "" ? Math.min(Number(keepEst), meta.estimators.length - 1) : 0;
      if (!meta.rules.includes(state.rule)) state.rule = meta.rules[0];
      state.sigmaIndex = Math.min(state.sigmaIndex, Math.max(0, meta.sigmas.length - 1));
      state.target = Math.min(state.target, meta.targets.length - 1);
      state.epoch = state.follow ? Math.max(0, state.dims.E - 1) : Math.min(state.epoch, Math.max(0, state.dims.E - 1));
    }
    estSelect.value = String(state.est);
    ruleSelect.value = state.rule;
    sigmaInput.value = String(state.sigmaIndex);
    targetSelect.value = meta.targets[state.target];
    // title and layer toggles: text only
    title.textContent = meta.runs.map((r) => r.name).join(" vs ") + " — information plane";
    if (state.visibleLayers.length !== meta.n_layers) state.visibleLayers = new Array(meta.n_layers).fill(true);
    if (state.visibleRuns.length !== meta.n_runs) state.visibleRuns = new Array(meta.n_runs).fill(true);
    layerRow.textContent = "";
    for (let l = 0; l < meta.n_layers; l++) {
      const names = [...new Set(meta.runs.filter((r) => l < r.layer_names.length).map((r) => r.layer_names[l]))];
      const b = el("button", "ibwp-layer-toggle");
      b.type = "button";
      b.dataset.layer = String(l);
      const sw = el("span", "ibwp-swatch");
      sw.style.background = PALETTE[l % PALETTE.length];
      b.append(sw, document.createTextNode(names.join(" / ")));
      b.title = `layer ${l}: ${names.join(" / ")} (show or hide)`;
      b.setAttribute("aria-pressed", String(state.visibleLayers[l]));
      b.addEventListener("click", () => {
        state.visibleLayers[l] = !state.visibleLayers[l];
        b.setAttribute("aria-pressed", String(state.visibleLayers[l]));
        fullRedraw("layer");
      });
      layerRow.appendChild(b);
    }
    if (meta.n_runs > 1) {
      meta.runs.forEach((run, r) => {
        const b = el("button", "ibwp-run-toggle");
        b.type = "button";
        b.dataset.run = String(r);
        const dash = DASHES[r % DASHES.length];
        const sample = svgEl("svg", { width: 30, height: 10 });
        sample.appendChild(svgEl("line", { x1: 1, y1: 5, x2: 29, y2: 5, stroke: "#333", "stroke-width": 2, "stroke-dasharray": dash }));
        b.append(sample, document.createTextNode(" " + run.name));
        b.setAttribute("aria-pressed", String(state.visibleRuns[r]));
        b.addEventListener("click", () => {
          state.visibleRuns[r] = !state.visibleRuns[r];
          b.setAttribute("aria-pressed", String(state.visibleRuns[r]));
          fullRedraw("run");
        });
        layerRow.appendChild(b);
      });
    }
    scrub.max = String(Math.max(0, state.dims.E - 1));
    buildItems();
    state.configured = true;
    fullRedraw("load");
  }

  function buildItems() {
    const { meta, dims } = state;
    layersG.textContent = "";
    state.items = [];
    for (let r = 0; r < dims.R; r++) {
      for (let l = 0; l < Math.min(dims.L, meta.runs[r].layer_names.length); l++) {
        const colour = PALETTE[l % PALETTE.length];
        const g = svgEl("g", { "data-run": r, "data-layer": l }, "ibwp-layer");
        const track = svgEl(
          "path",
          { fill: "none", stroke: colour, "stroke-width": 1.5, "stroke-opacity": 0.3, "stroke-dasharray": DASHES[r % DASHES.length], "data-run": r, "data-layer": l },
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
        g.append(track, dotsG, trailG, point);
        layersG.appendChild(g);
        state.items.push({ r, l, g, track, dots, trail, point, xs: null, ys: null, n });
      }
    }
  }

  function currentBlock() {
    const { meta } = state;
    const est = meta.estimators[state.est];
    const slot = est.slots > 1 ? slotIndex(meta, state.rule, state.sigmaIndex) : 0;
    return { est, slot, block: blockIndex(meta, state.est, slot, state.target), satSlot: slotIndex(meta, state.rule, state.sigmaIndex) };
  }

  function drawAxes(sx, sy) {
    gridG.textContent = "";
    axesG.textContent = "";
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
      gridG.appendChild(svgEl("line", { x1: x, x2: x, y1: M.top, y2: bottom }, "ibwp-grid-line"));
      axesG.appendChild(svgEl("line", { x1: x, x2: x, y1: bottom, y2: bottom + 5 }, "ibwp-axis-line"));
      const label = svgEl("text", { x, y: bottom + 18, "text-anchor": "middle" }, "ibwp-tick");
      label.textContent = xl[i];
      axesG.appendChild(label);
    });
    yt.forEach((t, i) => {
      const y = sy(t);
      gridG.appendChild(svgEl("line", { x1: M.left, x2: right, y1: y, y2: y }, "ibwp-grid-line"));
      axesG.appendChild(svgEl("line", { x1: M.left - 5, x2: M.left, y1: y, y2: y }, "ibwp-axis-line"));
      const label = svgEl("text", { x: M.left - 8, y: y + 4, "text-anchor": "end" }, "ibwp-tick");
      label.textContent = yl[i];
      axesG.appendChild(label);
    });
    axesG.appendChild(svgEl("rect", { x: M.left, y: M.top, width: right - M.left, height: bottom - M.top, fill: "none" }, "ibwp-axis-line"));
  }

  function drawColorbar() {
    const { meta, dims } = state;
    cbarG.textContent = "";
    const x = W - M.right + 22;
    const top = M.top;
    const bottom = H - M.bottom;
    cbarG.appendChild(svgEl("rect", { x, y: top, width: 12, height: bottom - top, fill: `url(#${uid}-grad)` }, "ibwp-colorbar-rect"));
    const epochs = meta.runs.reduce((a, r) => (r.epochs.length > a.length ? r.epochs : a), []);
    const e0 = epochs.length ? epochs[0] : 0;
    const e1 = epochs.length ? epochs[epochs.length - 1] : 1;
    const ticks = niceTicks(e0, e1, 5).filter((t) => Number.isInteger(t));
    const sc = linearScale(0, Math.max(1, dims.E - 1), bottom, top);
    for (const t of ticks) {
      let idx = epochs.indexOf(t);
      if (idx < 0) continue;
      const y = sc(idx);
      cbarG.appendChild(svgEl("line", { x1: x + 12, x2: x + 16, y1: y, y2: y }, "ibwp-axis-line"));
      const label = svgEl("text", { x: x + 19, y: y + 4 }, "ibwp-tick");
      label.textContent = String(t);
      cbarG.appendChild(label);
    }
    const name = svgEl("text", { transform: `translate(${x - 6},${(top + bottom) / 2}) rotate(-90)`, "text-anchor": "middle" }, "ibwp-axis-label");
    name.textContent = "epoch";
    cbarG.appendChild(name);
    state.cbarMarker = svgEl("path", { fill: "#111" }, "ibwp-colorbar-marker");
    state.cbarScale = sc;
    state.cbarX = x;
    cbarG.appendChild(state.cbarMarker);
  }

  /** Everything that depends on the selection: series, scales, axes, tracks, dots; then the epoch. */
  function fullRedraw(kind) {
    if (!state.meta) return;
    const t0 = now();
    const { meta, dims } = state;
    const { est, block } = currentBlock();
    const arrays = [];
    for (const it of state.items) {
      const s = series(state.values, dims, it.r, block, it.l, it.n);
      it.xs = s.xs;
      it.ys = s.ys;
      it.visible = state.visibleLayers[it.l] && state.visibleRuns[it.r];
      if (it.visible) arrays.push(s.xs, s.ys);
    }
    const xsAll = [];
    const ysAll = [];
    for (const it of state.items) {
      if (!it.visible) continue;
      xsAll.push(it.xs);
      ysAll.push(it.ys);
    }
    const [x0, x1] = extent(xsAll);
    const [y0, y1] = extent(ysAll);
    const sx = linearScale(x0, x1, M.left, W - M.right);
    const sy = linearScale(y0, y1, H - M.bottom, M.top);
    state.sx = sx;
    state.sy = sy;
    drawAxes(sx, sy);
    let anyValue = false;
    for (const it of state.items) {
      it.g.setAttribute("display", it.visible ? "inline" : "none");
      const d = pathData(it.xs, it.ys, sx, sy);
      it.track.setAttribute("d", d);
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
    const yName = meta.targets[state.target] === "labels" ? est.label_y : est.label_yhat;
    xLabel.textContent = est.label_x;
    yLabel.textContent = yName;
    emptyText.textContent = anyValue ? "" : dims.E ? "no values for this selection" : "waiting for the first epoch";
    drawColorbar();
    // controls that do not apply
    const sigmaApplies = est.uses_sigma && (state.rule === "fixed" || state.rule === "sqrt_d");
    sigmaInput.disabled = !sigmaApplies;
    ruleSelect.disabled = !est.uses_sigma;
    const sigma = meta.sigmas[state.sigmaIndex];
    sigmaValue.textContent = !est.uses_sigma ? "σ: n/a" : sigmaApplies ? `σ = ${formatValue(sigma, 3)}` + (state.rule === "sqrt_d" ? "·√d" : "") : `σ: ${state.rule}`;
    const missing = [];
    est.available.forEach((row, r) => row.forEach((ok, l) => {
      if (!ok && l < meta.runs[r].layer_names.length) missing.push(meta.runs[r].layer_names[l]);
    }));
    note.textContent = est.note || (missing.length ? `${est.name}: not available for ${missing.join(", ")}` : "");
    root.dataset.estimator = est.name;
    root.dataset.rule = state.rule;
    root.dataset.sigma = String(sigma);
    root.dataset.target = meta.targets[state.target];
    root.dataset.block = String(block);
    epochRedraw(null);
    setMs(kind || "full", now() - t0);
  }

  /** What depends on the epoch: points, trails, dots shown, colour-bar marker, labels, gauge. */
  function epochRedraw(kind) {
    if (!state.meta) return;
    const t0 = now();
    const { meta, dims, sx, sy } = state;
    const e = Math.max(0, Math.min(state.epoch, dims.E - 1));
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
    const epochs = meta.runs.reduce((acc, r) => (r.epochs.length > acc.length ? r.epochs : acc), []);
    const epochNumber = epochs.length ? epochs[e] : 0;
    epochLabel.textContent = `epoch ${epochNumber} / ${epochs.length ? epochs[epochs.length - 1] : 0}`;
    root.dataset.epoch = String(epochNumber);
    scrub.value = String(e);
    if (state.cbarMarker) {
      const y = state.cbarScale(e);
      const x = state.cbarX;
      state.cbarMarker.setAttribute("d", `M${x - 1},${y}l-7,-5v10z`);
    }
    // gauge
    const { est, satSlot } = currentBlock();
    if (!est.uses_kernel || !est.uses_sigma) {
      gaugeFill.style.display = "none";
      gaugeText.textContent = `n/a (${est.name} uses no kernel)`;
      root.dataset.saturation = "";
    } else {
      const s = saturationAt(state.sat, dims, meta, satSlot, e, state.visibleLayers, state.visibleRuns);
      gaugeFill.style.display = Number.isFinite(s) ? "block" : "none";
      gaugeFill.style.left = `calc(${(Math.min(1, Math.max(0, s)) * 100).toFixed(1)}% - 1px)`;
      const hint = s > 0.9 ? " — σ too large" : s < 0.05 ? " — σ too small" : "";
      gaugeText.textContent = Number.isFinite(s) ? `${s.toFixed(2)}${hint}` : "–";
      root.dataset.saturation = Number.isFinite(s) ? String(s) : "";
    }
    // history at this epoch
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
    historyLine.textContent = parts.length ? `epoch ${epochNumber}: ` + parts.join(" | ") : "";
    if (kind) setMs(kind, now() - t0);
  }

  // ---------------------------------------------------------------------------------------------- player
  function setEpoch(e, kind = "epoch") {
    if (!state.meta) return;
    const last = Math.max(0, state.dims.E - 1);
    state.epoch = Math.max(0, Math.min(last, e));
    state.follow = state.epoch === last;
    epochRedraw(kind);
  }

  function setPlaying(on) {
    if (!state.meta) return;
    state.playing = on;
    playButton.textContent = on ? "❚❚ Pause" : "▶ Play";
    root.dataset.playing = on ? "1" : "0";
    if (on) {
      if (state.epoch >= state.dims.E - 1) setEpoch(0, "epoch");
      lastStep = now();
      cancelAnimationFrame(rafId);
      rafId = requestAnimationFrame(tick);
    } else {
      cancelAnimationFrame(rafId);
    }
  }

  function tick(t) {
    if (!state.playing) return;
    const interval = 1000 / state.speed;
    if (t - lastStep >= interval) {
      lastStep = t - Math.min(interval, t - lastStep - interval);
      if (state.epoch >= state.dims.E - 1) {
        setPlaying(false);
        return;
      }
      setEpoch(state.epoch + 1, "play");
    }
    rafId = requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------------------------------------- hover
  function hover(ev) {
    if (!state.meta || !state.sx) return;
    const rect = svg.getBoundingClientRect();
    if (!rect.width) return;
    const px = ((ev.clientX - rect.left) / rect.width) * W;
    const py = ((ev.clientY - rect.top) / rect.height) * H;
    let best = null;
    let bestD = 14 * 14;
    const e = state.epoch;
    for (const it of state.items) {
      if (!it.visible) continue;
      const upto = Math.min(e, it.n - 1);
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
    if (!best) {
      tooltip.style.display = "none";
      hoverRing.setAttribute("display", "none");
      return;
    }
    const { it, k } = best;
    const { meta } = state;
    const { est } = currentBlock();
    const run = meta.runs[it.r];
    const yName = meta.targets[state.target] === "labels" ? est.label_y : est.label_yhat;
    const lines = [
      (meta.n_runs > 1 ? run.name + " · " : "") + run.layer_names[it.l],
      `epoch ${run.epochs[k]}`,
      `${est.label_x}: ${formatValue(it.xs[k], 5)}`,
      `${yName}: ${formatValue(it.ys[k], 5)}`,
    ];
    tooltip.textContent = lines.join("\n");
    readout.textContent = lines.join(" · ");
    tooltip.style.display = "block";
    const cx = state.sx(it.xs[k]);
    const cy = state.sy(it.ys[k]);
    hoverRing.setAttribute("cx", cx.toFixed(2));
    hoverRing.setAttribute("cy", cy.toFixed(2));
    hoverRing.setAttribute("display", "inline");
    const left = (cx / W) * rect.width + 12;
    const top = (cy / H) * rect.height + 12;
    tooltip.style.left = `${Math.min(left, rect.width - 220)}px`;
    tooltip.style.top = `${top}px`;
  }

  // ---------------------------------------------------------------------------------------------- events
  const on = (node, type, fn) => node.addEventListener(type, fn);
  on(estSelect, "change", () => {
    state.est = Number(estSelect.value);
    fullRedraw("estimator");
  });
  on(ruleSelect, "change", () => {
    state.rule = ruleSelect.value;
    fullRedraw("rule");
  });
  on(sigmaInput, "input", () => {
    state.sigmaIndex = Number(sigmaInput.value);
    fullRedraw("sigma");
  });
  on(targetSelect, "change", () => {
    state.target = Math.max(0, state.meta.targets.indexOf(targetSelect.value));
    fullRedraw("target");
  });
  on(scrub, "input", () => setEpoch(Number(scrub.value), "scrub"));
  on(playButton, "click", () => setPlaying(!state.playing));
  on(backButton, "click", () => setEpoch(state.epoch - 1, "step"));
  on(fwdButton, "click", () => setEpoch(state.epoch + 1, "step"));
  on(speedSelect, "change", () => {
    state.speed = Number(speedSelect.value) || 5;
  });
  on(svg, "mousemove", hover);
  on(svg, "mouseleave", () => {
    tooltip.style.display = "none";
    hoverRing.setAttribute("display", "none");
  });
  on(svg, "mousedown", () => root.focus({ preventScroll: true }));
  on(root, "keydown", (ev) => {
    const tag = ev.target && ev.target.tagName ? ev.target.tagName.toLowerCase() : "";
    const own = ev.target === root || tag === "svg" || (ev.target && ev.target.closest && ev.target.closest("svg"));
    const onScrub = ev.target === scrub;
    let handled = false;
    if (ev.key === " " || ev.key === "Spacebar") {
      if (own || onScrub) {
        setPlaying(!state.playing);
        handled = true;
      }
    } else if (own && (ev.key === "ArrowRight" || ev.key === "ArrowUp")) {
      setEpoch(state.epoch + 1, "key");
      handled = true;
    } else if (own && (ev.key === "ArrowLeft" || ev.key === "ArrowDown")) {
      setEpoch(state.epoch - 1, "key");
      handled = true;
    } else if (own && ev.key === "Home") {
      setEpoch(0, "key");
      handled = true;
    } else if (own && ev.key === "End") {
      setEpoch(state.dims ? state.dims.E - 1 : 0, "key");
      handled = true;
    }
    if (handled) {
      ev.preventDefault();
      ev.stopPropagation();
    }
  });

  // ---------------------------------------------------------------------------------------------- live data
  let reloadQueued = false;
  const queueReload = () => {
    if (reloadQueued) return;
    reloadQueued = true;
    Promise.resolve().then(() => {
      reloadQueued = false;
      load();
    });
  };
  function onCustom(msg, buffers) {
    if (!msg || msg.type !== "append") return;
    const meta = state.meta;
    if (!meta || meta.n_runs !== 1 || msg.start !== meta.n_epochs || !buffers || buffers.length < 2) {
      if (model.send) model.send({ type: "resync", have: meta ? meta.n_epochs : -1 });
      return;
    }
    const v = float32Of(buffers[0]);
    const s = float32Of(buffers[1]);
    const grown = appendEpochs(state.values, state.sat, v, s);
    state.values = grown.values;
    state.sat = grown.saturation;
    meta.n_epochs += msg.count;
    meta.runs[0].epochs = meta.runs[0].epochs.concat(msg.epochs || []);
    if (msg.history) meta.runs[0].history = msg.history;
    if (msg.estimators) {
      msg.estimators.forEach((patch, i) => Object.assign(meta.estimators[i], patch));
    }
    state.dims = dimsOf(meta);
    scrub.max = String(Math.max(0, state.dims.E - 1));
    if (state.follow && !state.playing) state.epoch = state.dims.E - 1;
    buildItems();
    fullRedraw("append");
  }
  model.on("change:meta", queueReload);
  model.on("change:grid", queueReload);
  model.on("change:saturation", queueReload);
  model.on("change:scales", queueReload);
  model.on("msg:custom", onCustom);

  load();

  return () => {
    state.playing = false;
    cancelAnimationFrame(rafId);
    model.off("change:meta", queueReload);
    model.off("change:grid", queueReload);
    model.off("change:saturation", queueReload);
    model.off("change:scales", queueReload);
    model.off("msg:custom", onCustom);
    root.remove();
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
  return render({ model, el: host });
}

export default { render };
