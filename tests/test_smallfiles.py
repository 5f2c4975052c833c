"""Small files read (capture) and written (restore) by helper processes
(gaia_core.checkpoints.smallfiles): the same chunks, roots, files and refusals as on
threads, and no process left behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tree_store import Store, manifest_of, write

from gaia_core.anchors import Target
from gaia_core.checkpoints import smallfiles, tree, treecapture, treewrite
from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.packs import ChunkCorrupt, open_frame
from gaia_core.errors import CheckpointError


@pytest.fixture
def helpers_used(monkeypatch) -> list[smallfiles.HelperProcesses]:
    """Helpers start after a handful of files; each capture's helpers are kept for the test."""
    made: list[smallfiles.HelperProcesses] = []

    class Recorded(smallfiles.HelperProcesses):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def start(self):  # the helpers read from the next batch on, however slow their start
            super().start()
            self._starting.join()

    monkeypatch.setattr(treecapture, "PROCESS_AFTER", 5)
    monkeypatch.setattr(treecapture, "BATCH_FILES", 4)
    monkeypatch.setattr(treecapture, "HelperProcesses", Recorded)
    monkeypatch.setattr(treewrite, "PROCESS_AFTER", 5)
    monkeypatch.setattr(treewrite, "_GROUP_FILES", 4)
    monkeypatch.setattr(treewrite, "HelperProcesses", Recorded)
    return made


def small_tree(root: Path) -> None:
    for d in range(6):
        for f in range(40):
            write(root / f"d{d}" / f"f{f}.txt", f"file {d}/{f}\n" * (f % 7))
    write(root / "config.status", f"prefix='{root}/host'\n")
    write(root / "host" / "lib" / "libfoo.so", b"\x7fELF\0" + f"{root}/host/lib".encode() + b"\0")
    write(root / "same-a", "twin\n")
    write(root / "same-b", "twin\n")


@contextlib.contextmanager
def running_helper(needles: list[bytes] | None = None) -> Iterator[smallfiles.HelperProcesses]:
    """One helper process, started and ready; stopped after."""
    helpers = smallfiles.HelperProcesses(needles or [], 1)
    try:
        helpers.start()
        deadline = time.monotonic() + 30
        while not helpers.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert helpers.running
        yield helpers
    finally:
        helpers.close()


def test_helpers_capture_what_threads_capture(tmp_path, helpers_used, monkeypatch):
    out = tmp_path / "out"
    small_tree(out)
    targets = [Target("out", out)]
    helped = Store(tmp_path / "helped").capture(targets, roots={"out": out})
    assert len(helpers_used) == 1 and helpers_used[0].batches > 0
    assert all(h.process.poll() is not None for h in helpers_used[0]._all)  # none left behind

    monkeypatch.setattr(treecapture, "_HELPERS", 0)
    alone = Store(tmp_path / "alone").capture(targets, roots={"out": out})
    assert len(helpers_used) == 1
    assert helped.parts == alone.parts  # the same entries, digests and chunks
    assert helped.embedded == alone.embedded
    assert [e["path"] for e in helped.embedded] == ["out/config.status", "out/host/lib/libfoo.so"]
    assert (helped.chunks, helped.packed) == (alone.chunks, alone.packed)


