/**
 * The JupyterLab (and Notebook 7) extension: `.ibrun` run files open in a main-area tab that draws their
 * information plane (`../runviewer.js` over `../planeview.js`, the module the widget and the one-file report use),
 * and a folder's context menu compares the runs in it: in a JupyterLab tab, or in Notebook 7 (whose tree page holds
 * one widget) on the server's own page in a new browser tab. The server extension (`ibwidget_jupyter`) reads the
 * files and computes their grid; the viewer follows them as they grow.
 */
import { ILabShell, ILayoutRestorer } from "@jupyterlab/application";
import { MainAreaWidget, WidgetTracker } from "@jupyterlab/apputils";
import { PathExt, URLExt } from "@jupyterlab/coreutils";
import { ABCWidgetFactory, DocumentModel, DocumentWidget } from "@jupyterlab/docregistry";
import { IFileBrowserFactory } from "@jupyterlab/filebrowser";
import { ServerConnection } from "@jupyterlab/services";
import { Widget } from "@lumino/widgets";

import { RunViewer } from "../runviewer.js";

const FILE_TYPE = "ibwidget-run";
const FACTORY = "ibwidget run viewer";
const MODEL = "ibwidget-run";
const COMPARE = "ibwidget:compare-folder";
const OPEN_FOLDER = "ibwidget:open-folder";

/** A run file or folder in a JupyterLab widget: the server's viewer, asked through ServerConnection. */
export class RunPanel extends Widget {
  constructor(path) {
    super();
    this.addClass("ibw-run-widget");
    this.title.label = PathExt.basename(path) || "runs";
    this.title.caption = path;
    this.node.style.overflow = "auto";
    this.node.style.padding = "8px 12px";
    const settings = ServerConnection.makeSettings();
    this.viewer = new RunViewer(this.node, {
      path,
      baseUrl: settings.baseUrl,
      request: (url, init) => ServerConnection.makeRequest(url, init, settings),
    });
  }

  get path() {
    return this.viewer.path;
  }

  set path(value) {
    this.viewer.path = value; // renamed while open
  }

  dispose() {
    this.viewer.dispose();
    super.dispose();
  }
}

/** The document model of a run file: nothing. The server reads the file; the tab never loads its bytes. */
class RunModel extends DocumentModel {
  fromString() {}

  toString() {
    return "";
  }
}

/** Opens run files without their content: with `fileFormat` null, JupyterLab fetches only the file's metadata. */
class RunModelFactory {
  constructor() {
    this.name = MODEL;
    this.contentType = "file";
    this.fileFormat = null;
    this.isDisposed = false;
  }

  createNew() {
    return new RunModel();
  }

  preferredLanguage() {
    return "";
  }

  dispose() {
    this.isDisposed = true;
  }
}

class RunViewerFactory extends ABCWidgetFactory {
  createNewWidget(context) {
    const content = new RunPanel(context.path);
    const widget = new DocumentWidget({ content, context });
    context.pathChanged.connect((_, path) => {
      content.path = path;
    });
    return widget;
  }
}

const plugin = {
  id: "ibwidget:plugin",
  description: "Open, compare and follow ibwidget run files.",
  autoStart: true,
  optional: [IFileBrowserFactory, ILayoutRestorer, ILabShell],
  activate: (app, browsers, restorer, labShell) => {
    app.docRegistry.addFileType({
      name: FILE_TYPE,
      displayName: "ibwidget run",
      extensions: [".ibrun"],
      mimeTypes: ["application/x-ibwidget-run"],
      contentType: "file",
      fileFormat: null,
    });
    app.docRegistry.addModelFactory(new RunModelFactory());
    app.docRegistry.addWidgetFactory(
      new RunViewerFactory({
        name: FACTORY,
        modelName: MODEL,
        fileTypes: [FILE_TYPE],
        defaultFor: [FILE_TYPE],
        readOnly: true,
      }),
    );
    const tracker = new WidgetTracker({ namespace: "ibwidget-folder" });
    const openFolder = (path) => {
      if (!labShell) {
        const base = ServerConnection.makeSettings().baseUrl;
        window.open(URLExt.join(base, "ibwidget/view") + "?" + new URLSearchParams({ path }), "_blank");
        return undefined;
      }
      const widget = new MainAreaWidget({ content: new RunPanel(path) });
      widget.title.label = `${PathExt.basename(path) || "runs"} (compared)`;
      widget.id = `ibwidget-folder-${path}`;
      tracker.add(widget);
      app.shell.add(widget, "main");
      app.shell.activateById(widget.id);
      return widget;
    };
    app.commands.addCommand(OPEN_FOLDER, {
      label: "Compare runs in a folder",
      execute: (args) => openFolder(String(args.path || "")),
    });
    if (restorer) {
      restorer.restore(tracker, {
        command: OPEN_FOLDER,
        args: (widget) => ({ path: widget.content.path }),
        name: (widget) => widget.content.path,
      });
    }
    if (browsers) {
      app.commands.addCommand(COMPARE, {
        label: "Compare runs in this folder",
        caption: "Open the information plane of every .ibrun file in this folder, side by side",
        execute: () => {
          const browser = browsers.tracker.currentWidget;
          if (!browser) return undefined;
          const item = Array.from(browser.selectedItems()).find((i) => i.type === "directory");
          return openFolder(item ? item.path : browser.model.path);
        },
      });
      app.contextMenu.addItem({
        command: COMPARE,
        selector: '.jp-DirListing-item[data-isdir="true"]',
        rank: 3,
      });
    }
  },
};

export default plugin;
