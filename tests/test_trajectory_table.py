"""``trajectory_table``: a run's trajectories as a text table, the helper the notebooks print."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.plane.table import trajectory_table


@pytest.fixture(scope="module")
def run():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=g), torch.arange(96) % 3
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16)
    val = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    engine = ib.Engine(model, train, val, epochs=2, probe=24, lr=0.05, device="cpu")
    engine.start()
    return engine.wait()


def _rows(text: str) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in text.splitlines()[3:]]


@pytest.mark.parametrize(("estimator", "sigma_rule"), [("hsic", "fixed"), ("cka", "median_d2")])
def test_rows_are_the_trajectories_with_loss_and_validation_accuracy(run, estimator, sigma_rule):
    text = trajectory_table(run, estimator, sigma=2.0, sigma_rule=sigma_rule)
    traj = run.trajectories(estimator, sigma=2.0, sigma_rule=sigma_rule)
    rows = _rows(text)
    assert [int(r[0]) for r in rows] == run.epochs == [0, 1, 2]
    for row, epoch, points in zip(rows, run.epochs, traj, strict=True):
        loss, val_acc, cells = row[1], row[2], row[3:]
        if epoch == 0:
            assert math.isnan(loss) and math.isnan(val_acc)
        else:
            assert loss == pytest.approx(run.history["loss"][epoch - 1], abs=5e-5)
            assert val_acc == pytest.approx(run.history["val_accuracy"][epoch - 1], abs=5e-5)
        assert cells == pytest.approx(points.reshape(-1).tolist(), rel=1e-3)  # printed with 4 significant digits


def test_header_names_the_run_the_axes_and_the_settings(run):
    title, columns, axes = trajectory_table(run, "cka", sigma=3.0, target="output").splitlines()[:3]
    spec = ib.estimators.get("cka")
    assert title == (
        f"{run.name}: {spec.axis_label('T', 'X')} / {spec.axis_label('T', 'Y')}, sigma=3.0 (fixed), target=output, "
        f"probe={run.m}"
    )
    assert columns.split() == ["epoch", "loss", "val_acc", *run.layer_names]
    assert axes.split() == ["vs", "X", "vs", "Y"] * len(run.layer_names)


def test_an_unknown_estimator_is_refused_with_the_known_names(run):
    with pytest.raises((KeyError, ValueError), match="hsic"):
        trajectory_table(run, "hsci")