def described(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_symlink(), oct(p.lstat().st_mode), p.lstat().st_mtime_ns,
                                       p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def test_helpers_restore_what_threads_restore(tmp_path, helpers_used, monkeypatch):
    out = tmp_path / "out"
    small_tree(out)
    (out / "d0" / "f1.txt").chmod(0o640)
    (out / "d1" / "f2.txt").chmod(0o4755)  # set-uid: stripped, and reported
    (out / "d2" / "link").symlink_to("f3.txt")
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    helped = store.restore(manifest, tmp_path / "helped")
    restorer = helpers_used[-1]
    assert restorer.batches > 0 and all(h.process.poll() is not None for h in restorer._all)
    monkeypatch.setattr(treewrite, "_HELPERS", 0)
    alone = store.restore(manifest, tmp_path / "alone")
    assert described(tmp_path / "helped") == described(tmp_path / "alone")
    assert (tmp_path / "helped" / "out" / "d1" / "f2.txt").stat().st_mode & 0o7777 == 0o755
    assert helped.stripped_setid == alone.stripped_setid == ["out/d1/f2.txt"]
    assert (helped.written, helped.files_written) == (alone.written, alone.files_written)


def test_a_damaged_chunk_a_helper_reads_fails_the_restore_and_is_forgotten(tmp_path, helpers_used):
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    entry = next(e for e in tree.entries(store.packs, manifest) if e.path == "out/d5/f39.txt")
    chunk = entry.digest
    location = store.packs.locate([chunk])[chunk]
    path = store.packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[location.offset + location.clen // 2] ^= 0x20
    path.write_bytes(raw)
    with pytest.raises(ChunkCorrupt, match=f"local pack {location.pack[:16]}: chunk {chunk.hex()[:16]}"):
        store.restore(manifest, tmp_path / "back")
    assert helpers_used[-1].batches > 0
    assert chunk not in store.packs.locate([chunk])  # fetched or stored again next time


def test_a_helper_s_failed_write_is_the_os_error(tmp_path):
    taken = write(tmp_path / "taken", "here first\n")
    with running_helper() as helpers:
        with pytest.raises(FileExistsError) as caught:
            helpers.write([(os.fsencode(taken), 0o644, True, 0, [])])
        assert caught.value.filename == os.fsencode(taken)
        assert helpers.write([(os.fsencode(tmp_path / "new"), 0o600, True, 1_000_000_123, [])]) == 0
    assert (tmp_path / "new").stat().st_mtime_ns == 1_000_000_123
    assert taken.read_text() == "here first\n"


def test_a_helper_reads_compresses_and_scans(tmp_path):
    text = write(tmp_path / "a", f"root at {tmp_path}/x\n")
    blob = write(tmp_path / "b", b"\0binary")
    with running_helper([os.fsencode(tmp_path)]) as helpers:
        files = [(os.fsencode(p), os.fsencode(p.name), p.stat().st_size, p.stat().st_ino) for p in (text, blob)]
        (a_id, a_frame, a_found, a_binary), (b_id, b_frame, b_found, b_binary) = helpers.read(files)
    assert (a_id, a_found, a_binary) == (chunk_id(text.read_bytes()), frozenset({0}), False)
    assert (b_id, b_found, b_binary) == (chunk_id(blob.read_bytes()), frozenset(), True)
    assert open_frame(a_frame, a_id, text.stat().st_size, "test") == text.read_bytes()


@pytest.mark.parametrize("change, message", [
    ("replace", "was replaced while captured"),
    ("grow", "changed while it was read"),
    ("remove", "cannot read 'f' for the checkpoint"),
])
def test_a_helper_refuses_what_changed_since_the_walk(tmp_path, change, message):
    path = write(tmp_path / "f", "content\n")
    st = path.stat()
    if change == "replace":  # another file (inode) in its place
        os.replace(write(tmp_path / "other", "content\n"), path)
    elif change == "grow":
        path.write_text("content and more\n")
    else:
        path.unlink()
    with running_helper() as helpers:
        with pytest.raises(CheckpointError, match=message):
            helpers.read([(os.fsencode(path), b"f", st.st_size, st.st_ino)])
        ok = write(tmp_path / "g", "fine\n")  # the helper goes on serving
        assert helpers.read([(os.fsencode(ok), b"g", ok.stat().st_size, ok.stat().st_ino)])[0][0] == \
            chunk_id(b"fine\n")


def test_a_helper_that_died_is_an_error_not_a_hang(tmp_path):
    path = write(tmp_path / "f", "content\n")
    with running_helper() as helpers:
        helpers._all[0].process.kill()
        helpers._all[0].process.wait()
        started = time.monotonic()
        ended = r"helper process \(python -m gaia_core.checkpoints.smallfiles\) ended unexpectedly"
        with pytest.raises(CheckpointError, match=ended):
            helpers.read([(os.fsencode(path), b"f", path.stat().st_size, path.stat().st_ino)])
        assert time.monotonic() - started < 5


def test_a_capture_goes_on_on_threads_when_no_helper_starts(tmp_path, helpers_used, monkeypatch):
    monkeypatch.setattr(smallfiles.sys, "executable", str(tmp_path / "no-python"))
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    assert helpers_used[0].batches == 0 and not helpers_used[0].running
    store.restore(manifest_of(info, ["out"]), tmp_path / "back")
    assert (tmp_path / "back" / "out" / "same-b").read_text() == "twin\n"


def test_a_helper_imports_nothing_from_the_working_directory(tmp_path, monkeypatch):
    """Captures run in build trees: a module there must not stand in for the helper's own."""
    (tmp_path / "zstandard.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "f", "content\n")
    with running_helper() as helpers:
        assert helpers.read([(b"f", b"f", path.stat().st_size, path.stat().st_ino)])[0][0] == chunk_id(b"content\n")
    assert not (tmp_path / "imported").exists()


def test_a_cancelled_capture_stops_its_helpers(tmp_path, helpers_used):
    out = tmp_path / "out"
    small_tree(out)
    read = []

    def cancel(n: int) -> None:
        read.append(n)
        if helpers_used and helpers_used[0].batches and len(read) > 100:
            raise KeyboardInterrupt  # what a SIGINT raises in the main thread

    with pytest.raises(KeyboardInterrupt):
        Store(tmp_path / "store").capture([Target("out", out)], progress=cancel)
    assert helpers_used[0].batches > 0
    assert all(h.process.poll() is not None for h in helpers_used[0]._all)
    assert not list((tmp_path / "store").rglob("*.pack*"))  # nothing half-written kept
