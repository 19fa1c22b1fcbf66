"""Gram matrices, distances, kernels and sigma rules, checked against direct numpy computations in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ibwidget.measure import kernels

FAST = settings(max_examples=40, deadline=None)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _np_sq_dist(Z: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances from the differences themselves (no Gram-matrix trick)."""
    Z = Z.reshape(Z.shape[0], -1)
    diff = Z[:, None, :] - Z[None, :, :]
    return (diff**2).sum(-1)


def _upper(A: np.ndarray) -> np.ndarray:
    return A[np.triu_indices(A.shape[0], k=1)]


# ------------------------------------------------------------------------------------------------ gram


def test_gram_flattens_and_equals_z_zt(device):
    Z = _rng(1).normal(size=(7, 3, 4, 2))
    G = kernels.gram(torch.from_numpy(Z).to(device))
    Zf = Z.reshape(7, -1)
    assert G.shape == (7, 7)
    assert G.device.type == device.type
    np.testing.assert_allclose(G.cpu().numpy(), Zf @ Zf.T, rtol=1e-12, atol=1e-12)
    assert torch.equal(G, G.T)  # exactly symmetric


def test_gram_of_vector_treats_each_entry_as_a_sample():
    z = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(kernels.gram(z).numpy(), np.outer(z, z))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_functions_keep_dtype(dtype):
    Z = torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    G = kernels.gram(Z)
    assert G.dtype == dtype
    assert kernels.sq_distances(G).dtype == dtype
    assert kernels.linear(G).dtype == dtype
    assert kernels.gaussian(G, 2.0).dtype == dtype
    assert kernels.sigma_median(G).dtype == dtype
    assert kernels.saturation(kernels.gaussian(G, 2.0)).dtype == dtype
    assert kernels.saturation(kernels.gaussian(G, 2.0)).shape == ()


def test_numpy_input_gives_the_same_tensor():
    Z = _rng(2).normal(size=(6, 4))
    G_np = kernels.gram(Z)
    G_t = kernels.gram(torch.from_numpy(Z))
    assert isinstance(G_np, torch.Tensor)
    assert torch.equal(G_np, G_t)
    assert torch.equal(kernels.gaussian(G_np.numpy(), 1.5), kernels.gaussian(G_t, 1.5))


# ------------------------------------------------------------------------------------------- distances


def test_sq_distances_match_direct_differences(device):
    Z = _rng(3).normal(size=(12, 9)) * 3.0
    D = kernels.sq_distances(kernels.gram(torch.from_numpy(Z).to(device))).cpu().numpy()
    ref = _np_sq_dist(Z)
    np.testing.assert_allclose(D, ref, rtol=1e-10, atol=1e-10 * ref.max())
    cd = torch.cdist(torch.from_numpy(Z), torch.from_numpy(Z)).numpy() ** 2
    np.testing.assert_allclose(D, cd, rtol=1e-8, atol=1e-8 * ref.max())


def test_sq_distances_clamped_non_negative_with_exact_zero_diagonal():
    # a large common offset makes G_ii + G_jj - 2 G_ij cancel badly; duplicates have true distance 0
    rng = _rng(1)
    Z = 1e4 + 1e-3 * rng.normal(size=(10, 6))
    Z[5] = Z[2]
    Z[7] = Z[2]
    G32 = kernels.gram(torch.from_numpy(Z).float())
    raw = torch.diagonal(G32)[:, None] + torch.diagonal(G32)[None, :] - 2 * G32
    assert bool((raw < 0).any())  # the unclamped formula does go negative here
    for dtype in (torch.float32, torch.float64):
        D = kernels.sq_distances(kernels.gram(torch.from_numpy(Z).to(dtype)))
        assert bool((D >= 0).all())
        assert bool((torch.diagonal(D) == 0).all())
        assert torch.equal(D, D.T)


def test_linear_kernel_is_the_gram_matrix():
    G = kernels.gram(_rng(5).normal(size=(5, 3)))
    assert torch.equal(kernels.linear(G), G)


# -------------------------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("sigma", [0.3, 1.0, 5.0, 40.0])
def test_gaussian_matches_definition(sigma, device):
    Z = _rng(6).normal(size=(11, 4)) * 2.0
    K = kernels.gaussian(kernels.gram(torch.from_numpy(Z).to(device)), sigma)
    ref = np.exp(-_np_sq_dist(Z) / (2.0 * sigma**2))
    np.testing.assert_allclose(K.cpu().numpy(), ref, rtol=1e-10, atol=1e-300)
    assert bool((torch.diagonal(K) == 1).all())


