"""Shared fixtures for the test suite."""

from __future__ import annotations

import pytest
import torch
from _ci import needs_torchvision

_CUDA = pytest.param(
    "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")]
)


@pytest.fixture(params=["cpu", _CUDA])
def device(request) -> torch.device:
    """Each test that asks for ``device`` runs on the CPU and, where there is one, on a CUDA device."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def torchvision_loads() -> None:
    """Tests of the MNIST and CIFAR-10 loaders ask for this: they skip where torchvision is not installed (see _ci)."""
    needs_torchvision()
