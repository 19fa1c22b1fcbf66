"""Optional test dependencies: a test that cannot run here is skipped, except under CI (``CI`` set), where it fails."""

from __future__ import annotations

import os

import pytest


def skip_or_fail_under_ci(reason: str) -> None:
    """Skip the calling test, or fail it when ``CI`` is set (where nothing may be silently left out)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI this test must run", pytrace=False)
    pytest.skip(reason)
