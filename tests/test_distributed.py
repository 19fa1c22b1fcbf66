"""Recording under the distributed engines, with real processes: torchrun (DDP, FSDP ``fully_shard``) on 2 CPU
processes (gloo), and Lightning (one process; ``strategy="ddp"`` on 2 CPU processes, from a script: Lightning
re-launches ``sys.argv``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ibwidget as ib

JOBS = Path(__file__).parent / "jobs"
sys.path.insert(0, str(JOBS))
from classifier import make_classifier  # noqa: E402 - the jobs' module, in the tests too

ROOT = Path(__file__).parent.parent
TIMEOUT = 120  # a hang fails the test instead of the suite


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _torchrun(mode: str, path: Path) -> str:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return _run([*torchrun, str(JOBS / "torchrun_record.py"), mode, str(path)])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "single.ibrun"
    _run([sys.executable, str(JOBS / "torchrun_record.py"), "single", str(path)])
    return ib.load_run(path)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_records_on_rank_0_what_one_process_records(mode, one_process, tmp_path):
    """2 ranks with the same global batch: one file, written by rank 0, whose trajectories equal the single-process
    run's to 1e-4 relative; rank 1 recorded nothing; no hang, no lock left."""
    path = tmp_path / f"{mode}.ibrun"
    out = _torchrun(mode, path)
    assert "rank 0 of 2: 4 snapshots" in out and "rank 1 of 2: 0 snapshots" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{mode}.ibrun"]
    run = ib.load_run(path)
    assert run.epochs == [0, 1, 2, 3] and run.layer_names == ["0", "2", "4"]
    assert run.config["world_size"] == 2 and run.config["parallel"] == mode
    for estimator in ("hsic", "cka"):
        ours, single = run.trajectories(estimator), one_process.trajectories(estimator)
        np.testing.assert_allclose(ours, single, rtol=1e-4, atol=1e-4 * np.abs(single).max())
    assert np.abs(np.diff(one_process.trajectories("cka")[:, :, 1], axis=0)).max() > 1e-3  # training moved them
    ours, single = run.diagnostics(), one_process.diagnostics()
    np.testing.assert_allclose(ours["mean_abs_activation"], single["mean_abs_activation"], rtol=1e-4)
    if mode == "ddp":  # rank 0 steps with the allreduced gradient of the global batch: the single process's
        for name in ("weight_norm", "grad_mean", "grad_std", "grad_snr"):
            np.testing.assert_allclose(ours[name][1:], single[name][1:], rtol=1e-4)
        assert np.isnan(ours["grad_mean"][0]).all() and np.isfinite(ours["grad_mean"][1:]).all()
    else:  # each FSDP rank holds shards of the weights: no weight or gradient statistics, and a note says so
        assert np.isnan(ours["grad_mean"]).all() and np.isnan(ours["weight_norm"]).all()
        assert any("FSDP" in note for note in run.diagnostics_notes)


def test_tensor_parallel_parameters_are_refused_saying_what_is_supported():
    from ibwidget.record._distributed import placement

    class FakeDTensor(torch.Tensor):  # a parameter type named as torch's DTensor, outside any FSDP module
        pass

    FakeDTensor.__name__ = "DTensor"
    model = nn.Linear(2, 2)
    model.weight = nn.Parameter(torch.zeros(2, 2).as_subclass(FakeDTensor))
    with pytest.raises(NotImplementedError, match="DTensors outside FSDP.*DDP and FSDP"):
        placement(model)


# ------------------------------------------------------------------------------------------ Lightning


@pytest.mark.parametrize("package_name", ["lightning.pytorch", "pytorch_lightning"])
def test_lightning_records_each_epoch_with_its_logged_metrics(package_name, tmp_path):
    import importlib

    from ibwidget.lightning import InformationPlane

    package = importlib.import_module(package_name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g)
    y = x[:, :5].argmax(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    plane = InformationPlane(probe=(x[:64], y[:64]), layers=["net.0", "net.2"], path=tmp_path / "l.ibrun")
    trainer = package.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[plane],
    )
    module = make_classifier(package)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers
        trainer.fit(module, loader, loader)
    run = ib.load_run(tmp_path / "l.ibrun")
    assert run.epochs == [0, 1, 2, 3] and run.name == "Classifier" and run.layer_names == ["net.0", "net.2"]
    assert run.history["train_loss"] == plane.run.history["train_loss"]
    assert run.history["train_loss"][-1] == pytest.approx(float(trainer.callback_metrics["train_loss"]))
    assert len(run.history["val_acc"]) == 3 and run.history["train_loss"][-1] < run.history["train_loss"][0]
    assert not (tmp_path / "l.ibrun.lock").exists()
    # the last snapshot is the trained module's (probed directly, in eval mode)
    module.eval()
    with torch.no_grad():
        z = module.net[0](x[:64])
    assert torch.allclose(run.snapshots().norms[-1, 0], (z * z).sum(1), rtol=1e-4, atol=1e-5)
    grads = run.diagnostics()["grad_mean"]  # every backward pass reached the epoch's gradient statistics
    assert np.isnan(grads[0]).all() and np.isfinite(grads[1:]).all() and (grads[1:] > 0).all()


def test_a_module_without_forward_is_refused_with_what_to_pass(tmp_path):
    import lightning.pytorch as L

    from ibwidget.lightning import InformationPlane

    class NoForward(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(4, 2)

    plane = InformationPlane(probe=(torch.randn(8, 4), torch.arange(8) % 2))
    with pytest.raises(TypeError, match="defines no forward\\(\\).*forward=lambda x"):
        plane.on_train_start(None, NoForward())


def test_lightning_ddp_on_two_processes_writes_one_file_from_rank_0(tmp_path):
    path = tmp_path / "ddp.ibrun"
    out = _run([sys.executable, str(JOBS / "lightning_ddp.py"), str(path), "2"])
    assert "rank 0: 3 snapshots" in out and "rank 1: 0 snapshots" in out
    run = ib.load_run(path)
    assert run.epochs == [0, 1, 2] and len(run.history["train_loss"]) == 2
    assert run.config["world_size"] == 2 and run.config["parallel"] == "ddp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.ibrun"]
