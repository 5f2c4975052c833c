"""Fingerprint sources hash what the config names, and the anchor describes the out dir."""

from __future__ import annotations

import shutil
import os
from pathlib import Path

import pytest
from buildroot_repo import BUILDROOT_TREE, git, make_buildroot_repo
from gaia_buildroot.anchor import BuildrootAnchor, host_system
from gaia_buildroot.fetch import fetch
from gaia_buildroot.fingerprint_sources import (
    DefconfigSource,
    ExternalTreesSource,
    PackageOverrideSource,
    RpiFilesSource,
    RpiOverlaySource,
    SourceTreeSource,
    VersionSource,
)
from gaia_buildroot.layout import buildroot_config

from gaia_core.config.loader import load_build
from gaia_core.fingerprints import InputPending
from gaia_core.padding import DEFAULT_PADDED_LENGTH, padded_path
from gaia_core.run import RunState, TaskContext
from gaia_core.tasks import Task


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


def fetched_build(build_file: Path, *overrides: str):
    """A loaded build after its buildroot.fetch ran, as the restore task sees it."""
    build = load_build(build_file, list(overrides))
    ctx = TaskContext(
        Task("buildroot.fetch"),
        build,
        dry_run=False,
        state=RunState(),
        echo=lambda line: None,
    )
    fetch(ctx, buildroot_config(build))
    return build


@pytest.fixture
def cloned(tmp_path: Path) -> Path:
    """A project whose Buildroot is cloned by buildroot.fetch from a local origin."""
    origin = make_buildroot_repo(tmp_path / "origin")
    return write(
        tmp_path / "project" / "build.toml",
        f'[buildroot]\nrepo = "{origin}"\nversion = "2025.11"\ndefconfig = "gaia_qemu_defconfig"\n',
    )


def pending(source, build, path: str) -> InputPending:
    with pytest.raises(InputPending) as caught:
        source().digest(build, path, build.get(path))
    return caught.value


@pytest.mark.parametrize(
    ("source", "path"),
    [
        (DefconfigSource, "buildroot.defconfig"),
        (VersionSource, "buildroot.version"),
        (PackageOverrideSource, "buildroot.symbols"),
    ],
)
def test_before_fetch_clones_the_tree_its_digests_are_pending(
    cloned: Path, source, path: str
):
    error = pending(source, load_build(cloned), path)
    assert error.needs == "buildroot.fetch"
    assert "is cloned by buildroot.fetch" in error.detail
    # the run's restore task computes them after fetch
    build = fetched_build(cloned)
    assert source().digest(build, path, build.get(path)) != "missing"


def test_a_pinned_tag_already_checked_out_is_not_pending(cloned: Path):
    fetched = fetched_build(cloned)
    status = load_build(cloned)  # another command, no fetch in it
    for source, path in (
        (DefconfigSource, "buildroot.defconfig"),
        (VersionSource, "buildroot.version"),
    ):
        assert source().digest(status, path, status.get(path)) == source().digest(
            fetched, path, fetched.get(path)
        )


def test_a_checkout_that_fetch_would_move_or_reset_is_pending(cloned: Path):
    src = fetched_build(cloned).workspace.build_dir / "buildroot" / "src"
    origin = cloned.parent.parent / "origin"
    write(origin / "NEWS", "2026.02\n")
    git(origin, "add", "NEWS")
    git(origin, "commit", "--quiet", "--no-gpg-sign", "-m", "next")
    git(origin, "tag", "-a", "2026.02", "-m", "2026.02")
    git(src, "fetch", "--quiet", "--tags", "origin")
    # another tag than the one checked out
    error = pending(
        DefconfigSource,
        load_build(cloned, ['buildroot.version="2026.02"']),
        "buildroot.defconfig",
    )
    assert "is not at '2026.02' yet: buildroot.fetch checks out" in error.detail
    # local edits fetch resets
    defconfig = src / "configs" / "gaia_qemu_defconfig"
    defconfig.write_text(defconfig.read_text() + "BR2_PACKAGE_NANO=y\n")
    error = pending(DefconfigSource, load_build(cloned), "buildroot.defconfig")
    assert "has local changes that buildroot.fetch resets" in error.detail
    # a branch: only fetch knows where it points
    error = pending(
        VersionSource,
        load_build(cloned, ['buildroot.version="master"']),
        "buildroot.version",
    )
    assert "'master' is not a tag or a full commit id" in error.detail


