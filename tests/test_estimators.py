"""Estimators against the identities of DESIGN.md §3.4 and against independent numpy implementations (float64).

Our "biased" HSIC normaliser is 1/(m-1)^2; identities stated for the 1/m^2 normaliser are converted explicitly.
"""

from __future__ import annotations

import doctest
import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ibwidget.measure import estimators, kernels
from ibwidget.measure.estimators import binning_mi, cka, hsic, kde_mi, nhsic, renyi_entropy, renyi_mi

FAST = settings(max_examples=40, deadline=None)
NORMALIZERS = ("biased", "unbiased", "pyglow")
LN2 = math.log(2.0)

# ------------------------------------------------------------------------------ independent references


def _H(m: int) -> np.ndarray:
    return np.eye(m) - np.ones((m, m)) / m


def np_sq_dist(Z: np.ndarray) -> np.ndarray:
    diff = Z[:, None, :] - Z[None, :, :]
    return (diff**2).sum(-1)


def np_linear(Z: np.ndarray) -> np.ndarray:
    return Z @ Z.T


def np_gaussian(Z: np.ndarray, sigma: float | None = None, factor: float = 1.0) -> np.ndarray:
    """Gaussian kernel; ``sigma`` defaults to ``factor`` times the median off-diagonal distance."""
    D = np_sq_dist(Z)
    if sigma is None:
        sigma = factor * math.sqrt(np.median(D[np.triu_indices(len(Z), 1)]))
    return np.exp(-D / (2.0 * sigma**2))


def np_label_kernel(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == labels[None, :]).astype(np.float64)


def np_hsic_trace(K: np.ndarray, L: np.ndarray) -> float:
    """tr(K H L H) with an explicit centering matrix."""
    H = _H(len(K))
    return float(np.trace(K @ H @ L @ H))


def np_hsic_biased(K, L) -> float:
    return np_hsic_trace(K, L) / (len(K) - 1) ** 2


def np_hsic_song_eq5(K: np.ndarray, L: np.ndarray) -> float:
    """Song, Smola, Gretton, Bedo & Borgwardt 2012, JMLR 13, eq. (5), written out term by term."""
    m = len(K)
    Kt, Lt = K.copy(), L.copy()
    for i in range(m):
        Kt[i, i] = 0.0
        Lt[i, i] = 0.0
    one = np.ones(m)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((m - 1) * (m - 2))
    term3 = 2.0 / (m - 2) * (one @ Kt @ Lt @ one)
    return float((term1 + term2 - term3) / (m * (m - 3)))


def np_hsic_ustat(K: np.ndarray, L: np.ndarray) -> float:
    """The U-statistic of Song et al. 2012, Theorem 2: mean over ordered distinct (i, j, q, r) of
    ``K_ij L_ij + K_ij L_qr - 2 K_ij L_iq`` (an unbiased estimate of E[kl] + E[k]E[l] - 2E[k l'])."""
    m = len(K)
    total, n = 0.0, 0
    for i, j, q, r in itertools.permutations(range(m), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2.0 * K[i, j] * L[i, q]
        n += 1
    return total / n


def np_cka(K, L) -> float:
    return np_hsic_trace(K, L) / math.sqrt(np_hsic_trace(K, K) * np_hsic_trace(L, L))


def np_nhsic(K, L, eps) -> float:
    m = len(K)
    H = _H(m)
    Kc, Lc = H @ K @ H, H @ L @ H
    R = eps * m * np.eye(m)
    return float(np.trace(Kc @ np.linalg.inv(Kc + R) @ Lc @ np.linalg.inv(Lc + R)))


def np_renyi(K: np.ndarray, alpha: float) -> float:
    lam = np.clip(np.linalg.eigvalsh(K / np.trace(K)), 0.0, None)
    if alpha == 1.0:
        lam = lam[lam > 0]
        return float(-(lam * np.log2(lam)).sum())
    return float(np.log2((lam**alpha).sum()) / (1.0 - alpha))


def np_renyi_mi(K, L, alpha) -> float:
    AB = K * L
    return np_renyi(K, alpha) + np_renyi(L, alpha) - np_renyi(AB, alpha)


def plugin_renyi(labels, alpha: float) -> float:
    p = np.array(list(Counter(np.asarray(labels).tolist()).values()), dtype=np.float64)
    p /= p.sum()
    if alpha == 1.0:
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p**alpha).sum()) / (1.0 - alpha))


def np_kde(D: np.ndarray, var: float, labels=None) -> float:
    """Kolchinsky & Tracey pairwise estimate, loop by loop (bits)."""
    m = len(D)

    def neg_mean_log_mean(idx):
        vals = []
        for i in idx:
            s = sum(math.exp(-D[i, j] / (2.0 * var)) for j in idx)
            vals.append(-math.log(s / len(idx)))
        return sum(vals) / len(vals)

    full = neg_mean_log_mean(range(m))
    if labels is None:
        return full / LN2
    within = 0.0
    for c in np.unique(labels):
        idx = list(np.flatnonzero(labels == c))
        within += len(idx) / m * neg_mean_log_mean(idx)
    return (full - within) / LN2


def np_bin_codes(T: np.ndarray, bins: int) -> list[tuple]:
    T = T.reshape(len(T), -1)
    lo, hi = T.min(), T.max()
    width = (hi - lo) / bins
    idx = np.zeros_like(T, dtype=np.int64) if width == 0 else np.clip(np.floor((T - lo) / width), 0, bins - 1)
    return [tuple(row) for row in idx.astype(np.int64)]


