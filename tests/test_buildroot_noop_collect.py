"""A warm run where nothing changed skips collect's ``make target-post-image``; any change to
what collect reads or wrote runs it as before."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_buildroot_checkpoints import Quickstart, gaia, make_quickstart

SKIPPED = "make target-post-image skipped"


class Runs:
    def __init__(self, gaia_cli, qs: Quickstart):  # type: ignore[no-untyped-def]
        self.gaia_cli = gaia_cli
        self.qs = qs

    def run(self, *args: str) -> str:
        return gaia(self.gaia_cli, "run", self.qs.build, *args).output

    def collected(self, *args: str) -> bool:
        """Whether this run's collect called make (the test tree logs each target-post-image)."""
        before = self.qs.post_image_runs()
        output = self.run(*args)
        made = self.qs.post_image_runs() > before
        assert made != (SKIPPED in output), output
        return made


@pytest.fixture
def runs(gaia_cli, tmp_path: Path) -> Runs:
    runs = Runs(gaia_cli, make_quickstart(tmp_path / "qs"))
    assert runs.collected()  # cold
    return runs


def test_a_warm_run_with_nothing_changed_does_not_call_make(runs: Runs):
    image = runs.qs.images / "rootfs.tar"
    before = image.stat()
    output = runs.run()
    assert "SKIP: buildroot.build" in output and SKIPPED in output
    assert runs.qs.post_image_runs() == 1
    after = image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the image is kept
    assert "etc/motd" in runs.qs.image_names()
    assert not runs.collected()  # and again


def test_a_stage_change_runs_collect(runs: Runs):
    (runs.qs.root / "assets" / "motd").write_text("a new motd\n")
    assert runs.collected()
    assert runs.qs.image_file("etc/motd") == "a new motd\n"
    assert not runs.collected()


def test_a_stage_mode_change_runs_collect(runs: Runs):
    runs.qs.build.write_text(runs.qs.build.read_text().replace("mode = 0o644", "mode = 0o640", 1))
    assert runs.collected()


def test_a_program_change_runs_collect(runs: Runs):
    (runs.qs.root / "programs" / "hello" / "greeting.txt").write_text("hi again")
    assert runs.collected()
    assert "hi again" in runs.qs.image_file("usr/bin/hello")


def test_a_restored_tree_runs_collect(runs: Runs):
    shutil.rmtree(runs.qs.out.resolve())  # the padded out dir behind the link
    assert runs.collected()


def test_a_changed_target_tree_runs_collect(runs: Runs):
    """Somebody ran make by hand, or edited target/: the image may no longer match it."""
    (runs.qs.out / "target" / "etc" / "by-hand").write_text("x")
    assert runs.collected()
    assert "etc/by-hand" in runs.qs.image_names()


@pytest.mark.parametrize("where", ["delivered", "out dir"])
def test_removed_or_touched_images_run_collect(runs: Runs, where: str):
    images = runs.qs.images if where == "delivered" else runs.qs.out / "images"
    (images / "rootfs.tar").unlink()
    assert runs.collected()
    assert (runs.qs.images / "rootfs.tar").is_file()
    os.utime(images / "rootfs.tar", ns=(1, 1))
    assert runs.collected()


def test_a_changed_overlay_of_the_config_runs_collect(runs: Runs, tmp_path: Path):
    """Files the .config names for target-post-image count, also outside every fingerprint."""
    overlay = tmp_path / "my-overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "issue").write_text("one\n")
    layers = runs.qs.root / "layers" / "packages.toml"
    layers.write_text(layers.read_text() + f'ROOTFS_OVERLAY = "{overlay}"\n')
    assert runs.collected()  # a new .config: the build runs, collect too
    assert not runs.collected()
    (overlay / "etc" / "issue").write_text("two\n")
    assert runs.collected()
    assert runs.qs.image_file("etc/issue") == "two\n"


def test_another_build_file_in_between_runs_collect(runs: Runs):
    release = runs.qs.root / "release.toml"
    release.write_text('imports = ["build.toml"]\n\n[[stage.files]]\ndst = "/etc/motd"\ncontent = "release"\n')
    gaia(runs.gaia_cli, "run", release)  # syncs its own stage into the shared target/
    assert runs.collected()
    assert runs.qs.image_file("etc/motd") != "release"


def test_a_collect_cut_short_is_not_taken_for_done(runs: Runs):
    record = runs.qs.root / "out" / "build" / ".gaia-collect.json"
    assert record.is_file()
    text = runs.qs.build.read_text()
    runs.qs.add_stage_file("/var", "a file where target/ has a directory")
    output = gaia(runs.gaia_cli, "run", runs.qs.build, code=1).output
    assert "would replace a directory in the target" in output
    assert not record.exists()
    runs.qs.build.write_text(text)
    assert runs.collected()
    assert record.is_file()
