"""Small data, models and engines shared by the engine tests: a 4-class Gaussian mixture in 12 dimensions."""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ibwidget as ib
from ibwidget.record.recording import Recording, pop_options

C = 4
D_IN = 12
WAIT = 120  # generous join timeouts: they only bound a hang, nothing is timed


def make_data(n: int, seed: int = 0):
    """``n`` samples (x, labels) of four well-separated classes, balanced."""
    g = torch.Generator().manual_seed(seed)
    protos = 2.0 * torch.randn(C, D_IN, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % C
    y = y[torch.randperm(n, generator=g)]
    return protos[y] + torch.randn(n, D_IN, generator=g), y


def make_loaders(n_train: int = 128, batch_size: int = 16, shuffle: bool = False, generator=None):
    """(train, val) DataLoaders of TensorDatasets; 64 validation samples in batches of 32."""
    x, y = make_data(n_train, 1)
    xv, yv = make_data(64, 2)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)
    val = DataLoader(TensorDataset(xv, yv), batch_size=32)
    return train, val


def make_mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """Linear(12, 16), ReLU, [Dropout], Linear(16, 4)."""
    torch.manual_seed(seed)
    layers = [nn.Linear(D_IN, 16), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(16, C)]
    return nn.Sequential(*layers)


def make_engine(model=None, train=None, val=None, batch_event_interval: float = 0.2, **kw) -> ib.Engine:
    """An Engine on the MLP and loaders above: 2 epochs, probe 32, lr 0.05 unless given; keywords of a Recording
    (probe_data, keep_activations, memory_budget, name, config) go to its recording."""
    if train is None:
        train, val = make_loaders()
    kw.setdefault("epochs", 2)
    kw.setdefault("lr", 0.05)
    kw["recording"] = Recording(kw.pop("probe", 32), **pop_options(kw))
    engine = ib.Engine(model if model is not None else make_mlp(), train, val, **kw)
    engine.batch_event_interval = batch_event_interval
    return engine


def no_hooks(model: nn.Module) -> bool:
    """No forward, forward-pre or backward hook left on any submodule."""
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def hold_at(engine: ib.Engine, epoch: int, batch: int = 1):
    """Block the training thread at (epoch, batch) until released; returns (reached, release) events."""
    reached, release = threading.Event(), threading.Event()

    def on_batch(ev):
        if ev.epoch == epoch and ev.batch == batch:
            reached.set()
            release.wait(WAIT)

    engine.on("batch_end", on_batch)
    return reached, release


def start_long_run() -> ib.Engine:
    """A 1000-epoch run (32 batches an epoch), started, with at least one epoch completed."""
    train, val = make_loaders(n_train=256, batch_size=8)
    engine = make_engine(train=train, val=val, epochs=1000, probe=16)
    under_way = threading.Event()
    engine.on("epoch_end", lambda ev: under_way.set())
    engine.start()
    assert under_way.wait(WAIT)
    return engine