def np_entropy(values) -> float:
    counts = np.array(list(Counter(values).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _data(m: int, dx: int = 4, dy: int = 3, seed: int = 0, noise: float = 0.5):
    """X and a nonlinear, noisy function Y of X: dependent, with distinct rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, dx))
    W = rng.normal(size=(dx, dy))
    Y = np.tanh(X @ W) + noise * rng.normal(size=(m, dy))
    return X, Y


def _f(x) -> float:
    return float(x)


# ------------------------------------------------------------------------------------------ HSIC forms


def test_linear_hsic_is_squared_frobenius_norm_of_cross_covariance():
    X, Y = _data(64, dx=5, dy=3, seed=1)
    cov = np.cov(np.hstack([X, Y]), rowvar=False)  # 1/(m-1) normalised, numpy's own centering
    sigma_xy = cov[:5, 5:]
    expected = (sigma_xy**2).sum()
    assert _f(hsic(np_linear(X), np_linear(Y))) == pytest.approx(expected, rel=1e-10)
    assert _f(hsic(np_linear(X), np_linear(Y), "pyglow")) == pytest.approx(63 * expected, rel=1e-10)


@pytest.mark.parametrize("kind", ["linear", "gaussian"])
@pytest.mark.parametrize("m", [5, 16, 64])
def test_biased_and_pyglow_normalisers(kind, m):
    X, Y = _data(m, seed=m)
    K, L = (np_linear(X), np_linear(Y)) if kind == "linear" else (np_gaussian(X), np_gaussian(Y))
    tr = np_hsic_trace(K, L)
    assert _f(hsic(K, L)) == pytest.approx(tr / (m - 1) ** 2, rel=1e-10)
    assert _f(hsic(K, L, normalizer="biased")) == pytest.approx(tr / (m - 1) ** 2, rel=1e-10)
    assert _f(hsic(K, L, normalizer="pyglow")) == pytest.approx(tr / (m - 1), rel=1e-10)


@pytest.mark.parametrize("C, per_class", [(2, 8), (3, 5), (10, 7)])
def test_one_hot_balanced_classes(C, per_class):
    labels = np.random.default_rng(C).permutation(np.repeat(np.arange(C), per_class))
    m = len(labels)
    L = np_label_kernel(labels)
    biased_over_m2 = _f(hsic(L, L)) * (m - 1) ** 2 / m**2  # tr(LHLH)/m^2
    assert biased_over_m2 == pytest.approx((C - 1) / C**2, rel=1e-12)
    # the same from the library's own label kernel
    Lk = kernels.label_kernel(labels, dtype=torch.float64)
    assert _f(hsic(Lk, Lk)) * (m - 1) ** 2 / m**2 == pytest.approx((C - 1) / C**2, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 5.0])
def test_gaussian_label_kernel_scales_hsic_and_keeps_cka(sigma):
    labels = np.random.default_rng(3).integers(0, 4, size=24)
    labels[:4] = np.arange(4)
    Yoh = np.eye(4)[labels]
    KY = np.exp(-np_sq_dist(Yoh) / (2 * sigma**2))  # numpy, from the one-hot vectors
    L = np_label_kernel(labels)
    X, _ = _data(24, seed=4)
    X = X + labels[:, None]  # make X depend on the labels
    KX = np_gaussian(X)
    factor = 1.0 - math.exp(-1.0 / sigma**2)
    for n in NORMALIZERS:
        assert _f(hsic(KX, KY, n)) == pytest.approx(factor * _f(hsic(KX, L, n)), rel=1e-9)
    for debiased in (False, True):
        assert _f(cka(KX, KY, debiased)) == pytest.approx(_f(cka(KX, L, debiased)), rel=1e-9)
    # and through the library's own kernel path
    KY_lib = kernels.gaussian(kernels.gram(torch.from_numpy(Yoh)), sigma)
    assert _f(hsic(KX, KY_lib)) == pytest.approx(factor * _f(hsic(KX, L)), rel=1e-9)


@pytest.mark.parametrize("m", [4, 5, 8])
def test_unbiased_hsic_equals_song_eq5_and_the_u_statistic(m):
    X, Y = _data(m, seed=10 + m)
    for K, L in [(np_gaussian(X), np_gaussian(Y)), (np_linear(X), np_linear(Y)), (np_linear(X), np_gaussian(Y))]:
        ours = _f(hsic(K, L, "unbiased"))
        eq5 = np_hsic_song_eq5(K, L)
        assert ours == pytest.approx(eq5, rel=1e-10, abs=1e-13)
        assert ours == pytest.approx(np_hsic_ustat(K, L), rel=1e-10, abs=1e-13)


def test_unbiased_hsic_ignores_the_diagonal_and_constant_shifts():
    X, Y = _data(12, seed=5)
    K, L = np_gaussian(X), np_gaussian(Y)
    base = _f(hsic(K, L, "unbiased"))
    assert _f(hsic(K + np.diag(np.arange(12.0)), L, "unbiased")) == pytest.approx(base, rel=1e-10)
    assert _f(hsic(K + 3.0, L, "unbiased")) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("m", [16, 32])
def test_independent_variables_unbiased_mean_zero_biased_positive_bias(m):
    """For iid samples and unit-diagonal kernels, E[tr(KHLH)] = (m-1)(1-mu_x)(1-mu_y) exactly, with
    mu = E k(x, x'): the biased estimate (1/(m-1)^2) has mean (1-mu_x)(1-mu_y)/(m-1), the unbiased one 0."""
    N, dx, dy, s, sig = 3000, 3, 2, 1.0, 1.5
    g = torch.Generator().manual_seed(m)
    X = torch.randn(N, m, dx, generator=g, dtype=torch.float64) * s
    Y = torch.randn(N, m, dy, generator=g, dtype=torch.float64)
    K = kernels.gaussian(X @ X.transpose(-1, -2), sig)
    L = kernels.gaussian(Y @ Y.transpose(-1, -2), sig)
    b, u = hsic(K, L, "biased").numpy(), hsic(K, L, "unbiased").numpy()
    mu_x = (1 + 2 * s**2 / sig**2) ** (-dx / 2)  # x - x' ~ N(0, 2 s^2 I)
    mu_y = (1 + 2 / sig**2) ** (-dy / 2)
    expected_b = (1 - mu_x) * (1 - mu_y) / (m - 1)
    se_b, se_u = b.std(ddof=1) / math.sqrt(N), u.std(ddof=1) / math.sqrt(N)
    assert abs(u.mean()) < 4.5 * se_u, (u.mean(), se_u)
    assert abs(b.mean() - expected_b) < 4.5 * se_b, (b.mean(), expected_b, se_b)
    assert expected_b > 20 * se_b  # the bias is real and resolved, of order 1/m
    assert b.mean() - u.mean() > 20 * se_b


# --------------------------------------------------------------------------------------------------- CKA


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_kernel_with_itself_is_one(debiased):
    X, _ = _data(20, seed=6)
    labels = np.arange(20) % 3
    for K in (np_linear(X), np_gaussian(X), np_label_kernel(labels)):
        assert _f(cka(K, K, debiased)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_constant_representation_is_zero_not_nan(debiased):
    X, _ = _data(10, seed=28)
    const = np.full((10, 10), 4.0)  # Gram of identical points: no variance on the probe
    for v in (cka(const, np_gaussian(X), debiased), cka(np_gaussian(X), const, debiased)):
        assert _f(v) == 0.0
    batched = cka(np.stack([const, np_gaussian(X)]), np.stack([np_gaussian(X)] * 2), debiased)
    assert _f(batched[0]) == 0.0 and _f(batched[1]) == pytest.approx(1.0, rel=1e-12)


def test_cka_equals_its_definition():
    X, Y = _data(30, seed=7)
    for K, L in [(np_linear(X), np_linear(Y)), (np_gaussian(X), np_gaussian(Y))]:
        assert _f(cka(K, L)) == pytest.approx(np_cka(K, L), rel=1e-10)


def test_debiased_cka_uses_unbiased_hsic():
    X, Y = _data(15, seed=8)
    K, L = np_gaussian(X), np_gaussian(Y)
    expected = np_hsic_song_eq5(K, L) / math.sqrt(np_hsic_song_eq5(K, K) * np_hsic_song_eq5(L, L))
    got = _f(cka(K, L, debiased=True))
    assert got == pytest.approx(expected, rel=1e-10)
    assert abs(got - _f(cka(K, L))) > 1e-3  # it is a different number from the biased CKA


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    Q, R = np.linalg.qr(rng.normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


def test_linear_cka_invariances_and_a_general_linear_map_breaks_it():
    rng = np.random.default_rng(9)
    X, Y = _data(40, dx=5, dy=4, seed=9)
    base = _f(cka(np_linear(X), np_linear(Y)))
    Q = _random_orthogonal(5, rng)
    for Xt in (X @ Q, 3.7 * X, X + rng.normal(size=(1, 5)) * 10.0, 0.01 * (X @ Q) - 4.0):
        assert _f(cka(np_linear(Xt), np_linear(Y))) == pytest.approx(base, rel=1e-9)
        assert _f(cka(np_linear(Y), np_linear(Xt))) == pytest.approx(base, rel=1e-9)
    A = np.diag([10.0, 1.0, 1.0, 0.3, 0.1]) @ Q  # invertible, not a multiple of an orthogonal map
    assert abs(_f(cka(np_linear(X @ A), np_linear(Y))) - base) > 0.01


def test_small_sigma_limit():
    X, Y = _data(17, seed=11)
    m = 17
    dmin = math.sqrt(min(np_sq_dist(Z)[np.triu_indices(m, 1)].min() for Z in (X, Y)))
    sigma = 1e-3 * dmin
    KX = kernels.gaussian(kernels.gram(X), sigma)
    KY = kernels.gaussian(kernels.gram(Y), sigma)
    np.testing.assert_allclose(KX.numpy(), np.eye(m), rtol=0, atol=1e-300)
    biased = _f(hsic(KX, KX))
    assert biased * (m - 1) ** 2 / m**2 == pytest.approx((m - 1) / m**2, rel=1e-12)
    assert _f(hsic(KX, KY)) * (m - 1) ** 2 / m**2 == pytest.approx((m - 1) / m**2, rel=1e-12)
    assert _f(cka(KX, KY)) == pytest.approx(1.0, rel=1e-12)


def test_large_sigma_limit():
    """K = 1 - D/(2 s^2) + O(D^2/s^4) and HDH = -2 HGH, so H K H = H G H / s^2 + O(D^2/s^4):
    s^4 HSIC(K_s, L_s) -> HSIC(G_X, G_Y) and RBF CKA -> linear CKA, with relative error O(max D / s^2)."""
    X, Y = _data(32, seed=12)
    GX, GY = kernels.gram(X), kernels.gram(Y)
    lin_h, lin_c = _f(hsic(GX, GY)), _f(cka(GX, GY))
    dmax = max(float(kernels.sq_distances(G).max()) for G in (GX, GY))
    scale = math.sqrt(dmax)
    errs = []
    for s in (100 * scale, 1000 * scale):  # max D / s^2 = 1e-4, 1e-6
        KX, KY = kernels.gaussian(GX, s), kernels.gaussian(GY, s)
        h = _f(hsic(KX, KY))
        assert abs(h) < 1e-6 * lin_h  # HSIC -> 0
        errs.append(abs(h * s**4 / lin_h - 1))
        assert _f(cka(KX, KY)) == pytest.approx(lin_c, rel=1e-3 if s < 500 * scale else 1e-5)
    assert errs[1] < 1e-4
    assert errs[1] < errs[0] / 30  # converges like 1/s^2
    # at a moderate width the RBF CKA is a different number: the limit test is not vacuous
    med = kernels.sigma_median(GX)
    assert abs(_f(cka(kernels.gaussian(GX, med), kernels.gaussian(GY, med))) - lin_c) > 1e-3


# -------------------------------------------------------------------------------------------------- nHSIC


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 1e-1])
def test_nhsic_equals_definition_with_numpy_inverse(eps):
    X, Y = _data(16, seed=13)
    for K, L in [(np_gaussian(X), np_gaussian(Y)), (np_linear(X), np_gaussian(Y))]:
        assert _f(nhsic(K, L, eps=eps)) == pytest.approx(np_nhsic(K, L, eps), rel=1e-7)


def test_nhsic_default_eps_is_1e_minus_5():
    X, Y = _data(12, seed=14)
    K, L = np_gaussian(X), np_gaussian(Y)
    assert _f(nhsic(K, L)) == pytest.approx(np_nhsic(K, L, 1e-5), rel=1e-7)


# ------------------------------------------------------------------------------------------ Renyi entropy


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 2, 3.0])
def test_matrix_renyi_entropy_of_label_kernel_is_plugin_entropy(alpha):
    labels = np.random.default_rng(15).permutation(np.repeat(np.arange(5), [5, 3, 8, 1, 3]))
    L = np_label_kernel(labels)
    expected = plugin_renyi(labels, alpha)
    # for alpha < 1, rounding-level eigenvalues (~1e-16) of the rank-5 kernel contribute lambda^alpha ~ 1e-8
    rel = 1e-9 if alpha >= 1 else 1e-6
    assert _f(renyi_entropy(L, alpha=alpha)) == pytest.approx(expected, rel=rel)
    assert _f(renyi_entropy(kernels.label_kernel(labels), alpha=alpha)) == pytest.approx(expected, rel=1e-5)


def test_renyi_alpha_2_fast_path_equals_frobenius_and_eigen_formulas():
    X, _ = _data(20, seed=16)
    K = np_gaussian(X)
    A = K / np.trace(K)
    frob = -math.log2((A**2).sum())
    lam = np.linalg.eigvalsh(A)
    eig = -math.log2((lam**2).sum())
    s2 = _f(renyi_entropy(K, alpha=2))
    assert s2 == pytest.approx(frob, rel=1e-12)
    assert s2 == pytest.approx(eig, rel=1e-10)
    assert s2 == pytest.approx(_f(renyi_entropy(K, alpha=2.0000001)), rel=1e-6)  # the eigenvalue path
    assert 0.0 < s2 < math.log2(20)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 1.5, 3.0])
