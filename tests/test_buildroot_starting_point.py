"""``buildroot.starting_point``: an existing root filesystem instead of a Buildroot compile."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

BUILD = """
[buildroot]
defconfig = "gaia_qemu_defconfig"
source_dir = "no-such-tree"   # never touched: the compile is skipped

[buildroot.starting_point]
enabled = true
{source}

[[stage.files]]
dst = "/etc/motd"
content = "from the stage\\n"

[program.tool]
src_dir = "tool"
install = [{{ src = "tool.sh", dst = "/usr/bin/", mode = 0o755 }}]

[checkpoints]
enabled = true

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
"""


def make_rootfs(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "etc" / "motd").write_text("from the rootfs\n")
    (root / "etc" / "hostname").write_text("imported\n")
    (root / "usr" / "lib" / "os-release").write_text("ID=debian\n")
    os.symlink(
        "/usr/lib/os-release", root / "etc" / "os-release"
    )  # absolute, as in real rootfs
    os.symlink("usr/lib", root / "lib")
    return root


def write_project(tmp_path: Path, source: str) -> Path:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    path = tmp_path / "build.toml"
    path.write_text(BUILD.format(source=source))
    return path


def tar_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def check_image(tmp_path: Path, label: str) -> None:
    images = tmp_path / "out" / "build" / "images"
    rootfs = images / "rootfs"
    assert (
        rootfs / "etc" / "motd"
    ).read_text() == "from the stage\n"  # stage overlay wins
    assert (rootfs / "etc" / "hostname").read_text() == "imported\n"
    assert os.readlink(rootfs / "etc" / "os-release") == "/usr/lib/os-release"
    assert (rootfs / "usr" / "bin" / "tool.sh").stat().st_mode & 0o777 == 0o755
    members = tar_members(images / "rootfs.tar")
    assert {"etc/motd", "etc/hostname", "usr/bin/tool.sh", "lib"} <= set(members)
    assert members["etc/os-release"].linkname == "/usr/lib/os-release"
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())

    manifest = json.loads((tmp_path / "out" / "build" / "manifest.json").read_text())
    assert manifest["starting_point"]["source_label"] == label
    assert [entry["path"] for entry in manifest["images"]] == ["rootfs.tar"]

    # no Buildroot ran
    assert not (tmp_path / "build" / "buildroot").exists()
    logs = tmp_path / "out" / "build" / "logs"
    for task in ("fetch", "configure", "build"):
        assert "starting point enabled" in (logs / f"buildroot.{task}.log").read_text()


def test_starting_point_from_a_directory(gaia_cli, tmp_path: Path):
    make_rootfs(tmp_path / "base-rootfs")
    build_file = write_project(
        tmp_path, 'rootfs_dir = "base-rootfs"\nsource_label = "debian-12 base"'
    )
    result = gaia_cli("run", build_file)
    assert result.exit_code == 0, result.output
    check_image(tmp_path, "debian-12 base")
    # the source itself is left alone
    assert (
        tmp_path / "base-rootfs" / "etc" / "motd"
    ).read_text() == "from the rootfs\n"


def test_starting_point_from_a_tarball_wrapped_in_one_directory(
    gaia_cli, tmp_path: Path
):
    root = make_rootfs(tmp_path / "src" / "rootfs")
    with tarfile.open(tmp_path / "base.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="rootfs")
        console = tarfile.TarInfo("rootfs/dev/console")
        console.type = tarfile.CHRTYPE
        console.devmajor, console.devminor = 5, 1
        tar.addfile(console)
    build_file = write_project(tmp_path, 'rootfs_tar = "base.tar.gz"')
    result = gaia_cli("run", build_file)
    assert result.exit_code == 0, result.output
    check_image(tmp_path, "rootfs_tar:base.tar.gz")
    assert not (
        tmp_path / "out" / "build" / "images" / "rootfs" / "dev" / "console"
    ).exists()
    assert (
        "skipped 1 device node"
        in (tmp_path / "out" / "build" / "logs" / "buildroot.collect.log").read_text()
    )


@pytest.mark.parametrize(
    "member",
    [
        pytest.param({"name": "../escaped", "type": tarfile.REGTYPE}, id="dotdot"),
        pytest.param(
            {"name": "link", "type": tarfile.LNKTYPE, "linkname": "../../escaped"},
            id="hardlink-out",
        ),
    ],
)
def test_hostile_tarballs_are_refused(gaia_cli, tmp_path: Path, member: dict):
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo(member["name"])
        info.type = member["type"]
        info.linkname = member.get("linkname", "")
        data = b"owned\n" if info.type == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    build_file = write_project(tmp_path, 'rootfs_tar = "evil.tar"')
    result = gaia_cli("run", build_file)
    assert result.exit_code == 1
    assert "cannot extract starting point" in result.output
    assert not (tmp_path / "out" / "build" / "escaped").exists()
    assert not (tmp_path / "out" / "build" / "images" / "escaped").exists()


def test_absolute_member_names_land_inside_the_rootfs(gaia_cli, tmp_path: Path):
    name = f"/tmp/gaia-test-{os.getpid()}-abs"
    with tarfile.open(tmp_path / "abs.tar", "w") as tar:
        for member in ("etc/", name):
            info = tarfile.TarInfo(member)
            info.type = tarfile.DIRTYPE if member.endswith("/") else tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(b""))
    build_file = write_project(tmp_path, 'rootfs_tar = "abs.tar"')
    result = gaia_cli("run", build_file)
    assert result.exit_code == 0, result.output
    assert not Path(name).exists()
    assert (
        tmp_path / "out" / "build" / "images" / "rootfs" / name.lstrip("/")
    ).is_file()


def test_a_symlink_then_a_file_through_it_is_refused(gaia_cli, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        link = tarfile.TarInfo("etc")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside)  # absolute symlinks are kept...
        tar.addfile(link)
        data = b"owned\n"
        info = tarfile.TarInfo("etc/passwd")  # ...but never written through
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    build_file = write_project(tmp_path, 'rootfs_tar = "evil.tar"')
    result = gaia_cli("run", build_file)
    assert result.exit_code == 1
    assert "cannot extract starting point" in result.output
    assert list(outside.iterdir()) == []


def test_exactly_one_source_is_required(gaia_cli, tmp_path: Path):
    build_file = write_project(tmp_path, 'rootfs_dir = "a"\nrootfs_tar = "b.tar"')
    result = gaia_cli("run", build_file)
    assert result.exit_code == 2
    assert "needs exactly one of rootfs_dir or rootfs_tar" in result.output


def test_the_starting_point_example_runs(gaia_cli, tmp_path: Path):
    example = Path(__file__).resolve().parents[1] / "examples" / "starting-point"
    dest = tmp_path / "example"
    shutil.copytree(
        example, dest, symlinks=True, ignore=shutil.ignore_patterns("build", "out")
    )
    result = gaia_cli("run", dest / "build.toml")
    assert result.exit_code == 0, result.output
    members = tar_members(dest / "out" / "build" / "images" / "rootfs.tar")
    assert {"etc/motd", "usr/bin/base-hello", "etc/os-release"} <= set(members)
    manifest = json.loads((dest / "out" / "build" / "manifest.json").read_text())
    assert manifest["starting_point"]["source_label"] == "example base rootfs"


def test_a_python_without_tarfiles_data_filter_refuses_to_extract(gaia_cli, tmp_path: Path, monkeypatch):
    root = make_rootfs(tmp_path / "src" / "rootfs")
    with tarfile.open(tmp_path / "base.tar", "w") as tar:
        tar.add(root, arcname=".")
    monkeypatch.delattr(tarfile, "data_filter")  # as on CPython 3.11.0-3.11.3
    result = gaia_cli("run", write_project(tmp_path, 'rootfs_tar = "base.tar"'))
    assert result.exit_code == 1
    assert "needs tarfile's data filter (Python 3.11.4 or newer)" in result.output

