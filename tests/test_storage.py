"""Storage that scales: a layer narrower than the probe keeps only its activations (m d floats), never its m(m-1)/2
distances; every estimate computed from them equals the one from stored distances; run files (schema 3) hold the
same, and schema-2 files, which stored every layer's distances, still load and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ibwidget as ib
from ibwidget.measure import kernels
from ibwidget.plane._grid import GridBuilder
from ibwidget.record import _runlog
from ibwidget.record.recorder import Recorder
from ibwidget.record.run import Run

M = 48  # probe: the 8- and 4-unit layers are narrower, the 64-unit one is wider
LAYERS = ["0", "2", "4"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 4))


def _probe():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(M, 10, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _record(derived: list[str] | None, epochs: int = 3) -> tuple[Run, Recorder]:
    """A run of ``epochs`` + 1 snapshots of a model trained between them; ``derived=[]`` stores every distance."""
    x, y = _probe()
    model = _model()
    recorder = Recorder(model, LAYERS, x, y, torch.device("cpu"))
    run = Run("r", LAYERS, [64, 8, 4], x, y, num_classes=4, derived_layers=derived)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for e in range(epochs + 1):
        grams, output, kept, acts = recorder.snapshot()
        if derived == []:  # a run storing every layer's distances gets every Gram
            grams = {n: kernels.gram(a) for n, a in acts.items()}
        run.add_snapshot(e, grams, output, kept)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return run, recorder


def test_narrow_layers_keep_only_activations_and_bytes_per_epoch_says_so():
    run, recorder = _record(None)
    assert run.derived_layers == ["2", "4"] and run.stored_layers == ["0"]
    snap = run.snapshots()
    assert snap.derived_layers == (1, 2) and snap.stored_dist.shape == (4, 1, M * (M - 1) // 2)
    P = M * (M - 1) // 2
    per_epoch = 4 * ((P + M) + M * 8 + M * 4 + M * 4)  # layer 0's distances and norms; activations; the output
    assert recorder.bytes_per_epoch() == per_epoch
    assert run.nbytes() == 4 * per_epoch  # what the recorder predicts is what the run holds
    full, _ = _record([])
    assert full.nbytes() == 4 * (per_epoch + 4 * 2 * (P + M))  # storing them too: a float32 triangle per narrow layer


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to float32 rounding, relative to the largest value (a wrong normaliser or layer is far off)."""
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6 * float(b.abs().max()))


def test_distances_from_activations_are_those_that_would_have_been_stored():
    run, _ = _record(None)
    full, _ = _record([])
    a, b = run.snapshots(), full.snapshots()
    _close(a.dist, b.dist)
    _close(a.norms, b.norms)
    assert torch.equal(a.dist[:, 0], b.dist[:, 0])  # the wide layer's, as stored
    dist, norms = a.distances([2, 0])
    _close(dist, b.dist[:, [2, 0]])
    _close(norms, b.norms[:, [2, 0]])
    assert torch.equal(a.window(1, 3).dist, a.dist[1:3])
    for kwargs in (
        {"estimator": "hsic"},
        {"estimator": "cka", "sigma_rule": "median_d"},
        {"estimator": "kde_upper", "sigma": 1.0},
        {"estimator": "nhsic"},
        {"estimator": "hsic", "kernel": "linear", "target": "output"},
    ):
        ours, stored = run.trajectories(**kwargs), full.trajectories(**kwargs)
        np.testing.assert_allclose(ours, stored, rtol=1e-4, atol=1e-9, err_msg=str(kwargs))
    np.testing.assert_allclose(run.saturation(3.0, "median_d2"), full.saturation(3.0, "median_d2"), rtol=1e-5)
    builder = GridBuilder(["hsic", "cka"], [0.5, 5.0], sigma_rules=["fixed", "median_d"], targets=["labels"])
    (values, sats, _), (values_full, sats_full, _) = builder.compute(run), builder.compute(full)
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, values_full, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(sats, sats_full, rtol=1e-5)