def test_renyi_entropy_equals_eigenvalue_formula(alpha):
    X, _ = _data(18, seed=17)
    K = np_gaussian(X)
    assert _f(renyi_entropy(K, alpha=alpha)) == pytest.approx(np_renyi(K, alpha), rel=1e-9)


def test_renyi_entropy_of_identity_is_log2_m():
    for alpha in (0.5, 1.01, 2.0):
        assert _f(renyi_entropy(np.eye(8), alpha)) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("alpha", [1.01, 2.0, 3.0])
def test_renyi_mi_equals_definition_and_label_identities(alpha):
    X, Y = _data(20, seed=18)
    K, L = np_gaussian(X), np_gaussian(Y)
    assert _f(renyi_mi(K, L, alpha)) == pytest.approx(np_renyi_mi(K, L, alpha), rel=1e-9)
    # kernels without a constant diagonal: the joint A∘B must be renormalised to unit trace
    KX, KY = np_linear(X), np_linear(Y)
    assert _f(renyi_mi(KX, KY, alpha)) == pytest.approx(np_renyi_mi(KX, KY, alpha), rel=1e-9)
    labels = np.arange(20) % 3
    labels[:5] = 0  # unbalanced: counts 9, 5, 6 -> not log2 3
    Lab = np_label_kernel(labels)
    H = plugin_renyi(labels, alpha)
    # distinct points (identity kernel) carry all the label information; so does the label kernel itself
    assert _f(renyi_mi(np.eye(20), Lab, alpha)) == pytest.approx(H, rel=1e-9)
    assert _f(renyi_mi(Lab, Lab, alpha)) == pytest.approx(H, rel=1e-9)


