"""``Run.snapshots()``: the read-only, never-growing view of a run that every estimate is computed from; sigma rules
implemented once (a dead layer's median sigma); the plane and the widgets read runs only through public names."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import ibwidget
from ibwidget.measure import kernels
from ibwidget.measure import trajectories as traj
from ibwidget.measure._packed import pack
from ibwidget.plane._grid import GridBuilder
from ibwidget.record.run import Run

M = 8
LAYERS = ["dense", "dead"]


def _run(epochs: int = 2) -> tuple[Run, list[dict]]:
    g = torch.Generator().manual_seed(0)
    run = Run("r", LAYERS, [3, 3], torch.randn(M, 4, generator=g), torch.arange(M) % 2, capacity=1)
    recorded = []
    for e in range(epochs):
        z = torch.randn(M, 3, generator=g)
        grams = {"dense": kernels.gram(z), "dead": kernels.gram(torch.ones(M, 3))}  # every point the same
        out = torch.randn(M, 2, generator=g)
        run.add_snapshot(e, grams, out, activations={"dense": z})
        recorded.append({"grams": grams, "output": out, "z": z})
    return run, recorded


def test_snapshots_hold_what_was_recorded():
    run, recorded = _run()
    run.log_epoch({"loss": 0.25, "accuracy": 0.5})
    snap = run.snapshots()
    assert snap.history["loss"] == (0.25,) and snap.history["accuracy"] == (0.5,)
    assert snap.epochs == (0, 1) and snap.layer_names == tuple(LAYERS) and snap.m == M and snap.input_dim == 4
    for e, rec in enumerate(recorded):
        for li, name in enumerate(LAYERS):
            G = rec["grams"][name]
            torch.testing.assert_close(snap.dist[e, li], pack(kernels.sq_distances(G)))
            torch.testing.assert_close(snap.norms[e, li], torch.diagonal(G))
        torch.testing.assert_close(snap.outputs[e], rec["output"])
        torch.testing.assert_close(snap.activations["dense"][e], rec["z"])
    assert "dead" not in snap.activations
    later = snap.since(1)
    assert later.history == snap.history  # metrics are per epoch trained, not per snapshot: kept whole
    assert (
        later.epochs == (1,)
        and torch.equal(later.dist, snap.dist[1:])
        and torch.equal(later.outputs[0], snap.outputs[1])
    )


def test_snapshots_never_grow_and_are_read_only():
    run, _ = _run()
    snap = run.snapshots()
    dist = snap.dist.clone()
    z = torch.randn(M, 3)
    run.add_snapshot(2, {"dead": kernels.gram(z)}, torch.randn(M, 2), {"dense": z})  # storage regrows
    run.log_epoch({"loss": 0.5})
    assert snap.num_snapshots == 2 and torch.equal(snap.dist, dist) and snap.history["loss"] == ()
    assert run.snapshots().num_snapshots == 3 and run.snapshots().history["loss"] == (0.5,)
    assert run.snapshots() is run.snapshots()  # nothing new recorded: the same object
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.epochs = (0,)
    with pytest.raises(TypeError):
        snap.activations["dense"] = torch.zeros(1)


def test_trajectories_of_a_run_equal_those_of_its_snapshots():
    run, _ = _run()
    for kwargs in ({"estimator": "hsic"}, {"estimator": "cka", "sigma_rule": "median_d"}, {"estimator": "nhsic"}):
        np.testing.assert_array_equal(run.trajectories(**kwargs), traj.trajectories(run.snapshots(), **kwargs))
    np.testing.assert_array_equal(run.saturation(2.0), traj.saturation(run.snapshots(), 2.0))


@pytest.mark.parametrize("rule", ["median_d2", "median_d"])
def test_a_dead_layer_gets_median_sigma_one_everywhere(rule):
    run, recorded = _run()
    dead = recorded[0]["grams"]["dead"]
    assert float(kernels.sigma_from_rule(dead, rule)) == 1.0
    sigmas = traj.layer_sigmas(run.snapshots(), rule)
    assert torch.equal(sigmas[:, 1], torch.ones(2, dtype=torch.float64))
    live = kernels.sigma_from_rule(recorded[1]["grams"]["dense"], rule)
    assert float(sigmas[1, 0]) == pytest.approx(float(live), rel=1e-6)
    with pytest.raises(ValueError, match="sigma = 0"):  # the explicit median of no scale still says so
        kernels.sigma_median(dead, rule)
    # the dead layer's trajectory is defined, and is the one at sigma = 1 (its kernel is all ones at any width)
    for estimator in ("hsic", "cka", "kde_upper"):
        median = run.trajectories(estimator, sigma_rule=rule, layers=["dead"])
        np.testing.assert_array_equal(median, run.trajectories(estimator, sigma=1.0, layers=["dead"]))
        assert np.isfinite(median).all()


def test_a_grid_computes_the_same_from_a_run_and_from_its_snapshots():
    run, _ = _run()
    builder = GridBuilder(["hsic", "kde_upper", "binning"], sigmas=[1.0, 5.0])
    for a, b in zip(builder.compute(run), builder.compute(run.snapshots()), strict=True):
        np.testing.assert_equal(a, b)
    values, sat, _ = builder.compute(run, start=1)
    np.testing.assert_array_equal(values, builder.compute(run)[0][1:])


#: what a Run keeps to itself: the views and the grid read runs through ``snapshots()`` and public attributes only
_RUN_PRIVATES = {name for name in vars(_run(1)[0]) if name.startswith("_")} | {
    name for name in vars(Run) if name.startswith("_") and not name.startswith("__")
}


@pytest.mark.parametrize("folder", ["plane", "widget"])
def test_the_plane_and_the_views_use_no_private_of_a_run(folder):
    found = []
    for path in sorted((Path(ibwidget.__file__).parent / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in _RUN_PRIVATES:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, f"Run privates read outside record/: {found}"
