"""Generate the teaching notebooks from their sources: ``python notebooks/_build.py [--check]``.

Each notebook's source is a jupytext percent-format script beside it (``01_hsic_training_dynamics.py`` ->
``01_hsic_training_dynamics.ipynb``), linted by ruff with the package. A cell starts at ``# %%`` (code) or
``# %% [markdown]``; the one code cell marked ``# %% tags=["parameters"]`` holds the settings that
``python -m ibwidget._export -p NAME=VALUE`` and the tests override (papermill's convention). The .ipynb files are
written without outputs, with the python3 kernel and stable cell ids, so a regenerated notebook only differs where its
source did. ``--check`` writes nothing and exits 1 when a notebook on disk differs from what this script would write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("[0-9][0-9]_*.py"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
_CELL_METADATA = ("tags",)  # the only cell metadata a notebook keeps from its source


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook of one percent-format source: no outputs, stable ids, the python3 kernel."""
    parsed = jupytext.read(source, fmt="py:percent")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(parsed.cells):
        text = cell.source.strip()
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(text)
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(text)
        else:
            raise ValueError(f"{source.name}: cell {i} is a {cell.cell_type} cell; use '# %%' or '# %% [markdown]'")
        new.metadata.update({key: cell.metadata[key] for key in _CELL_METADATA if key in cell.metadata})
        new["id"] = f"cell-{i:02d}"
        nb.cells.append(new)
    nbformat.validate(nb)
    return nb


def render(source: Path) -> str:
    """The .ipynb text of one source, as written to disk."""
    return nbformat.writes(build(source)) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for source in SOURCES:
        path, text = source.with_suffix(".ipynb"), render(source)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    orphans = sorted({p.stem for p in HERE.glob("[0-9][0-9]_*.ipynb")} - {s.stem for s in SOURCES})
    if orphans:
        print(
            f"notebooks without a source (add notebooks/<name>.py or delete them): {', '.join(orphans)}",
            file=sys.stderr,
        )
    if stale:
        print(f"out of date (run python notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale or orphans else 0


if __name__ == "__main__":
    sys.exit(main())