# ------------------------------------------------------------------------------------------------- KDE


@pytest.mark.parametrize("noise_var", [0.1, 1.0, 10.0])
def test_kde_equals_pairwise_formula(noise_var):
    X, _ = _data(14, seed=19)
    labels = np.arange(14) % 3
    D = np_sq_dist(X)
    assert _f(kde_mi(D, noise_var)) == pytest.approx(np_kde(D, noise_var), rel=1e-10)
    assert _f(kde_mi(D, noise_var, bound="lower")) == pytest.approx(np_kde(D, 4 * noise_var), rel=1e-10)
    assert _f(kde_mi(D, noise_var, labels=labels)) == pytest.approx(np_kde(D, noise_var, labels), rel=1e-9)
    assert _f(kde_mi(D, noise_var, labels=labels, bound="lower")) == pytest.approx(
        np_kde(D, 4 * noise_var, labels), rel=1e-9
    )


def test_kde_lower_is_upper_with_four_times_the_noise():
    X, _ = _data(20, seed=20)
    D = kernels.sq_distances(kernels.gram(X))
    labels = torch.arange(20) % 4
    for v in (0.05, 0.7, 3.0):
        assert _f(kde_mi(D, v, bound="lower")) == pytest.approx(_f(kde_mi(D, 4 * v)), rel=1e-13)
        assert _f(kde_mi(D, v, labels, bound="lower")) == pytest.approx(_f(kde_mi(D, 4 * v, labels)), rel=1e-12)


