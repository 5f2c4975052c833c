"""Syncing the stage into a target root filesystem without ever touching the host."""

from __future__ import annotations

import os
from pathlib import Path

from gaia_buildroot.fsutil import copy_tree, resolve_in_root
from gaia_buildroot.overlay import SyncRecord, sync_overlay, undo_sync


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_resolve_in_root_reads_absolute_and_relative_links_inside_the_root(
    tmp_path: Path,
):
    root = tmp_path / "target"
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")
    os.symlink("../../..", root / "usr" / "lib" / "up")
    assert resolve_in_root(root, "lib/x") == root / "usr" / "lib" / "x"
    assert (
        resolve_in_root(root, "usr/lib/up/../etc") == root / "etc"
    )  # '..' stops at the root
    assert resolve_in_root(root, "lib", follow_last=False) == root / "lib"


def test_sync_writes_through_target_dir_links_inside_the_target_only(tmp_path: Path):
    stage = tmp_path / "stage"
    write(stage / "lib" / "firmware" / "blob.bin", "fw")
    write(stage / "etc" / "motd", "hi")
    os.symlink("motd", stage / "etc" / "issue")
    target = tmp_path / "target"
    (target / "usr" / "lib").mkdir(parents=True)
    os.symlink(
        "/usr/lib", target / "lib"
    )  # would be the host's /usr/lib if followed naively
    manifest = tmp_path / "sync.json"

    removed, copied = sync_overlay(stage, target, manifest)
    assert removed == []
    assert copied == ["etc/issue", "etc/motd", "lib/firmware/blob.bin"]
    assert (target / "usr" / "lib" / "firmware" / "blob.bin").read_text() == "fw"
    assert os.readlink(target / "lib") == "/usr/lib"
    assert os.readlink(target / "etc" / "issue") == "motd"
    assert SyncRecord.read(manifest).files == copied


def test_a_second_sync_removes_what_the_stage_no_longer_has(tmp_path: Path):
    stage = tmp_path / "stage"
    target = tmp_path / "target"
    target.mkdir()
    write(target / "etc" / "passwd", "from a package")
    manifest = tmp_path / "sync.json"
    write(stage / "etc" / "old", "old")
    write(stage / "etc" / "kept", "v1")
    sync_overlay(stage, target, manifest)

    (stage / "etc" / "old").unlink()
    write(stage / "etc" / "kept", "v2")
    removed, copied = sync_overlay(stage, target, manifest)
    assert removed == ["etc/old"]  # etc/kept is synced again, not removed
    assert copied == ["etc/kept"]
    assert not (target / "etc" / "old").exists()
    assert (target / "etc" / "kept").read_text() == "v2"
    assert (target / "etc" / "passwd").read_text() == "from a package"


def snapshot(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_text()
    return found


def test_undo_puts_the_target_back_as_it_was(tmp_path: Path):
    target = tmp_path / "target"
    write(target / "etc" / "hostname", "from buildroot")
    write(target / "usr" / "lib" / "os-release", "ID=buildroot")
    os.symlink("../usr/lib/os-release", target / "etc" / "os-release")
    (target / "var").mkdir()
    before = snapshot(target)
    stage = tmp_path / "stage"
    write(stage / "etc" / "hostname", "from the stage")
    write(stage / "etc" / "os-release", "ID=mine")  # a file over a link
    write(stage / "opt" / "app" / "bin" / "app", "app")  # new directories
    write(stage / "var" / "lib" / "x", "x")  # a new one in an existing directory
    record, backups = tmp_path / "sync.json", tmp_path / "backup"

    sync_overlay(stage, target, record, backups)
    assert (target / "etc" / "hostname").read_text() == "from the stage"
    assert not (target / "etc" / "os-release").is_symlink()
    assert (backups / "etc" / "hostname").read_text() == "from buildroot"
    assert SyncRecord.read(record).dirs == ["opt", "opt/app", "opt/app/bin", "var/lib"]

    removed = undo_sync(target, record, backups)
    assert removed == ["etc/hostname", "etc/os-release", "opt/app/bin/app", "var/lib/x"]
    assert snapshot(target) == before
    assert not record.exists() and not backups.exists()


def test_a_second_sync_restores_what_the_first_replaced(tmp_path: Path):
    target = tmp_path / "target"
    write(target / "usr" / "bin" / "htop", "the package's htop")
    stage = tmp_path / "stage"
    write(stage / "usr" / "bin" / "htop", "patched")
    record, backups = tmp_path / "sync.json", tmp_path / "backup"
    sync_overlay(stage, target, record, backups)
    (stage / "usr" / "bin" / "htop").unlink()
    write(stage / "etc" / "motd", "hi")
    removed, copied = sync_overlay(stage, target, record, backups)
    assert (removed, copied) == (["usr/bin/htop"], ["etc/motd"])
    assert (target / "usr" / "bin" / "htop").read_text() == "the package's htop"
    assert not (backups / "usr").exists()


def test_undo_leaves_a_directory_that_got_other_files_since(tmp_path: Path):
    target = tmp_path / "target"
    target.mkdir()
    stage = tmp_path / "stage"
    write(stage / "opt" / "tool", "t")
    record = tmp_path / "sync.json"
    sync_overlay(stage, target, record)
    write(target / "opt" / "from-a-package", "p")
    undo_sync(target, record)
    assert sorted(p.name for p in (target / "opt").iterdir()) == ["from-a-package"]


def test_manifest_entries_that_leave_the_target_are_ignored(tmp_path: Path):
    victim = write(tmp_path / "victim", "keep me")
    target = tmp_path / "target"
    target.mkdir()
    manifest = write(
        tmp_path / "sync.json",
        '{"entries": ["../victim", "/etc/x", "a/../../victim"], "dirs": ["..", "/tmp"]}',
    )
    sync_overlay(tmp_path / "no-stage", target, manifest)
    assert victim.read_text() == "keep me"
    assert tmp_path.is_dir() and Path("/tmp").is_dir()


def test_copy_tree_keeps_modes_mtimes_links_and_skips_fifos(tmp_path: Path):
    src = tmp_path / "src"
    script = write(src / "bin" / "tool", "#!/bin/sh\n")
    script.chmod(0o750)
    os.utime(script, (1_000_000_000, 1_000_000_000))
    os.symlink("/bin/tool", src / "abs-link")
    os.mkfifo(src / "pipe")
    skipped: list[Path] = []
    copied = copy_tree(src, tmp_path / "dst", on_skip=skipped.append)
    assert copied == ["abs-link", "bin/tool"]
    assert skipped == [src / "pipe"]
    st = (tmp_path / "dst" / "bin" / "tool").stat()
    assert (st.st_mode & 0o777, int(st.st_mtime)) == (0o750, 1_000_000_000)
    assert os.readlink(tmp_path / "dst" / "abs-link") == "/bin/tool"