def test_a_defconfig_in_an_external_tree_needs_no_fetch(cloned: Path):
    make_external(cloned.parent / "ext")
    write(cloned.parent / "ext" / "configs" / "gaia_qemu_defconfig", "BR2_aarch64=y\n")
    build = load_build(cloned, ['buildroot.external=["ext"]'])
    assert (
        DefconfigSource()
        .digest(build, "buildroot.defconfig", "gaia_qemu_defconfig")
        .startswith("sha256:")
    )


def test_a_starting_point_never_waits_for_fetch(cloned: Path, tmp_path: Path):
    (tmp_path / "rootfs").mkdir()
    build = load_build(
        cloned,
        [
            "buildroot.starting_point.enabled=true",
            f'buildroot.starting_point.rootfs_dir="{tmp_path / "rootfs"}"',
        ],
    )
    assert VersionSource().digest(build, "buildroot.version", "2025.11") == "missing"


def test_a_missing_source_dir_is_an_error_value_not_pending(tmp_path: Path):
    build_file = write(
        tmp_path / "build.toml",
        '[buildroot]\nsource_dir = "tree"\ndefconfig = "gaia_qemu_defconfig"\nversion = "2025.11"\n',
    )
    assert digest(DefconfigSource, build_file, "buildroot.defconfig") == "missing"
    assert digest(VersionSource, build_file, "buildroot.version") == "missing"
    assert digest(SourceTreeSource, build_file, "buildroot.source_dir") == "missing"
    shutil.copytree(BUILDROOT_TREE, tmp_path / "tree")
    build_file.write_text(
        '[buildroot]\nsource_dir = "tree"\ndefconfig = "nope_defconfig"\n'
    )
    assert digest(DefconfigSource, build_file, "buildroot.defconfig") == "missing"


def test_version_digest_follows_the_commit_a_branch_points_to(cloned: Path):
    origin = cloned.parent.parent / "origin"
    first = VersionSource().digest(
        fetched_build(cloned, 'buildroot.version="master"'),
        "buildroot.version",
        "master",
    )
    assert first == git(origin, "rev-parse", "HEAD").strip()
    write(origin / "NEWS", "x\n")
    git(origin, "add", "NEWS")
    git(origin, "commit", "--quiet", "--no-gpg-sign", "-m", "move master")
    second = VersionSource().digest(
        fetched_build(cloned, 'buildroot.version="master"'),
        "buildroot.version",
        "master",
    )
    assert second != first and second == git(origin, "rev-parse", "HEAD").strip()
    # a tag keeps naming its commit
    assert (
        VersionSource().digest(fetched_build(cloned), "buildroot.version", "2025.11")
        == first
    )


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
    out_dir = build.workspace.padded_dir("buildroot/output")
    assert str(out_dir).startswith(str(project.parent / "build" / "padded") + "/")
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
    build = load_build(project)
    roots = BuildrootAnchor(build).relocation_roots()
    ws = project.parent
    assert roots == {
        "workspace": ws,
        "buildroot.out_dir": build.workspace.padded_dir("buildroot/output"),
        "buildroot.src_dir": ws / "tree",
        "buildroot.download_dir": Path("/srv/dl"),
        "buildroot.external.0": ws / "ext",
        "buildroot.external.1": ws / "ext2",
    }


