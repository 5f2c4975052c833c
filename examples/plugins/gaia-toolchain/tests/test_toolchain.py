"""Tests of gaia-toolchain; the fixtures come from gaia-core's pytest plugin (gaia_core.testing)."""

from __future__ import annotations

import shutil

import pytest

BUILD = """
[toolchain]
command = ["sh", "build.sh"]

[checkpoints]
enabled = true

[[checkpoints.points]]
id = "toolchain"
anchor_task = "toolchain.build"
"""

BUILD_SH = """
set -e
mkdir -p "$OUT/bin"
cp tool.sh "$OUT/bin/tool"
echo built >> "$OUT/build.log"
"""


@pytest.fixture
def project(write_build):
    """A workspace (the test's tmp_path) with sources in src/ and build.toml."""
    write_build("src/build.sh", BUILD_SH)
    write_build("src/tool.sh", "#!/bin/sh\necho 1.0\n")
    return write_build("build.toml", BUILD)


def test_plugin_is_installed(gaia_cli):
    result = gaia_cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    [row] = [row for row in result.json if row["distribution"] == "gaia-toolchain"]
    assert row["provides"]["modules"] == ["toolchain"]
    assert row["provides"]["anchors"] == ["toolchain.build"]
    assert row["provides"]["fingerprint_sources"] == ["toolchain-sources"]
    assert row["core_compatible"] is True


def test_the_second_run_restores_instead_of_building(gaia_cli, project, tmp_path):
    first = gaia_cli("run", project)
    assert first.exit_code == 0, first.output
    assert "RUN: toolchain.build" in first.output
    assert "checkpoint:toolchain captured" in first.output

    shutil.rmtree(tmp_path / "build" / "toolchain")  # lose the output: the next run restores it
    second = gaia_cli("run", project)
    assert second.exit_code == 0, second.output
    assert "SKIP: toolchain.build" in second.output
    assert "checkpoint:toolchain restored" in second.output
    installed = tmp_path / "out" / "build" / "toolchain"
    assert (installed / "bin" / "tool").read_text() == "#!/bin/sh\necho 1.0\n"
    assert (installed / "build.log").read_text() == "built\n"  # restored, not built a second time


def test_editing_a_source_is_a_miss_that_names_it(gaia_cli, project, tmp_path):
    assert gaia_cli("run", project).exit_code == 0
    (tmp_path / "src" / "tool.sh").write_text("#!/bin/sh\necho 2.0\n")
    status = gaia_cli("checkpoints", "status", project, "--json")
    assert status.exit_code == 0, status.output
    assert status.json["points"][0]["reason"] == "inputs_changed:toolchain.source"
    explain = gaia_cli("checkpoints", "status", project, "--explain")
    assert "changed: tool.sh" in explain.output  # the file, not two hashes
