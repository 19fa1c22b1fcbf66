"""Every estimator at every sigma: Run.trajectories and the PlaneView grid against float64 on the stored distances.

A wide Gaussian kernel (sigma = 500 on a tanh layer) has values within 1e-6 of 1, a narrow one (sigma = 0.05)
values near 0: float32 kernel values lose the structure of both. The reference here evaluates each registered
estimator's own function on float64 kernels built from the run's stored distances, in the float64 form that keeps
the structure (for estimators that centre, ``K - 11^T`` when K is wide: the naive float64 sums of unbiased HSIC
cancel twelve digits at sigma = 500).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import ibwidget as ib
from ibwidget.measure import estimators, kernels
from ibwidget.measure._packed import unpack
from ibwidget.plane._grid import GridBuilder
from ibwidget.record.recorder import make_probe
from ibwidget.record.run import Run

SIGMAS = (0.05, 0.5, 5.0, 50.0, 500.0)
RULES = ("fixed", "median_d2", "median_d")
TARGETS = ("labels", "output")
LAYERS = ("tanh32", "relu12")
SHIFT_INVARIANT = {"hsic", "cka", "nhsic"}  # functions unchanged by K -> K - 11^T
RTOL = 1e-3


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=CUDA)])
def digits_run(request) -> Run:
    """Tanh(32) and ReLU(12) layers on digits, probe 256, 3 snapshots, recorded with plain PyTorch, held on the
    device the estimators then run on."""
    torch.manual_seed(0)
    train, val, _ = ib.datasets.digits.load_data(batch_size=64)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 12), nn.ReLU())
    head = nn.Linear(12, 10)
    probe_x, probe_y = make_probe(val, 256)
    run = Run("digits", list(LAYERS), [32, 12], probe_x, probe_y, num_classes=10, device=request.param)
    opt = torch.optim.SGD([*body.parameters(), *head.parameters()], lr=0.05)
    for epoch in range(3):
        with torch.no_grad():
            h32 = body[:3](probe_x)
            h12 = body(probe_x)
            run.add_snapshot(epoch, {"tanh32": h32 @ h32.T, "relu12": h12 @ h12.T}, head(h12))
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(head(body(x)), y).backward()
            opt.step()
    return run


def _kernel64(D: torch.Tensor, sigma: float, shift_invariant: bool) -> torch.Tensor:
    K = torch.exp(-D / (2 * sigma**2))
    if shift_invariant and float(K.mean()) > 0.5:
        K = torch.expm1(-D / (2 * sigma**2))
    return K


def _median_sigma(D: torch.Tensor, rule: str) -> float:
    off = D[np.triu_indices(D.shape[0], 1)].numpy()
    return float(np.sqrt(np.median(off))) if rule == "median_d2" else float(np.median(np.sqrt(off)))


def _reference(run: Run, name: str, sigma: float, rule: str, target: str) -> np.ndarray:
    """(epochs, layers, 2) in float64 from the stored distances, with the estimator's own function."""
    spec = estimators.get(name)
    m = run.m
    snap = run.snapshots()
    shift = spec.fn.__name__ in SHIFT_INVARIANT
    width = (lambda D: sigma) if rule == "fixed" else (lambda D: _median_sigma(D, rule))  # noqa: E731
    Dx = unpack(snap.x_dist.double().cpu(), m)
    Kx = _kernel64(Dx, width(Dx), shift)
    out = np.empty((run.num_snapshots, len(run.layer_names), 2))
    for e in range(run.num_snapshots):
        outputs = snap.outputs[e].double().cpu()
        labels = run.probe_labels.cpu()
        if target == "labels":
            codes, Ky = labels, kernels.label_kernel(labels, run.num_classes).double()
        else:
            probs = torch.softmax(outputs, -1)
            codes = outputs.argmax(-1)
            Dy = kernels.sq_distances(probs @ probs.T)
            Ky = _kernel64(Dy, width(Dy), shift)
        for li in range(len(run.layer_names)):
            D = unpack(snap.dist[e, li].double().cpu(), m)
            s = width(D)
            if spec.needs == "distances":
                out[e, li] = [float(spec(D, s**2)), float(spec(D, s**2, labels=codes))]
            else:
                K = _kernel64(D, s, shift)
                out[e, li] = [float(spec(K, Kx)), float(spec(K, Ky))]
    return out


def _assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    bad = np.abs(got - ref) > RTOL * np.abs(ref) + 1e-30
    assert not bad.any(), f"{what}: got {got[bad]}, float64 {ref[bad]}"