def test_gaussian_int_sigma_equals_float_sigma():
    G = kernels.gram(_rng(7).normal(size=(6, 3)))
    assert torch.equal(kernels.gaussian(G, 2), kernels.gaussian(G, 2.0))


@pytest.mark.parametrize("as_numpy", [False, True])
def test_gaussian_batched_sigma_one_width_per_matrix(as_numpy, device):
    Z = torch.from_numpy(_rng(8).normal(size=(3, 9, 4))).to(device)
    G = Z @ Z.transpose(-1, -2)
    widths = [0.5, 2.0, 7.0]
    sigma = np.array(widths) if as_numpy else torch.tensor(widths, device=device)
    K = kernels.gaussian(G, sigma)
    assert K.shape == (3, 9, 9)
    for b, s in enumerate(widths):
        ref = np.exp(-_np_sq_dist(Z[b].cpu().numpy()) / (2 * s * s))
        np.testing.assert_allclose(K[b].cpu().numpy(), ref, rtol=1e-10, atol=1e-300)


def test_gaussian_batched_scalar_sigma_equals_loop():
    Z = torch.from_numpy(_rng(9).normal(size=(4, 8, 3)))
    G = Z @ Z.transpose(-1, -2)
    K = kernels.gaussian(G, 1.3)
    for b in range(4):
        torch.testing.assert_close(K[b], kernels.gaussian(G[b], 1.3), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ sigma rules


def test_sigma_rule_fixed_returns_sigma():
    G = kernels.gram(_rng(10).normal(size=(6, 3)))
    assert kernels.sigma_from_rule(G, "fixed", sigma=5.0) == 5.0
    assert kernels.sigma_from_rule(G, "fixed", sigma=0.25) == 0.25


@pytest.mark.parametrize("d", [1, 10, 784])
def test_sigma_rule_sqrt_d(d):
    G = kernels.gram(_rng(11).normal(size=(6, 3)))
    assert kernels.sigma_from_rule(G, "sqrt_d", sigma=5.0, dim=d) == pytest.approx(5.0 * math.sqrt(d), rel=1e-15)


@pytest.mark.parametrize("m", [4, 5, 6, 9])  # 6, 10, 15, 36 pairs: even and odd counts
def test_sigma_median_rules_match_numpy(m, device):
    Z = _rng(12 + m).normal(size=(m, 5)) * 1.7
    G = kernels.gram(torch.from_numpy(Z).to(device))
    d2 = _upper(_np_sq_dist(Z))
    s_d2 = kernels.sigma_median(G, "median_d2")
    s_d = kernels.sigma_median(G, "median_d")
    assert s_d2.shape == ()
    assert float(s_d2) == pytest.approx(math.sqrt(np.median(d2)), rel=1e-10)
    assert float(s_d) == pytest.approx(np.median(np.sqrt(d2)), rel=1e-10)
    assert float(kernels.sigma_from_rule(G, "median_d2", sigma=123.0)) == pytest.approx(float(s_d2), rel=1e-15)
    assert float(kernels.sigma_from_rule(G, "median_d", sigma=123.0)) == pytest.approx(float(s_d), rel=1e-15)


def test_sigma_median_rules_differ_when_pair_count_is_even():
    # 4 points -> 6 pairs: median_d2 = sqrt(mean of middle D2), median_d = mean of middle sqrt(D2)
    Z = np.array([[0.0], [1.0], [3.0], [7.0]])
    G = kernels.gram(Z)
    d2 = np.sort(_upper(_np_sq_dist(Z)))  # 1, 4, 9, 16, 36, 49
    assert float(kernels.sigma_median(G, "median_d2")) == pytest.approx(math.sqrt((d2[2] + d2[3]) / 2))
    assert float(kernels.sigma_median(G, "median_d")) == pytest.approx((math.sqrt(d2[2]) + math.sqrt(d2[3])) / 2)


def test_sigma_median_batched_equals_loop():
    Z = torch.from_numpy(_rng(20).normal(size=(3, 7, 4)))
    G = Z @ Z.transpose(-1, -2)
    for rule in ("median_d2", "median_d"):
        s = kernels.sigma_median(G, rule)
        assert s.shape == (3,)
        for b in range(3):
            torch.testing.assert_close(s[b], kernels.sigma_median(G[b], rule), rtol=1e-12, atol=0)
        # the batched sigma feeds straight into the batched kernel
        K = kernels.gaussian(G, s)
        for b in range(3):
            torch.testing.assert_close(K[b], kernels.gaussian(G[b], float(s[b])), rtol=1e-12, atol=0)


def test_median_d2_puts_median_kernel_value_at_exp_minus_half():
    Z = _rng(21).normal(size=(10, 4))  # 45 pairs: an odd count, so the median is one of the pairs
    G = kernels.gram(Z)
    K = kernels.gaussian(G, kernels.sigma_median(G, "median_d2"))
    assert np.median(_upper(K.numpy())) == pytest.approx(math.exp(-0.5), rel=1e-10)


# ------------------------------------------------------------------------------------------- saturation


def test_saturation_is_mean_off_diagonal_value():
    Z = _rng(22).normal(size=(10, 3))
    K = kernels.gaussian(kernels.gram(Z), 1.2).numpy()
    ref = (K.sum() - np.trace(K)) / (10 * 9)
    assert float(kernels.saturation(K)) == pytest.approx(ref, rel=1e-12)
    assert 0.05 < ref < 0.95


def test_saturation_gauge_limits():
    Z = _rng(23).normal(size=(16, 5))
    G = kernels.gram(Z)
    scale = math.sqrt(np.median(_upper(_np_sq_dist(Z))))
    assert float(kernels.saturation(kernels.gaussian(G, 1e4 * scale))) == pytest.approx(1.0, abs=1e-6)
    assert float(kernels.saturation(kernels.gaussian(G, 1e-3 * scale))) == pytest.approx(0.0, abs=1e-12)


def test_saturation_batched():
    Z = torch.from_numpy(_rng(24).normal(size=(2, 6, 3)))
    K = kernels.gaussian(Z @ Z.transpose(-1, -2), 1.0)
    s = kernels.saturation(K)
    assert s.shape == (2,)
    for b in range(2):
        assert float(s[b]) == pytest.approx(float(kernels.saturation(K[b])), rel=1e-14)


# --------------------------------------------------------------------------------------------- labels


def test_one_hot_matches_identity_rows():
    labels = np.array([2, 0, 1, 2, 4])
    Y = kernels.one_hot(labels)
    assert Y.dtype == torch.float32
    np.testing.assert_array_equal(Y.numpy(), np.eye(5)[labels])
    Y7 = kernels.one_hot(torch.tensor(labels), num_classes=7, dtype=torch.float64)
    assert Y7.shape == (5, 7) and Y7.dtype == torch.float64
    np.testing.assert_array_equal(Y7.numpy(), np.eye(7)[labels])


def test_label_kernel_is_same_class_indicator():
    labels = np.array([0, 3, 1, 0, 3, 3, 2])
    L = kernels.label_kernel(labels, dtype=torch.float64)
    assert L.dtype == torch.float64
    np.testing.assert_array_equal(L.numpy(), (labels[:, None] == labels[None, :]).astype(float))
    # it is the linear kernel of the one-hot matrix
    assert torch.equal(L, kernels.gram(kernels.one_hot(labels, dtype=torch.float64)))


# ------------------------------------------------------------------------------------------ properties


@st.composite
def _points(draw, max_m: int = 12, max_d: int = 5):
    m = draw(st.integers(2, max_m))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    log_scale = draw(st.floats(-2.0, 2.0))
    Z = np.random.default_rng(seed).normal(size=(m, d)) * 10.0**log_scale
    if draw(st.booleans()):  # repeated points: zero distances off the diagonal
        Z[m // 2] = Z[0]
    return Z


@FAST
@given(_points(), st.floats(0.05, 50.0))
def test_property_distances_and_gaussian_kernel(Z, sigma_rel):
    G = kernels.gram(Z)
    D = kernels.sq_distances(G)
    ref = _np_sq_dist(Z)
    scale = float((Z**2).sum(1).max())
    assert bool((D >= 0).all()) and bool((torch.diagonal(D) == 0).all())
    np.testing.assert_allclose(D.numpy(), ref, rtol=0, atol=1e-12 * scale + 1e-300)
    sigma = sigma_rel * math.sqrt(scale)
    K = kernels.gaussian(G, sigma)
    assert torch.equal(K, K.T)
    assert bool((K >= 0).all()) and bool((K <= 1).all()) and bool((torch.diagonal(K) == 1).all())
    eig = np.linalg.eigvalsh(K.numpy())
    assert eig.min() >= -1e-10 * eig.max()  # positive semi-definite
    sat = float(kernels.saturation(K))
    assert 0.0 <= sat <= 1.0
