"""The gaia-autotools example: an autotools anchor in at most 40 lines (issue 19), whose own
tests build a real autoconf/automake project, restore it at a longer path in a fresh copy
and pass here without installing it (they register the plugin themselves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "gaia-autotools"


def test_the_anchor_takes_at_most_40_lines():
    lines = (PLUGIN / "gaia_autotools" / "plugin.py").read_text().splitlines()
    assert len(lines) <= 40, len(lines)


def test_the_example_passes_its_own_tests(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "--basetemp", str(tmp_path / "t")],
        cwd=PLUGIN, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout, run.stdout
