"""ibwidget.Run: trajectories equal a direct computation from the activations; save/load; damaged files."""

from __future__ import annotations

import io
import json
import math
import os
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from _schema1 import write_schema1
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.measure import estimators, kernels
from ibwidget.record import _runlog
from ibwidget.record.run import Run, load_run
from ibwidget.record.taps import Tap

M = 64  # probe size
C = 5  # classes
D_IN = 16
# ReLU(32), Tanh(12), Tanh(1), Linear(5): all narrower than the probe, so activations are kept (binning reads them)
LAYERS = ["1", "3", "5", "6"]
EPOCHS = 3


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    protos = 1.5 * torch.randn(C, D_IN, generator=torch.Generator().manual_seed(123))
    y = torch.arange(n) % C
    y = y[torch.randperm(n, generator=g)]
    x = protos[y] + torch.randn(n, D_IN, generator=g)
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(D_IN, 32), nn.ReLU(), nn.Linear(32, 12), nn.Tanh(), nn.Linear(12, 1), nn.Tanh(), nn.Linear(1, C)
    )


def _probe_activations(model: nn.Module, probe_x: torch.Tensor):
    """The tapped layers' activations and the model's raw output on the probe, computed independently (eval mode)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), Tap(model, LAYERS) as tap:
            out = model(probe_x)
            acts = {n: tap.outputs[n].reshape(probe_x.shape[0], -1).clone() for n in LAYERS}
    finally:
        model.train(was)
    return acts, out.clone()


def _train_and_capture():
    """A 3-epoch run of a small MLP plus, per recorded epoch, the probe activations captured independently."""
    xtr, ytr = _data(256, 1)
    xva, yva = _data(M, 2)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(xva, yva), batch_size=32)
    model = _model()
    recording = ib.Recording(M, name="mlp")
    engine = ib.Engine(
        model, train, val, epochs=EPOCHS, layers=LAYERS, lr=0.05, seed=0, recording=recording, device="cpu"
    )
    run = engine.run
    captured = [_probe_activations(model, run.probe_x)]
    engine.on("epoch_end", lambda ev: captured.append(_probe_activations(model, run.probe_x)))
    engine.start()
    engine.wait(timeout=120)
    assert engine.status == "finished"
    assert run.epochs == list(range(EPOCHS + 1)) and len(captured) == EPOCHS + 1
    return run, captured


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Hundreds of 64x64 matrix operations: one intra-op thread is faster than two on this 2-core machine, much
    faster when other processes share it. Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    return _train_and_capture()


# ------------------------------------------------------------------------------------------ the reference


def _width(G: torch.Tensor, rule: str, sigma: float, dim: int) -> float:
    return float(kernels.sigma_from_rule(G, rule, sigma, dim=dim))


def _kernel(G: torch.Tensor, kernel: str, rule: str, sigma: float, dim: int) -> torch.Tensor:
    if kernel == "linear":
        return kernels.linear(G)
    return kernels.gaussian(G, _width(G, rule, sigma, dim))


def _direct(
    run: Run, captured, estimator: str, target: str, kernel: str, rule: str, sigma: float, dtype=torch.float32
) -> np.ndarray:
    """(epochs, layers, 2) straight from the activations with the public kernels/estimators functions, in ``dtype``.

    float32 is what a user calling those functions on the (float32) activations gets; float64 is the exact value.
    """
    spec = estimators.get(estimator)
    x = run.probe_x.reshape(M, -1).to(dtype)
    labels = run.probe_labels
    K_x = _kernel(kernels.gram(x), kernel, rule, sigma, x.shape[1])
    out = np.empty((len(captured), len(LAYERS), 2))
    for e, (acts, raw) in enumerate(captured):
        probs = torch.softmax(raw.to(dtype), -1)
        y_codes = labels if target == "labels" else probs.argmax(-1)
        if target == "labels":
            K_y = kernels.label_kernel(labels, run.num_classes, dtype=dtype)
        else:
            K_y = _kernel(kernels.gram(probs), kernel, rule, sigma, probs.shape[1])
        for li, name in enumerate(LAYERS):
            T = acts[name].to(dtype)
            G = kernels.gram(T)
            if spec.needs == "activations":
                out[e, li] = [float(spec(T, torch.arange(M))), float(spec(T, y_codes))]
            elif spec.needs == "distances":
                var = _width(G, rule, sigma, T.shape[1]) ** 2
                D = kernels.sq_distances(G)
                out[e, li] = [float(spec(D, var)), float(spec(D, var, labels=y_codes))]
            else:
                K = _kernel(G, kernel, rule, sigma, T.shape[1])
                out[e, li] = [float(spec(K, K_x)), float(spec(K, K_y))]
    return out


def _assert_matches_direct(got: np.ndarray, run: Run, captured, *args, rtol: float = 1e-4) -> None:
    """``got`` is within ``rtol`` of the exact (float64) direct computation, give or take what float32 itself costs.

    The run stores float32 Grams, so it is held to the standard of the direct computation in the activations' own
    dtype: |got - exact| <= rtol |exact| + 2 |float32 - exact|. Where float32 is exact to 1e-4 (most cases) this is
    rtol; it widens only where float32 loses digits: a kernel saturated within 1e-4 of 1 (the output at epoch 0),
    or nHSIC's (Kc + eps m I)^-1, which amplifies rounding up to 1/(eps m) = 1600x at m = 64.
    """
    exact = _direct(run, captured, *args, dtype=torch.float64)
    single = _direct(run, captured, *args, dtype=torch.float32)
    assert got.shape == exact.shape and got.dtype == np.float64
    assert np.isfinite(exact).all()
    # values near zero (an unbiased estimate of ~0, a difference of entropies) get an absolute tolerance on the scale
    # of the rest of their column
    scale = np.abs(exact).max(axis=(0, 1), keepdims=True)
    tol = rtol * np.abs(exact) + rtol * 0.1 * scale + 2 * np.abs(single - exact)
    err = np.abs(got - exact)
    bad = np.argwhere(err > tol)
    assert not len(bad), [(tuple(i), got[tuple(i)], exact[tuple(i)], single[tuple(i)]) for i in bad[:5]]


KERNEL_ESTIMATORS = ["hsic", "hsic_unbiased", "hsic_pyglow", "cka", "cka_debiased", "nhsic", "renyi_mi"]
KERNEL_RULES = [
    ("gaussian", "fixed"),
    ("gaussian", "sqrt_d"),
    ("gaussian", "median_d2"),
    ("gaussian", "median_d"),
    ("linear", "fixed"),
]
SIGMA = 2.0


@pytest.mark.parametrize("target", ["labels", "output"])
@pytest.mark.parametrize(("kernel", "rule"), KERNEL_RULES)
@pytest.mark.parametrize("estimator", KERNEL_ESTIMATORS)
def test_kernel_estimator_trajectories_equal_direct_computation(trained, estimator, target, kernel, rule):
    run, captured = trained
    got = run.trajectories(estimator, sigma=SIGMA, target=target, sigma_rule=rule, kernel=kernel)
    rtol = 1e-3 if (estimator == "nhsic" and kernel == "linear") else 1e-4  # rank-deficient linear Grams
    _assert_matches_direct(got, run, captured, estimator, target, kernel, rule, SIGMA, rtol=rtol)


@pytest.mark.parametrize("target", ["labels", "output"])
@pytest.mark.parametrize("rule", ["fixed", "sqrt_d", "median_d2", "median_d"])
@pytest.mark.parametrize("bound", ["kde_upper", "kde_lower"])
def test_kde_trajectories_equal_direct_computation(trained, bound, target, rule):
    run, captured = trained
    got = run.trajectories(bound, sigma=0.5, target=target, sigma_rule=rule)
    _assert_matches_direct(got, run, captured, bound, target, "gaussian", rule, 0.5)


def test_kde_lower_is_the_upper_bound_with_four_times_the_noise_variance(trained):
    run, _ = trained
    np.testing.assert_allclose(
        run.trajectories("kde_lower", sigma=0.5), run.trajectories("kde_upper", sigma=1.0), rtol=1e-9, atol=1e-12
    )
    assert (run.trajectories("kde_lower", sigma=0.5) < run.trajectories("kde_upper", sigma=0.5) - 1e-3).any()


@pytest.mark.parametrize("target", ["labels", "output"])
@pytest.mark.parametrize("estimator", ["binning", "binning_idnn", "binning_saxe"])
def test_binning_trajectories_equal_direct_computation(trained, estimator, target):
    run, captured = trained
    got = run.trajectories(estimator, target=target)
    ref = _direct(run, captured, estimator, target, "gaussian", "fixed", 1.0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    assert (ref[..., 0] > 0).all()  # no layer collapsed onto one bin pattern
    assert (ref[:, 2, 0] < math.log2(M) - 0.5).all()  # the 1-unit layer shares bins: I(T;X) = H(T) < log2 m


def test_saturation_is_the_off_diagonal_mean_of_the_captured_kernels(trained):
    """The gauge, in Run.saturation and in the PlaneView grid, against kernels built from the captured activations."""
    from ibwidget.plane._grid import GridBuilder

    run, captured = trained
    builder = GridBuilder(["hsic"], sigmas=[0.5, SIGMA], targets=["labels"], sigma_rules=["fixed", "median_d2"])
    _, grid_sat, _ = builder.compute(run)
    for k, (rule, sigma) in enumerate(builder.slots):
        expected = np.empty((len(captured), len(LAYERS)))
        for e, (acts, _) in enumerate(captured):
            for li, name in enumerate(LAYERS):
                G = kernels.gram(acts[name].double())
                width = sigma if rule == "fixed" else kernels.sigma_median(G, rule)
                expected[e, li] = float(kernels.saturation(kernels.gaussian(G, width)))
        np.testing.assert_allclose(run.saturation(sigma=sigma or 1.0, sigma_rule=rule), expected, rtol=1e-5)
        np.testing.assert_allclose(grid_sat[:, k], expected, rtol=1e-5)
        # counting the diagonal's ones would raise the mean by (1 - s)/m: over 1e-3 relative here, far above rtol


def test_median_d2_averages_the_middle_squared_distances():
    """With an even number of pairs the two median rules differ only in how the middle two values are averaged:
    median_d2 gives sigma^2 = (d2_a + d2_b) / 2, median_d gives sigma = (d_a + d_b) / 2."""
    Z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [5.0, 4.0]])  # 6 pairs: D2 = 1, 9, 10, 25, 32, 41
    G = Z @ Z.T
    d2 = np.sort(kernels.sq_distances(G).numpy()[np.triu_indices(4, 1)])
    run = Run("m", ["z"], [2], torch.zeros(4, 1), torch.tensor([0, 1, 0, 1]), num_classes=2)
    run.add_snapshot(0, {"z": G}, torch.zeros(4, 2))
    for rule, sigma in (
        ("median_d2", math.sqrt((d2[2] + d2[3]) / 2)),
        ("median_d", (math.sqrt(d2[2]) + math.sqrt(d2[3])) / 2),
    ):
        expected = float(kernels.saturation(kernels.gaussian(G.double(), sigma)))
        assert run.saturation(sigma_rule=rule)[0, 0] == pytest.approx(expected, rel=1e-6)
    a, b = run.saturation(sigma_rule="median_d2")[0, 0], run.saturation(sigma_rule="median_d")[0, 0]
    assert abs(a - b) > 1e-3  # the test tells the two rules apart


def test_reference_sees_real_dependence(trained):
    """The comparisons above are meaningful: the values move between epochs and are not saturated constants."""
    run, captured = trained
    traj = run.trajectories("cka", sigma=SIGMA, target="labels")
    assert np.ptp(traj[:, :, 1], axis=0).min() > 1e-3  # every layer's CKA with the labels changes during training
    sat = run.saturation(sigma=SIGMA)
    assert sat.shape == (EPOCHS + 1, len(LAYERS))
    assert ((sat[-1] > 0.02) & (sat[-1] < 0.98)).all(), sat  # trained layers: kernels neither ~I nor ~1
    # the labels become more visible in the last layer as it trains
    assert traj[-1, -1, 1] > traj[0, -1, 1]


def test_trajectories_layer_subset_and_separate_sigmas(trained):
    run, captured = trained
    full = run.trajectories("hsic", sigma=SIGMA, target="output")
    sub = run.trajectories("hsic", sigma=SIGMA, target="output", layers=["6", "1"])
    np.testing.assert_allclose(sub, full[:, [3, 0]], rtol=1e-12)
    # sigma_x changes only column 0, sigma_y only column 1 (target output)
    sx = run.trajectories("hsic", sigma=SIGMA, target="output", sigma_x=7.0)
    sy = run.trajectories("hsic", sigma=SIGMA, target="output", sigma_y=0.3)
    np.testing.assert_array_equal(sx[..., 1], full[..., 1])
    np.testing.assert_array_equal(sy[..., 0], full[..., 0])
    assert not np.allclose(sx[..., 0], full[..., 0]) and not np.allclose(sy[..., 1], full[..., 1])
    # and each equals the direct computation with that width for X (resp. Y)
    acts, raw = captured[-1]
    x = run.probe_x.reshape(M, -1)
    probs = torch.softmax(raw, -1)
    for li, name in enumerate(LAYERS):
        K = kernels.gaussian(kernels.gram(acts[name]), SIGMA)
        ref_x = float(estimators.hsic(K, kernels.gaussian(kernels.gram(x), 7.0)))
        ref_y = float(estimators.hsic(K, kernels.gaussian(kernels.gram(probs), 0.3)))
        assert sx[-1, li, 0] == pytest.approx(ref_x, rel=1e-4)
        assert sy[-1, li, 1] == pytest.approx(ref_y, rel=1e-4)


def test_trajectories_reject_bad_arguments(trained):
    run, _ = trained
    with pytest.raises(ValueError, match="nope"):
        run.trajectories("nope")
    with pytest.raises(ValueError, match="target"):
        run.trajectories("hsic", target="inputs")
    with pytest.raises(ValueError, match="kernel"):
        run.trajectories("hsic", kernel="laplace")
    with pytest.raises(ValueError, match="sigma rule"):
        run.trajectories("hsic", sigma_rule="silverman")
    with pytest.raises(ValueError, match="fc9"):
        run.trajectories("hsic", layers=["fc9"])
    with pytest.raises(ValueError):
        run.trajectories("hsic", sigma=-1.0)


def test_binning_needs_kept_activations():
    """A layer wider than the probe keeps only its Gram: binning says what to do instead of failing obscurely."""
    x, y = _data(96, 3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, 48), nn.ReLU(), nn.Linear(48, C))
    engine = ib.Engine(model, loader, epochs=1, layers=["1", "2"], probe=32, lr=0.05)
    engine.start().wait(timeout=60)
    run = engine.run
    with pytest.raises(ValueError, match="keep_activations"):
        run.trajectories("binning")
    assert run.trajectories("binning", layers=["2"]).shape == (2, 1, 2)


# ------------------------------------------------------------------------------------------ save / load


def _assert_same_run(a: Run, b: Run) -> None:
    assert b.name == a.name
    assert b.layer_names == a.layer_names and b.layer_dims == a.layer_dims
    assert b.epochs == a.epochs and b.num_snapshots == a.num_snapshots
    assert b.num_classes == a.num_classes and b.m == a.m
    assert set(b.history) == set(a.history)
    for k in a.history:
        np.testing.assert_array_equal(np.asarray(b.history[k]), np.asarray(a.history[k]))
    assert b.config == json.loads(json.dumps(a.config))
    assert torch.equal(b.probe_x, a.probe_x) and torch.equal(b.probe_labels, a.probe_labels)
    for args in (
        dict(estimator="hsic", sigma=SIGMA, target="labels"),
        dict(estimator="cka", sigma=SIGMA, target="output", sigma_rule="median_d2"),
        dict(estimator="nhsic", kernel="linear", target="output"),
        dict(estimator="kde_upper", sigma=0.5, target="labels"),
        dict(estimator="hsic_unbiased", sigma=1.0, target="output", sigma_rule="sqrt_d"),
    ):
        np.testing.assert_array_equal(b.trajectories(**args), a.trajectories(**args))


def test_save_load_round_trip(trained, tmp_path):
    run, _ = trained
    path = run.save(tmp_path / "sub" / "r.ibrun")
    assert path == tmp_path / "sub" / "r.ibrun" and path.is_file()
    loaded = load_run(path)
    _assert_same_run(run, loaded)
    np.testing.assert_array_equal(loaded.trajectories("binning"), run.trajectories("binning"))
    assert loaded.history["loss"] and all(isinstance(v, float) for v in loaded.history["loss"])
    # a second round trip is byte-for-byte stable in content
    again = load_run(loaded.save(tmp_path / "again.ibrun"))
    _assert_same_run(run, again)
    assert sorted(os.listdir(tmp_path)) == ["again.ibrun", "sub"]
    assert os.listdir(tmp_path / "sub") == ["r.ibrun"]  # no temporary files left beside it


def test_save_is_atomic_when_np_save_fails(trained, tmp_path, monkeypatch):
    run, _ = trained
    path = run.save(tmp_path / "good.ibrun")
    before = path.read_bytes()
    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        run.save(path)
    monkeypatch.undo()
    assert len(calls) == 3  # the failure happened midway, after some arrays were written
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.ibrun"]
    _assert_same_run(run, load_run(path))


def test_save_is_atomic_when_a_record_fails_midway(trained, tmp_path, monkeypatch):
    run, _ = trained
    path = run.save(tmp_path / "good.ibrun")
    before = path.read_bytes()
    real = _runlog.encode
    calls = []

    def failing_encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("interrupted (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(_runlog, "encode", failing_encode)
    with pytest.raises(RuntimeError, match="interrupted"):
        run.save(path)
    # a new file that fails midway is not created at all
    with pytest.raises(RuntimeError, match="interrupted"):
        calls.clear()
        run.save(tmp_path / "new.ibrun")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["good.ibrun"]


# ------------------------------------------------------------------------------------------ damaged files


@pytest.fixture(scope="module")
def good_file(trained, tmp_path_factory):
    """A schema-1 file (a zip): the damaged-file tests below edit its members; schema 2 has its own tests."""
    run, _ = trained
    return write_schema1(run, tmp_path_factory.mktemp("good") / "good.ibrun")


def _entries(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _with_meta(good_file, tmp_path, **changes):
    entries = _entries(good_file)
    meta = json.loads(entries["meta.json"])
    meta.update(changes)
    entries["meta.json"] = json.dumps(meta).encode()
    return _write_zip(tmp_path / "bad.ibrun", entries)


def test_rewritten_good_file_still_loads(good_file, tmp_path):
    """The helpers below change one thing at a time: unchanged, a rewritten file loads."""
    loaded = load_run(_write_zip(tmp_path / "copy.ibrun", _entries(good_file)))
    assert loaded.epochs == list(range(EPOCHS + 1))


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.ibrun"):
        load_run(tmp_path / "nothere.ibrun")
    with pytest.raises(FileNotFoundError):
        Run.load(tmp_path)  # a folder is not a run file


def test_truncated_file(good_file, tmp_path):
    data = good_file.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 30):
        bad = tmp_path / "t.ibrun"
        bad.write_bytes(data[:keep])
        with pytest.raises(ValueError, match="truncated|corrupt"):
            load_run(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "r.ibrun"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a readable ibwidget run"):
        load_run(bad)
    empty = tmp_path / "e.ibrun"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="ibwidget run"):
        load_run(empty)


def test_zip_without_meta(good_file, tmp_path):
    entries = _entries(good_file)
    del entries["meta.json"]
    with pytest.raises(ValueError, match="meta.json"):
        load_run(_write_zip(tmp_path / "nometa.ibrun", entries))


def test_schema_from_the_future(good_file, tmp_path):
    with pytest.raises(ValueError, match=r"schema 99.*upgrade ibwidget"):
        load_run(_with_meta(good_file, tmp_path, schema_version=99))
    with pytest.raises(ValueError, match="schema"):
        load_run(_with_meta(good_file, tmp_path, schema_version="1"))


def test_wrong_format_tag(good_file, tmp_path):
    with pytest.raises(ValueError, match=r"not an ibwidget run file \(format 'keras.model'\)"):
        load_run(_with_meta(good_file, tmp_path, format="keras.model"))


@pytest.mark.parametrize("text", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"42", b"null"])
def test_meta_json_invalid_or_not_an_object(good_file, tmp_path, text):
    entries = _entries(good_file)
    entries["meta.json"] = text
    with pytest.raises(ValueError, match="meta.json|not an ibwidget run file"):
        load_run(_write_zip(tmp_path / "badmeta.ibrun", entries))


@pytest.mark.parametrize("entry", ["dist", "norms", "outputs", "probe_x", "probe_labels", "acts_1"])
def test_missing_array_entry(good_file, tmp_path, entry):
    entries = _entries(good_file)
    del entries[f"arrays/{entry}.npy"]
    with pytest.raises(ValueError, match=f"incomplete.*{entry}"):
        load_run(_write_zip(tmp_path / "missing.ibrun", entries))


@pytest.mark.parametrize("key", ["epochs", "layer_names", "history"])
def test_missing_meta_key(good_file, tmp_path, key):
    entries = _entries(good_file)
    meta = json.loads(entries["meta.json"])
    del meta[key]
    entries["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(ValueError, match=f"incomplete.*{key}"):
        load_run(_write_zip(tmp_path / "nokey.ibrun", entries))


def _reshaped(arr: np.ndarray, how: str) -> np.ndarray:
    if how == "fewer rows":
        return arr[:-1]
    if how == "narrower":
        return arr[..., :-1]
    if how == "fewer samples":
        return arr[:, :-1]
    return arr.reshape(-1)  # flattened


@pytest.mark.parametrize(
    ("entry", "how"),
    [
        ("dist", "fewer rows"),
        ("dist", "narrower"),
        ("dist", "flattened"),
        ("norms", "narrower"),
        ("norms", "fewer samples"),
        ("outputs", "fewer rows"),
        ("outputs", "flattened"),
        ("acts_2", "fewer rows"),
        ("acts_0", "flattened"),
        ("acts_3", "narrower"),
        ("acts_1", "fewer samples"),
        ("outputs", "fewer samples"),
        ("probe_labels", "fewer rows"),
        ("probe_x", "fewer rows"),
    ],
)
def test_array_with_wrong_shape(good_file, tmp_path, entry, how):
    entries = _entries(good_file)
    arr = np.load(io.BytesIO(entries[f"arrays/{entry}.npy"]))
    entries[f"arrays/{entry}.npy"] = _npy(_reshaped(arr, how))
    with pytest.raises(ValueError, match="shape|samples|epochs"):
        load_run(_write_zip(tmp_path / "shape.ibrun", entries))


def test_array_entry_that_is_not_npy(good_file, tmp_path):
    entries = _entries(good_file)
    entries["arrays/dist.npy"] = b"this is not a numpy file"
    with pytest.raises(ValueError, match="arrays/dist.npy"):
        load_run(_write_zip(tmp_path / "garbage.ibrun", entries))


def _stored_data_span(path, name: str) -> tuple[int, int]:
    """(offset, length) of an entry's compressed bytes inside the zip file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


