"""``ibwidget.models.seed_model``: the seed tutorial's network in one public call, shared by the CLI and the
notebooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ibwidget as ib
from ibwidget import cli
from ibwidget.models import seed_model


def _modules(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_seed_model_is_the_tutorial_network_with_logits():
    model = seed_model((1, 8, 8), device="cpu", name="seed")
    assert isinstance(model, ib.IBSequential) and model.name == "seed"
    convs = _modules(model, nn.Conv2d)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [(1, 16, (3, 3), (1, 1))]
    widths = [(lin.in_features, lin.out_features) for lin in _modules(model, nn.Linear)]
    assert widths == [(16 * 8 * 8, 1000), (1000, 500), (500, 200), (200, 10)]
    assert not _modules(model, nn.Dropout)
    out = model(torch.zeros(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_seed_model_dropout_follows_each_hidden_dense_layer():
    model = seed_model((1, 28, 28), num_classes=4, device="cpu", dropout=0.25)
    kinds = [type(layer).__name__ for layer in model.children()]
    assert kinds == ["Conv2d", "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert [d.p for d in _modules(model, nn.Dropout)] == [0.25, 0.25, 0.25]
    assert _modules(model, nn.Linear)[-1].out_features == 4


def test_seed_model_refuses_a_dropout_that_is_not_a_probability():
    with pytest.raises(ValueError, match="probability"):
        seed_model((1, 8, 8), device="cpu", dropout=1.5)


def test_the_cli_and_the_public_path_share_one_function():
    assert cli.seed_model is seed_model
    assert "seed_model" in ib.models.__all__