def test_a_root_reached_through_a_symlink_is_recorded_in_both_forms(tmp_path: Path):
    from gaia_core.checkpoints.portability import current_roots

    (tmp_path / "real").mkdir()
    (tmp_path / "ws").symlink_to(tmp_path / "real")
    build_file = write(
        tmp_path / "ws" / "build.toml",
        '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n',
    )
    build = load_build(build_file)
    roots = current_roots(BuildrootAnchor(build), capture=True)
    assert roots["workspace"] == str(tmp_path / "ws")
    assert roots["workspace:real"] == str(tmp_path / "real")
    # the padded out dir is computed from the resolved build dir: one form, of the padded length
    padded = roots["buildroot.out_dir"]
    assert padded.startswith(str(tmp_path / "real" / "build" / "padded") + "/")
    assert len(padded) == build.workspace.padded_length
    assert "buildroot.out_dir:real" not in roots
    assert "buildroot.download_dir:real" in roots


def test_relocation_roots_of_a_cloned_tree(tmp_path: Path):
    build_file = write(
        tmp_path / "build.toml", '[buildroot]\ndefconfig = "gaia_qemu_defconfig"\n'
    )
    build = load_build(build_file)
    roots = BuildrootAnchor(build).relocation_roots()
    assert all(path == Path(os.path.realpath(path)) for path in roots.values())
    assert roots["buildroot.src_dir"] == build.workspace.padded_dir("buildroot/src")
    assert len(str(roots["buildroot.src_dir"])) == len(str(roots["buildroot.out_dir"])) == 192
    assert (
        roots["buildroot.download_dir"]
        == tmp_path / "build" / ".cache" / "buildroot" / "dl"
    )
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
def test_only_package_build_dirs_may_keep_an_old_path(
    project: Path, member: str, required: bool
):
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


def override_project(root: Path, override_file: str, line_prefix: str = "") -> Path:
    """A source_dir project whose htop is built from ``root/src/htop``."""
    shutil.copytree(BUILDROOT_TREE, root / "tree")
    write(root / "src" / "htop" / "htop", "#!/bin/sh\necho mine\n")
    write(root / "src" / "htop" / ".git" / "index", "git's own state\n")
    path = (
        root / override_file
        if not override_file.startswith("/")
        else Path(override_file)
    )
    write(
        path,
        f"{line_prefix}HTOP_OVERRIDE_SRCDIR = {root / 'src' / 'htop'}\n"
        f"HTOP_CONF_OPTS += --x --with-data={root / 'data'}\n",
    )
    return write(
        root / "build.toml",
        '[buildroot]\nsource_dir = "tree"\ndefconfig = "gaia_qemu_defconfig"\n'
        f'symbols = {{ PACKAGE_OVERRIDE_FILE = "{path}" }}\n',
    )


def overrides(build_file: Path, *sets: str):
    build = load_build(build_file, list(sets))
    return PackageOverrideSource().digest(
        build, "buildroot.symbols", build.get("buildroot.symbols")
    )


def test_editing_an_override_source_tree_changes_the_digest(tmp_path: Path):
    build_file = override_project(tmp_path, "local/overrides.mk")
    before = overrides(build_file)
    assert set(before) == {"file", "srcdirs"} and before["srcdirs"]["HTOP"]["sha256"].startswith(
        "sha256:"
    )
    assert overrides(build_file) == before
    (tmp_path / "src" / "htop" / ".git" / "index").write_text("touched by git status\n")
    assert (
        overrides(build_file) == before
    )  # VCS dirs are not synced by Buildroot either
    (tmp_path / "src" / "htop" / "htop").write_text("#!/bin/sh\necho edited\n")
    after = overrides(build_file)
    assert (
        after["srcdirs"]["HTOP"] != before["srcdirs"]["HTOP"]
        and after["file"] == before["file"]
    )
    # any other line of an override file outside the out dir counts too
    overrides_file = tmp_path / "local" / "overrides.mk"
    overrides_file.write_text(overrides_file.read_text().replace("--x", "--y"))
    assert overrides(build_file)["file"] != after["file"]


