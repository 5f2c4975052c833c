"""Buildroot packages as units (issue 20) on the quickstart's test tree, with per-package
directories and an external toolchain: (a) a busybox option changed builds busybox only,
(b) a symbol of a package nothing depends on builds that package only, (c) a toolchain
symbol builds every package; each image equals a cold build's with the same config."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from buildroot_repo import make_external_toolchain
from test_buildroot_checkpoints import Quickstart, gaia, make_quickstart

PREFIX = "x86_64-linux"
UNITS_POINT = "units = true"


def units_workspace(root: Path, toolchain: Path, *, symbols: str = "", fragment: str = "CONFIG_LS=y\n",
                    point: str = UNITS_POINT) -> Quickstart:
    qs = make_quickstart(root, point=point)
    (root / "board").mkdir(exist_ok=True)
    (root / "board" / "busybox.fragment").write_text(fragment)
    (root / "layers" / "units.toml").write_text(
        "[buildroot.packages]\nlibfoo = true\nfoo-gui = true\ndropbear = true\n\n"
        "[buildroot.symbols]\nPER_PACKAGE_DIRECTORIES = true\n"
        "TOOLCHAIN_EXTERNAL = true\nTOOLCHAIN_EXTERNAL_CUSTOM = true\nTOOLCHAIN_EXTERNAL_PREINSTALLED = true\n"
        f'TOOLCHAIN_EXTERNAL_PATH = "{toolchain}"\nTOOLCHAIN_EXTERNAL_CUSTOM_PREFIX = "{PREFIX}"\n'
        f'PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES = "{root / "board" / "busybox.fragment"}"\n{symbols}'
    )
    text = qs.build.read_text().replace('"layers/checkpoints.toml"]', '"layers/checkpoints.toml", "layers/units.toml"]')
    qs.build.write_text(text)
    return qs


def add_symbols(qs: Quickstart, *lines: str) -> None:
    """More ``[buildroot.symbols]`` (the units layer ends with that table)."""
    layer = qs.root / "layers" / "units.toml"
    layer.write_text(layer.read_text() + "".join(f"{line}\n" for line in lines))


def steps(result) -> list[str]:  # type: ignore[no-untyped-def]
    """Package steps a run printed (``>>> <pkg> <version> <Step>``), finalize lines left out."""
    return [line.split(">>> ", 1)[1] for line in result.output.splitlines() if ">>> " in line and ">>>   " not in line]


def packages_run(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {step.split()[0] for step in steps(result)}


def image(qs: Quickstart) -> dict[str, tuple]:
    """Path -> (type, mode, link, sha256) of every member of the image."""
    found = {}
    with tarfile.open(qs.images / "rootfs.tar") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            found[member.name] = (member.type, member.mode, member.linkname, hashlib.sha256(data).hexdigest())
    return found


@pytest.fixture
def toolchain(tmp_path: Path) -> Path:
    return make_external_toolchain(tmp_path / "opt" / "toolchain", prefix=PREFIX)


@pytest.fixture
def built(gaia_cli, tmp_path, toolchain) -> Quickstart:
    qs = units_workspace(tmp_path / "ws", toolchain)
    cold = gaia(gaia_cli, "run", qs.build)
    assert "captured 8 unit(s)" in cold.output, cold.output
    return qs


def cold_image(gaia_cli, tmp_path: Path, toolchain: Path, **settings) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    """The image of a cold build with these settings, checkpoints off."""
    qs = units_workspace(tmp_path / f"cold-{len(list(tmp_path.iterdir()))}", toolchain, point="use_policy = \"off\"",
                         **settings)
    gaia(gaia_cli, "run", qs.build)
    return image(qs)


def test_a_changed_busybox_option_builds_busybox_only(gaia_cli, built, tmp_path, toolchain):
    (built.root / "board" / "busybox.fragment").write_text("CONFIG_LS=y\nCONFIG_TOP=y\n")
    shutil.rmtree(built.out.resolve())  # a fresh out dir: every other package comes from its unit
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"busybox"}, warm.output
    assert "units: 0 kept, 7 restored, 1 to build" in warm.output
    assert "CONFIG_TOP=y" in (built.out / "target" / "etc" / "busybox-applets").read_text()
    assert image(built) == cold_image(gaia_cli, tmp_path, toolchain, fragment="CONFIG_LS=y\nCONFIG_TOP=y\n")


def test_in_the_same_out_dir_a_changed_option_rebuilds_what_buildroot_would_not(gaia_cli, built):
    """Buildroot rebuilds nothing when a package's symbol changes; the unit's key does."""
    add_symbols(built, "PACKAGE_HTOP_UNICODE = true")
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"htop"}, steps(warm)
    assert "units: 7 kept, 0 restored, 1 to build" in warm.output
    assert (built.out / "target" / "etc" / "htoprc").read_text() == "unicode=yes\n"


def test_a_symbol_only_one_package_reads_builds_that_package(gaia_cli, built, tmp_path, toolchain):
    built.build.write_text(built.build.read_text().replace('"gaia-quickstart"', '"gaia-other-host"'))
    shutil.rmtree(built.out.resolve())
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"dropbear"}, steps(warm)  # dropbear.mk reads the hostname
    assert (built.out / "target" / "etc" / "dropbear" / "banner").read_text() == "Welcome to gaia-other-host\n"


def test_a_toolchain_symbol_builds_every_package(gaia_cli, built):
    add_symbols(built, "TOOLCHAIN_EXTERNAL_CXX = true")
    shutil.rmtree(built.out.resolve())
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"toolchain-external-custom", "host-pkgconf", "busybox", "libfoo", "foo-gui",
                                  "htop", "nano", "dropbear"}
    assert "units: 0 kept, 0 restored, 8 to build" in warm.output


def test_a_dependency_changed_rebuilds_its_dependants(gaia_cli, built):
    libfoo = built.root / "buildroot-tree" / "package" / "libfoo" / "libfoo.mk"
    libfoo.write_text(libfoo.read_text() + "# a recipe edit\n")
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"libfoo", "foo-gui"}, steps(warm)
    assert "unit foo-gui 0.1 will be built: its dependency 'libfoo' is built" in warm.output


def test_restored_units_keep_the_hard_links_between_per_package_dirs(gaia_cli, built):
    def inode(rel: str) -> int:
        return (built.out / "per-package" / rel).stat().st_ino

    (built.root / "board" / "busybox.fragment").write_text("CONFIG_LS=y\nCONFIG_DF=y\n")
    shutil.rmtree(built.out.resolve())
    gaia(gaia_cli, "run", built.build)
    assert inode("foo-gui/target/usr/lib/libfoo.so") == inode("libfoo/target/usr/lib/libfoo.so")
    wrapper = "host/bin/toolchain-wrapper"
    assert inode(f"htop/{wrapper}") == inode(f"toolchain-external-custom/{wrapper}") == inode(f"nano/{wrapper}")


def test_restored_stamps_stay_newer_than_a_buildroot_tree_written_again(gaia_cli, built):
    """busybox.config in the Buildroot tree is a make prerequisite of busybox's .stamp_dotconfig:
    written again (same content, now), it must not make the restored busybox stale."""
    config = built.root / "buildroot-tree" / "package" / "busybox" / "busybox.config"
    built.build.write_text(built.build.read_text().replace('"gaia-quickstart"', '"gaia-other-host"'))
    shutil.rmtree(built.out.resolve())
    config.write_text(config.read_text())
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"dropbear"}, steps(warm)


def test_status_tells_what_units_a_run_restores_and_why_the_others_are_built(gaia_cli, built):
    (built.root / "board" / "busybox.fragment").write_text("CONFIG_LS=y\nCONFIG_TOP=y\n")
    st = gaia(gaia_cli, "checkpoints", "status", built.build, "--json").json["points"][0]
    assert st["will_rebuild"] is True
    assert (st["units"]["keep"], st["units"]["restore"], st["units"]["build"]) == (7, 0, 1)
    explained = gaia(gaia_cli, "checkpoints", "status", built.build, "--explain").output
    assert "build   busybox 1.37.0 (not stored" in explained
    assert "inputs.files.BR2_PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES[0]: 1 changed" in explained, explained


def test_a_build_file_change_waits_for_configure_in_status(gaia_cli, built):
    add_symbols(built, "PACKAGE_HTOP_UNICODE = true")
    st = gaia(gaia_cli, "checkpoints", "status", built.build, "--json").json["points"][0]
    assert st["units"]["state"] == "unknown"
    assert "needs buildroot.configure" in st["units"]["why"]


def test_units_need_per_package_directories(gaia_cli, tmp_path, toolchain):
    qs = units_workspace(tmp_path / "ws", toolchain, symbols="")
    layer = qs.root / "layers" / "units.toml"
    layer.write_text(layer.read_text().replace("PER_PACKAGE_DIRECTORIES = true", "PER_PACKAGE_DIRECTORIES = false"))
    result = gaia(gaia_cli, "plan", qs.build, code=2)
    assert "checkpoints.points[0].units: units = true needs Buildroot's per-package directories" in result.output


def test_a_package_without_a_source_hash_is_built(gaia_cli, built):
    built.build.write_text(built.build.read_text() + '\n[buildroot.package_versions]\nnano = "8.3"\n')
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"nano"}, steps(warm)
    assert ("unit nano 8.3 will be built: no key: no hash of nano-8.3.tar.gz in its hash files, and it is not in "
            "the download dir") in warm.output


def test_the_units_of_a_checkpoint_travel_through_the_backend(gaia_cli, tmp_path, toolchain):
    shared = tmp_path / "shared"
    shared.mkdir()
    backend = f'backend = "dir:team"\nupload_policy = "always"\n{UNITS_POINT}'
    team = units_workspace(tmp_path / "team", toolchain, point=backend)
    team.build.write_text(team.build.read_text() + f'\n[checkpoints.backends.dir.team]\npath = "{shared}"\n')
    cold = gaia(gaia_cli, "run", team.build)
    assert "uploaded 8 unit(s) via dir:team" in cold.output
    runner = units_workspace(tmp_path / "ci-runner-at-a-longer-path", toolchain, point=backend,
                             fragment="CONFIG_LS=y\nCONFIG_TOP=y\n")
    runner.build.write_text(runner.build.read_text() + f'\n[checkpoints.backends.dir.team]\npath = "{shared}"\n')
    warm = gaia(gaia_cli, "run", runner.build)
    assert packages_run(warm) == {"busybox"}, steps(warm)
    assert "downloaded 7 unit(s) via dir:team" in warm.output
    assert os.readlink(runner.out / "per-package" / "toolchain-external-custom" / "host" / "bin" / f"{PREFIX}-ar") \
        == f"{toolchain}/bin/{PREFIX}-ar"


def test_make_show_info_failing_leaves_no_stale_package_for_make(gaia_cli, built, tmp_path, toolchain):
    """Buildroot rebuilds nothing when a package's symbol changes: with the units unreadable,
    the out dir is left as after `make clean` (.config kept) and make builds every package."""
    script = built.root / "buildroot-tree" / "support" / "scripts" / "show-info.py"
    script.write_text('import sys\nsys.exit("show-info: broken")\n')
    add_symbols(built, "PACKAGE_HTOP_UNICODE = true")
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"toolchain-external-custom", "host-pkgconf", "busybox", "libfoo", "foo-gui",
                                  "htop", "nano", "dropbear"}, steps(warm)
    assert "units could not be restored: make show-info exited 2: show-info: broken" in warm.output
    assert "removed what a clean build does not find" in warm.output
    assert (built.out / "target" / "etc" / "htoprc").read_text() == "unicode=yes\n"
    assert image(built) == cold_image(gaia_cli, tmp_path, toolchain, symbols="PACKAGE_HTOP_UNICODE = true\n")


def test_a_units_point_still_hits_the_whole_tree_and_the_next_miss_keeps_its_units(gaia_cli, built):
    layer = built.root / "layers" / "units.toml"
    first = layer.read_text()
    add_symbols(built, "PACKAGE_HTOP_UNICODE = true")
    gaia(gaia_cli, "run", built.build)  # a miss: the tree now holds htop with unicode
    layer.write_text(first)
    hit = gaia(gaia_cli, "run", built.build)
    assert packages_run(hit) == set(), steps(hit)
    assert "units: nothing to restore, the whole tree was" in hit.output, hit.output
    assert "restored, " not in hit.output and "captured" not in hit.output
    assert (built.out / "target" / "etc" / "htoprc").read_text() == "unicode=no\n"
    (built.root / "board" / "busybox.fragment").write_text("CONFIG_LS=y\nCONFIG_TOP=y\n")
    warm = gaia(gaia_cli, "run", built.build)
    assert packages_run(warm) == {"busybox"}, steps(warm)
    assert "units: 7 kept, 0 restored, 1 to build" in warm.output, warm.output


# -- which units each key input reaches (issue 20's list) ----------------------------------------

ALL_PACKAGES = {"toolchain-external-custom", "host-pkgconf", "busybox", "libfoo", "foo-gui", "htop", "nano",
                "dropbear"}


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)


def tree(qs: Quickstart) -> Path:
    return qs.root / "buildroot-tree"


def replace_in_layer(qs: Quickstart, old: str, new: str) -> None:
    layer = qs.root / "layers" / "units.toml"
    layer.write_text(layer.read_text().replace(old, new))


def with_global_patch_dir(qs: Quickstart) -> str:
    append(qs.root / "patches" / "libfoo" / "0001-fix.patch", "--- a/foo.c\n+++ b/foo.c\n")
    return f'GLOBAL_PATCH_DIR = "{qs.root / "patches"}"\n'


def with_override(qs: Quickstart) -> str:
    append(qs.root / "src" / "htop" / "htop", "#!/bin/sh\necho mine\n")
    append(qs.root / "local.mk", f"HTOP_OVERRIDE_SRCDIR = {qs.root / 'src' / 'htop'}\n")
    return f'PACKAGE_OVERRIDE_FILE = "{qs.root / "local.mk"}"\n'


def with_external(qs: Quickstart) -> str:
    ext = qs.root / "ext"
    append(ext / "external.desc", "name: ACME\n")
    append(ext / "Config.in", "")
    append(ext / "external.mk", "# ACME's packages\n")
    qs.build.write_text(qs.build.read_text() + '\n[buildroot]\nexternal = ["ext"]\n')
    return ""


def with_busybox_config(qs: Quickstart) -> str:
    append(qs.root / "board" / "busybox.config", (tree(qs) / "package" / "busybox" / "busybox.config").read_text())
    return f'PACKAGE_BUSYBOX_CONFIG = "{qs.root / "board" / "busybox.config"}"\n'


#: (what changes, what the workspace has from the cold build on, the change, the packages built after it)
KEY_INPUTS = [
    ("global-patch-dir", with_global_patch_dir,
     lambda qs: append(qs.root / "patches" / "libfoo" / "0001-fix.patch", "-old\n+new\n"), {"libfoo", "foo-gui"}),
    ("override-tree", with_override,
     lambda qs: append(qs.root / "src" / "htop" / "htop", "echo edited\n"), {"htop"}),
    ("hash-file", None,
     lambda qs: append(tree(qs) / "package" / "nano" / "nano.hash", "# checked again\n"), {"nano"}),
    ("recipe-patch", None,
     lambda qs: append(tree(qs) / "package" / "libfoo" / "0001-fix.patch", "--- a/foo.c\n"), {"libfoo", "foo-gui"}),
    ("recipe-config-in", None,
     lambda qs: append(tree(qs) / "package" / "htop" / "Config.in", "config BR2_PACKAGE_HTOP\n"), {"htop"}),
    ("infrastructure", None,
     lambda qs: append(tree(qs) / "package" / "pkg-utils.mk", "# infrastructure edited\n"), ALL_PACKAGES),
    ("external-mk", with_external,
     lambda qs: append(qs.root / "ext" / "external.mk", "# edited\n"), ALL_PACKAGES),
    ("file-a-symbol-names", with_busybox_config,
     lambda qs: append(qs.root / "board" / "busybox.config", "CONFIG_VI=y\n"), {"busybox"}),
    ("environment-symbol", lambda qs: "JLEVEL = 2\n", lambda qs: replace_in_layer(qs, "JLEVEL = 2", "JLEVEL = 3"), set()),
]


@pytest.mark.parametrize(("setup", "change", "rebuilt"), [case[1:] for case in KEY_INPUTS],
                         ids=[case[0] for case in KEY_INPUTS])
def test_each_key_input_rebuilds_its_units_only(gaia_cli, tmp_path, toolchain, setup, change, rebuilt):
    qs = units_workspace(tmp_path / "ws", toolchain)
    if setup is not None:
        add_symbols(qs, setup(qs))
    cold = gaia(gaia_cli, "run", qs.build)
    assert packages_run(cold) == ALL_PACKAGES and "captured 8 unit(s)" in cold.output, cold.output
    change(qs)
    shutil.rmtree(qs.out.resolve())  # every package not rebuilt comes from its unit
    warm = gaia(gaia_cli, "run", qs.build)
    assert packages_run(warm) == rebuilt, steps(warm)
    assert f"units: 0 kept, {8 - len(rebuilt)} restored, {len(rebuilt)} to build" in warm.output, warm.output
