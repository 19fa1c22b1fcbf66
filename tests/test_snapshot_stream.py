"""Where and when an epoch's snapshot is taken: after its last optimizer step, beside validation (on CUDA, on a side
stream), never reading weights the next step writes, and never lost or misfiled when validation fails."""

from __future__ import annotations

import copy

import pytest
import torch
from _training import D_IN, WAIT, C, make_data, make_loaders
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.record.recorder import Recorder
from ibwidget.record.recording import Recording


def _bn_mlp(seed: int = 0) -> nn.Module:
    """An MLP with BatchNorm, so buffers change in every training forward, not only weights in every step."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, 24), nn.BatchNorm1d(24), nn.Tanh(), nn.Linear(24, C))


class _WeightsAtStepsEnd:
    """Clones the model's parameters and buffers when the epoch's last step is done."""

    def __init__(self):
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_steps_end(self, engine, epoch):
        self.states[epoch] = {k: v.detach().clone().cpu() for k, v in engine.model.state_dict().items()}


def test_each_epoch_snapshot_holds_the_weights_after_its_last_step(device):
    train, val = make_loaders(n_train=96, batch_size=16)  # 6 steps an epoch, each one moves the weights
    model = _bn_mlp()
    weights = _WeightsAtStepsEnd()
    recording = Recording(32, keep_activations="none")
    engine = ib.Engine(model, train, val, epochs=3, lr=0.2, device=device, recording=recording, callbacks=[weights])
    run = engine.start().wait(timeout=WAIT)
    assert run.epochs == [0, 1, 2, 3] and sorted(weights.states) == [1, 2, 3]
    snap = run.snapshots()
    for epoch in (1, 2, 3):
        replica = copy.deepcopy(model).cpu()
        replica.load_state_dict(weights.states[epoch])
        names = run.layer_names
        grams, *_ = Recorder(replica, names, run.probe_x.cpu(), run.probe_labels.cpu(), "cpu", "none").snapshot()
        expected, _ = ib.kernels.pack_gram(torch.stack([grams[n] for n in names]))
        got = snap.dist[epoch].cpu()
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= 1e-4 * scale, epoch
    # the epochs differ from each other by far more than that tolerance: a snapshot one step early would fail
    assert float((snap.dist[2] - snap.dist[1]).abs().max()) > 1e-2 * float(snap.dist[1].abs().max())


class _FailsOnSecondPass:
    """A validation loader whose second pass raises."""

    def __init__(self):
        self.passes = 0
        self.dataset = TensorDataset(*make_data(32, 3))
        self.loader = DataLoader(self.dataset, batch_size=16)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        if self.passes == 2:
            raise OSError("the validation files went away")
        return iter(self.loader)


def test_a_failed_validation_drops_the_snapshot_begun_for_its_epoch(device, tmp_path):
    train, _ = make_loaders(n_train=64, batch_size=16)
    path = tmp_path / "a.ibrun"
    recording = Recording(32, probe_data=make_data(32, 5), path=path)
    engine = ib.Engine(_bn_mlp(), train, _FailsOnSecondPass(), epochs=3, device=device, recording=recording)
    engine.start()
    with pytest.raises(OSError, match="went away"):
        engine.wait(timeout=WAIT)
    assert engine.status == "failed"
    assert engine.run.epochs == [0, 1] and len(engine.run.history["loss"]) == 1
    assert ib.load_run(path).epochs == [0, 1]  # the file holds the completed epochs, and only those


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_the_cuda_side_stream_reads_the_weights_between_the_steps_around_it():
    """The snapshot starts after the work queued before it (a step behind a slow kernel) and the step queued right
    after its result waits for it, though the host waits for nothing here."""
    cuda = torch.device("cuda")
    model = _bn_mlp().to(cuda).eval()
    x, labels = make_data(64, 4)
    recorder = Recorder(model, ["1", "3"], x, labels, cuda, "none")
    params = list(model.parameters())

    def expected_after(shift: float) -> dict[str, torch.Tensor]:
        replica = copy.deepcopy(model).cpu()
        with torch.no_grad():
            for p in replica.parameters():
                p.add_(shift)
        return Recorder(replica, ["1", "3"], x, labels, "cpu", "none").snapshot()[0]

    before = expected_after(0.0)
    after_one = expected_after(0.5)
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # about 0.1 s of one kernel: the step below runs long after begin_snapshot returns
    with torch.no_grad():
        for p in params:
            p.add_(0.5)
    pending = recorder.begin_snapshot()
    grams, *_ = pending.result()
    with torch.no_grad():  # the next step, queued at once: it must not change what the snapshot reads
        for p in params:
            p.add_(0.5)
    torch.cuda.synchronize()
    for name in ("1", "3"):
        got = grams[name].cpu()
        assert not torch.allclose(after_one[name], before[name], rtol=1e-2)
        torch.testing.assert_close(got, after_one[name], rtol=1e-4, atol=1e-4 * float(after_one[name].abs().max()))
