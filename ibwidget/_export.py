"""Execute notebooks and write static HTML pages with the widget state embedded (``make html``).

``python -m ibwidget._export notebooks/*.ipynb --out build/html [-p EPOCHS=3 ...]`` runs each notebook top to bottom
in a fresh kernel (nbclient, ``store_widget_state=True``: every widget's final state is saved in the notebook, which
is why a widget notebook ends its training cell with ``trainer.wait()``), writes the executed ``.ipynb`` and an
``.html`` page (nbconvert's ``lab`` template). Opened in a browser, the page draws the widgets from the embedded
state without a kernel; it loads require.js, the Jupyter widgets HTML manager and the widget modules (bqplot,
bqscales, anywidget) from public CDNs, as every nbconvert page does. Needs the ``dev`` extras (nbclient, nbconvert).
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
INJECTED_TAG = "injected-parameters"


def inject_parameters(nb, parameters: Mapping[str, object]) -> None:
    """Insert a cell assigning ``parameters`` after the cell tagged ``parameters`` (papermill's convention).

    Values are written with ``repr``; a notebook without a parameters cell gets the new cell first.
    """
    if not parameters:
        return
    import nbformat

    source = "# Injected parameters\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [INJECTED_TAG]
    cell["id"] = INJECTED_TAG
    index = next(
        (i + 1 for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])),
        0,
    )
    nb.cells.insert(index, cell)


def execute(nb, cwd, timeout: int = 600, kernel_name: str = "python3"):
    """Run every cell of ``nb`` (in place) in a fresh kernel started in ``cwd``; keeps the widget state."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=timeout,
        store_widget_state=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def to_html(nb) -> str:
    """The notebook as one HTML page (nbconvert ``lab`` template) with its widget state embedded."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return body


def export(
    paths: Iterable,
    out_dir,
    parameters: Mapping[str, object] | None = None,
    timeout: int = 600,
    kernel_name: str = "python3",
    log=print,
) -> list[Path]:
    """Execute each notebook with its working directory ``out_dir``; write ``<stem>.ipynb`` and ``<stem>.html``.

    Returns the HTML paths. A failing cell raises nbclient's ``CellExecutionError`` (its message shows the cell
    and the traceback); the notebooks before it are already written.
    """
    import nbformat

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, paths):
        start = time.monotonic()
        nb = nbformat.read(path, as_version=4)
        inject_parameters(nb, parameters or {})
        execute(nb, out.resolve(), timeout=timeout, kernel_name=kernel_name)
        nbformat.write(nb, out / path.name)
        html = out / (path.stem + ".html")
        html.write_text(to_html(nb), encoding="utf-8")
        widgets = len(nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {}))
        log(f"{path} -> {html} ({widgets} widget models, {time.monotonic() - start:.0f} s)")
        written.append(html)
    return written


def _parameter(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (a Python literal or a bare string), got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ibwidget._export", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", help="notebooks to execute and export")
    parser.add_argument("--out", default="build/html", help="output folder (also the notebooks' working directory)")
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        type=_parameter,
        default=[],
        metavar="NAME=VALUE",
        help="override a value of the notebooks' parameters cell, e.g. -p EPOCHS=3 -p DATASET=digits",
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--kernel", default="python3", help="kernel name (default: this interpreter's python3)")
    args = parser.parse_args(argv)
    try:
        export(args.notebooks, args.out, dict(args.parameter), timeout=args.timeout, kernel_name=args.kernel)
    except Exception as exc:  # noqa: BLE001 - report any failure of a notebook as one line plus nbclient's text
        print(f"ibwidget export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
