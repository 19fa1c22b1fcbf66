"""The sigma-rule registry: a rule added in one place reaches trajectories, grids, reports and the controls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ibwidget.measure import estimators, kernels
from ibwidget.plane import _grid
from ibwidget.record.run import Run
from ibwidget.widget._controls import Controls

M, EPOCHS, WIDTHS = 24, 3, (16, 6)


def _mean_d2(dist: torch.Tensor, sigma: float, dim) -> torch.Tensor:
    """sigma^2 = the mean off-diagonal squared distance (a rule the package does not ship)."""
    return dist.double().mean(-1).sqrt()


@pytest.fixture
def mean_d2_rule():
    rule = kernels.register_sigma_rule("Mean_D2", "sigma^2 = mean of off-diagonal D2", _mean_d2, from_data=True)
    yield rule
    kernels._RULES.pop(rule.name)  # the registry is process-wide: leave it as other tests expect
    kernels._FORMULAS.pop(rule.name)


@pytest.fixture(scope="module")
def recorded():
    """A run and the float64 Grams it was fed, for a direct computation to compare with."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(M, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(M) % 4
    run = Run("rules", ["a", "b"], list(WIDTHS), x.float(), labels, num_classes=4, capacity=EPOCHS + 1)
    grams = []
    for e in range(EPOCHS + 1):
        zs = {
            n: torch.relu(torch.randn(M, w, generator=g, dtype=torch.float64) + 0.3 * e)
            for n, w in zip("ab", WIDTHS, strict=True)
        }
        grams.append({n: kernels.gram(z) for n, z in zs.items()})
        run.add_snapshot(e, {n: G.float() for n, G in grams[-1].items()}, torch.randn(M, 4, generator=g))
    return run, x, labels, grams


def _direct(x, labels, grams, width) -> np.ndarray:
    """CKA against X and the labels, every kernel's width from ``width(G)``, in float64."""
    Gx = kernels.gram(x)
    K_x = kernels.gaussian(Gx, width(Gx))
    K_y = kernels.label_kernel(labels, 4, dtype=torch.float64)
    cka = estimators.get("cka")
    out = np.empty((len(grams), len(WIDTHS), 2))
    for e, per_layer in enumerate(grams):
        for li, G in enumerate(per_layer.values()):
            K = kernels.gaussian(G, width(G))
            out[e, li] = [float(cka(K, K_x)), float(cka(K, K_y))]
    return out


def _mean_width(G: torch.Tensor) -> float:
    D = kernels.sq_distances(G)
    m = G.shape[0]
    return math.sqrt(float(D.sum()) / (m * (m - 1)))


def test_a_registered_rule_is_used_by_trajectories_and_grids(recorded, mean_d2_rule):
    run, x, labels, grams = recorded
    assert kernels.sigma_rule("MEAN_d2") is mean_d2_rule and mean_d2_rule.name == "mean_d2"
    expected = _direct(x, labels, grams, _mean_width)
    got = run.trajectories("cka", sigma_rule="mean_d2", target="labels")
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # a wrong width would show: the median rule gives other values on the same data
    assert np.abs(run.trajectories("cka", sigma_rule="median_d2", target="labels") - expected).max() > 1e-3

    grid = _grid.plane_grid(run, estimators=["cka"], sigmas=[1.0, 5.0], sigma_rules=["fixed", "mean_d2"])
    assert grid.meta["sigma_rules"]["mean_d2"] == "sigma^2 = mean of off-diagonal D2"
    slot = grid.slot_index("mean_d2", 123.0)  # a rule from the data: one slot, the sigma asked is ignored
    assert grid.meta["slots"][slot] == {"rule": "mean_d2", "sigma": None}
    assert sum(s["rule"] == "mean_d2" for s in grid.meta["slots"]) == 1
    block = grid.block("cka", slot, "labels")[0]
    np.testing.assert_allclose(block, expected, rtol=1e-4)
    np.testing.assert_allclose(run.saturation(sigma_rule="mean_d2")[0, 0], _saturation(grams[0]["a"]), rtol=1e-5)


def _saturation(G: torch.Tensor) -> float:
    return float(kernels.saturation(kernels.gaussian(G, _mean_width(G))))


def test_a_registered_rule_shows_in_the_controls_and_a_data_rule_disables_the_sigma_slider(mean_d2_rule):
    controls = Controls(["a"], ["a"], ["cka"], 5.0, "mean_d2", "labels", on_change=lambda: None)
    assert "mean_d2" in controls.sigma_rule.options and "mean_d2" in controls.sigma_rule.tooltip
    assert not controls.sigma_enabled(controls.view())
    controls.sigma_rule.value = "fixed"
    assert controls.sigma_enabled(controls.view())


def test_a_scaling_rule_gets_one_grid_slot_per_sigma():
    rule = kernels.register_sigma_rule("half", "sigma / 2", lambda dist, sigma, dim: sigma / 2, from_data=False)
    try:
        assert float(kernels.sigma_from_rule(torch.eye(3), "half", 8.0)) == 4.0
        builder = _grid.GridBuilder(["cka"], sigmas=[1.0, 2.0, 4.0], sigma_rules=["half"])
        assert builder.slots == [("half", 1.0), ("half", 2.0), ("half", 4.0)]
    finally:
        kernels._RULES.pop(rule.name)
        kernels._FORMULAS.pop(rule.name)


def test_registration_refuses_a_taken_or_empty_name_and_a_width_that_is_not_callable():
    with pytest.raises(ValueError, match="taken"):
        kernels.register_sigma_rule("Fixed", "again", lambda d, s, dim: s, from_data=False)
    with pytest.raises(ValueError, match="empty"):
        kernels.register_sigma_rule("  ", "nothing", lambda d, s, dim: s, from_data=False)
    with pytest.raises(TypeError, match="callable"):
        kernels.register_sigma_rule("number", "a number", 5.0, from_data=False)
    with pytest.raises(ValueError, match="median_d2"):
        kernels.sigma_rule("median_d3")  # suggests the closest
    with pytest.raises(TypeError):
        kernels.SIGMA_RULES["x"] = "read-only"  # type: ignore[index]
    assert list(kernels.SIGMA_RULES) == ["fixed", "sqrt_d", "median_d2", "median_d"]
