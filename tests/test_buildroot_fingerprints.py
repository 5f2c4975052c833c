"""Fingerprint sources hash what the config names, and the anchor describes the out dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from buildroot_repo import BUILDROOT_TREE, git, make_buildroot_repo
from gaia_buildroot.anchor import BuildrootAnchor, host_system
from gaia_buildroot.fingerprint_sources import (
    DefconfigSource,
    ExternalTreesSource,
    RpiFilesSource,
    RpiOverlaySource,
    SourceTreeSource,
    VersionSource,
)

from gaia_core.config.loader import load_build



def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_external(root: Path) -> Path:
    write(root / "external.desc", "name: ACME\n")
    write(root / "Config.in", "")
    write(root / "external.mk", "")
    write(
        root / "package" / "acme" / "Config.in",
        'config BR2_PACKAGE_ACME\n\tbool "acme"\n',
    )
    return root


def digest(source, build_file: Path, path: str):
    build = load_build(build_file)
    return source().digest(build, path, build.get(path))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(BUILDROOT_TREE, tmp_path / "tree")
    make_external(tmp_path / "ext")
    write(tmp_path / "board" / "overlay" / "etc" / "issue", "hi\n")
    write(tmp_path / "board" / "config.txt", "arm_64bit=1\n")
    write(tmp_path / "board" / "cmdline.txt", "console=tty1\n")
    return write(
        tmp_path / "build.toml",
        """
[buildroot]
source_dir = "tree"
defconfig = "gaia_qemu_defconfig"
external = ["ext"]

