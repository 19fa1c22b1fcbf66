/**
 * The viewer of run files served by the Jupyter server extension (`ibwidget_jupyter`): the information plane of a
 * run file, or of a folder's runs compared, drawn by `./planeview.js`, with the runs' configuration, an export
 * button for the one-file HTML report, and following: it asks the server again every few seconds and redraws when
 * the files grew (the server answers 304 while nothing changed). Plain ESM with no dependencies: JupyterLab's tab
 * (`lab/index.js`) wraps it in a widget, and the server's own page (`ibwidget/view`) mounts it directly.
 */
import { render, staticModel } from "./planeview.js";

export const POLL_MS = 2000; // how often an open viewer asks whether its runs grew
const MAGIC = "IBWG";

/** (header, values bytes, saturation bytes) of a grid answer (see ibwidget_jupyter._grids.encode). */
export function decodeAnswer(buffer) {
  const bytes = new Uint8Array(buffer);
  if (String.fromCharCode(...bytes.subarray(0, 4)) !== MAGIC) {
    throw new Error("the server's answer is not an ibwidget grid");
  }
  const length = new DataView(buffer).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
  const meta = header.meta;
  const nValues = meta.n_runs * meta.n_epochs * meta.n_blocks * meta.n_layers * 2;
  const start = 8 + length;
  return { header, grid: bytes.slice(start, start + 4 * nValues), saturation: bytes.slice(start + 4 * nValues) };
}

/** The last path component, without `suffix` when it ends with it. */
export function baseName(path, suffix = "") {
  const name = path.split("/").filter(Boolean).pop() || "";
  return suffix && name.endsWith(suffix) ? name.slice(0, -suffix.length) : name;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** `fetch` with the browser's session (cookie) and the XSRF token Jupyter sets: for pages outside JupyterLab. */
export function cookieRequest(url, init = {}) {
  const xsrf = (document.cookie.match(/(?:^|;\s*)_xsrf=([^;]+)/) || [])[1];
  const headers = { ...(init.headers || {}), ...(xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf) } : {}) };
  return fetch(url, { ...init, headers, credentials: "same-origin" });
}

/**
 * The viewer of `path` (a run file, or a folder of them, relative to the server's root) inside `host`.
 * `baseUrl`: the server's base URL (ends with "/"); `request(url, init)`: how to ask it (JupyterLab passes its
 * ServerConnection, which carries the token).
 */
export class RunViewer {
  constructor(host, { path, baseUrl, request = cookieRequest }) {
    this.path = path;
    this.baseUrl = baseUrl.endsWith("/") ? baseUrl : baseUrl + "/";
    this.send = request;
    this.root = el("div", "ibw-run-panel");
    const bar = el("div", "ibw-run-bar");
    this.status = el("span", "ibw-run-status", "loading…");
    this.exportButton = el("button", "jp-Button jp-mod-styled ibw-export", "Export HTML report");
    this.exportButton.title = "Download the one-file HTML report of these runs (every σ, no kernel needed)";
    this.exportButton.onclick = () => this.exportReport();
    bar.append(this.exportButton, this.status);
    this.problem = el("div", "ibw-run-problem");
    this.problem.style.color = "var(--jp-error-color1, #c62828)";
    this.plane = el("div", "ibw-run-plane");
    this.configs = el("details", "ibw-run-config");
    this.root.append(bar, this.problem, this.plane, this.configs);
    host.append(this.root);
    this.slot = null;
    this.etag = null;
    this.model = null;
    this.cleanup = null;
    this.timer = 0;
    this.disposed = false;
    this.load();
  }

  url(endpoint, query = {}) {
    return `${this.baseUrl}ibwidget/${endpoint}?${new URLSearchParams({ path: this.path, ...query })}`;
  }

