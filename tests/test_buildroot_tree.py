"""The fake Buildroot tree behaves like Buildroot where gaia can observe it.

Every test drives `make -C <tree> O=<out> <target>` directly, the command line gaia (and
a Buildroot user) runs, against the tree in place: the tree must never be written to.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from buildroot_repo import BUILDROOT_TREE, git, make_buildroot_repo

QUICKSTART_TREE = BUILDROOT_TREE.parents[1] / "examples" / "quickstart" / "buildroot-tree"


def make(out: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BR2_", "MAKE", "MFLAGS"))}
    result = subprocess.run(
        ["make", "-C", str(BUILDROOT_TREE), f"O={out}", *args],
        env={**clean, **env}, capture_output=True, text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def set_symbols(out: Path, *lines: str) -> None:
    """Append to .config then normalize it, as gaia's configure step does."""
    with (out / ".config").open("a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    make(out, "olddefconfig")


def config_lines(out: Path) -> list[str]:
    return (out / ".config").read_text().splitlines()


def compile_log(out: Path) -> list[str]:
    log = out / "build" / "fake-compile.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An out dir configured with gaia_qemu_defconfig (busybox + htop)."""
    make(tmp_path / "out", "gaia_qemu_defconfig")
    return tmp_path / "out"


@pytest.fixture
def built(out: Path) -> Path:
    make(out, "target-finalize")
    return out


def test_defconfig_writes_full_config_and_wrapper_makefile(out: Path) -> None:
    lines = config_lines(out)
    assert "BR2_PACKAGE_HTOP=y" in lines
    assert "BR2_PACKAGE_BUSYBOX=y" in lines  # a default, not in the defconfig
    assert "# BR2_PACKAGE_NANO is not set" in lines
    assert 'BR2_TARGET_GENERIC_HOSTNAME="gaia-qemu"' in lines
    assert "BR2_JLEVEL=0" in lines
    assert f"MAKEARGS := -C {BUILDROOT_TREE} O={out}" in (out / "Makefile").read_text()


def test_wrapper_makefile_calls_back_into_the_tree(out: Path) -> None:
    (out / ".config").unlink()
    subprocess.run(["make", "-C", str(out), "olddefconfig"], check=True, capture_output=True)
    assert "BR2_PACKAGE_BUSYBOX=y" in config_lines(out)


def test_missing_defconfig_fails_like_buildroot(tmp_path: Path) -> None:
    result = make(tmp_path / "out", "nope_defconfig", check=False)
    assert result.returncode != 0
    assert '*** Can\'t find default configuration "configs/nope_defconfig"!' in result.stderr
    assert not (tmp_path / "out" / ".config").exists()


@pytest.mark.parametrize("separator", [":", " "])
@pytest.mark.parametrize("via", ["environment", "command line"])
def test_defconfig_is_found_in_br2_external_and_the_last_one_wins(tmp_path: Path, separator: str, via: str) -> None:
    externals = []
    for name in ("first", "second"):
        (tmp_path / name / "configs").mkdir(parents=True)
        (tmp_path / name / "configs" / "gaia_qemu_defconfig").write_text(f'BR2_TARGET_GENERIC_HOSTNAME="{name}"\n')
        externals.append(str(tmp_path / name))
    value = separator.join(externals)
    if via == "environment":
        make(tmp_path / "out", "gaia_qemu_defconfig", BR2_EXTERNAL=value)
    else:
        make(tmp_path / "out", f"BR2_EXTERNAL={value}", "gaia_qemu_defconfig")
    assert 'BR2_TARGET_GENERIC_HOSTNAME="second"' in config_lines(tmp_path / "out")


def test_olddefconfig_drops_a_package_whose_dependency_is_off(out: Path) -> None:
    set_symbols(out, "BR2_PACKAGE_FOO_GUI=y")
    assert not [line for line in config_lines(out) if "BR2_PACKAGE_FOO_GUI" in line]
    set_symbols(out, "BR2_PACKAGE_LIBFOO=y", "BR2_PACKAGE_FOO_GUI=y")
    assert {"BR2_PACKAGE_LIBFOO=y", "BR2_PACKAGE_FOO_GUI=y"} <= set(config_lines(out))


def test_olddefconfig_normalizes_like_kconfig(out: Path) -> None:
    set_symbols(
        out,
        "BR2_NOT_A_SYMBOL=y",
        "BR2_JLEVEL=lots",
        'BR2_ROOTFS_OVERLAY="/a \\"quoted\\" dir"',
        "BR2_INIT_SYSTEMD=y",
        "BR2_HAVE_DOT_CONFIG=n",
    )
    lines = config_lines(out)
    assert not [line for line in lines if "BR2_NOT_A_SYMBOL" in line]
    assert "BR2_JLEVEL=0" in lines  # invalid int: back to the default
    assert 'BR2_ROOTFS_OVERLAY="/a \\"quoted\\" dir"' in lines
    assert {"BR2_INIT_SYSTEMD=y", "# BR2_INIT_BUSYBOX is not set"} <= set(lines)  # one choice member
    assert "BR2_HAVE_DOT_CONFIG=y" in lines  # no prompt: not user-settable
    assert sum(line.startswith("BR2_JLEVEL") for line in lines) == 1


def test_target_finalize_runs_the_stamp_chain(built: Path) -> None:
    assert compile_log(built) == [
        f"{pkg} {version} {step}"
        for pkg, version in (("busybox", "1.37.0"), ("htop", "3.3.0"))
        for step in ("configure", "build", "install-target")
    ]
    for stamp in ("configured", "built", "target_installed"):
        assert (built / "build" / "htop-3.3.0" / f".stamp_{stamp}").is_file()
    target = built / "target"
    assert os.access(target / "usr" / "bin" / "busybox", os.X_OK)
    assert (built / "build" / "packages-file-list.txt").read_text() == "busybox,./usr/bin/busybox\nhtop,./usr/bin/htop\n"
    assert os.readlink(target / "etc" / "os-release") == "../usr/lib/os-release"
    assert "ID=buildroot" in (target / "etc" / "os-release").read_text()
    assert (target / "etc" / "hostname").read_text() == "gaia-qemu\n"
    assert os.readlink(built / "staging") == str(built / "host" / "x86_64-buildroot-linux-gnu" / "sysroot")
    assert (built / "staging").is_dir()
    assert os.readlink(built / "host" / "usr") == "."


def test_second_target_finalize_compiles_nothing_even_after_olddefconfig(built: Path) -> None:
    before = compile_log(built)
    make(built, "olddefconfig")  # rewrites .config: stamps must not depend on it
    make(built, "target-finalize")
    assert compile_log(built) == before


def test_scrambled_mtimes_in_build_cause_a_rebuild(built: Path) -> None:
    """A copy that writes every file "now", in its own order, loses the stamps' order."""
    paths = sorted(p for p in (built / "build").rglob("*"))
    random.Random(7).shuffle(paths)
    now = time.time_ns()
    for index, path in enumerate(paths):
        stamp = now + index * 10_000_000
        os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
    before = len(compile_log(built))
    make(built, "target-finalize")
    assert len(compile_log(built)) > before


def test_copy_keeping_mtimes_is_up_to_date_and_all_repoints_staging(built: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-a", str(built), str(moved)], check=True)
    before = compile_log(moved)
    make(moved, "target-finalize")
    assert compile_log(moved) == before
    assert os.readlink(moved / "staging").startswith(str(built))  # still the old path, as in Buildroot
    make(moved, "all")
    assert os.readlink(moved / "staging").startswith(str(moved))
    assert compile_log(moved) == before


def test_package_version_change_builds_a_new_build_dir(built: Path) -> None:
    before = compile_log(built)
    set_symbols(built, 'BR2_PACKAGE_HTOP_VERSION="3.4.1"')
    make(built, "target-finalize")
    assert compile_log(built)[len(before):] == [f"htop 3.4.1 {s}" for s in ("configure", "build", "install-target")]
    assert (built / "build" / "htop-3.4.1" / ".stamp_target_installed").is_file()


def test_parallel_build_respects_dependencies_and_logs_the_environment(out: Path, tmp_path: Path) -> None:
    set_symbols(out, "BR2_PER_PACKAGE_DIRECTORIES=y", "BR2_PACKAGE_LIBFOO=y", "BR2_PACKAGE_FOO_GUI=y")
    make(out, "-j4", "-l8", "target-finalize", BR2_JLEVEL="3", BR2_EXTERNAL=str(tmp_path))
    log = compile_log(out)
    assert len(log) == 12
    assert log.index("libfoo 1.0 install-target") < log.index("foo-gui 0.1 configure")
    env_line = (out / "build" / "fake-env.log").read_text().splitlines()[-1]
    assert env_line.startswith(f"BR2_JLEVEL=3 BR2_EXTERNAL={tmp_path} MAKEFLAGS=")
    assert "-j4" in env_line and "-l8" in env_line


def test_overlay_post_image_script_and_rootfs_tar(out: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "motd").write_text("hello from the stage\n")
    script = tmp_path / "post-image.sh"
    script.write_text('#!/bin/sh\necho "$1 $2 $TARGET_DIR" > "$1/post-image-args"\n')
    script.chmod(0o755)
    set_symbols(
        out,
        f'BR2_ROOTFS_OVERLAY="{overlay}"',
        f'BR2_ROOTFS_POST_IMAGE_SCRIPT="{script}"',
        'BR2_ROOTFS_POST_SCRIPT_ARGS="extra"',
    )
    make(out, "target-post-image")
    images = out / "images"
    assert (out / "target" / "etc" / "motd").read_text() == "hello from the stage\n"
    with tarfile.open(images / "rootfs.tar") as archive:
        members = {member.name.removeprefix("./"): member for member in archive.getmembers()}
    assert {"usr/bin/busybox", "etc/motd"} <= set(members)
    assert members["usr/bin/busybox"].uid == 0
    assert (images / "post-image-args").read_text() == f"{images} extra {out / 'target'}\n"
    assert (out / "build" / "fake-post-image.log").read_text() == f"post-image {images}\n"


@pytest.mark.skipif(shutil.which("mke2fs") is None and not Path("/usr/sbin/mke2fs").exists(), reason="needs e2fsprogs")
def test_rpi_defconfig_builds_an_ext4_image(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make(out, "gaia_rpi_defconfig")
    make(out, "all", PATH=f"{os.environ['PATH']}:/usr/sbin:/sbin")
    assert (out / "images" / "rootfs.ext4").stat().st_size == 16 * 1024 * 1024
    assert os.readlink(out / "staging").endswith("aarch64-buildroot-linux-gnu/sysroot")


def test_dirclean_removes_only_that_package(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make(out, "gaia_qemu_defconfig")
    set_symbols(out, "BR2_PACKAGE_LIBFOO=y", "BR2_PACKAGE_FOO_GUI=y")
    make(out, "target-finalize")
    make(out, "foo-dirclean")  # no package "foo": foo-gui must survive
    make(out, "htop-dirclean")
    assert sorted(p.name for p in (out / "build").iterdir() if p.is_dir()) == ["busybox-1.37.0", "foo-gui-0.1", "libfoo-1.0"]
    assert (out / "build" / "fake-dirclean.log").read_text() == "foo\nhtop\n"
    make(out, "target-finalize")
    assert compile_log(out)[-3:] == [f"htop 3.3.0 {s}" for s in ("configure", "build", "install-target")]


def test_unknown_target_and_unconfigured_out_dir_fail(tmp_path: Path, out: Path) -> None:
    unknown = make(out, "bogus", check=False)
    assert unknown.returncode != 0 and "No rule to make target 'bogus'" in unknown.stderr
    unconfigured = make(tmp_path / "empty", "target-finalize", check=False)
    assert unconfigured.returncode != 0 and "Please configure Buildroot first" in unconfigured.stderr


def tree_snapshot(root: Path) -> dict[str, tuple[bytes | str, bool]]:
    """Relative path -> (content or link target, executable?) for every file under root."""
    snapshot: dict[str, tuple[bytes | str, bool]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            snapshot[str(path.relative_to(root))] = (os.readlink(path), False)
        elif path.is_file():
            snapshot[str(path.relative_to(root))] = (path.read_bytes(), os.access(path, os.X_OK))
    return snapshot


def test_the_tree_is_never_written_to(tmp_path: Path) -> None:
    before = tree_snapshot(BUILDROOT_TREE), sorted(p.name for p in BUILDROOT_TREE.iterdir())
    make(tmp_path / "out", "gaia_qemu_defconfig")
    make(tmp_path / "out", "all")
    make(tmp_path / "out", "htop-dirclean")
    assert (tree_snapshot(BUILDROOT_TREE), sorted(p.name for p in BUILDROOT_TREE.iterdir())) == before


def test_quickstart_tree_is_identical_to_the_test_tree() -> None:
    assert tree_snapshot(QUICKSTART_TREE) == tree_snapshot(BUILDROOT_TREE)
    assert tree_snapshot(BUILDROOT_TREE)  # not vacuously equal


def test_make_buildroot_repo_is_a_tagged_git_repository(tmp_path: Path) -> None:
    repo = make_buildroot_repo(tmp_path / "buildroot", tag="2025.11")
    assert git(repo, "rev-parse", "--verify", "2025.11^{commit}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == ""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True)
    assert {k: v for k, v in tree_snapshot(clone).items() if not k.startswith(".git")} == tree_snapshot(BUILDROOT_TREE)
