"""A checkpoint restored in a fresh copy of the workspace (what a CI runner has) is up to
date for make, although every source file there is newer than the checkpoint: the test
tree's busybox is a kconfig package whose config file lives in the Buildroot tree and whose
fragment lives in the user's BR2_EXTERNAL tree, both make prerequisites of its
``.stamp_dotconfig``, as in real Buildroot."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from buildroot_repo import make_buildroot_repo
from mtime_order import filesystem_now, mtimes, touch_all
from test_buildroot_checkpoints import QUICKSTART, Quickstart, gaia, make_quickstart

EXTERNAL = """
[buildroot]
external = ["br2-external"]

[buildroot.symbols]
PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES = "$(BR2_EXTERNAL_GAIA_QS_PATH)/board/busybox.fragment"

[checkpoints.backends.dir.team]
path = "{shared}"

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
backend = "dir:team"
upload_policy = "always"
"""


def workspace(root: Path, shared: Path) -> Quickstart:
    """The quickstart with an external tree holding a busybox fragment, sharing a dir backend."""
    shutil.copytree(QUICKSTART, root, symlinks=True, ignore=shutil.ignore_patterns("build", "out"))
    ext = root / "br2-external"
    (ext / "board").mkdir(parents=True)
    (ext / "external.desc").write_text("name: GAIA_QS\ndesc: the quickstart's own tree\n")
    (ext / "Config.in").write_text("")
    (ext / "external.mk").write_text("")
    (ext / "board" / "busybox.fragment").write_text("CONFIG_HUSH=y\nCONFIG_FEATURE_EDITING=y\n")
    (root / "layers" / "checkpoints.toml").write_text(
        "[checkpoints]\nenabled = true\n" + EXTERNAL.format(shared=shared)
    )
    return Quickstart(root)


def image_content(qs: Quickstart) -> dict[str, tuple]:
    """Path -> (type, mode, uid, link target, sha256) of every member of the image."""
    found = {}
    with tarfile.open(qs.images / "rootfs.tar") as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            found[m.name] = (m.type, m.mode, m.uid, m.linkname, hashlib.sha256(data).hexdigest())
    return found


def test_a_fresh_copy_with_every_source_newer_restores_with_no_package_step(gaia_cli, tmp_path):
    shared = tmp_path / "team-cache"
    shared.mkdir()
    first = workspace(tmp_path / "home" / "dev" / "ws", shared)
    gaia(gaia_cli, "run", first.build)
    built = first.compile_log()
    assert [line for line in built if line.startswith("busybox")] == [
        "busybox 1.37.0 configure", "busybox 1.37.0 build", "busybox 1.37.0 install-target"]
    package = first.out / "build" / "busybox-1.37.0"
    assert (package / ".config").read_text().endswith("CONFIG_HUSH=y\nCONFIG_FEATURE_EDITING=y\n")
    image = image_content(first)
    newest_captured = max(mtimes(first.out).values())

    time.sleep(0.02)
    runner = Quickstart(tmp_path / "ci" / "builds" / "runner-7" / "ws")
    shutil.copytree(first.root, runner.root, symlinks=True, ignore=shutil.ignore_patterns("build", "out"))
    touch_all(runner.root)  # a fresh clone: every file written now
    sources = mtimes(runner.root)
    assert min(sources.values()) > newest_captured
    parked = tmp_path / "parked"
    first.root.parent.rename(parked)  # nothing may come from the first workspace
    try:
        result = gaia(gaia_cli, "run", runner.build)
        assert "restored" in result.output and "from dir:team" in result.output, result.output
        assert "SKIP: buildroot.build" in result.output
        assert runner.compile_log() == built, "a package step ran after the restore"
        env = {**os.environ, "BR2_EXTERNAL": str(runner.root / "br2-external")}
        finalize = subprocess.run(["make", "-C", str(runner.root / "buildroot-tree"), f"O={runner.out}",
                                   "target-finalize"], env=env, capture_output=True, text=True, check=True)
        assert runner.compile_log() == built, finalize.stdout  # make sees the tree up to date
        assert image_content(runner) == image
        restored = {k: v for k, v in mtimes(runner.out).items() if k.startswith("build/")}
        assert min(restored.values()) > max(sources.values())
        assert max(mtimes(runner.out).values()) <= filesystem_now(runner.out)
    finally:
        parked.rename(first.root.parent)


def test_an_edited_fragment_misses_and_rebuilds_busybox_only(gaia_cli, tmp_path):
    shared = tmp_path / "team-cache"
    shared.mkdir()
    qs = workspace(tmp_path / "ws", shared)
    gaia(gaia_cli, "run", qs.build)
    shutil.rmtree(qs.out.resolve())  # the padded out dir behind the link
    gaia(gaia_cli, "run", qs.build)  # restored, placed at the time of this restore
    built = qs.compile_log()
    (qs.root / "br2-external" / "board" / "busybox.fragment").write_text("CONFIG_HUSH=y\n")
    result = gaia(gaia_cli, "run", qs.build)
    # the fragment is in the external tree, and a symbol names it
    assert "restore miss (reason=inputs_changed:buildroot.external,buildroot.symbols)" in result.output
    assert qs.compile_log()[len(built):] == [
        "busybox 1.37.0 configure", "busybox 1.37.0 build", "busybox 1.37.0 install-target"]
    assert max(mtimes(qs.out).values()) <= filesystem_now(qs.out)


def test_a_fragment_checked_out_again_in_place_rebuilds_nothing(gaia_cli, tmp_path):
    """Same content, newer mtime, the tree in place: without gaia, collect's make would
    configure and build busybox again."""
    shared = tmp_path / "team-cache"
    shared.mkdir()
    qs = workspace(tmp_path / "ws", shared)
    gaia(gaia_cli, "run", qs.build)
    built = qs.compile_log()
    time.sleep(0.01)
    touch_all(qs.root / "br2-external")  # git checkout other-branch && git checkout -
    result = gaia(gaia_cli, "run", qs.build)
    assert "an input was written at" in result.output and "SKIP: buildroot.build" in result.output
    assert qs.compile_log() == built
    assert qs.post_image_runs() == 2  # the tree's times moved: collect ran, and made nothing


def test_gaias_own_clone_made_again_in_place_rebuilds_nothing(gaia_cli, tmp_path):
    """buildroot.fetch clones anew (the clone was removed): package/busybox/busybox.config is
    newer than the tree in place; git's index, written last, tells the fingerprint."""
    repo = make_buildroot_repo(tmp_path / "origin", tag="2025.11")
    qs = make_quickstart(tmp_path / "ws")
    layer = qs.root / "layers" / "buildroot.toml"
    layer.write_text(f'[buildroot]\nrepo = "{repo}"\nversion = "2025.11"\ndefconfig = "gaia_qemu_defconfig"\n')
    gaia(gaia_cli, "run", qs.build)
    built = qs.compile_log()
    (qs.root / "build" / "buildroot" / "src").unlink()  # rm -rf build/buildroot/src: the clone starts over
    time.sleep(0.01)
    result = gaia(gaia_cli, "run", qs.build)
    assert "cloning" in result.output and "an input was written at" in result.output, result.output
    assert qs.compile_log() == built
    again = gaia(gaia_cli, "run", qs.build)
    assert "an input was written" not in again.output
