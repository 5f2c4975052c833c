"""The real-Buildroot acceptance suite: its marker, and the numbers it measured.

Not in the default test paths and not run by ``scripts/test-all.sh`` (CI has no real
Buildroot). Run it by hand, see ``docs/real-buildroot.md``::

    GAIA_REAL_BUILDROOT_REPO=/path/to/br-git .venv/bin/pytest -m real_buildroot acceptance
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the scenario files share test_real_buildroot's helpers
    sys.path.insert(0, str(HERE))

_MEASURED = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_buildroot: drives a real Buildroot build (acceptance/, needs GAIA_REAL_BUILDROOT_REPO)",
    )
    config.stash[_MEASURED] = []


@pytest.fixture(scope="session")
def measured(pytestconfig: pytest.Config) -> list[str]:
    """Lines appended here are printed at the end of the run, under "real Buildroot"."""
    return pytestconfig.stash[_MEASURED]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(_MEASURED, [])
    if lines:
        terminalreporter.section("real Buildroot: measured")
        for line in lines:
            terminalreporter.write_line(line)
