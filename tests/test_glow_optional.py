"""Without PyGlow installed, only the tests that call PyGlow are skipped, and under CI they fail instead.

A real pytest runs selected tests in a subprocess where ``import glow`` fails (a ``glow`` package that raises
ImportError comes first on PYTHONPATH); the junit report says what each test did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_GLOW = [
    "test_pyglow_parity.py::test_eval_dynamics_segment_layout_equals_glow",
    "test_models.py::test_tutorial_dynamics_equal_glow_itself",
]
WITHOUT_GLOW = [
    "test_pyglow_parity.py::test_pyglow_normaliser_is_biased_times_m_minus_1",
    "test_models.py::test_misuse_is_reported",
]


@pytest.fixture(scope="module")
def no_glow(tmp_path_factory) -> Path:
    """A folder whose ``glow`` package cannot be imported, as on a machine without PyGlow."""
    root = tmp_path_factory.mktemp("no-glow")
    (root / "glow").mkdir()
    (root / "glow" / "__init__.py").write_text("raise ImportError(\"No module named 'glow' (hidden by the test)\")\n")
    return root


def _outcomes(no_glow: Path, tmp_path: Path, ci: str | None) -> dict[str, tuple[str, str]]:
    """Run the selected tests with PyGlow hidden; {test name: (outcome, message)}."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(no_glow), *filter(None, [env.get("PYTHONPATH")])])
    if ci is not None:
        env["CI"] = ci
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        + [str(TESTS / t) for t in NEEDS_GLOW + WITHOUT_GLOW],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.is_file(), proc.stdout + proc.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        result = next(iter(case), None)
        outcome = "passed" if result is None or result.tag in ("system-out", "system-err") else result.tag
        outcomes[case.get("name")] = (outcome, "" if result is None else (result.get("message") or ""))
    return outcomes


def test_without_glow_only_the_glow_tests_are_skipped(no_glow, tmp_path):
    outcomes = _outcomes(no_glow, tmp_path, ci=None)
    assert {name.split("::")[1] for name in NEEDS_GLOW + WITHOUT_GLOW} == set(outcomes)
    for test in WITHOUT_GLOW:
        assert outcomes[test.split("::")[1]][0] == "passed", outcomes
    for test in NEEDS_GLOW:
        outcome, message = outcomes[test.split("::")[1]]
        assert outcome == "skipped", outcomes
        assert "PyGlow is not importable" in message and "pip install --no-deps pyglow==0.1.7" in message


def test_without_glow_under_ci_the_glow_tests_fail(no_glow, tmp_path):
    outcomes = _outcomes(no_glow, tmp_path, ci="true")
    for test in WITHOUT_GLOW:
        assert outcomes[test.split("::")[1]][0] == "passed", outcomes
    for test in NEEDS_GLOW:
        outcome, message = outcomes[test.split("::")[1]]
        assert outcome in ("failure", "error"), outcomes  # a fixture's failure is reported as an error
        assert "under CI this test must run" in message and "pyglow==0.1.7" in message