#: every registered estimator that uses a kernel width (binning reads activations and has none)
BUILTIN = ["hsic", "hsic_unbiased", "hsic_pyglow", "cka", "cka_debiased", "nhsic", "renyi_mi", "kde_upper", "kde_lower"]


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("target", TARGETS)
def test_trajectories_match_float64_at_every_sigma(digits_run, sigma, target):
    for name in BUILTIN:
        got = digits_run.trajectories(name, sigma=sigma, target=target)
        _assert_close(got, _reference(digits_run, name, sigma, "fixed", target), f"{name} sigma={sigma} {target}")


@pytest.mark.parametrize("rule", ["median_d2", "median_d"])
def test_trajectories_match_float64_under_median_rules(digits_run, rule):
    for name in BUILTIN:
        for target in TARGETS:
            got = digits_run.trajectories(name, sigma_rule=rule, target=target)
            _assert_close(got, _reference(digits_run, name, 1.0, rule, target), f"{name} {rule} {target}")


def test_the_float32_grid_matches_float64_at_every_sigma(digits_run):
    builder = GridBuilder(BUILTIN, sigmas=SIGMAS, targets=TARGETS, sigma_rules=RULES)
    values, saturation, notes = builder.compute(digits_run)
    assert values.dtype == np.float32 and not notes
    for i, name in enumerate(BUILTIN):
        for k, (rule, sigma) in enumerate(builder.slots):
            for t, target in enumerate(TARGETS):
                got = values[:, builder.base[i] + k * len(TARGETS) + t].astype(np.float64)
                ref = _reference(digits_run, name, 1.0 if sigma is None else sigma, rule, target)
                _assert_close(got, ref, f"grid {name} {rule} sigma={sigma} {target}")


def test_saturated_kernels_keep_their_structure(digits_run):
    """The symptoms of float32 kernel values at sigma = 500: CKA fell to 0 and Rényi MI changed sign."""
    cka = digits_run.trajectories("cka", sigma=500.0)
    assert (cka > 0.2).all() and (cka < 1.0).all()
    assert (digits_run.trajectories("renyi_mi", sigma=500.0) > 0).all()
    assert (digits_run.trajectories("kde_lower", sigma=500.0) > 0).all()


def test_extreme_sigmas_give_the_limit_kernels(digits_run):
    """sigma = 1e-200: K = I for distinct points; sigma = 1e200: K = 1 (no division by zero, no overflow)."""
    m = digits_run.m
    L = kernels.label_kernel(digits_run.probe_labels.cpu(), digits_run.num_classes).double()
    narrow = digits_run.trajectories("hsic", sigma=1e-200)
    I = torch.eye(m, dtype=torch.float64)
    assert narrow[..., 1] == pytest.approx(float(estimators.hsic(I, L)), rel=1e-9)
    assert digits_run.trajectories("kde_upper", sigma=1e-200)[..., 0] == pytest.approx(np.log2(m), rel=1e-9)
    wide = digits_run.trajectories("hsic", sigma=1e200)
    assert np.isfinite(wide).all() and np.abs(wide).max() < 1e-300
    assert digits_run.trajectories("kde_upper", sigma=1e200) == pytest.approx(0.0, abs=1e-12)
    for sigma in (1e-200, 1e200):
        for name in BUILTIN:
            assert np.isfinite(digits_run.trajectories(name, sigma=sigma)).all(), (name, sigma)
        values, saturation, _ = GridBuilder(["hsic", "cka"], sigmas=[sigma]).compute(digits_run)
        assert np.isfinite(values[:, :, :, :]).all() and np.isfinite(saturation).all()
    G = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert torch.equal(kernels.gaussian(G, 1e-200), torch.eye(2))
    assert torch.equal(kernels.gaussian(G, 1e200), torch.ones(2, 2))


def test_nhsic_after_set_num_threads_matches_numpy():
    """A batched LU solve fails on this torch + MKL once torch runs several threads; nHSIC must not use one.

    Run in a fresh process (the thread count is process-wide), against numpy's own linear algebra.
    """
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from ibwidget.measure import estimators
        from ibwidget.measure import kernels
        torch.set_num_threads(2)
        g = torch.Generator().manual_seed(0)
        Z = torch.randn(32, 256, 5, generator=g, dtype=torch.float64)
        Y = torch.randn(32, 256, 3, generator=g, dtype=torch.float64)
        K = kernels.gaussian(Z @ Z.transpose(-1, -2), 2.0)
        L = kernels.gaussian(Y @ Y.transpose(-1, -2), 2.0)
        got = estimators.nhsic(K, L, eps=1e-5).numpy()
        m = 256
        H = np.eye(m) - 1.0 / m
        def resolvent(A):
            Ac = H @ A @ H
            return Ac @ np.linalg.inv(Ac + 1e-5 * m * np.eye(m))
        ref = np.array([np.trace(resolvent(k) @ resolvent(l)) for k, l in zip(K.numpy(), L.numpy())])
        print(float(np.max(np.abs(got - ref) / np.abs(ref))))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-8