def test_kde_limits():
    m = 12
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    far = 1e6 * (1 - np.eye(m))
    assert _f(kde_mi(far, 1.0)) == pytest.approx(math.log2(m), rel=1e-12)
    assert _f(kde_mi(far, 1.0, labels)) == pytest.approx(plugin_renyi(labels, 1.0), rel=1e-12)
    same = np.zeros((m, m))
    assert _f(kde_mi(same, 1.0)) == pytest.approx(0.0, abs=1e-12)
    assert _f(kde_mi(same, 1.0, labels)) == pytest.approx(0.0, abs=1e-12)
    # classes far apart, each class collapsed to one point: I(T;X) = I(T;Y) = H(Y)
    clustered = far * (labels[:, None] != labels[None, :])
    assert _f(kde_mi(clustered, 1.0)) == pytest.approx(plugin_renyi(labels, 1.0), rel=1e-12)
    assert _f(kde_mi(clustered, 1.0, labels)) == pytest.approx(plugin_renyi(labels, 1.0), rel=1e-12)


# --------------------------------------------------------------------------------------------- binning


def test_binning_mi_with_distinct_inputs_is_entropy_of_bins():
    X, _ = _data(40, seed=21)
    T = np.tanh(X @ np.random.default_rng(21).normal(size=(4, 2)))
    for bins in (2, 4, 30):
        H_T = np_entropy(np_bin_codes(T, bins))
        assert _f(binning_mi(T, X, bins=bins)) == pytest.approx(H_T, rel=1e-12)
    assert np_entropy(np_bin_codes(T, 2)) < math.log2(40) - 0.5  # bins collide: H(T) is not trivially log2 m


def test_binning_mi_with_labels_matches_plugin_and_is_at_most_H_Y():
    rng = np.random.default_rng(22)
    labels = rng.integers(0, 4, size=50)
    T = labels[:, None] + rng.normal(size=(50, 2)) * 0.8
    codes = np_bin_codes(T, 6)
    joint = list(zip(codes, labels.tolist(), strict=True))
    expected = np_entropy(codes) + np_entropy(labels.tolist()) - np_entropy(joint)
    got = _f(binning_mi(T, labels, bins=6))
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0.0 < got <= np_entropy(labels.tolist()) + 1e-12


def _np_plugin_mi(codes_t: np.ndarray, z: np.ndarray) -> float:
    """Plug-in I(T; Z) in bits from per-sample bin patterns (m, d) and discrete z (m,), with Counter."""
    patterns = [tuple(row) for row in codes_t.tolist()]
    joint = list(zip(patterns, z.tolist(), strict=True))
    return np_entropy(patterns) + np_entropy(z.tolist()) - np_entropy(joint)


def test_binning_conventions_of_idnns_and_saxe():
    """IDNNs: np.digitize with edges linspace(-1, 1, 30); Saxe et al. 2018: floor(t / 0.07) with no range limit."""
    rng = np.random.default_rng(24)
    labels = rng.integers(0, 3, size=80)
    T = np.tanh(labels[:, None] * 0.6 + rng.normal(size=(80, 1)) * 0.5)  # one unit: bin patterns collide
    T[0, 0] = 1.0  # on the last edge: a bin of its own under np.digitize
    idnn = _f(estimators.get("binning_idnn")(T, labels))
    assert idnn == pytest.approx(_np_plugin_mi(np.digitize(T, np.linspace(-1, 1, 30)), labels), rel=1e-12)
    saxe = _f(estimators.get("binning_saxe")(T, labels))
    assert saxe == pytest.approx(_np_plugin_mi(np.floor(T / 0.07).astype(int), labels), rel=1e-12)
    entropies = {n: _f(estimators.get(n)(T, np.arange(80))) for n in ("binning", "binning_idnn", "binning_saxe")}
    assert len({round(h, 9) for h in entropies.values()}) == 3, entropies  # three different conventions
    wide = T * 40.0  # far outside [-1, 1]: Saxe's bins follow the values, IDNNs' edges put them in two end bins
    assert _f(estimators.get("binning_saxe")(wide, np.arange(80))) == pytest.approx(
        np_entropy([tuple(r) for r in np.floor(wide / 0.07).astype(int).tolist()]), rel=1e-12
    )
    assert _f(estimators.get("binning_idnn")(wide, np.arange(80))) == pytest.approx(
        np_entropy([tuple(r) for r in np.digitize(wide, np.linspace(-1, 1, 30)).tolist()]), rel=1e-12
    )