[buildroot.rpi]
defconfig = "gaia_rpi_defconfig"
overlay = "board/overlay"
config_file = "board/config.txt"
cmdline_file = "board/cmdline.txt"
""",
    )


@pytest.mark.parametrize(
    ("source", "config_path", "edited"),
    [
        (DefconfigSource, "buildroot.defconfig", "tree/configs/gaia_qemu_defconfig"),
        (DefconfigSource, "buildroot.rpi.defconfig", "tree/configs/gaia_rpi_defconfig"),
        (ExternalTreesSource, "buildroot.external", "ext/package/acme/Config.in"),
        (RpiOverlaySource, "buildroot.rpi.overlay", "board/overlay/etc/issue"),
        (RpiFilesSource, "buildroot.rpi.config_file", "board/config.txt"),
        (RpiFilesSource, "buildroot.rpi.cmdline_file", "board/cmdline.txt"),
        (SourceTreeSource, "buildroot.source_dir", "tree/Makefile"),
    ],
)
def test_editing_the_file_behind_a_value_changes_its_digest(
    project: Path, source, config_path: str, edited: str
):
    before = digest(source, project, config_path)
    assert isinstance(before, (str, list, dict)) and before not in (
        "missing",
        "unavailable",
    )
    assert digest(source, project, config_path) == before  # stable
    target = project.parent / edited
    target.write_text(target.read_text() + "# edited\n")
    assert digest(source, project, config_path) != before


def test_a_defconfig_in_an_external_tree_wins_over_the_source_tree(project: Path):
    before = digest(DefconfigSource, project, "buildroot.defconfig")
    write(project.parent / "ext" / "configs" / "gaia_qemu_defconfig", "BR2_aarch64=y\n")
    after = digest(DefconfigSource, project, "buildroot.defconfig")
    assert after != before
    (project.parent / "tree" / "configs" / "gaia_qemu_defconfig").write_text(
        "ignored now\n"
    )
    assert digest(DefconfigSource, project, "buildroot.defconfig") == after


def test_defconfig_digest_before_fetch_is_unavailable_and_missing_files_are_marked(
    tmp_path: Path,
):
    build_file = write(
        tmp_path / "build.toml",
        '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\nversion = "2025.11"\n',
    )
    assert digest(DefconfigSource, build_file, "buildroot.defconfig") == "unavailable"
    assert digest(VersionSource, build_file, "buildroot.version") == "unavailable"
    shutil.copytree(BUILDROOT_TREE, tmp_path / "tree")
    build_file.write_text(
        '[buildroot]\nsource_dir = "tree"\ndefconfig = "nope_defconfig"\n'
    )
    assert digest(DefconfigSource, build_file, "buildroot.defconfig") == "missing"


def test_version_digest_follows_the_commit_a_branch_points_to(tmp_path: Path):
    src = make_buildroot_repo(tmp_path / "project" / "build" / "buildroot" / "src")
    build_file = write(
        tmp_path / "project" / "build.toml",
        '[buildroot]\nversion = "master"\ndefconfig = "gaia_qemu_defconfig"\n',
    )
    first = digest(VersionSource, build_file, "buildroot.version")
    assert first == git(src, "rev-parse", "HEAD").strip()
    write(src / "NEWS", "x\n")
    git(src, "add", "NEWS")
    git(src, "commit", "--quiet", "--no-gpg-sign", "-m", "move master")
    second = digest(VersionSource, build_file, "buildroot.version")
    assert second != first and second == git(src, "rev-parse", "HEAD").strip()
    # a tag keeps naming its commit
    build_file.write_text(
        '[buildroot]\nversion = "2025.11"\ndefconfig = "gaia_qemu_defconfig"\n'
    )
    assert digest(VersionSource, build_file, "buildroot.version") == first


def test_source_dir_checkout_digest_sees_uncommitted_edits(tmp_path: Path):
    make_buildroot_repo(tmp_path / "tree")
    build_file = write(
        tmp_path / "build.toml",
        '[buildroot]\nsource_dir = "tree"\ndefconfig = "gaia_qemu_defconfig"\n',
    )
    clean = digest(SourceTreeSource, build_file, "buildroot.source_dir")
    (tmp_path / "tree" / "Makefile").write_text("edited\n")
    edited = digest(SourceTreeSource, build_file, "buildroot.source_dir")
    assert edited["head"] == clean["head"] and edited["changes"] != clean["changes"]
    write(tmp_path / "tree" / "package" / "new" / "new.mk", "x\n")
    assert (
        digest(SourceTreeSource, build_file, "buildroot.source_dir")["changes"]
        != edited["changes"]
    )
    # with no version set, the version digest names the checkout's HEAD
    assert (
        digest(VersionSource, build_file, "buildroot.version")
        == git(tmp_path / "tree", "rev-parse", "HEAD").strip()
    )


def test_anchor_describes_the_out_dir_and_salts_with_no_path(project: Path):
    build = load_build(project)
    anchor = BuildrootAnchor(build)
    [target] = anchor.targets()
    out_dir = project.parent / "build" / "buildroot" / "output"
    assert (target.name, target.path) == ("buildroot_out_dir", out_dir)
    assert target.rootfs_dirs == ("target", "per-package/*/target")
    # checkpoints are relocatable: no absolute path of the workspace in the fingerprint
    assert anchor.fingerprint_salt() == {"host.system": host_system()}
    assert host_system().count("-") >= 2  # <os id>-<version>-<machine>
    assert BuildrootAnchor.skipped_tasks() == ("buildroot.configure", "buildroot.build")
    assert anchor.inactive_reason() is None
    assert {
        "buildroot.version",
        "buildroot.defconfig",
        "buildroot.packages",
        "buildroot.symbols",
    } <= set(BuildrootAnchor.default_fingerprint_paths)


def test_relocation_roots_name_every_directory_the_out_dir_can_embed(project: Path):
    text = project.read_text().replace(
        'external = ["ext"]',
        'external = ["ext", "@build/../ext2"]\ndownload_dir = "/srv/dl"',
    )
    project.write_text(text)
    make_external(project.parent / "ext2")
    roots = BuildrootAnchor(load_build(project)).relocation_roots()
    ws = project.parent
    assert roots == {
        "workspace": ws,
        "buildroot.out_dir": ws / "build" / "buildroot" / "output",
        "buildroot.src_dir": ws / "tree",
        "buildroot.download_dir": Path("/srv/dl"),
        "buildroot.external.0": ws / "ext",
        "buildroot.external.1": ws / "ext2",
    }


def test_a_root_reached_through_a_symlink_also_has_its_canonical_form(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "ws").symlink_to(tmp_path / "real")
    build_file = write(
        tmp_path / "ws" / "build.toml", '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n'
    )
    roots = BuildrootAnchor(load_build(build_file)).relocation_roots()
    out = Path("build") / "buildroot" / "output"
    assert roots["buildroot.out_dir"] == tmp_path / "ws" / out
    assert roots["buildroot.out_dir.canonical"] == tmp_path / "real" / out
    assert roots["workspace.canonical"] == tmp_path / "real"
    assert "buildroot.download_dir.canonical" in roots


def test_relocation_roots_of_a_cloned_tree(tmp_path: Path):
    build_file = write(
        tmp_path / "build.toml", '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n'
    )
    roots = BuildrootAnchor(load_build(build_file)).relocation_roots()
    assert not [k for k in roots if k.endswith(".canonical")]
    assert roots["buildroot.src_dir"] == tmp_path / "build" / "buildroot" / "src"
    assert roots["buildroot.download_dir"] == tmp_path / "build" / ".cache" / "buildroot" / "dl"
    assert not [k for k in roots if k.startswith("buildroot.external")]


@pytest.mark.parametrize(
    ("member", "required"),
    [
        ("buildroot_out_dir/build/host-pkgconf-2.2.0/libpkgconf.o", False),
        ("buildroot_out_dir/build/htop-3.3.0/config.status", False),
        ("buildroot_out_dir/build/buildroot-config/auto.conf", False),
        ("buildroot_out_dir/build/packages-file-list.txt", True),
        ("buildroot_out_dir/host/lib/pkgconfig/libpkgconf.pc", True),
        ("buildroot_out_dir/host/bin/toolchain-wrapper", True),
        ("buildroot_out_dir/staging", True),
        ("buildroot_out_dir/target/etc/os-release", True),
        ("buildroot_out_dir/per-package/htop/host/bin/x", True),
        ("buildroot_out_dir/.config", True),
        ("buildroot_out_dir/Makefile", True),
        ("buildroot_out_dir/build", True),
        ("other_target/build/htop-3.3.0/config.status", True),
    ],
)
def test_only_package_build_dirs_may_keep_an_old_path(project: Path, member: str, required: bool):
    assert BuildrootAnchor(load_build(project)).relocation_required(member) is required


def test_anchor_is_inactive_for_a_starting_point(tmp_path: Path):
    write(tmp_path / "rootfs" / "etc" / "motd", "x\n")
    build_file = write(
        tmp_path / "build.toml",
        '[buildroot.starting_point]\nenabled = true\nrootfs_dir = "rootfs"\n',
    )
    assert (
        BuildrootAnchor(load_build(build_file)).inactive_reason()
        == "buildroot.starting_point.enabled=true"
    )


def test_br_output_dir_moves_the_target(tmp_path: Path):
    build_file = write(
        tmp_path / "build.toml",
        '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\nbr_output_dir = "/srv/br-out"\n',
    )
    [target] = BuildrootAnchor(load_build(build_file)).targets()
    assert target.path == Path("/srv/br-out")
