"""A fast estimator is its functional form, its packed form and one registration: nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_planeview import synthetic_run

from ibwidget.measure import estimators, kernels
from ibwidget.measure._packed import unpack
from ibwidget.measure.trajectories import is_packed, packed_estimates, target_kernel, x_kernel
from ibwidget.plane import _grid

NAME = "hsic_m2"
PACKED_CALLS: list[int] = []


def hsic_m2(K, L):
    """HSIC with the 1/m² normaliser, ``tr(K H L H) / m^2``."""
    K, L = torch.as_tensor(K, dtype=torch.float64), torch.as_tensor(L, dtype=torch.float64)
    m = K.shape[-1]
    H = torch.eye(m, dtype=torch.float64) - 1.0 / m
    return torch.einsum("...ij,...ji->...", K @ H, L @ H) / m**2


def hsic_m2_packed(stats, targets):
    """The packed form: from the statistics the pass shares."""
    PACKED_CALLS.append(stats.k.shape[0])
    return torch.stack([stats.trace_with(t) / stats.m**2 for t in targets], -1)


@pytest.fixture(scope="module")
def registered():
    estimators.register(NAME, hsic_m2, label="HSIC({a}, {b})", variant="1/m²", packed=hsic_m2_packed)
    yield estimators.get(NAME)
    del estimators._REGISTRY[NAME]


@pytest.fixture(scope="module")
def run():
    return synthetic_run(epochs=4, m=24, widths=(40, 12), name="fast")


def _functional(run, sigma: float, target: str) -> np.ndarray:
    """The functional form on full float64 Gaussian kernels unpacked from the stored distances: (epochs, layers, 2)."""
    snap = run.snapshots()
    K = unpack(torch.exp(snap.dist.double() * kernels.exponent_factor(sigma)), snap.m, 1.0)
    K_x = x_kernel(snap, "gaussian", "fixed", sigma).double()
    K_y = target_kernel(snap, target, "gaussian", "fixed", sigma).double()
    K_y = K_y if K_y.ndim == 2 else K_y[:, None]
    return torch.stack([hsic_m2(K, K_x), hsic_m2(K, K_y)], -1).numpy()


@pytest.mark.parametrize("target", ["labels", "output"])
@pytest.mark.parametrize("sigma", [0.5, 5.0, 80.0])
def test_run_trajectories_use_the_registered_packed_form(registered, run, sigma, target):
    assert is_packed(registered)
    PACKED_CALLS.clear()
    traj = run.trajectories(NAME, sigma=sigma, target=target)
    assert PACKED_CALLS, "the packed form was not called"
    np.testing.assert_allclose(traj, _functional(run, sigma, target), rtol=1e-6, atol=1e-12)  # float32 kernels
    m = run.snapshots().m
    biased = run.trajectories("hsic", sigma=sigma, target=target)  # 1/(m-1)^2: the same up to the normaliser
    np.testing.assert_allclose(traj, biased * ((m - 1) / m) ** 2, rtol=1e-12, atol=1e-16)


def test_the_grid_holds_the_registered_fast_estimator(registered, run):
    assert NAME in _grid.default_estimators()
    PACKED_CALLS.clear()
    grid = _grid.plane_grid(run, estimators=[NAME, "cka"], sigmas=[1.0, 5.0])
    assert PACKED_CALLS, "the grid did not evaluate the packed form"
    for slot, sigma in enumerate((1.0, 5.0)):
        for target in ("labels", "output"):
            got = grid.block(NAME, slot, target)[0]
            ref = _functional(run, sigma, target).astype(np.float32)
            np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-30)


def pairwise_bound(D, noise_var, labels=None, bound="upper"):
    """A user's distance estimator (here the KDE bound under another name), registered without a packed form."""
    return estimators.kde_mi(D, noise_var, labels, bound)


@pytest.mark.parametrize("bound", ["upper", "lower"])
@pytest.mark.parametrize("target", ["labels", "output"])
def test_a_distance_estimator_without_packed_form_runs_on_full_distances(run, bound, target):
    """Its function on each unpacked distance matrix: equal to the packed KDE bound it re-registers."""
    name = f"kde_{bound}_unpacked"
    estimators.register(name, pairwise_bound, needs="distances", options={"bound": bound})
    try:
        assert not is_packed(estimators.get(name))
        for rule, sigma in (("fixed", 0.7), ("median_d", 1.0)):
            got = run.trajectories(name, sigma=sigma, target=target, sigma_rule=rule)
            ref = run.trajectories(f"kde_{bound}", sigma=sigma, target=target, sigma_rule=rule)
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
        with pytest.raises(ValueError, match=rf"'{name}'\] have no packed form.*packed="):
            packed_estimates(run.snapshots(), [estimators.get(name)])
    finally:
        del estimators._REGISTRY[name]


def test_packed_registration_is_validated():
    with pytest.raises(ValueError, match="packed form of 'bins2'.*needs='activations'"):
        estimators.register("bins2", estimators.binning_mi, needs="activations", packed=hsic_m2_packed)
    with pytest.raises(ValueError, match="variance_scale must be a positive number"):
        estimators.register("kde2", estimators.kde_mi, needs="distances", packed=hsic_m2_packed, variance_scale=-1)
    assert "bins2" not in estimators.names() and "kde2" not in estimators.names()


def test_builtin_fast_estimators_are_registered_with_their_packed_forms():
    fast = {s.name: s for s in map(estimators.get, estimators.names()) if is_packed(s)}
    assert {"hsic", "hsic_unbiased", "hsic_pyglow", "cka", "cka_debiased", "kde_upper", "kde_lower"} <= set(fast)
    assert not {"nhsic", "renyi_mi", "binning", "binning_idnn", "binning_saxe"} & set(fast)
    assert {n for n, s in fast.items() if s.packed_unbiased} == {"hsic_unbiased", "cka_debiased"}
    assert fast["kde_lower"].variance_scale == 4.0 and fast["kde_upper"].variance_scale == 1.0
