"""The chance floor of the information plane (Run.null_band): permutation nulls against their known values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibwidget.measure import kernels
from ibwidget.measure._packed import unpack
from ibwidget.measure.trajectories import null_samples
from ibwidget.record.run import Run

C = 4


def _run(m: int, epochs: int, widths: dict[str, int], make, seed: int = 0, x_dim: int = 5, labels=None) -> Run:
    """A run whose layer ``name`` at each epoch holds ``make(name, width, generator, labels)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, x_dim, generator=g)
    y = torch.arange(m) % C if labels is None else labels
    run = Run("null", list(widths), list(widths.values()), x, y, num_classes=C, capacity=epochs)
    for e in range(epochs):
        acts = {n: make(n, w, g, y) for n, w in widths.items()}
        run.add_snapshot(e, {n: kernels.gram(a) for n, a in acts.items()}, torch.randn(m, C, generator=g))
    return run


def _independent(name, width, g, labels):
    return torch.randn(len(labels), width, generator=g)


def test_independent_layers_lie_inside_the_band_at_about_its_level():
    run = _run(48, 40, {"a": 6, "b": 20, "c": 40}, _independent)
    for estimator, sigma in (("hsic", 3.0), ("cka", 3.0)):
        est = run.trajectories(estimator, sigma=sigma)
        band = run.null_band(estimator, sigma=sigma, q=0.9, permutations=60, seed=1)
        assert band.shape == est.shape == (40, 3, 2)
        inside = (est < band).mean(axis=(0, 1))  # per axis: X, then Y
        assert np.all((inside > 0.8) & (inside < 0.97)), (estimator, inside)


def test_a_layer_that_carries_the_labels_is_above_the_band_at_every_epoch():
    def carries(name, width, g, labels):
        return torch.nn.functional.one_hot(labels, C).float() @ torch.randn(C, width, generator=g) + 0.3 * torch.randn(
            len(labels), width, generator=g
        )

    run = _run(48, 5, {"t": 12}, carries)
    est = run.trajectories("hsic", sigma=3.0)
    band = run.null_band("hsic", sigma=3.0, q=0.99, permutations=100)
    assert np.all(est[:, :, 1] > band[:, :, 1])  # Y: far above chance
    assert np.all(est[:, :, 1] > 3 * band[:, :, 1])


def _mean_offdiagonal(K: torch.Tensor) -> float:
    m = K.shape[0]
    return float((K.sum() - K.diagonal().sum()) / (m * (m - 1)))


def test_the_biased_hsic_permutation_mean_is_exact():
    """Over the permutations of one probe, E tr(K H P L P^T H) / (m-1)^2 = (1 - k_bar)(1 - l_bar) / (m-1): a 1/m^2
    normaliser would read 6% lower at m = 32, a 1/(m(m-1)) one 3%."""
    m, sigma = 32, 2.0
    run = _run(m, 1, {"t": 6}, _independent, seed=3)
    samples = run.snapshots()

    null = null_samples(samples, "hsic", sigma=sigma, permutations=3000, seed=2)
    dist, _ = samples.distances()
    K = torch.exp(-unpack(dist[0, 0].double(), m) / (2 * sigma**2))
    X = torch.exp(-kernels.sq_distances(kernels.gram(run.probe_x)) / (2 * sigma**2))
    L = kernels.label_kernel(run.probe_labels, C)
    k_bar, x_bar, l_bar = _mean_offdiagonal(K.double()), _mean_offdiagonal(X.double()), _mean_offdiagonal(L.double())
    want_y = (1 - k_bar) * (1 - l_bar) / (m - 1)
    want_x = (1 - k_bar) * (1 - x_bar) / (m - 1)
    assert null[:, 0, 0, 1].mean() == pytest.approx(want_y, rel=0.02)
    assert null[:, 0, 0, 0].mean() == pytest.approx(want_x, rel=0.02)


def test_the_biased_hsic_null_mean_matches_gretton_et_al_2008():
    """Gaussian data: E k = (1 + 2 s^2 / sigma^2)^(-d/2) for x, x' ~ N(0, s^2 I_d); labels uniform over C classes:
    E l = 1/C. Gretton et al.'s null mean, 1/m^2 normaliser: (1 - E k)(1 - E l) / m; ours is m^2/(m-1)^2 that."""
    m, d, s, sigma, epochs = 64, 4, 1.0, 2.0, 20
    g = torch.Generator().manual_seed(11)
    labels = torch.randint(0, C, (m,), generator=g)
    run = _run(m, epochs, {"t": d}, lambda n, w, gen, y: s * torch.randn(m, w, generator=gen), seed=5, labels=labels)
    null = null_samples(run.snapshots(), "hsic", sigma=sigma, permutations=200, seed=4)
    e_k = (1 + 2 * s**2 / sigma**2) ** (-d / 2)
    gretton = (1 - e_k) * (1 - 1 / C) / m
    assert null[..., 1].mean() * (m - 1) ** 2 / m**2 == pytest.approx(gretton, rel=0.06)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"q": 1.0}, "strictly between 0 and 1"), ({"permutations": 0}, ">= 1")]
)
def test_bad_band_arguments_are_refused(kwargs, message):
    run = _run(16, 1, {"t": 3}, _independent)
    with pytest.raises(ValueError, match=message):
        run.null_band(**kwargs)