def test_binning_conventions_are_registered_and_say_which_in_their_labels():
    labels = {n: estimators.get(n).axis_label("T", "Y") for n in ("binning", "binning_idnn", "binning_saxe")}
    assert "range" in labels["binning"]
    assert "linspace(−1, 1, 30)" in labels["binning_idnn"]
    assert "0.07" in labels["binning_saxe"] and "Saxe" in labels["binning_saxe"]
    for name in labels:
        assert estimators.get(name).needs == "activations" and not estimators.get(name).uses_sigma
    with pytest.raises(ValueError, match="not both"):
        binning_mi(np.zeros((4, 1)), np.arange(4), edges=[0.0, 1.0], width=0.1)
    with pytest.raises(ValueError, match="increasing"):
        binning_mi(np.zeros((4, 1)), np.arange(4), edges=[1.0, 0.0])
    with pytest.raises(ValueError, match="positive bin width"):
        binning_mi(np.zeros((4, 1)), np.arange(4), width=0.0)


def test_binning_mi_of_a_function_of_the_labels():
    labels = np.random.default_rng(23).integers(0, 5, size=60)
    H_Y = np_entropy(labels.tolist())
    T_injective = np.stack([labels * 1.0, -2.0 * labels], 1)  # every class its own bin pattern
    assert _f(binning_mi(T_injective, labels)) == pytest.approx(H_Y, rel=1e-12)
    merged = labels // 2  # classes 0,1 and 2,3 share a value: I(T;Y) = H(f(Y)) < H(Y)
    H_f = np_entropy(merged.tolist())
    assert _f(binning_mi(merged[:, None] * 1.0, labels)) == pytest.approx(H_f, rel=1e-12)
    assert H_f < H_Y - 0.1


# --------------------------------------------------------------------------------------- shapes, dtypes