  async request(endpoint, query, headers = {}) {
    const response = await this.send(this.url(endpoint, query), { headers });
    if (response.status === 304 || response.ok) return response;
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).message || message;
    } catch (e) {
      // not JSON: the status says it
    }
    throw new Error(message);
  }

  /** Ask for the grid (the viewed σ computed first); redraw when it changed; ask again in a while. */
  async load() {
    if (this.disposed) return;
    clearTimeout(this.timer);
    try {
      const query = this.slot === null ? {} : { slot: String(this.slot) };
      const response = await this.request("grid", query, this.etag ? { "If-None-Match": this.etag } : {});
      if (response.status !== 304) {
        this.etag = response.headers.get("ETag");
        this.show(decodeAnswer(await response.arrayBuffer()));
      }
      this.problem.textContent = "";
      delete this.root.dataset.problem;
    } catch (error) {
      this.problem.textContent = String(error.message || error);
      this.status.textContent = "";
      this.root.dataset.problem = this.problem.textContent;
    }
    if (!this.disposed) this.timer = setTimeout(() => this.load(), POLL_MS);
  }

  show({ header, grid, saturation }) {
    const meta = header.meta;
    const epochs = Math.max(0, ...meta.runs.map((r) => r.epochs.length));
    const filled = meta.slot_filled.filter(Boolean).length;
    const runs = `${meta.runs.length} run${meta.runs.length === 1 ? "" : "s"}`;
    const pending = filled < meta.slot_filled.length ? `, σ ${filled}/${meta.slot_filled.length} computed` : "";
    this.status.textContent = ` ${runs}, ${epochs} epochs${pending}`;
    this.root.dataset.epochs = String(epochs);
    this.showConfigs(header);
    if (this.model === null) {
      this.model = staticModel({ meta, grid, saturation, scales: new Uint8Array(0) });
      this.model.send = (msg) => {
        if (msg && msg.type === "view" && Number.isInteger(msg.slot) && msg.slot !== this.slot) {
          this.slot = msg.slot; // the σ shown: the server computes it first
          this.etag = null;
          this.load();
        } else if (msg && msg.type === "band") {
          this.relay("band", { estimator: msg.estimator, slot: String(msg.slot), target: msg.target });
        } else if (msg && msg.type === "cka") {
          this.relay("cka");
        }
      };
      this.cleanup = render({ model: this.model, el: this.plane });
    } else {
      this.model.set("meta", meta);
      this.model.set("saturation", saturation);
      this.model.set("grid", grid);
    }
  }

  /** What the view asked for (`type`: "band" or "cka"), computed by the server's endpoint of that name and handed
   * to the view as a kernel would send it: the chance floor of a selection, the layers' CKA at every epoch. */
  async relay(type, query = {}) {
    try {
      const response = await this.request(type, query);
      this.model.receive({ type, [type]: await response.json() });
    } catch (error) {
      this.problem.textContent = String(error.message || error);
    }
  }

  showConfigs(header) {
    this.configs.replaceChildren(el("summary", "", "Configuration"));
    header.meta.runs.forEach((run, i) => {
      const table = el("table", "ibw-config-table");
      table.append(el("caption", "", run.name));
      const rows = { layers: run.layer_names.join(", "), probe: run.probe, ...(header.configs[i] || {}) };
      for (const [key, value] of Object.entries(rows)) {
        const tr = el("tr");
        tr.append(el("th", "", key), el("td", "", typeof value === "string" ? value : JSON.stringify(value)));
        table.append(tr);
      }
      this.configs.append(table);
    });
  }

  async exportReport() {
    this.exportButton.disabled = true;
    this.status.textContent = " computing the report…";
    try {
      const response = await this.request("report", {});
      const url = URL.createObjectURL(await response.blob());
      const link = el("a");
      link.href = url;
      link.download = (baseName(this.path, ".ibrun") || "runs") + ".html";
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      this.status.textContent = " report downloaded";
    } catch (error) {
      this.problem.textContent = String(error.message || error);
    } finally {
      this.exportButton.disabled = false;
    }
  }

  dispose() {
    this.disposed = true;
    clearTimeout(this.timer);
    if (this.cleanup) this.cleanup();
    this.root.remove();
  }
}
