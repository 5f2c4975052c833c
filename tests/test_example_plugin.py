"""The anchor plugin of docs/plugins.md, installed like a third-party plugin, round-trips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "gaia-toolchain" / "example"


def gaia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gaia_core.cli", *args], capture_output=True, text=True, timeout=120)


def test_example_plugin_is_installed_and_registers_its_anchor():
    result = gaia("plugins", "--json")
    assert result.returncode == 0, result.stderr
    [entry] = [p for p in json.loads(result.stdout) if p["distribution"] == "gaia-toolchain"]
    assert entry["provides"]["anchors"] == ["toolchain.build"]
    assert entry["provides"]["modules"] == ["toolchain"]


def test_example_plugin_captures_then_restores(tmp_path):
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build", "out"))
    build = str(project / "build.toml")
    cold = gaia("run", build)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "captured" in cold.stdout
    shutil.rmtree(project / "build" / "toolchain")
    warm = gaia("run", build)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "SKIP: toolchain.build" in warm.stdout
    installed = project / "out" / "build" / "toolchain"
    assert (installed / "bin" / "cc").read_text().startswith("#!/bin/sh")
    assert len((installed / "build.log").read_text().splitlines()) == 1

    (project / "src" / "compiler.sh").write_text('#!/bin/sh\necho "example compiler 2.0"\n')
    status = gaia("checkpoints", "status", build, "--json")
    assert json.loads(status.stdout)["points"][0]["reason"] == "inputs_changed:toolchain.source"