def _all_estimators(K, L, D, labels):
    return {
        **{f"hsic_{n}": hsic(K, L, n) for n in NORMALIZERS},
        "cka": cka(K, L),
        "cka_debiased": cka(K, L, debiased=True),
        "nhsic": nhsic(K, L),
        "renyi_entropy": renyi_entropy(K),
        "renyi_mi": renyi_mi(K, L),
        "kde_upper": kde_mi(D, 1.0),
        "kde_lower": kde_mi(D, 1.0, bound="lower"),
        "kde_labels": kde_mi(D, 1.0, labels=labels),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unbatched_results_are_0d_in_the_input_dtype(dtype, device):
    X, Y = _data(12, seed=24)
    K = torch.from_numpy(np_gaussian(X)).to(device, dtype)
    L = torch.from_numpy(np_gaussian(Y)).to(device, dtype)
    D = torch.from_numpy(np_sq_dist(X)).to(device, dtype)
    labels = torch.arange(12, device=device) % 3
    for name, v in _all_estimators(K, L, D, labels).items():
        assert isinstance(v, torch.Tensor), name
        assert v.shape == (), name
        assert v.dtype == dtype, name
        assert v.device.type == device.type, name
    T = torch.from_numpy(X).to(device, dtype)
    b = binning_mi(T, labels)
    assert b.shape == () and b.dtype == dtype


def test_estimators_on_device_match_numpy_references(device):
    X, Y = _data(10, seed=25)
    K, L, D = np_gaussian(X), np_gaussian(Y), np_sq_dist(X)
    labels = np.arange(10) % 2
    Kd, Ld, Dd = (torch.from_numpy(A).to(device) for A in (K, L, D))
    assert _f(hsic(Kd, Ld)) == pytest.approx(np_hsic_biased(K, L), rel=1e-10)
    assert _f(hsic(Kd, Ld, "unbiased")) == pytest.approx(np_hsic_song_eq5(K, L), rel=1e-9)
    assert _f(cka(Kd, Ld)) == pytest.approx(np_cka(K, L), rel=1e-10)
    assert _f(nhsic(Kd, Ld, eps=1e-3)) == pytest.approx(np_nhsic(K, L, 1e-3), rel=1e-7)
    assert _f(renyi_mi(Kd, Ld, 1.01)) == pytest.approx(np_renyi_mi(K, L, 1.01), rel=1e-8)
    assert _f(kde_mi(Dd, 0.5, torch.from_numpy(labels).to(device))) == pytest.approx(np_kde(D, 0.5, labels), rel=1e-9)


def test_mixed_numpy_and_torch_inputs(device):
    X, Y = _data(9, seed=26)
    K, L = np_gaussian(X), np_gaussian(Y)
    Lt = torch.from_numpy(L).to(device)
    v = hsic(K, Lt)
    assert v.device.type == device.type
    assert _f(v) == pytest.approx(np_hsic_biased(K, L), rel=1e-10)
    # float32 and float64 together promote to float64
    assert hsic(K.astype(np.float32), Lt).dtype == torch.float64


# --------------------------------------------------------------------------------------------- registry


def test_builtin_registry_entries_call_the_estimators_with_their_options():
    X, Y = _data(12, seed=27)
    K, L, D = np_gaussian(X), np_gaussian(Y), np_sq_dist(X)
    labels = np.arange(12) % 3
    assert {"hsic", "hsic_unbiased", "hsic_pyglow", "cka", "cka_debiased", "nhsic", "renyi_mi"} <= set(
        estimators.names()
    )
    for name, n in (("hsic", "biased"), ("hsic_unbiased", "unbiased"), ("hsic_pyglow", "pyglow")):
        assert estimators.get(name).needs == "kernels"
        assert torch.equal(estimators.get(name)(K, L), hsic(K, L, n))
    assert torch.equal(estimators.get("cka_debiased")(K, L), cka(K, L, debiased=True))
    assert torch.equal(estimators.get("nhsic")(K, L), nhsic(K, L, eps=1e-5))
    assert torch.equal(estimators.get("renyi_mi")(K, L), renyi_mi(K, L, alpha=1.01))
    assert estimators.get("kde_lower").needs == "distances"
    assert torch.equal(estimators.get("kde_lower")(D, 0.5, labels=labels), kde_mi(D, 0.5, labels, bound="lower"))
    assert estimators.get("binning").needs == "activations"
    assert estimators.get("kde_upper").units == "bits"
    assert "HSIC(T, Y)" in estimators.get("hsic_unbiased").axis_label("T", "Y")
    assert estimators.get(estimators.get("cka")) is estimators.get("cka")


# ------------------------------------------------------------------------------------------- doctests


@pytest.mark.parametrize("module", [kernels, estimators], ids=["kernels", "estimators"])
def test_docstring_examples(module):
    before = set(estimators._REGISTRY)
    try:
        result = doctest.testmod(module, report=False)
    finally:
        for name in set(estimators._REGISTRY) - before:  # a docstring registers an example estimator
            estimators._REGISTRY.pop(name)
    assert result.attempted > 0
    assert result.failed == 0


# ------------------------------------------------------------------------------------- property tests


@st.composite
def kernel_pairs(draw, min_m: int = 4, max_m: int = 24, batch: int | None = None):
    """Kernel matrices (float64 numpy) of two dependent representations, linear or Gaussian, optionally batched."""
    m = draw(st.integers(min_m, max_m))
    dx, dy = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    noise = draw(st.floats(0.0, 3.0))
    kinds = (draw(st.sampled_from(["linear", "gaussian"])), draw(st.sampled_from(["linear", "gaussian"])))
    factor = draw(st.floats(0.3, 3.0))
    log_scale = draw(st.floats(-1.5, 1.5))

    def one(s):
        X, Y = _data(m, dx, dy, seed=s, noise=noise)
        X = X * 10.0**log_scale
        return tuple(
            np_linear(Z) if kind == "linear" else np_gaussian(Z, factor=factor)
            for Z, kind in zip((X, Y), kinds, strict=True)
        )

    if batch is None:
        return one(seed)
    pairs = [one(seed + b) for b in range(batch)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _scale(K, L) -> float:
    """|HSIC(K, L)| <= sqrt(HSIC(K, K) HSIC(L, L)) (Cauchy-Schwarz): the natural size of an HSIC error."""
    return math.sqrt(np_hsic_biased(K, K) * np_hsic_biased(L, L)) + 1e-300


@FAST
@given(kernel_pairs())
def test_property_symmetry(pair):
    K, L = pair
    s = _scale(K, L)
    for n in NORMALIZERS:
        assert _f(hsic(K, L, n)) == pytest.approx(_f(hsic(L, K, n)), rel=1e-12, abs=1e-12 * s * len(K) ** 2)
    for debiased in (False, True):
        assert _f(cka(K, L, debiased)) == pytest.approx(_f(cka(L, K, debiased)), rel=1e-12, abs=1e-12)
    assert _f(nhsic(K, L)) == pytest.approx(_f(nhsic(L, K)), rel=1e-8, abs=1e-8)
    assert _f(renyi_mi(K, L)) == pytest.approx(_f(renyi_mi(L, K)), rel=1e-10, abs=1e-10)


@FAST
@given(kernel_pairs(min_m=2))
def test_property_bounds(pair):
    K, L = pair
    m = len(K)
    assert _f(hsic(K, L)) >= -1e-12 * _scale(K, L)  # tr(HKH HLH) >= 0 for PSD K, L
    assert _f(hsic(K, L)) <= _scale(K, L) * (1 + 1e-12)
    c = _f(cka(K, L))
    assert -1e-12 <= c <= 1 + 1e-12
    assert c == pytest.approx(np_cka(K, L), rel=1e-9, abs=1e-12)
    assert _f(hsic(K, L)) == pytest.approx(np_hsic_biased(K, L), rel=1e-9, abs=1e-12 * _scale(K, L))
    D = np.clip(np.diag(K)[:, None] + np.diag(K)[None, :] - 2 * K, 0, None)
    np.fill_diagonal(D, 0.0)
    lo, up = _f(kde_mi(D, 1.0, bound="lower")), _f(kde_mi(D, 1.0))
    assert -1e-12 <= lo <= up + 1e-12 and up <= math.log2(m) + 1e-12
    labels = np.arange(m) % 3
    assert _f(kde_mi(D, 1.0, labels)) <= plugin_renyi(labels, 1.0) + 1e-12  # I(T;Y) <= H(Y)


@FAST
@given(kernel_pairs())
def test_property_unbiased_hsic_matches_song(pair):
    K, L = pair
    s = _scale(K, L)
    assert _f(hsic(K, L, "unbiased")) == pytest.approx(np_hsic_song_eq5(K, L), rel=1e-8, abs=1e-10 * s)


@FAST
@given(st.integers(4, 24), st.integers(1, 6), st.integers(0, 2**32 - 1), st.floats(-2, 2), st.floats(-3, 3))
def test_property_linear_cka_invariances(m, d, seed, log_c, shift):
    rng = np.random.default_rng(seed)
    X, Y = _data(m, dx=d, seed=seed)
    base = _f(cka(np_linear(X), np_linear(Y)))
    Q = _random_orthogonal(d, rng)
    Xt = 10.0**log_c * (X @ Q) + shift * rng.normal(size=(1, d))
    assert _f(cka(np_linear(Xt), np_linear(Y))) == pytest.approx(base, rel=1e-7, abs=1e-9)
    # RBF kernels see only distances: orthogonal maps and translations leave them (and CKA) unchanged
    Xr = X @ Q + shift
    sig = math.sqrt(np.median(np_sq_dist(X)[np.triu_indices(m, 1)])) + 1e-3
    Kx, Kr, Ky = np_gaussian(X, sig), np_gaussian(Xr, sig), np_gaussian(Y, sig)
    assert _f(cka(Kr, Ky)) == pytest.approx(_f(cka(Kx, Ky)), rel=1e-7, abs=1e-9)


@FAST
@given(kernel_pairs(max_m=16, batch=3))
def test_property_batched_equals_loop(pair):
    Kb, Lb = pair
    m = Kb.shape[-1]
    Db = np.clip(np.einsum("bii->bi", Kb)[:, :, None] + np.einsum("bii->bi", Kb)[:, None, :] - 2 * Kb, 0, None)
    for b in range(3):
        np.fill_diagonal(Db[b], 0.0)
    labels = np.arange(m) % 3
    fns = {
        **{f"hsic_{n}": (lambda K, L, n=n: hsic(K, L, n)) for n in NORMALIZERS},
        "cka": lambda K, L: cka(K, L),
        "cka_debiased": lambda K, L: cka(K, L, debiased=True),
        "nhsic": lambda K, L: nhsic(K, L, eps=1e-3),
        "renyi_mi": lambda K, L: renyi_mi(K, L, alpha=1.01),
        "renyi_mi_2": lambda K, L: renyi_mi(K, L, alpha=2),
        "renyi_entropy": lambda K, L: renyi_entropy(K, alpha=1.5),
    }
    for name, fn in fns.items():
        batched = fn(Kb, Lb)
        assert batched.shape == (3,), name
        for b in range(3):
            single = fn(Kb[b], Lb[b])
            tol = 1e-9 * (_scale(Kb[b], Lb[b]) if name.startswith("hsic") else 1.0)
            assert _f(batched[b]) == pytest.approx(_f(single), rel=1e-9, abs=tol), name
    for bound in ("upper", "lower"):
        for lab in (None, labels):
            batched = kde_mi(Db, 0.5, labels=lab, bound=bound)
            assert batched.shape == (3,)
            for b in range(3):
                assert _f(batched[b]) == pytest.approx(_f(kde_mi(Db[b], 0.5, labels=lab, bound=bound)), rel=1e-12)


@FAST
@given(kernel_pairs())
def test_property_numpy_input_equals_torch_input(pair):
    K, L = pair
    Kt, Lt = torch.from_numpy(K), torch.from_numpy(L)
    for n in NORMALIZERS:
        assert torch.equal(hsic(K, L, n), hsic(Kt, Lt, n))
    assert torch.equal(cka(K, L), cka(Kt, Lt))
    assert torch.equal(cka(K, L, True), cka(Kt, Lt, True))
    assert torch.equal(nhsic(K, L), nhsic(Kt, Lt))
    assert torch.equal(renyi_mi(K, L), renyi_mi(Kt, Lt))


@FAST
@given(kernel_pairs(min_m=6))
def test_property_float32_close_to_float64(pair):
    K, L = pair
    K32, L32 = torch.from_numpy(K).float(), torch.from_numpy(L).float()
    s = _scale(K, L)
    for n in ("biased", "pyglow", "unbiased"):
        v64, v32 = hsic(K, L, n), hsic(K32, L32, n)
        assert v32.dtype == torch.float32
        norm = s * ((len(K) - 1) if n == "pyglow" else 1.0)
        assert abs(_f(v32) - _f(v64)) <= 1e-4 * norm, n
    for debiased in (False, True):
        assert abs(_f(cka(K32, L32, debiased)) - _f(cka(K, L, debiased))) <= 1e-3
    assert abs(_f(renyi_mi(K32, L32)) - _f(renyi_mi(K, L))) <= 1e-4 * max(1.0, abs(_f(renyi_mi(K, L))))