def test_the_override_digest_holds_no_path_of_the_workspace(tmp_path: Path):
    first = overrides(override_project(tmp_path / "a", "local/overrides.mk"))
    second = overrides(
        override_project(tmp_path / "elsewhere" / "b", "local/overrides.mk")
    )
    assert first == second
    assert str(tmp_path) not in repr(first)


def test_the_default_local_mk_in_the_out_dir_counts_by_the_trees_it_names(
    tmp_path: Path,
):
    out = padded_path(tmp_path / "build", "buildroot/output", DEFAULT_PADDED_LENGTH)
    build_file = override_project(tmp_path, str(out / "local.mk"))
    build_file.write_text(build_file.read_text().replace("symbols = ", "# symbols = "))
    digest = overrides(build_file)
    assert digest["file"] == "in the out dir" and "HTOP" in digest["srcdirs"]
    (tmp_path / "src" / "htop" / "htop").write_text("edited\n")
    assert overrides(build_file)["srcdirs"] != digest["srcdirs"]
    (out / "local.mk").unlink()
    assert overrides(build_file) is None  # no override file: nothing behind the setting


def test_the_override_file_named_by_the_defconfig_and_make_variables(tmp_path: Path):
    build_file = override_project(
        tmp_path, "tree/board/local.mk", line_prefix="override "
    )
    build_file.write_text(build_file.read_text().replace("symbols = ", "# symbols = "))
    with open(tmp_path / "tree" / "configs" / "gaia_qemu_defconfig", "a") as f:
        f.write('BR2_PACKAGE_OVERRIDE_FILE="$(TOPDIR)/board/local.mk"\n')
    digest = overrides(build_file)
    assert digest is not None and "HTOP" in digest["srcdirs"]
    # the symbol wins over the defconfig; false means no override file at all
    assert (
        overrides(build_file, "buildroot.symbols.PACKAGE_OVERRIDE_FILE=false") is None
    )


def test_an_override_file_set_by_a_symbol_needs_no_fetch(cloned: Path, tmp_path: Path):
    write(tmp_path / "o.mk", f"HTOP_OVERRIDE_SRCDIR = {tmp_path / 'nowhere'}\n")
    digest = overrides(
        cloned, f'buildroot.symbols.PACKAGE_OVERRIDE_FILE="{tmp_path / "o.mk"}"'
    )
    assert digest["srcdirs"] == {"HTOP": "missing"}


def test_hash_tree_hashes_a_fifo_by_its_type_without_blocking(tmp_path: Path):
    from gaia_core.fingerprints import hash_tree

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_text("x")
    before = hash_tree(tree)
    os.mkfifo(tree / "pipe")
    after = hash_tree(tree)  # would block forever if it opened the fifo
    assert after != before and after == hash_tree(tree)


def test_an_external_tree_in_git_counts_what_git_sees_and_names_the_file(project: Path):
    from gaia_core.fingerprints import file_changes

    ext = project.parent / "ext"
    (ext / ".gitignore").write_text("*.orig\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        git(ext, *args)
    [clean] = digest(ExternalTreesSource, project, "buildroot.external")
    write(ext / "package" / "acme" / "acme.mk.orig", "left by patch(1)\n")
    assert digest(ExternalTreesSource, project, "buildroot.external") == [clean]
    write(ext / "package" / "acme" / "0001-fix.patch", "--- a\n+++ b\n")  # untracked: Buildroot applies it
    [patched] = digest(ExternalTreesSource, project, "buildroot.external")
    assert file_changes(clean, patched).added == ["package/acme/0001-fix.patch"]


def test_the_points_fingerprint_exclude_reaches_the_external_tree(project: Path):
    build = load_build(project)
    source = ExternalTreesSource()
    source.exclude = ("*.md",)
    before = source.digest(build, "buildroot.external", build.get("buildroot.external"))
    write(project.parent / "ext" / "README.md", "notes\n")
    assert source.digest(build, "buildroot.external", build.get("buildroot.external")) == before
