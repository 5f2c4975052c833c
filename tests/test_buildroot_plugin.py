"""The installed plugin, its config validation and the plan it produces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


def gaia_executable() -> str:
    found = Path(sys.executable).with_name("gaia")
    return str(found) if found.exists() else (shutil.which("gaia") or "gaia")


def test_gaia_plugins_lists_gaia_buildroot_and_what_it_registers():
    """Needs ``pip install -e plugins/gaia_buildroot`` in the test environment."""
    proc = subprocess.run(
        [gaia_executable(), "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    [info] = [
        p for p in json.loads(proc.stdout) if p["distribution"] == "gaia-buildroot"
    ]
    assert (
        info["entry_point"] == "buildroot" and info["module"] == "gaia_buildroot.plugin"
    )
    assert info["provides"]["modules"] == [
        "buildroot",
        "buildroot.rpi",
        "program",
        "stage",
    ]
    assert info["provides"]["anchors"] == ["buildroot.build"]
    assert set(info["provides"]["fingerprint_sources"]) == {
        "buildroot.defconfig",
        "buildroot.external",
        "buildroot.package_override",
        "buildroot.rpi.files",
        "buildroot.symbol_files",
        "buildroot.rpi.overlay",
        "buildroot.source_dir",
        "buildroot.version",
    }


def test_quickstart_plan_orders_stage_and_programs_before_collect(gaia_cli):
    plan = {
        t["id"]: t
        for t in gaia_cli("plan", QUICKSTART / "build.toml", "--json").json["tasks"]
    }
    assert plan["buildroot.fetch"]["deps"] == ["core.init"]
    # the quickstart checkpoints buildroot.build: restore comes before configure and build,
    # capture between build and collect
    restore, capture = "checkpoints.restore.buildroot-build", "checkpoints.capture.buildroot-build"
    # configure and build never read the stage: Buildroot need not wait for it
    assert set(plan["buildroot.configure"]["deps"]) == {"buildroot.fetch", restore}
    assert set(plan["buildroot.build"]["deps"]) == {"buildroot.configure", restore}
    assert set(plan["buildroot.collect"]["deps"]) == {"buildroot.build", "core.barrier.stage", capture}
    assert plan["program.hello.install"]["deps"] == [
        "program.hello.build",
        "stage.render",
    ]
    assert set(plan["core.barrier.stage"]["deps"]) == {
        "stage.render",
        "program.hello.install",
    }


def test_without_a_stage_table_the_stage_root_is_still_rendered_empty(
    gaia_cli, tmp_path: Path
):
    build_file = tmp_path / "build.toml"
    build_file.write_text('[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n')
    plan = gaia_cli("plan", build_file, "--json").json
    assert "stage.render" in [t["id"] for t in plan["tasks"]]


def test_config_problems_are_reported_together_with_their_keys(
    gaia_cli, tmp_path: Path
):
    build_file = tmp_path / "build.toml"
    build_file.write_text(
        """
[buildroot]
defconfig = "gaia_qemu_defconfig"
treads = 4

[[stage.files]]
dst = "etc/motd"
content = "x"

[[stage.files]]
dst = "/etc/issue"
src = "a"
content = "b"

[program."bad.name"]
src_dir = "."
"""
    )
    result = gaia_cli("plan", build_file)
    assert result.exit_code == 2
    out = result.output
    assert "buildroot.treads: unknown key; allowed:" in out and "threads" in out
    assert (
        "stage.files.0.dst" in out
        and "must be an absolute path inside the image" in out
    )
    assert "needs exactly one of src or content" in out
    assert "program.bad.name" in out and "pattern" in out


@pytest.mark.parametrize(
    ("dst", "message"),
    [
        ("/../etc/x", "must not contain '..'"),
        ("/usr/../../x", "must not contain '..'"),
        ("/", "must name a file or directory below /"),
    ],
)
def test_image_paths_must_stay_below_the_image_root(
    gaia_cli, tmp_path: Path, dst: str, message: str
):
    build_file = tmp_path / "build.toml"
    build_file.write_text(
        f'[program.x]\nsrc_dir = "."\ninstall = [{{ src = "a", dst = "{dst}" }}]\n'
    )
    result = gaia_cli("plan", build_file)
    assert result.exit_code == 2
    assert message in result.output


def test_a_failing_program_build_fails_the_run_with_the_command(
    gaia_cli, tmp_path: Path
):
    (tmp_path / "prog").mkdir()
    build_file = tmp_path / "build.toml"
    build_file.write_text(
        '[program.broken]\nsrc_dir = "prog"\nbuild_command = ["sh", "-c", "echo compiling; exit 3"]\n'
    )
    result = gaia_cli("run", build_file)
    assert result.exit_code == 1
    assert "command failed (exit 3): sh -c 'echo compiling; exit 3'" in result.output
    assert "[program.broken.build] compiling" in result.output


def test_missing_program_artifacts_are_named(gaia_cli, tmp_path: Path):
    (tmp_path / "prog").mkdir()
    build_file = tmp_path / "build.toml"
    build_file.write_text(
        '[program.lazy]\nsrc_dir = "prog"\ninstall = [{ src = "out/app", dst = "/usr/bin/app" }]\n'
    )
    result = gaia_cli("run", build_file)
    assert result.exit_code == 1
    assert (
        "program.lazy: install sources not found (did the build produce them?): out/app"
        in result.output
    )
