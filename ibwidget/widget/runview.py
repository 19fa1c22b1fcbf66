"""``RunView``: the Trainer's figures and controls for saved runs, overlaid for comparison."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import ipywidgets as widgets

from ibwidget.measure._typing import PathLike
from ibwidget.record.follow import Follower
from ibwidget.record.run import Run, load_run
from ibwidget.widget._applier import _Batch
from ibwidget.widget._base import _RunsBox
from ibwidget.widget._style import legend_html

__all__ = ["RunView"]


def _as_runs(runs) -> list[Run]:
    if isinstance(runs, Run | str | os.PathLike):
        runs = [runs]
    out = []
    for run in runs:
        if isinstance(run, str | os.PathLike):
            run = load_run(run)
        if not isinstance(run, Run):
            raise TypeError(f"RunView takes ibwidget Runs or run-file paths, got {type(run).__name__}.")
        out.append(run)
    if not out:
        raise ValueError("RunView needs at least one run: RunView(run) or RunView([run_a, run_b]).")
    return out


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


class RunView(_RunsBox):
    """Saved runs (``Run`` objects or ``.ibrun`` paths) in the Trainer's figures, one line style per run.

    The controls redraw every run from its stored snapshots; layer toggle i shows or hides layer i of every run.
    ``plane_view``: a second tab, "Player", with the :class:`~ibwidget.PlaneView` of the same grid (epoch player,
    σ fan, chance floor, layer CKA heatmap).
    """

    def __init__(
        self,
        runs: Run | PathLike | Iterable[Run | PathLike],
        estimators: Sequence[str] = ("hsic", "cka"),
        sigma: float = 5.0,
        sigma_rule: str = "fixed",
        target: str = "labels",
        *,
        plane_view: bool = True,
    ) -> None:
        super().__init__()
        runs = _as_runs(runs)
        names = _unique([run.name for run in runs])
        epoch_max = max((run.epochs[-1] if run.epochs else 0) for run in runs)
        self._setup(runs, names, estimators, sigma, sigma_rule, target, epoch_max, compare=len(runs) > 1)
        self.legend = widgets.HTML(legend_html(names))
        self.legend.add_class("ibw-legend")
        self._info = widgets.HBox([self.saturation, self.notice, self.export_format, self.export_button])
        self._follower: Follower | None = None
        self._body_box = self._body(plane_view)
        self.children = [self.legend, self._controls.box, self._info, self._body_box]
        self.add_class("ibw-runview")
        if not self._model.ready.is_set():  # the grid fills in behind: the first view is computed here, exactly
            self._on_demand.compute_now(self._controls.view().params, self._runs)
        self._apply(_Batch(redraw=True))  # draw on this (the main) thread: the view is complete when shown
        self._applier.start()

    @classmethod
    def follow(
        cls,
        source: PathLike,
        estimators: Sequence[str] = ("hsic", "cka"),
        sigma: float = 5.0,
        sigma_rule: str = "fixed",
        target: str = "labels",
        *,
        plane_view: bool = True,
        interval: float = 0.5,
        timeout: float | None = 60.0,
    ) -> RunView:
        """A view of the runs other processes are writing: ``source`` is a run file, or a folder whose ``.ibrun``
        files (a sweep's seeds, activations, learning rates...) each join the view when they appear.

        Every ``interval`` seconds the files are read for new complete epochs, which are appended to the view (the
        epochs already shown are never recomputed). Waits up to ``timeout`` seconds for a first readable run.
        Following stops when the view is closed.
        """
        follower = Follower(source, interval)
        view = cls(follower.wait_for_runs(timeout), estimators, sigma, sigma_rule, target, plane_view=plane_view)
        view._follower = follower

        def changed(new_runs: list, grew: bool) -> None:  # the follower's thread: only queue requests
            if new_runs:
                view._applier.put("runs", new_runs)
            if grew:
                view._applier.put("data")

        follower.start(changed)
        return view

    @property
    def following(self) -> bool:
        """Whether this view follows run files (see :meth:`follow`) and still does."""
        return self._follower is not None and self._follower.alive

    def close(self) -> None:
        follower = getattr(self, "_follower", None)  # absent if __init__ failed
        if follower is not None:
            follower.stop()
        super().close()

    def _apply(self, batch: _Batch) -> None:
        if batch.new_runs:  # runs that appeared in a followed folder
            names = _unique([run.name for run in (*self._runs, *batch.new_runs)])
            self._add_runs(batch.new_runs, names)
            self.legend.value = legend_html(names)
            self.children = [self.legend, self._controls.box, self._info, self._body_box]
        if batch.data:
            self._epoch_max = max([self._epoch_max, *(run.epochs[-1] for run in self._runs if run.epochs)])
        super()._apply(batch)

    def __repr__(self) -> str:
        names = ", ".join(self._display_names)
        layers = max(len(run.layer_names) for run in self._runs)
        return f"RunView({len(self._runs)} run{'s' * (len(self._runs) > 1)}: {names}; {layers} layers)"
