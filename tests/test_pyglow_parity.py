"""Parity with the real PyGlow 0.1.7 (``pyglow`` on PyPI, imported as ``glow``).

``hsic(gaussian(gram(h), 5), gaussian(gram(x), 5), normalizer="pyglow")`` must equal PyGlow's
``HSIC(kernel="gaussian", sigma=5).criterion(h, x)``, which builds the (m, m, d) difference tensor in float32.
The tests that call PyGlow itself need it installed (see ``_glow``); the others check the same relations without it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _glow import glow_fixture  # noqa: F401 - the glow_estimator fixture

from ibwidget import estimators  # the public path: functions and PyGlow's evaluator classes
from ibwidget.measure import kernels
from ibwidget.measure.estimators import hsic

SIGMA = 5.0
M = 64


def _scaled(Z: torch.Tensor, target_median_d2: float = 2 * SIGMA**2) -> torch.Tensor:
    """Rescale Z so the median squared distance is ``2 sigma^2``: kernel values spread around exp(-1/2)."""
    d2 = torch.cdist(Z.double(), Z.double()) ** 2
    med = float(d2[tuple(torch.triu_indices(len(Z), len(Z), 1))].median())
    return (Z * math.sqrt(target_median_d2 / med)).float()


@pytest.fixture(scope="module")
def probe():
    """MNIST-like inputs (class prototypes plus noise, 784 pixels), labels, one-hot targets, three hidden layers."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(M) % 10
    labels = labels[torch.randperm(M, generator=g)]
    protos = torch.rand(10, 784, generator=g)
    x = _scaled(protos[labels] + 0.7 * torch.rand(M, 784, generator=g))
    hidden = {}
    for width in (784, 1000, 200):
        W = torch.randn(784, width, generator=g) / 28.0
        hidden[width] = _scaled(torch.relu(x @ W + 0.1 * torch.randn(M, width, generator=g)))
    y = torch.nn.functional.one_hot(labels, 10).float()
    return x, hidden, y


def _glow(glow_estimator, a: torch.Tensor, b: torch.Tensor) -> float:
    return float(glow_estimator.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA).criterion(a, b))


def _ours(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    Ka = kernels.gaussian(kernels.gram(a), SIGMA)
    Kb = kernels.gaussian(kernels.gram(b), SIGMA)
    return hsic(Ka, Kb, normalizer="pyglow")


def test_probe_kernels_are_not_saturated(probe):
    x, hidden, y = probe
    for z in (x, *hidden.values()):
        sat = float(kernels.saturation(kernels.gaussian(kernels.gram(z), SIGMA)))
        assert 0.2 < sat < 0.8, sat
    # the one-hot target is saturated at sigma = 5 by construction (distances 0 or sqrt 2): exp(-1/25) = 0.96
    assert float(kernels.gaussian(kernels.gram(y), SIGMA).min()) == pytest.approx(math.exp(-1 / 25), rel=1e-6)


@pytest.mark.parametrize("width", [784, 1000, 200])
def test_hsic_pyglow_normaliser_equals_glow_criterion(glow_estimator, probe, width):
    x, hidden, y = probe
    h = hidden[width]
    # against the input
    ref = _glow(glow_estimator, h, x)
    got = _ours(h, x)
    assert got.dtype == torch.float32 and got.shape == ()
    assert float(got) == pytest.approx(ref, rel=1e-5)
    # the value is a real dependence, not rounding noise around 0 nor the saturated maximum
    self_h = _glow(glow_estimator, h, h)
    alignment = ref / math.sqrt(self_h * _glow(glow_estimator, x, x))  # the RBF CKA: in [0, 1]
    assert 0.05 < alignment < 0.99, alignment
    # against the one-hot labels
    ref_y = _glow(glow_estimator, h, y)
    assert float(_ours(h, y)) == pytest.approx(ref_y, rel=1e-5)
    assert ref_y > 0.1 * math.sqrt(self_h * _glow(glow_estimator, y, y))  # the labels are visible in h
    # the same in float64 on our side (PyGlow always computes in float32)
    assert float(_ours(h.double(), x.double())) == pytest.approx(ref, rel=1e-5)


def test_pyglow_normaliser_is_biased_times_m_minus_1(probe):
    x, hidden, _ = probe
    Kh = kernels.gaussian(kernels.gram(hidden[200].double()), SIGMA)
    Kx = kernels.gaussian(kernels.gram(x.double()), SIGMA)
    assert float(hsic(Kh, Kx, "pyglow")) == pytest.approx((M - 1) * float(hsic(Kh, Kx, "biased")), rel=1e-12)


@pytest.mark.parametrize("width", [784, 200])
def test_pyglow_style_evaluator_class_equals_glow(glow_estimator, probe, width):
    x, hidden, y = probe
    ours = estimators.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA)
    theirs = glow_estimator.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA)
    for a, b in ((hidden[width], x), (hidden[width], y), (x, hidden[width])):
        v = ours.criterion(a, b)
        assert isinstance(v, torch.Tensor) and v.shape == ()
        assert float(v) == pytest.approx(float(theirs.criterion(a, b)), rel=1e-5)
    assert ours.params_dict == theirs.params_dict == {"sigma": SIGMA}
    assert isinstance(ours, estimators.Estimator)


def test_eval_dynamics_segment_layout_equals_glow(glow_estimator, probe):
    x, hidden, y = probe
    images = x.reshape(M, 1, 28, 28)  # PyGlow flattens every element of the segment with view(m, -1)
    conv_like = hidden[784].reshape(M, 4, 14, 14)
    segment = [images, conv_like, hidden[1000], hidden[200], y]
    ours = estimators.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA).eval_dynamics_segment(segment)
    theirs = glow_estimator.HSIC(kernel="gaussian", gpu=False, sigma=SIGMA).eval_dynamics_segment(segment)
    assert len(ours) == len(theirs) == len(segment) - 2
    for row_ours, row_theirs in zip(ours, theirs, strict=True):
        assert len(row_ours) == len(row_theirs) == 2  # [criterion(h, x), criterion(h, y)]
        for a, b in zip(row_ours, row_theirs, strict=True):
            assert float(a) == pytest.approx(float(b), rel=1e-5)
    # as PyGlow's model stacks it: (layers, 2)
    assert np.array([[float(v) for v in row] for row in ours]).shape == (3, 2)


def test_linear_kernel_evaluator_is_linear_hsic(probe):
    x, hidden, _ = probe
    h = hidden[200].double()
    xd = x.double()
    v = estimators.HSIC(kernel="linear").criterion(h, xd)
    Hc = h - h.mean(0)
    Xc = xd - xd.mean(0)
    expected = float(((Hc.T @ Xc) ** 2).sum()) / (M - 1)  # tr(KHLH)/(m-1) = ||Hc^T Xc||_F^2 / (m-1)
    assert float(v) == pytest.approx(expected, rel=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_evaluator_equals_glow_on_cuda(glow_estimator, probe):
    x, hidden, y = probe
    ours = estimators.HSIC(kernel="gaussian", gpu=True, sigma=SIGMA)
    theirs = glow_estimator.HSIC(kernel="gaussian", gpu=True, sigma=SIGMA)
    v = ours.criterion(hidden[1000], x)
    assert v.device.type == "cuda"
    assert float(v) == pytest.approx(float(theirs.criterion(hidden[1000], x)), rel=1e-5)