def test_pack_activations_is_pack_gram_of_the_gram():
    g = torch.Generator().manual_seed(3)
    for m, d in ((5, 1), (64, 3), (200, 300)):
        Z = 3 * torch.randn(m, d, generator=g) + 1  # off-centre: the norms dwarf some distances
        dist, norms = kernels.pack_activations(Z)
        ref_dist, ref_norms = kernels.pack_gram(kernels.gram(Z.double()))
        assert dist.dtype == torch.float32 and dist.shape == (m * (m - 1) // 2,) and (dist >= 0).all()
        torch.testing.assert_close(dist.double(), ref_dist, rtol=0, atol=1e-5 * float(ref_dist.max()))
        torch.testing.assert_close(norms.double(), ref_norms, rtol=1e-6, atol=0)
    same = torch.ones(6, 4)  # coinciding points: distances exactly 0, never negative
    assert torch.equal(kernels.pack_activations(same)[0], torch.zeros(15))


def test_a_derived_layer_needs_its_activations_and_a_stored_one_gets_its_gram_from_them():
    run, _ = _record(None, epochs=0)
    x, _ = _probe()
    z = torch.randn(M, 8)
    with pytest.raises(ValueError, match=r"the layers \['2', '4'\] keep only their activations"):
        run.add_snapshot(1, {n: kernels.gram(torch.randn(M, 3)) for n in LAYERS}, torch.randn(M, 4))
    assert run.num_snapshots == 1  # refused whole
    stored_from_acts = Run("s", LAYERS, [64, 8, 4], x, _probe()[1], derived_layers=[])
    wide = torch.randn(M, 64)
    stored_from_acts.add_snapshot(0, {}, torch.randn(M, 4), {"0": wide, "2": z, "4": z[:, :4]})
    expected = kernels.pack_gram(kernels.gram(z))[0]
    assert torch.equal(stored_from_acts.snapshots().stored_dist[0, 1], expected)  # as a Gram handed in is stored
    with pytest.raises(ValueError, match=r"needs a Gram for every tracked layer; missing \['4'\]"):
        stored_from_acts.add_snapshot(1, {}, torch.randn(M, 4), {"0": wide, "2": z})


def test_run_files_keep_the_narrow_layers_activations_only(tmp_path):
    run, _ = _record(None)
    full, _ = _record([])
    small, big = run.save(tmp_path / "small.ibrun"), full.save(tmp_path / "big.ibrun")
    header = _runlog.LogReader(small).read()[0]
    assert header.meta["schema_version"] == 3 and header.meta["derived_layers"] == ["2", "4"]
    P = M * (M - 1) // 2
    saved = big.stat().st_size - small.stat().st_size  # two float32 triangles and norms an epoch, less a header line
    assert abs(saved - 4 * run.num_snapshots * 2 * (P + M)) < 100
    back = ib.load_run(small)
    assert back.derived_layers == ["2", "4"] and back.nbytes() == run.nbytes()
    kwargs = {"estimator": "cka", "sigma_rule": "median_d"}
    np.testing.assert_array_equal(back.trajectories(**kwargs), run.trajectories(**kwargs))
    np.testing.assert_allclose(back.trajectories(**kwargs), full.trajectories(**kwargs), rtol=1e-4)


def _rewrite_header(path, drop: str | None = None, **changes):
    """Replace the header record of the run file ``path``: its JSON without ``drop``, with ``changes``."""
    data = path.read_bytes()
    header = _runlog.LogReader(path).read()[0]
    start = len(_runlog.MAGIC)
    end = start + 16 + int.from_bytes(data[start + 8 : start + 16], "little")  # frame: kind, CRC, payload length
    meta = {k: v for k, v in header.meta.items() if k != drop} | changes
    path.write_bytes(_runlog.MAGIC + _runlog.encode(_runlog.HEADER, meta, header.arrays) + data[end:])
    return path


def _schema2(run: Run, path):
    """``run`` (storing every distance) written as schema 2 wrote it: its header without ``derived_layers``."""
    return _rewrite_header(run.save(path), drop="derived_layers", schema_version=2)


def test_schema2_files_load_and_resume_with_every_distance_stored(tmp_path):
    full, _ = _record([])
    path = _schema2(full, tmp_path / "old.ibrun")
    back = ib.load_run(path)
    assert back.derived_layers == [] and back.epochs == full.epochs
    np.testing.assert_array_equal(back.trajectories("hsic"), full.trajectories("hsic"))
    x, y = _probe()
    model = _model()
    with ib.record(model, probe=(x, y), layers=LAYERS, path=path, name="r", resume=True) as rec:
        rec.snapshot(logs={"loss": 1.0})  # the recorder skips narrow Grams: the run computes them from activations
    again = ib.load_run(path)
    assert again.derived_layers == [] and again.num_snapshots == full.num_snapshots + 1
    assert np.isfinite(again.trajectories("hsic")).all()


def test_a_header_whose_derived_layers_keep_no_activations_is_refused(tmp_path):
    run, _ = _record(None, epochs=0)
    path = _rewrite_header(run.save(tmp_path / "r.ibrun"), derived_layers=["0"])  # the wide layer: no activations
    with pytest.raises(ValueError, match="invalid header: 'derived_layers' must list layers that keep their activ"):
        ib.load_run(path)


def test_a_run_with_narrow_layers_and_no_epoch_yet_has_snapshots(tmp_path):
    """A reader that polls a growing file between its header and its first epoch gets a run with no snapshot: it
    must still hand out (empty) snapshots, as one without narrow layers does."""
    g = torch.Generator().manual_seed(0)
    run = Run(
        "empty",
        ["wide", "narrow"],
        [40, 6],
        torch.randn(16, 3, generator=g),
        torch.arange(16) % 2,
        derived_layers=["narrow"],
    )
    snap = run.snapshots()
    assert snap.num_snapshots == 0 and snap.activations["narrow"].shape == (0, 16, 6)
    assert snap.dist.shape == (0, 2, 16 * 15 // 2)  # the narrow layer's distances, from no activations (torch 2.14
    assert snap.norms.shape == (0, 2, 16)  # refused to reshape the empty batch with a -1: a clean clone caught it)
    with pytest.raises(ValueError, match="no snapshot yet"):  # what a run without snapshots says
        run.trajectories("hsic")
