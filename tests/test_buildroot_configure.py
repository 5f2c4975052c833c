"""``buildroot.configure`` and ``buildroot.build`` against the test tree, through ``gaia run``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from buildroot_repo import BUILDROOT_TREE
from gaia_buildroot.collect import collect
from gaia_buildroot.layout import buildroot_config

from gaia_core.config.loader import load_build
from gaia_core.errors import TaskFailed
from gaia_core.run import RunState, TaskContext
from gaia_core.tasks import Task


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(BUILDROOT_TREE, tmp_path / "tree")
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "external.desc").write_text("name: ACME\n")
    (ext / "Config.in").write_text("")
    (ext / "external.mk").write_text("")
    (tmp_path / "build.toml").write_text(
        """
[buildroot]
source_dir = "tree"
defconfig = "gaia_qemu_defconfig"
threads = 3
external = ["ext"]
packages = { htop = false, foo-gui = true, dropbear = true }
package_versions = { busybox = "1.36.1" }
symbols = { TARGET_GENERIC_HOSTNAME = "custom", BR2_TARGET_ROOTFS_EXT2 = false }
"""
    )
    return tmp_path


def out(project: Path) -> Path:
    return project / "build" / "buildroot" / "output"


def test_packages_versions_and_symbols_reach_the_build(gaia_cli, project: Path):
    result = gaia_cli("run", project / "build.toml")
    assert result.exit_code == 0, result.output
    config = (out(project) / ".config").read_text()
    assert "# BR2_PACKAGE_HTOP is not set" in config
    assert "BR2_PACKAGE_DROPBEAR=y" in config
    assert 'BR2_PACKAGE_BUSYBOX_VERSION="1.36.1"' in config
    assert 'BR2_TARGET_GENERIC_HOSTNAME="custom"' in config
    assert "BR2_JLEVEL=3" in config
    assert f'BR2_DL_DIR="{project}/build/.cache/buildroot/dl"' in config
    assert (project / "build" / ".cache" / "buildroot" / "dl").is_dir()

    log = (out(project) / "build" / "fake-compile.log").read_text()
    assert (
        "busybox 1.36.1 build" in log
        and "dropbear 2024.86 build" in log
        and "htop" not in log
    )
    # foo-gui depends on libfoo, which nobody enabled: olddefconfig drops it, with a warning
    assert "foo-gui" not in log
    configure_log = (
        project / "out" / "build" / "logs" / "buildroot.configure.log"
    ).read_text()
    assert (
        "WARN: requested symbol 'BR2_PACKAGE_FOO_GUI' was not realized after olddefconfig"
        in configure_log
    )
    assert "WARN: 1 requested symbol(s) not realized" in configure_log
    # BR2_EXTERNAL and BR2_JLEVEL in the environment of make
    env_log = (out(project) / "build" / "fake-env.log").read_text()
    assert f"BR2_JLEVEL=3 BR2_EXTERNAL={project}/ext" in env_log


def test_an_invalid_external_tree_fails_configure(gaia_cli, project: Path):
    (project / "ext" / "external.mk").unlink()
    result = gaia_cli("run", project / "build.toml")
    assert result.exit_code == 1
    assert "is not a BR2_EXTERNAL tree (missing external.mk)" in result.output


def test_an_out_dir_of_another_schema_is_rebuilt_from_scratch(gaia_cli, project: Path):
    assert gaia_cli("run", project / "build.toml").exit_code == 0
    # schema 1: the stage was BR2_ROOTFS_OVERLAY and target/ holds its files for good
    (out(project) / ".gaia-buildroot-outdir-schema").write_text("1\n")
    (out(project) / "stale").write_text("x")
    result = gaia_cli("run", project / "build.toml")
    assert result.exit_code == 0, result.output
    assert not (out(project) / "stale").exists()
    assert "starting from an empty out dir" in result.output
    assert (out(project) / ".gaia-buildroot-outdir-schema").read_text() == "2\n"


def test_a_foreign_non_empty_out_dir_is_never_deleted(gaia_cli, project: Path):
    foreign = project / "precious"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    result = gaia_cli(
        "run", project / "build.toml", "--set", f"buildroot.br_output_dir='{foreign}'"
    )
    assert result.exit_code == 1
    assert "refusing to delete it" in result.output
    assert (foreign / "thesis.tex").read_text() == "years of work"


def test_a_second_run_compiles_nothing_again(gaia_cli, project: Path):
    assert gaia_cli("run", project / "build.toml").exit_code == 0
    log = (out(project) / "build" / "fake-compile.log").read_text()
    assert gaia_cli("run", project / "build.toml").exit_code == 0
    assert (out(project) / "build" / "fake-compile.log").read_text() == log


def test_collect_refuses_an_out_dir_without_the_schema_marker(gaia_cli, project: Path):
    assert gaia_cli("run", project / "build.toml").exit_code == 0
    (out(project) / ".gaia-buildroot-outdir-schema").unlink()
    build = load_build(project / "build.toml")
    ctx = TaskContext(
        Task("buildroot.collect"),
        build,
        dry_run=False,
        state=RunState(),
        echo=lambda line: None,
    )
    with pytest.raises(TaskFailed, match="has gaia out-dir schema none"):
        collect(ctx, buildroot_config(build))


def test_a_package_no_longer_overridden_is_rebuilt_from_its_own_source(
    gaia_cli, project: Path
):
    src = project / "src" / "busybox"
    src.mkdir(parents=True)
    (src / "busybox").write_text("#!/bin/sh\necho mine\n")
    (project / "local.mk").write_text(f"BUSYBOX_OVERRIDE_SRCDIR = {src}\n")
    symbol = f"buildroot.symbols.PACKAGE_OVERRIDE_FILE='{project / 'local.mk'}'"
    assert gaia_cli("run", project / "build.toml", "--set", symbol).exit_code == 0
    busybox = out(project) / "target" / "usr" / "bin" / "busybox"
    assert busybox.read_text() == "#!/bin/sh\necho mine\n"
    (project / "local.mk").write_text("")
    result = gaia_cli("run", project / "build.toml", "--set", symbol)
    assert result.exit_code == 0, result.output
    assert "busybox: its override source changed since it was built" in result.output
    assert busybox.read_text() == '#!/bin/sh\necho "busybox 1.36.1"\n'
    assert not (out(project) / "build" / "busybox-custom").exists()
