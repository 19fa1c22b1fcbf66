"""PyGlow 0.1.7 (PyPI ``pyglow``, imported as ``glow``): the reference of the parity tests.

Only the tests that compare with PyGlow ask for the ``glow_estimator`` fixture (import ``glow_fixture`` from here):
where PyGlow is not installed they are skipped, and under CI (``CI`` set) they fail, since there the parity must be
checked. Every other test in those modules runs either way.
"""

from __future__ import annotations

import importlib

import pytest
from _ci import skip_or_fail_under_ci

INSTALL = "pip install --no-deps pyglow==0.1.7"


def _glow_estimator():
    # only the estimator module: ``import glow`` pulls in plotting code that needs matplotlib
    try:
        return importlib.import_module("glow.information_bottleneck.estimator")
    except ImportError as exc:
        skip_or_fail_under_ci(f"PyGlow is not importable ({exc}): install it with `{INSTALL}`")


glow_fixture = pytest.fixture(scope="module", name="glow_estimator")(_glow_estimator)
