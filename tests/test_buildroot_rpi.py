"""``[buildroot.rpi]``: board files validated up front and staged into the image."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from buildroot_repo import BUILDROOT_TREE

BUILD = """
[buildroot]
source_dir = "tree"
symbols = { TARGET_ROOTFS_EXT2 = false }

[buildroot.rpi]
board = "rpi4"
defconfig = "gaia_rpi_defconfig"
overlay = "board/overlay"
config_file = "board/config.txt"
cmdline_file = "board/cmdline.txt"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(BUILDROOT_TREE, tmp_path / "tree")
    board = tmp_path / "board"
    (board / "overlay" / "etc" / "init.d").mkdir(parents=True)
    (board / "overlay" / "etc" / "init.d" / "S99board").write_text("#!/bin/sh\n")
    (board / "config.txt").write_text("arm_64bit=1\n")
    (board / "cmdline.txt").write_text("console=serial0,115200 root=/dev/mmcblk0p2\n")
    (tmp_path / "build.toml").write_text(BUILD)
    return tmp_path


def test_missing_board_files_fail_validation_with_every_problem(
    gaia_cli, project: Path
):
    shutil.rmtree(project / "board")
    result = gaia_cli("run", project / "build.toml")
    assert result.exit_code == 1
    log = (
        project / "out" / "build" / "logs" / "buildroot.rpi.validate.log"
    ).read_text()
    for key in ("overlay", "config_file", "cmdline_file"):
        assert f"buildroot.rpi.{key} 'board/" in log
    # nothing after it ran: Buildroot waits for the board inputs
    assert not (project / "out" / "build" / "logs" / "buildroot.fetch.log").exists()
    assert not (project / "build" / "buildroot").exists()


def test_board_files_reach_the_image_through_the_stage(gaia_cli, project: Path):
    plan = gaia_cli("plan", project / "build.toml", "--json").json
    order = [t["id"] for t in plan["tasks"]]
    assert (
        order.index("buildroot.rpi.validate")
        < order.index("buildroot.rpi.prepare")
        < order.index("buildroot.fetch")
    )
    assert order.index("stage.render") < order.index("buildroot.rpi.prepare")

    result = gaia_cli("run", project / "build.toml")
    assert result.exit_code == 0, result.output
    with tarfile.open(project / "out" / "build" / "images" / "rootfs.tar") as tar:
        names = set(tar.getnames())
        config = tar.extractfile("./boot/config.txt")
        assert config is not None and config.read() == b"arm_64bit=1\n"
    assert {"./boot/cmdline.txt", "./etc/init.d/S99board"} <= names
    # the rpi defconfig was used (buildroot.defconfig is not set)
    assert (
        "BR2_aarch64=y"
        in (project / "build" / "buildroot" / "output" / ".config").read_text()
    )
    report = json.loads(
        (
            project
            / "out"
            / "build"
            / "gaia"
            / "modules"
            / "buildroot"
            / "rpi"
            / "validate.json"
        ).read_text()
    )
    assert report["defconfig"] == "gaia_rpi_defconfig" and report["board"] == "rpi4"


def test_unknown_arch_is_a_config_error(gaia_cli, project: Path):
    result = gaia_cli(
        "plan", project / "build.toml", "--set", "buildroot.rpi.arch='armv7'"
    )
    assert result.exit_code == 2
    assert "buildroot.rpi.arch" in result.output


def test_disabled_rpi_plans_nothing(gaia_cli, project: Path):
    text = (
        (project / "build.toml")
        .read_text()
        .replace("[buildroot]\n", '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n')
    )
    (project / "build.toml").write_text(text)
    plan = gaia_cli(
        "plan", project / "build.toml", "--json", "--set", "buildroot.rpi.enabled=false"
    ).json
    assert not [t for t in plan["tasks"] if t["id"].startswith("buildroot.rpi")]


def test_no_defconfig_anywhere_is_a_config_error(gaia_cli, project: Path):
    result = gaia_cli(
        "plan", project / "build.toml", "--set", "buildroot.rpi.enabled=false"
    )
    assert result.exit_code == 2
    assert (
        "buildroot.defconfig (or buildroot.rpi.defconfig) is required" in result.output
    )