@pytest.mark.parametrize("entry", ["meta.json", "arrays/dist.npy", "arrays/outputs.npy", "arrays/probe_x.npy"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_byte(good_file, tmp_path, entry, where):
    data = bytearray(good_file.read_bytes())
    start, length = _stored_data_span(good_file, entry)
    data[start + int(where * (length - 1))] ^= 0x5A
    bad = tmp_path / "flip.ibrun"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt|CRC|truncated|meta.json"):
        load_run(bad)


def test_flipped_byte_with_stored_entries_is_a_crc_error(good_file, tmp_path):
    """Uncompressed entries: the damage is found only by the CRC check, and the message says so."""
    entries = _entries(good_file)
    path = tmp_path / "stored.ibrun"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    assert load_run(path).epochs == list(range(EPOCHS + 1))
    data = bytearray(path.read_bytes())
    start, length = _stored_data_span(path, "arrays/dist.npy")
    data[start + length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        load_run(path)


def test_empty_run_round_trip(tmp_path):
    """A run saved before any snapshot (e.g. a failed start) loads back, with no trajectories to show yet."""
    x, y = _data(16, 4)
    run = Run("empty", ["a", "b"], [3, 4], x, y, num_classes=C, config={"note": math.pi, "obj": object()})
    loaded = load_run(run.save(tmp_path / "empty.ibrun"))
    assert loaded.epochs == [] and loaded.layer_names == ["a", "b"] and loaded.layer_dims == [3, 4]
    assert loaded.config["note"] == math.pi and isinstance(loaded.config["obj"], str)
    with pytest.raises(ValueError, match="no snapshot"):
        loaded.trajectories("hsic")


# ------------------------------------------------------------------------------------------ hostile files


def _max_rss_mib_of_loading(path) -> tuple[float, str]:
    """Peak RSS growth (MiB) of a fresh process loading ``path``, and how the load ended."""
    script = textwrap.dedent(
        f"""
        import resource, ibwidget as ib
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            ib.load_run({str(path)!r}); outcome = "loaded"
        except ValueError as exc:
            outcome = "ValueError: " + str(exc)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        print(outcome)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth, outcome = proc.stdout.strip().split("\n", 1)
    return float(growth), outcome


def _zeros_member(zf: zipfile.ZipFile, name: str, mib: int, header: bytes = b"") -> None:
    """A member of ``mib`` MiB (after ``header``) of zeros, streamed: it compresses to about mib KiB."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as out:
        out.write(header)
        block = bytes(1024**2)
        for _ in range(mib):
            out.write(block)


def test_an_unknown_member_is_never_inflated(good_file, tmp_path):
    path = tmp_path / "bomb.ibrun"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in _entries(good_file).items():
            zf.writestr(name, blob)
        _zeros_member(zf, "arrays/extra.npy", 384)
    assert path.stat().st_size < 3 * 1024**2
    growth, outcome = _max_rss_mib_of_loading(path)
    assert outcome == "loaded"
    assert growth < 150, f"loading grew the process by {growth:.0f} MiB"


def test_a_member_larger_than_its_metadata_allows_is_refused_before_it_is_read(good_file, tmp_path):
    """arrays/dist.npy claims far more epochs than meta.json: refused from its header, its data never inflated."""
    entries = _entries(good_file)
    dist = np.load(io.BytesIO(entries.pop("arrays/dist.npy")))
    huge_shape = (dist.shape[0] * 200_000, *dist.shape[1:])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": huge_shape})
    path = tmp_path / "liar.ibrun"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
        _zeros_member(zf, "arrays/dist.npy", 384, header.getvalue())
    growth, outcome = _max_rss_mib_of_loading(path)
    assert outcome.startswith("ValueError") and "arrays/dist.npy" in outcome and "shape" in outcome, outcome
    assert growth < 150, f"refusing it grew the process by {growth:.0f} MiB"


@pytest.mark.parametrize(
    "changes",
    [
        {"layer_names": "fc1"},
        {"layer_names": [1, 2, 3, 4]},
        {"layer_dims": [-1, 2, 3, 4]},
        {"num_classes": -3},
        {"num_classes": 10**12},
        {"num_classes": "10"},
        {"num_classes": 2.5},
        {"epochs": [0, "1", 2, 3]},
        {"epochs": {"a": 1}},
        {"history": []},
        {"history": {"loss": "low"}},
        {"history": {"loss": [{"x": 1}]}},
        {"config": "lr=0.1"},
        {"name": ["a"]},
        {"activations": ["no_such_layer"]},
        {"custom_dynamics": "HSIC"},
        {"output_is_probabilities": "yes"},
    ],
)
def test_malformed_meta_json_is_a_value_error(good_file, tmp_path, changes):
    with pytest.raises(ValueError, match=f"meta.json.*{next(iter(changes))}"):
        load_run(_with_meta(good_file, tmp_path, **changes))


def test_deeply_nested_meta_json_is_a_value_error(good_file, tmp_path):
    entries = _entries(good_file)
    entries["meta.json"] = ("[" * 200_000 + "]" * 200_000).encode()
    with pytest.raises(ValueError, match="meta.json"):
        load_run(_write_zip(tmp_path / "deep.ibrun", entries))


@pytest.mark.parametrize(
    ("entry", "change", "message"),
    [
        ("dist", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a).astype(a.dtype), "NaN"),
        ("dist", lambda a: -a, "negative"),
        ("norms", lambda a: np.full_like(a, np.inf), "NaN or infinite"),
        ("dist", lambda a: a.astype(np.complex64), "dtype"),
        ("probe_x", lambda a: a.astype(np.complex128), "dtype"),
        ("probe_labels", lambda a: a + 100, "outside"),
        ("probe_labels", lambda a: a.astype(np.float32), "dtype"),
        ("outputs", lambda a: np.full_like(a, np.nan), "NaN"),
    ],
)
def test_bad_array_values_are_refused(good_file, tmp_path, entry, change, message):
    entries = _entries(good_file)
    entries[f"arrays/{entry}.npy"] = _npy(change(np.load(io.BytesIO(entries[f"arrays/{entry}.npy"]))))
    with pytest.raises(ValueError, match=message):
        load_run(_write_zip(tmp_path / "values.ibrun", entries))


def test_save_keeps_an_existing_files_permissions_and_a_new_file_follows_the_umask(trained, tmp_path):
    run, _ = trained
    path = run.save(tmp_path / "shared.ibrun")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    os.chmod(path, 0o640)
    run.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    os.chmod(path, 0o604)
    run.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


def test_a_name_with_a_lone_surrogate_saves_loads_and_reports(tmp_path):
    """E.g. a name built from a file name with undecodable bytes (os.fsdecode gives lone surrogates)."""
    x, y = _data(16, 5)
    run = Run("run \udcff" + os.fsdecode(b"\xfe"), ["a\udcc3"], [3], x, y, num_classes=C)
    run.add_snapshot(0, {"a\ufffd": kernels.gram(torch.randn(16, 3))}, torch.randn(16, C))
    assert run.name == "run \ufffd\ufffd" and run.layer_names == ["a\ufffd"]
    loaded = load_run(run.save(tmp_path / "s.ibrun"))
    assert loaded.name == run.name
    page = loaded.to_html(tmp_path / "s.html", notes="notes \udcff").read_text(encoding="utf-8")
    assert "run \ufffd\ufffd" in page and "notes \ufffd" in page


def test_batches_mode_with_varying_batch_counts_round_trips(tmp_path):
    x, y = _data(16, 6)
    run = Run("b", ["a"], [3], x, y, num_classes=C)
    run.add_snapshot(0, {"a": kernels.gram(torch.randn(16, 3))}, torch.randn(16, C))
    rng = np.random.default_rng(0)
    run.batch_dynamics = [rng.normal(size=(b, 1, 1, 2)) for b in (3, 2, 3)]  # (batches, evaluators, layers, 2)
    loaded = load_run(run.save(tmp_path / "b.ibrun"))
    assert [b.shape for b in loaded.batch_dynamics] == [(3, 1, 1, 2), (2, 1, 1, 2), (3, 1, 1, 2)]
    for a, b in zip(run.batch_dynamics, loaded.batch_dynamics, strict=True):
        np.testing.assert_array_equal(a, b)


def test_trajectories_and_grids_take_names_in_any_case_and_suggest_the_closest(trained):
    from ibwidget.plane._grid import GridBuilder

    run, _ = trained
    np.testing.assert_array_equal(
        run.trajectories("CKA", target="Labels", kernel="Gaussian", sigma_rule="Median_D2"),
        run.trajectories("cka", target="labels", kernel="gaussian", sigma_rule="median_d2"),
    )
    with pytest.raises(ValueError, match="Did you mean 'output'"):
        run.trajectories("hsic", target="outptu")
    builder = GridBuilder(["HSIC"], sigmas=[1.0], targets=["LABELS"], sigma_rules=["Fixed"], kernel="Linear")
    assert builder.targets == ("labels",) and builder.rules == ("fixed",) and builder.kernel == "linear"
