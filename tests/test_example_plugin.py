"""The example plugin (``gaia plugin new toolchain --anchor``), installed like a third-party
plugin: listed, round-trips through a checkpoint, and passes its own tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "gaia-toolchain"
EXAMPLE = PLUGIN / "example"


def gaia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gaia_core.cli", *args], capture_output=True, text=True, timeout=120)


def test_example_plugin_is_installed_and_registers_its_anchor():
    result = gaia("plugins", "--json")
    assert result.returncode == 0, result.stderr
    [entry] = [p for p in json.loads(result.stdout) if p["distribution"] == "gaia-toolchain"]
    assert entry["provides"]["anchors"] == ["toolchain.build"]
    assert entry["provides"]["modules"] == ["toolchain"]
    assert entry["provides"]["fingerprint_sources"] == ["toolchain-sources"]


def test_example_plugin_captures_then_restores(tmp_path):
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build", "out"))
    build = str(project / "build.toml")
    cold = gaia("run", build)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "checkpoint:toolchain captured" in cold.stdout
    shutil.rmtree(project / "build" / "toolchain")
    warm = gaia("run", build)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "SKIP: toolchain.build" in warm.stdout
    installed = project / "out" / "build" / "toolchain"
    assert (installed / "bin" / "tool").read_text() == '#!/bin/sh\necho "toolchain tool 1.0"\n'
    assert os.access(installed / "bin" / "tool", os.X_OK)
    assert len((installed / "build.log").read_text().splitlines()) == 1

    (project / "src" / "tool.sh").write_text('#!/bin/sh\necho "toolchain tool 2.0"\n')
    status = gaia("checkpoints", "status", build, "--json")
    assert json.loads(status.stdout)["points"][0]["reason"] == "inputs_changed:toolchain.source"


def test_example_plugin_passes_its_own_tests(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--basetemp", str(tmp_path / "t")],
        cwd=PLUGIN, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
