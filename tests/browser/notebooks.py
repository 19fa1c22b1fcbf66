"""Write the notebooks the browser tests open, with nbformat."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

_KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def write_notebook(path: Path, *sources: str) -> Path:
    """Write a notebook whose code cells are ``sources`` (dedented) and whose kernel is the server's python3."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(src).strip()) for src in sources]
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


def thread_demo_notebook(path: Path, points: int = 12, period: float = 0.5) -> Path:
    """A bqplot plane (one Lines, one Scatter) that a background thread extends by one point every ``period`` s.

    Proves the harness without ``ibwidget.widget``: same CSS class and the same marks as the Trainer's plane.
    """
    return write_notebook(
        path,
        """
        import threading, time
        import numpy as np
        import bqplot as bq
        import ipywidgets as w

        sx, sy = bq.LinearScale(), bq.LinearScale()
        line = bq.Lines(x=np.zeros(0, np.float32), y=np.zeros(0, np.float32), scales={"x": sx, "y": sy})
        dots = bq.Scatter(x=np.zeros(0, np.float32), y=np.zeros(0, np.float32), scales={"x": sx, "y": sy})
        fig = bq.Figure(marks=[line, dots], axes=[bq.Axis(scale=sx), bq.Axis(scale=sy, orientation="vertical")],
                        animation_duration=0, title="thread demo")
        fig.add_class("ibw-plane")
        status = w.Label("running")
        status.add_class("ibw-status")
        w.VBox([status, fig])
        """,
        f"""
        def _feed(n={points}, period={period}):
            xs, ys = [], []
            for i in range(n):
                time.sleep(period)
                xs.append(float(i)); ys.append(float(np.sin(i / 2.0)))
                with fig.hold_sync():
                    line.x = dots.x = np.asarray(xs, np.float32)
                    line.y = dots.y = np.asarray(ys, np.float32)
            status.value = "finished"

        threading.Thread(target=_feed, daemon=True).start()
        """,
    )


def trainer_notebook(path: Path, epochs: int, probe: int = 128, batch_size: int = 32) -> Path:
    """The Trainer notebook: digits, the seed model, a short run started from the notebook."""
    return write_notebook(
        path,
        f"""
        import ibwidget as ib
        from ibwidget.cli import seed_model

        train, val, _ = ib.datasets.digits.load_data(batch_size={batch_size})
        model = seed_model((1, 8, 8))
        model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.01, momentum=0.9)
        trainer = ib.Trainer(model, train, val, epochs={epochs}, probe={probe})
        trainer
        """,
        "trainer.start()",
    )
