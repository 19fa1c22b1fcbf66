"""Optional test dependencies: a test that cannot run here is skipped, except under CI (``CI`` set), where it fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def skip_or_fail_under_ci(reason: str) -> None:
    """Skip the calling test, or fail it when ``CI`` is set (where nothing may be silently left out)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI this test must run", pytrace=False)
    pytest.skip(reason)


def torch_set() -> str | None:
    """The torch set ``make`` installed in this environment (``full`` or ``cpu``; see the Makefile), or None."""
    marker = Path(sys.prefix) / ".ibwidget-torch-set"
    return marker.read_text().strip() if marker.is_file() else None


def needs_torchvision() -> None:
    """Skip the calling test where torchvision does not load: ``make``'s ``cpu`` torch set has none (it is too large
    for a short disk). Under CI a missing torchvision fails, except in that set."""
    try:
        import torchvision.datasets  # noqa: F401
    except (ImportError, RuntimeError) as e:
        reason = f"torchvision does not load ({type(e).__name__}: {str(e)[:120]})"
        if torch_set() == "cpu":
            pytest.skip(f"{reason}: make installed the 'cpu' torch set, which has no torchvision")
        skip_or_fail_under_ci(reason)
