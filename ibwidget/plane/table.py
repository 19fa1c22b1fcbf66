"""A run's information-plane trajectories as a text table, one row per recorded epoch: for scripts, notebooks and
the command line."""

from __future__ import annotations

import math

from ibwidget.measure import estimators as _estimators
from ibwidget.record.run import Run

__all__ = ["trajectory_table"]


def _history_value(run: Run, key: str, epoch: int) -> float:
    """``run.history[key]`` of ``epoch`` (epoch 1 is the first trained one); NaN for epoch 0 or a missing value."""
    values = run.history.get(key, [])
    return values[epoch - 1] if 1 <= epoch <= len(values) else math.nan


def trajectory_table(
    run: Run,
    estimator: str = "hsic",
    sigma: float = 5.0,
    target: str = "labels",
    sigma_rule: str = "fixed",
    kernel: str = "gaussian",
) -> str:
    """Each layer's (dependence on X, dependence on Y) at every recorded epoch, with the training loss and the
    validation accuracy, as the text of a table; the arguments are :meth:`ibwidget.Run.trajectories`'.

    ``print(trajectory_table(run, "cka"))``. Epoch 0 is the untrained network (its loss and accuracy read nan).
    """
    spec = _estimators.get(estimator)
    traj = run.trajectories(estimator, sigma=sigma, target=target, sigma_rule=sigma_rule, kernel=kernel)
    width = max(12, *(len(name) + 2 for name in run.layer_names))
    lines = [
        f"{run.name}: {spec.axis_label('T', 'X')} / {spec.axis_label('T', 'Y')}, sigma={sigma} ({sigma_rule}), "
        f"target={target}, probe={run.m}",
        f"{'epoch':>5} {'loss':>8} {'val_acc':>8} " + "".join(f"{name:>{2 * width}}" for name in run.layer_names),
        f"{'':>23}" + "".join(f"{'vs X':>{width}}{'vs Y':>{width}}" for _ in run.layer_names),
    ]
    for row, epoch in enumerate(run.epochs):
        loss, val_acc = _history_value(run, "loss", epoch), _history_value(run, "val_accuracy", epoch)
        cells = "".join(f"{x:>{width}.4g}{y:>{width}.4g}" for x, y in traj[row])
        lines.append(f"{epoch:>5} {loss:>8.4f} {val_acc:>8.4f} {cells}")
    return "\n".join(lines)
