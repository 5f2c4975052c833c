"""The quickstart end to end through ``gaia run``: cold build, stage-only changes,
and a checkpoint restored into a run whose stage dropped a file."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
BUILDROOT_TASKS = [
    "buildroot.fetch",
    "buildroot.configure",
    "buildroot.build",
    "buildroot.collect",
]


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of the example (with its Buildroot test tree), minus any earlier outputs."""
    dest = tmp_path / "quickstart"
    shutil.copytree(
        QUICKSTART,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns("build", "out", "out"),
    )
    assert (dest / "buildroot-tree" / "Makefile").is_file()
    return dest


def image_members(root: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(root / "out" / "build" / "images" / "rootfs.tar") as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def image_file(root: Path, name: str) -> str:
    with tarfile.open(root / "out" / "build" / "images" / "rootfs.tar") as tar:
        member = tar.extractfile("./" + name)
        assert member is not None
        return member.read().decode()


def compile_log(root: Path) -> list[str]:
    return (
        (root / "build" / "buildroot" / "output" / "build" / "fake-compile.log")
        .read_text()
        .splitlines()
    )


@pytest.mark.parametrize("parallel", ["1", "4"])
def test_cold_quickstart_builds_the_image(gaia_cli, quickstart: Path, parallel: str):
    result = gaia_cli("run", quickstart / "build.toml", "--max-parallel", parallel)
    assert result.exit_code == 0, result.output
    assert "status: ok" in result.output

    # the defconfig's packages plus nano from layers/packages.toml, each built once
    log = compile_log(quickstart)
    for package in ("busybox 1.37.0", "htop 3.3.0", "nano 8.2"):
        assert [line for line in log if line.startswith(package)] == [
            f"{package} configure",
            f"{package} build",
            f"{package} install-target",
        ]
    assert len(log) == 12  # and host-pkgconf's three steps

    members = image_members(quickstart)
    assert (
        image_file(quickstart, "etc/motd")
        == (quickstart / "assets" / "motd").read_text()
    )
    assert members["etc/motd"].mode == 0o644
    assert (
        image_file(quickstart, "etc/gaia/build-info")
        == "built by the gaia quickstart\n"
    )
    assert (
        image_file(quickstart, "usr/bin/hello")
        == '#!/bin/sh\necho "Hello from gaia!"\n'
    )
    assert members["usr/bin/hello"].mode == 0o755
    assert {"usr/bin/busybox", "usr/bin/nano", "usr/bin/htop"} <= set(members)
    # build.toml's symbol wins over the one in the imported layer
    assert image_file(quickstart, "etc/hostname") == "gaia-quickstart\n"

    manifest = json.loads((quickstart / "out" / "build" / "manifest.json").read_text())
    [entry] = manifest["images"]
    assert entry["path"] == "rootfs.tar" and len(entry["sha256"]) == 64
    assert manifest["buildroot"]["defconfig"] == "gaia_qemu_defconfig"

    logs = quickstart / "out" / "build" / "logs"
    for task in [
        *BUILDROOT_TASKS,
        "stage.render",
        "program.hello.build",
        "program.hello.install",
    ]:
        assert (
            (logs / f"{task}.log")
            .read_text()
            .rstrip()
            .splitlines()[-1]
            .startswith("DONE")
        ), task
    assert ">>> nano 8.2 Building" in (logs / "buildroot.build.log").read_text()
    assert (
        "Generating root filesystem image rootfs.tar"
        in (logs / "buildroot.collect.log").read_text()
    )

    config = (quickstart / "build" / "buildroot" / "output" / ".config").read_text()
    assert 'BR2_ROOTFS_OVERLAY=""' in config  # the stage is no part of .config
    assert str(quickstart / "build" / "stage") not in config
    assert "BR2_PACKAGE_NANO=y" in config
    assert (
        quickstart / "build" / "buildroot" / "output" / ".gaia-buildroot-outdir-schema"
    ).read_text().strip() == "2"


def test_stage_only_change_shows_up_without_recompiling(gaia_cli, quickstart: Path):
    assert gaia_cli("run", quickstart / "build.toml").exit_code == 0
    compiled = compile_log(quickstart)

    text = (quickstart / "build.toml").read_text()
    # drop /etc/gaia/build-info, add /etc/issue
    text = text.replace(
        'dst = "/etc/gaia/build-info"\ncontent = "built by the gaia quickstart\\n"',
        'dst = "/etc/issue"\ncontent = "gaia quickstart, second run\\n"',
    )
    assert "/etc/issue" in text
    (quickstart / "build.toml").write_text(text)
    (quickstart / "assets" / "motd").write_text("a new message of the day\n")

    result = gaia_cli("run", quickstart / "build.toml")
    assert result.exit_code == 0, result.output
    members = image_members(quickstart)
    assert image_file(quickstart, "etc/issue") == "gaia quickstart, second run\n"
    assert image_file(quickstart, "etc/motd") == "a new message of the day\n"
    assert "etc/gaia/build-info" not in members
    assert compile_log(quickstart) == compiled  # no package step ran again


CHECKPOINTS = """
[checkpoints]
enabled = true

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
"""


def test_restored_checkpoint_drops_a_stage_file_the_build_had_baked_in(
    gaia_cli, quickstart: Path
):
    """A later run whose stage no longer has a file must not ship it: the checkpoint
    holds no stage file (build undid the last sync before capture) and collect undoes
    the previous sync before applying the current stage."""
    build_file = quickstart / "build.toml"
    build_file.write_text(build_file.read_text() + CHECKPOINTS)
    out_dir = quickstart / "build" / "buildroot" / "output"
    assert gaia_cli("run", build_file).exit_code == 0  # renders the stage

    # a fresh out dir and a config change: build runs and captures
    shutil.rmtree(out_dir.resolve())
    rebuild = ["--set", "buildroot.symbols.TARGET_GENERIC_HOSTNAME='rebuilt'"]
    result = gaia_cli("run", build_file, *rebuild)
    assert result.exit_code == 0, result.output
    assert "captured" in result.output

    # same Buildroot inputs, stage file removed, out dir gone: a restore hit
    build_file.write_text(
        build_file.read_text().replace(
            'dst = "/etc/gaia/build-info"', 'dst = "/etc/gaia/other"'
        )
    )
    shutil.rmtree(out_dir.resolve())
    result = gaia_cli("run", build_file, *rebuild)
    assert result.exit_code == 0, result.output
    assert "SKIP: buildroot.build" in result.output
    assert (out_dir / "target" / "etc" / "gaia" / "other").is_file()
    assert not (out_dir / "target" / "etc" / "gaia" / "build-info").exists()
    members = image_members(quickstart)
    assert "etc/gaia/build-info" not in members
    assert "etc/gaia/other" in members
    assert image_file(quickstart, "etc/hostname") == "rebuilt\n"


def status(gaia_cli, build_file: Path) -> dict:
    result = gaia_cli("checkpoints", "status", build_file, "--json", "--no-remote")
    assert result.exit_code == 0, result.output
    [point] = result.json["points"]
    return point


def test_stage_changes_keep_the_checkpoint_and_a_defconfig_edit_invalidates_it(
    gaia_cli, quickstart: Path
):
    build_file = quickstart / "build.toml"
    build_file.write_text(build_file.read_text() + CHECKPOINTS)
    assert gaia_cli("run", build_file).exit_code == 0
    assert status(gaia_cli, build_file)["exists"] is True

    (quickstart / "assets" / "motd").write_text("stage-only change\n")
    (quickstart / "programs" / "hello" / "greeting.txt").write_text(
        "program-only change\n"
    )
    assert status(gaia_cli, build_file)["will_use"] is True

    defconfig = quickstart / "buildroot-tree" / "configs" / "gaia_qemu_defconfig"
    defconfig.write_text(defconfig.read_text() + "BR2_PACKAGE_DROPBEAR=y\n")
    point = status(gaia_cli, build_file)
    assert point["will_rebuild"] is True
    assert "buildroot.defconfig" in point["reason"]

    result = gaia_cli("run", build_file)
    assert result.exit_code == 0, result.output
    assert "dropbear 2024.86 build" in compile_log(quickstart)
