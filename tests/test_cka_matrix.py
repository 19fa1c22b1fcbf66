"""Layer-to-layer CKA (Run.cka_matrix) against Kornblith et al. 2019's feature-space formula and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibwidget.measure import estimators, kernels
from ibwidget.record.run import Run

M, C = 40, 4


def _run(layers: dict[str, torch.Tensor], output: torch.Tensor, x: torch.Tensor) -> Run:
    labels = torch.arange(M) % C
    run = Run("cka", list(layers), [a.shape[1] for a in layers.values()], x, labels, num_classes=C)
    narrow = {n: a for n, a in layers.items() if a.shape[1] < M}
    run.add_snapshot(3, {n: kernels.gram(a) for n, a in layers.items()}, output, narrow)
    return run


def _features(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, 6, generator=g)
    h1 = torch.tanh(x @ torch.randn(6, 30, generator=g))
    h2 = torch.relu(h1 @ torch.randn(30, 80, generator=g))  # wider than the probe: its distances are stored
    h3 = h2 @ torch.randn(80, 10, generator=g) / 9
    return {"h1": h1, "h2": h2, "h3": h3}, x, torch.randn(M, C, generator=g)


def _linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Kornblith et al. 2019, eq. (5): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) of column-centred features."""
    X, Y = X.double() - X.double().mean(0), Y.double() - Y.double().mean(0)
    return float((Y.T @ X).norm() ** 2 / ((X.T @ X).norm() * (Y.T @ Y).norm()))


def test_linear_cka_is_the_feature_space_formula_with_a_unit_diagonal():
    layers, x, output = _features()
    run = _run(layers, output, x)
    assert run.cka_names(3) == ["input", "h1", "h2", "h3", "output"]
    got = run.cka_matrix(3, sigma=None, sigma_rule=None)
    features = [x, *layers.values(), output]
    want = np.array([[_linear_cka(a, b) for b in features] for a in features])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all(got[~np.eye(5, dtype=bool)] < 0.999)  # distinct representations: below 1


@pytest.mark.parametrize(("sigma", "rule"), [(None, "median_d2"), (None, "median_d"), (2.0, "median_d2"), (3.0, None)])
def test_gaussian_cka_is_symmetric_with_a_unit_diagonal_and_in_zero_one(sigma, rule):
    layers, x, output = _features(1)
    got = _run(layers, output, x).cka_matrix(3, sigma=sigma, sigma_rule=rule)
    assert got.shape == (5, 5)
    np.testing.assert_allclose(np.diag(got), 1.0)
    np.testing.assert_allclose(got, got.T)
    assert np.all((got > 0) & (got <= 1 + 1e-12))
    linear = _run(layers, output, x).cka_matrix(3, sigma=None, sigma_rule=None)
    assert np.abs(got - linear).max() > 1e-3  # a kernel of its own, not the linear one


def test_linear_cka_is_invariant_to_orthogonal_maps_isotropic_scaling_and_translation():
    layers, x, output = _features(2)
    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    moved = dict(layers)
    moved["h1"] = (2.5 * layers["h1"].double() @ q + torch.randn(30, generator=g, dtype=torch.float64)).float()
    before = _run(layers, output, x).cka_matrix(3, sigma=None, sigma_rule=None)
    after = _run(moved, output, x).cka_matrix(3, sigma=None, sigma_rule=None)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    both = _run({"h1": layers["h1"], "h1_moved": moved["h1"]}, output, x)
    assert both.cka_matrix(3, sigma=None, sigma_rule=None)[1, 2] == pytest.approx(1.0, abs=1e-5)
    # not invariant to a non-isotropic scaling: the test can tell
    squashed = dict(layers)
    squashed["h1"] = layers["h1"] * torch.linspace(0.01, 3, 30)
    changed = _run(squashed, output, x).cka_matrix(3, sigma=None, sigma_rule=None)
    assert np.abs(changed - before).max() > 1e-2


def test_an_output_equal_to_the_last_layer_appears_once():
    layers, x, _ = _features(3)
    run = _run(layers, layers["h3"].clone(), x)
    assert run.cka_names(3) == ["input", "h1", "h2", "h3"]
    assert run.cka_matrix(3).shape == (4, 4)


def test_an_epoch_without_a_snapshot_is_refused():
    layers, x, output = _features()
    with pytest.raises(ValueError, match=r"epoch 4 has no snapshot; recorded epochs: \[3\]"):
        _run(layers, output, x).cka_matrix(4)


def test_cka_pairs_is_cka_of_every_pair():
    layers, x, output = _features(4)
    Ks = torch.stack([kernels.gaussian(kernels.gram(a), 2.0) for a in [x, *layers.values(), output]]).double()
    got = estimators.cka_pairs(Ks)
    for i in range(len(Ks)):
        for j in range(len(Ks)):
            assert float(got[i, j]) == pytest.approx(float(estimators.cka(Ks[i], Ks[j])), rel=1e-12, abs=1e-15)
    assert float(estimators.cka_pairs(torch.ones(2, M, M, dtype=torch.float64))[0, 1]) == 0.0  # constant: 0
    with pytest.raises(ValueError, match=r"\(n, m, m\)"):
        estimators.cka_pairs(torch.ones(M, M))
