"""Build files that differ only in their stage share one Buildroot checkpoint.

Nothing of a build file's stage reaches ``.config`` or the captured ``target/``: collect
applies the stage to the built (or restored) tree, and undoes it again before the next
build, restoring whatever a stage file had replaced.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from gaia_core.checkpoints.entries import Entry
from gaia_core.checkpoints.store import Store
from gaia_core.checkpoints.tree import raw_entries

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"

RELEASE = """
imports = ["build.toml"]

# arrays replace on merge: this is the release's whole stage
[[stage.files]]
dst = "/etc/motd"
src = "assets/release-motd"

[[stage.files]]
dst = "/etc/release-notes"
content = "release 1\\n"
"""


class Workspace:
    """The quickstart plus ``release.toml``: the same Buildroot, another stage."""

    def __init__(self, root: Path):
        self.root = root
        self.out = root / "build" / "buildroot" / "output"
        self.store = root / "build" / "checkpoints" / "points" / "base-os"
        (root / "assets" / "release-motd").write_text("release motd\n")
        (root / "release.toml").write_text(RELEASE)

    def image(self, build: str) -> dict[str, bytes]:
        with tarfile.open(self.root / "out" / build / "images" / "rootfs.tar") as tar:
            return {
                m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile()
            }

    def compile_log(self) -> list[str]:
        return (self.out / "build" / "fake-compile.log").read_text().splitlines()

    def captured_entries(self) -> dict[str, Entry | bytes]:
        """Every entry of every captured tree by path, with the bytes of ``.config``."""
        store = Store(self.store.parent.parent)
        found: dict[str, Entry | bytes] = {}
        try:
            for obj in sorted(self.store.iterdir()):
                local = store.get("base-os", obj.name)
                assert local is not None, obj
                for entry in raw_entries(store.packs, local.manifest):
                    found[entry.path] = entry
                    if entry.path == "buildroot_out_dir/.config":
                        chunks = entry.chunk_list()
                        located = store.packs.locate([c for c, _ in chunks])
                        found[entry.path] = b"".join(store.packs.read(c, located[c], n) for c, n in chunks)
        finally:
            store.packs.close()
        return found


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    dest = tmp_path / "ws"
    shutil.copytree(
        QUICKSTART, dest, symlinks=True, ignore=shutil.ignore_patterns("build", "out")
    )
    return Workspace(dest)


def run(gaia_cli, build_file: Path, *args: str):
    result = gaia_cli("run", build_file, *args)
    assert result.exit_code == 0, result.output
    return result


def fingerprint(gaia_cli, build_file: Path) -> str:
    result = gaia_cli("checkpoints", "status", build_file, "--json", "--no-remote")
    assert result.exit_code == 0, result.output
    [point] = result.json["points"]
    return point["fingerprint"]


def test_profiles_with_another_stage_have_the_same_fingerprint(gaia_cli, ws: Workspace):
    assert fingerprint(gaia_cli, ws.root / "build.toml") == fingerprint(
        gaia_cli, ws.root / "release.toml"
    )


def test_each_profile_image_carries_its_own_stage_from_one_build(
    gaia_cli, ws: Workspace
):
    run(gaia_cli, ws.root / "build.toml")
    compiled = ws.compile_log()
    release = run(gaia_cli, ws.root / "release.toml")
    assert (
        "SKIP: buildroot.build" in release.output
        and "SKIP: buildroot.configure" in release.output
    )
    assert ws.compile_log() == compiled
    assert len(list(ws.store.iterdir())) == 1

    motd = (ws.root / "assets" / "motd").read_bytes()
    released = ws.image("release")
    assert released["etc/motd"] == b"release motd\n"
    assert released["etc/release-notes"] == b"release 1\n"

    # and back: the release's files leave the image again
    back = run(gaia_cli, ws.root / "build.toml")
    # the log counts what the sync did: motd is synced again, only release-notes is removed
    [line] = [line for line in back.output.splitlines() if "stage overlay:" in line]
    assert line.endswith("; 1 file(s) of the last sync removed (no longer staged)"), line
    built = ws.image("build")
    assert built["etc/motd"] == motd and "etc/release-notes" not in built
    assert not (ws.out / "target" / "etc" / "release-notes").exists()


def test_the_captured_tree_holds_nothing_of_any_stage(gaia_cli, ws: Workspace):
    run(gaia_cli, ws.root / "build.toml")
    # a Buildroot change with the out dir in place: build runs after a collect had synced
    run(gaia_cli, ws.root / "release.toml", "--set", "buildroot.packages.dropbear=true")
    members = ws.captured_entries()
    assert len(list(ws.store.iterdir())) == 2
    stage_paths = (
        "etc/motd",
        "etc/gaia",
        "etc/gaia/build-info",
        "usr/bin/hello",
        "etc/release-notes",
    )
    for path in stage_paths:
        assert f"buildroot_out_dir/target/{path}" not in members, path
    assert "buildroot_out_dir/target/usr/bin/busybox" in members  # the tree is there
    # nor the first run's rootfs.tar, which holds its stage
    assert not [m for m in members if m.startswith("buildroot_out_dir/images/")]
    assert not [m for m in members if ".gaia-stage-overlay" in m]
    config = members["buildroot_out_dir/.config"]
    assert isinstance(config, bytes)
    assert b"/stage/" not in config and b'BR2_ROOTFS_OVERLAY=""' in config


def test_a_stage_file_wins_over_what_target_finalize_writes(gaia_cli, ws: Workspace):
    """target-post-image re-runs target-finalize, which writes /etc/hostname again."""
    with open(ws.root / "build.toml", "a") as f:
        f.write(
            '\n[[stage.files]]\ndst = "/etc/hostname"\ncontent = "from-the-stage\\n"\n'
        )
    run(gaia_cli, ws.root / "build.toml")
    assert ws.image("build")["etc/hostname"] == b"from-the-stage\n"
    assert (ws.out / "target" / "etc" / "hostname").read_text() == "from-the-stage\n"
    run(gaia_cli, ws.root / "release.toml", "--set", "stage.files=[]")
    assert ws.image("release")["etc/hostname"] == b"gaia-quickstart\n"


def test_a_package_file_a_stage_replaced_comes_back(gaia_cli, ws: Workspace):
    with open(ws.root / "release.toml", "a") as f:
        f.write(
            '\n[[stage.files]]\ndst = "/usr/bin/htop"\ncontent = "#!/bin/sh\\necho patched\\n"\n'
        )
    run(gaia_cli, ws.root / "release.toml")
    assert ws.image("release")["usr/bin/htop"] == b"#!/bin/sh\necho patched\n"
    run(gaia_cli, ws.root / "build.toml")
    assert ws.image("build")["usr/bin/htop"] == b'#!/bin/sh\necho "htop 3.3.0"\n'
    # also when the next collect follows a build: the build undid the release's sync
    run(gaia_cli, ws.root / "release.toml")
    run(gaia_cli, ws.root / "build.toml", "--set", "buildroot.packages.dropbear=true")
    assert ws.image("build")["usr/bin/htop"] == b'#!/bin/sh\necho "htop 3.3.0"\n'
    assert not (ws.out / ".gaia-stage-overlay-backup" / "usr" / "bin" / "htop").exists()


def test_a_users_own_overlay_stays_in_the_config_and_the_stage_wins_over_it(
    gaia_cli, ws: Workspace
):
    overlay = ws.root / "board-overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "board").write_text("from the board overlay\n")
    (overlay / "etc" / "motd").write_text("overlay motd\n")
    run(
        gaia_cli,
        ws.root / "build.toml",
        "--set",
        f"buildroot.symbols.ROOTFS_OVERLAY='{overlay}'",
    )
    config = (ws.out / ".config").read_text()
    assert f'BR2_ROOTFS_OVERLAY="{overlay}"' in config
    image = ws.image("build")
    assert image["etc/board"] == b"from the board overlay\n"
    assert image["etc/motd"] == (ws.root / "assets" / "motd").read_bytes()
