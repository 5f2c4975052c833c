"""Small files read (capture) and written (restore) by helper processes
(gaia_core.checkpoints.smallfiles): the same chunks, roots, files and refusals as on
threads, and no process left behind."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from counter_project import run
from test_run import alive, running, stopped, wait_until
from tree_store import Store, manifest_of, write

from gaia_core.anchors import Target
from gaia_core.checkpoints import packs as packs_module
from gaia_core.checkpoints import smallfiles, tree, treecapture, treewrite
from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.packs import ChunkCorrupt, compress, open_frame
from gaia_core.errors import CheckpointError


@pytest.fixture
def helpers_used(monkeypatch) -> list[smallfiles.HelperProcesses]:
    """Helpers start after a handful of files; each capture's helpers are kept for the test."""
    made: list[smallfiles.HelperProcesses] = []

    class Recorded(smallfiles.HelperProcesses):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
            self.links = self.pieces = 0  # what was handed to running helpers
            self._counting = threading.Lock()

        def start(self):  # the helpers read from the next batch on, however slow their start
            super().start()
            self._starting.join()

        def write(self, files, links=()):
            self._tally(links=len(links))
            return super().write(files, links)

        def write_piece(self, piece):
            self._tally(pieces=1)
            return super().write_piece(piece)

        def _tally(self, links=0, pieces=0):
            with self._counting:
                if self.running:
                    self.links, self.pieces = self.links + links, self.pieces + pieces

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


def every(digests: list[bytes]) -> list[int]:
    """What a helper that reads files is to compress: all of them."""
    return list(range(len(digests)))


@contextlib.contextmanager
def running_helper(needles: list[bytes] | None = None, depth: int = 1, *,
                   fork: bool = False) -> Iterator[smallfiles.HelperProcesses]:
    """One helper process, started and ready; stopped after."""
    helpers = smallfiles.HelperProcesses(needles or [], 1, depth, fork=fork)
    try:
        helpers.start()
        deadline = time.monotonic() + 30
        while not helpers.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert helpers.running
        yield helpers
    finally:
        helpers.close()


@pytest.mark.parametrize("level", [1, 19])
def test_threads_and_helpers_store_frames_at_the_capture_level(tmp_path, helpers_used, level):
    """Every frame a capture stores is zstd at its level, whoever compressed it: the threads
    (the first files), a helper (the files after), the entry list's parts."""
    out = tmp_path / "out"
    for d in range(3):
        for f in range(12):
            write(out / f"d{d}" / f"f{f}.txt", " ".join(f"w{(d * 7 + f * 13 + i * i) % 97}" for i in range(2000)))
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)], level=level)
    assert helpers_used[0].frames > 0  # a helper compressed some of them
    plain = {chunk_id(p.read_bytes()): p.read_bytes() for p in out.rglob("*.txt")}
    for part in info.parts:
        chunk = bytes.fromhex(part["id"])
        plain[chunk] = store.packs.read(chunk, store.packs.locate([chunk])[chunk], part["size"])
    located = store.packs.locate(list(plain))
    assert len(located) == len(plain)
    assert all(store.packs.frame(c, located[c]) == compress(data, level) for c, data in plain.items())
    assert all(compress(data, level) != compress(data, 3) for data in plain.values())


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


def large_file(root: Path) -> Path:
    """A file of several chunks (FastCDC cuts files over 1 MiB), written in pieces once
    ``treewrite._GROUP_BYTES`` is smaller than its chunks."""
    return write(root / "lib" / "big.bin", random.Random(17).randbytes(3 << 20))


def described(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_symlink(), oct(p.lstat().st_mode), p.lstat().st_mtime_ns,
                                       p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def test_helpers_restore_what_threads_restore(tmp_path, helpers_used, monkeypatch):
    """Files, links and the pieces of a large file: the helpers write them as threads do."""
    monkeypatch.setattr(treewrite, "_GROUP_BYTES", 256 << 10)
    out = tmp_path / "out"
    small_tree(out)
    (out / "d0" / "f1.txt").chmod(0o640)
    (out / "d1" / "f2.txt").chmod(0o4755)  # set-uid: stripped, and reported
    (out / "d2" / "link").symlink_to("f3.txt")
    (out / "d3" / "dangling").symlink_to("/nowhere/at/all")
    large_file(out).chmod(0o4750)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    helped = store.restore(manifest, tmp_path / "helped", files=info.files)
    restorer = helpers_used[-1]
    assert restorer.batches > 0 and all(h.process.poll() is not None for h in restorer._all)
    assert restorer.links == 2 and restorer.pieces >= 2
    monkeypatch.setattr(treewrite, "_HELPERS", 0)
    alone = store.restore(manifest, tmp_path / "alone")
    assert described(tmp_path / "helped") == described(tmp_path / "alone")
    assert (tmp_path / "helped" / "out" / "d1" / "f2.txt").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "helped" / "out" / "lib" / "big.bin").stat().st_mode & 0o7777 == 0o750
    assert sorted(helped.stripped_setid) == sorted(alone.stripped_setid) == ["out/d1/f2.txt", "out/lib/big.bin"]
    assert (helped.written, helped.files_written) == (alone.written, alone.files_written)


def test_a_restore_of_many_files_starts_its_helpers_at_once_one_of_few_never(tmp_path, helpers_used, monkeypatch):
    """The manifest's file count starts them before the first file (they no longer wait
    for PROCESS_AFTER files handed out, half-way through a tree); a small tree's restore
    starts no process at all."""
    monkeypatch.setattr(treewrite, "PROCESS_AFTER", 10_000)  # more than the tree: never reached by counting
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    store.restore(manifest, tmp_path / "many", files=10_000)  # what a manifest of 10,000 files says
    assert helpers_used[-1].batches > 0
    store.restore(manifest, tmp_path / "few", files=info.files)
    assert helpers_used[-1].batches == 0 and not helpers_used[-1].running and helpers_used[-1]._starting is None
    assert described(tmp_path / "many") == described(tmp_path / "few")


def damage(store: Store, chunk: bytes) -> str:
    """Flip a bit in the middle of ``chunk``'s frame in its pack; the pack's id."""
    location = store.packs.locate([chunk])[chunk]
    path = store.packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[location.offset + location.clen // 2] ^= 0x20
    path.write_bytes(raw)
    return location.pack


def test_a_full_restore_passes_the_manifest_s_file_count(gaia_cli, pm, project, restore_helpers):
    """The checkpoint engine's full restore starts its helpers at once for a manifest that
    lists PROCESS_AFTER files (so started, they hold two requests each)."""
    made = restore_helpers
    project.write()
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    assert "restored" in run(gaia_cli, pm, "run", project.build).output
    assert [h._depth for h in made] == [treewrite._DEPTH] and made[0].batches > 0
    assert (project.out / "value.txt").read_text() == "a" and (project.out / "link").is_symlink()


def test_a_damaged_chunk_of_a_large_file_a_helper_writes_fails_the_restore_and_is_forgotten(
        tmp_path, helpers_used, monkeypatch):
    monkeypatch.setattr(treewrite, "_GROUP_BYTES", 256 << 10)
    out = tmp_path / "out"
    small_tree(out)
    large_file(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    entry = next(e for e in tree.entries(store.packs, manifest) if e.path == "out/lib/big.bin")
    chunk = entry.chunk_list()[-1][0]
    pack = damage(store, chunk)
    with pytest.raises(ChunkCorrupt, match=f"local pack {pack[:16]}: chunk {chunk.hex()[:16]}"):
        store.restore(manifest, tmp_path / "back", files=info.files)
    assert helpers_used[-1].pieces > 0
    assert chunk not in store.packs.locate([chunk])


def test_a_cancelled_restore_stops_its_helpers(tmp_path, helpers_used):
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    written = []

    def cancel(n: int) -> None:
        written.append(n)
        if helpers_used[-1].batches and len(written) > 10:
            raise KeyboardInterrupt  # what a SIGINT raises in the main thread

    with pytest.raises(KeyboardInterrupt):
        store.restore(manifest_of(info, ["out"]), tmp_path / "back", files=info.files, progress=cancel)
    assert helpers_used[-1].batches > 0
    assert all(h.process.poll() is not None for h in helpers_used[-1]._all)


def test_a_damaged_chunk_a_helper_reads_fails_the_restore_and_is_forgotten(tmp_path, helpers_used):
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    entry = next(e for e in tree.entries(store.packs, manifest) if e.path == "out/d5/f39.txt")
    chunk = entry.digest
    pack = damage(store, chunk)
    with pytest.raises(ChunkCorrupt, match=f"local pack {pack[:16]}: chunk {chunk.hex()[:16]}"):
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


def in_threads(calls: list) -> list:
    """Each of ``calls`` run at once on a thread of its own: what each returned or raised
    (a call still waiting after 30 s fails the test, it does not hang it)."""
    results: list = [None] * len(calls)
    go = threading.Barrier(len(calls))

    def run(number: int) -> None:
        go.wait()
        try:
            results[number] = calls[number]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[number] = exc

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_a_helper_holding_several_requests_answers_each_caller_its_own(tmp_path):
    """Requests wait in its pipe while it works (it reads the next one at once); each
    caller gets the answer to its own request, an error included, and no one else's."""
    contents = [bytes([65 + n]) * (1000 * n + 1) for n in range(12)]  # answers: their sizes
    frames = [compress(data) for data in contents]
    pack = write(tmp_path / "pack", b"".join(frames))
    offsets = [sum(len(f) for f in frames[:n]) for n in range(12)]

    def new_file(n: int, where: Path):
        chunk = (chunk_id(contents[n]), os.fspath(pack), offsets[n], len(frames[n]), len(contents[n]))
        return (os.fsencode(where), 0o644, True, n, [chunk])

    taken = write(tmp_path / "taken", "here first\n")
    calls = [(lambda n=n: helpers.write([new_file(n, tmp_path / f"new-{n}")])) for n in range(12)]
    calls[5] = lambda: helpers.write([new_file(5, taken)])
    with running_helper(depth=3) as helpers:
        results = in_threads(calls)
        assert helpers.write([new_file(7, tmp_path / "after")]) == 7001  # still in step
    assert isinstance(results[5], FileExistsError) and results[5].filename == os.fsencode(taken)
    assert [r for n, r in enumerate(results) if n != 5] == [1000 * n + 1 for n in range(12) if n != 5]
    assert all((tmp_path / f"new-{n}").read_bytes() == contents[n] for n in range(12) if n != 5)


def test_a_request_that_cannot_be_sent_fails_alone(tmp_path):
    with running_helper(depth=2) as helpers:
        with pytest.raises(TypeError):
            helpers.write([(os.fsencode(tmp_path / "f"), 0o644, True, 0, [threading.Lock()])])  # not picklable
        assert in_threads([lambda: helpers.write([(os.fsencode(tmp_path / "g"), 0o644, True, 0, [])])]) == [0]
    assert not (tmp_path / "f").exists() and (tmp_path / "g").is_file()


def test_a_helper_that_died_fails_every_request_on_its_way(tmp_path):
    with running_helper(depth=4) as helpers:
        helpers._all[0].process.kill()
        helpers._all[0].process.wait()
        started = time.monotonic()
        results = in_threads([lambda: helpers.write([], [])] * 6)
        assert time.monotonic() - started < 10
    assert all(isinstance(r, CheckpointError) and "ended unexpectedly" in str(r) for r in results)


@pytest.mark.parametrize(("damage", "message"), [
    (None, None),
    ("declared", "declares 9 bytes, the manifest 8"),
    ("past the end", "lies past the end of the pack"),
    ("not zstd", "is not a zstd frame"),
    ("corrupt", "does not decompress|does not match its id"),
    ("other id", "does not match its id"),
])
def test_a_helper_takes_a_chunk_only_as_the_store_reads_it(tmp_path, monkeypatch, damage, message):
    """The helpers read chunks without a call a check; each check that fails is told as the
    store's own reading tells it, naming the chunk. A frame that declares another size is
    never decompressed (it could declare gigabytes)."""
    if damage == "declared":
        def refused():
            raise AssertionError("a frame declaring another size was decompressed")

        monkeypatch.setattr(smallfiles, "decompressor", refused)
        monkeypatch.setattr(packs_module, "decompressor", refused)
    data = b"12345678"
    frame, chunk, plen = compress(data), chunk_id(data), len(data)
    if damage == "declared":
        frame, data = compress(data + b"9"), data + b"9"
    elif damage == "not zstd":
        frame = b"\0" * len(frame)
    elif damage == "corrupt":
        frame = frame[:-4] + bytes(b ^ 0xFF for b in frame[-4:])
    elif damage == "other id":
        chunk = chunk_id(b"another")
    pack = tmp_path / "pack"
    pack.write_bytes(b"head" + frame)
    clen = len(frame) + (1 if damage == "past the end" else 0)
    packs: dict = {}
    try:
        for _ in range(2):  # the pack's first chunk, and one once the pack is open
            if message is None:
                assert smallfiles._chunk(packs, chunk, str(pack), 4, clen, plen) == data
                continue
            with pytest.raises(smallfiles.ChunkCorruptIn, match=message) as caught:
                smallfiles._chunk(packs, chunk, str(pack), 4, clen, plen)
            assert caught.value.chunk == chunk and "local pack pack" in str(caught.value)
            packs.setdefault(str(pack), os.open(pack, os.O_RDONLY))
    finally:
        for fd in packs.values():
            os.close(fd)


def test_a_helper_makes_links_never_over_what_is_there(tmp_path):
    with running_helper() as helpers:
        assert helpers.write([], [(os.fsencode(tmp_path / "link"), b"../elsewhere", 1_000_000_456)]) == 0
        with pytest.raises(FileExistsError):
            helpers.write([], [(os.fsencode(tmp_path / "link"), b"other", 0)])
    assert os.readlink(tmp_path / "link") == "../elsewhere"
    assert (tmp_path / "link").lstat().st_mtime_ns == 1_000_000_456


def test_a_helper_writes_a_piece_only_into_the_file_the_restore_created(tmp_path):
    """By its name, never through a link, and only while it is the same inode."""
    data = b"piece of a large file\n"
    chunk, frame = chunk_id(data), compress(data)
    pack = write(tmp_path / "pack", b"P" * 8 + frame)
    chunks = [(chunk, os.fspath(pack), 8, len(frame), len(data))]
    created = write(tmp_path / "large", b"")
    st = created.stat()
    where = (st.st_dev, st.st_ino)
    with running_helper() as helpers:
        assert helpers.write_piece((os.fsencode(created), where, 4, chunks)) == len(data)
        assert created.read_bytes() == b"\0" * 4 + data
        link = tmp_path / "link"
        link.symlink_to(created)
        with pytest.raises(OSError) as caught:
            helpers.write_piece((os.fsencode(link), where, 0, chunks))
        assert caught.value.errno == errno.ELOOP
        os.replace(write(tmp_path / "other", b""), created)  # another file in its place
        with pytest.raises(CheckpointError, match="large': it was replaced while written"):
            helpers.write_piece((os.fsencode(created), where, 0, chunks))
        assert created.read_bytes() == b""
        bad = [(chunk_id(b"something else"), os.fspath(pack), 8, len(frame), len(data))]
        with pytest.raises(ChunkCorrupt, match="does not match its id"):
            helpers.write_piece((os.fsencode(created), (st.st_dev, created.stat().st_ino), 0, bad))
    assert created.read_bytes() == b""


def test_a_helper_reads_compresses_and_scans(tmp_path):
    text = write(tmp_path / "a", f"root at {tmp_path}/x\n")
    blob = write(tmp_path / "b", b"\0binary")
    with running_helper([os.fsencode(tmp_path)]) as helpers:
        files = [(os.fsencode(p), os.fsencode(p.name), p.stat().st_size, p.stat().st_ino) for p in (text, blob)]
        (a_id, a_frame, a_found, a_binary), (b_id, b_frame, b_found, b_binary) = helpers.read(files, every)
    assert (a_id, a_found, a_binary) == (chunk_id(text.read_bytes()), frozenset({0}), False)
    assert (b_id, b_found, b_binary) == (chunk_id(blob.read_bytes()), frozenset(), True)
    assert open_frame(a_frame, a_id, text.stat().st_size, "test") == text.read_bytes()


def test_a_helper_s_answers_pass_whatever_their_size(tmp_path):
    """Messages larger than a pipe holds (64 KiB) come through in pieces, whole."""
    blob = write(tmp_path / "blob", random.Random(3).randbytes(1 << 20))  # does not compress
    tiny = write(tmp_path / "tiny", b"")
    with running_helper() as helpers:
        files = [(os.fsencode(p), os.fsencode(p.name), p.stat().st_size, p.stat().st_ino) for p in (blob, tiny, blob)]
        read = helpers.read(files, every)
    assert [r[0] for r in read] == [chunk_id(blob.read_bytes()), chunk_id(b""), chunk_id(blob.read_bytes())]
    assert open_frame(read[2][1], read[2][0], 1 << 20, "test") == blob.read_bytes()


def test_a_helper_compresses_only_the_files_its_caller_picks(tmp_path):
    """It reads and hashes a batch, then compresses what the caller picks given the digests:
    the others come back without a frame, and it serves the next batch as before."""
    a, b, c = (write(tmp_path / name, text) for name, text in (("a", "same\n"), ("b", "other\n"), ("c", "same\n")))
    files = [(os.fsencode(p), os.fsencode(p.name), p.stat().st_size, p.stat().st_ino) for p in (a, b, c)]
    asked: list[list[bytes]] = []

    def second(digests: list[bytes]) -> list[int]:
        asked.append(digests)
        return [1]

    with running_helper() as helpers:
        read = helpers.read(files, second)
        assert helpers.frames == 1
        assert helpers.read(files, lambda digests: [])[1][1] is None  # nothing asked: no frame made
        assert [frame is None for _, frame, _, _ in helpers.read(files, every)] == [False] * 3
        assert helpers.frames == 4
    assert asked == [[chunk_id(b"same\n"), chunk_id(b"other\n"), chunk_id(b"same\n")]]
    assert [r[0] for r in read] == asked[0] and read[0][1] is None and read[2][1] is None
    assert open_frame(read[1][1], read[1][0], 6, "test") == b"other\n"


def test_a_helper_that_reads_takes_one_request_at_a_time():
    helpers = smallfiles.HelperProcesses([], 1, 2)
    with pytest.raises(ValueError, match="one request at a time"):
        helpers.read([], every)


def test_a_capture_compresses_no_content_twice_in_a_batch_nor_what_the_store_has(tmp_path, helpers_used,
                                                                                  monkeypatch):
    """A content several files of a batch hold, or that the store holds already, is not
    compressed again, by threads or helpers: a capture of the same tree into the same store
    compresses no file (a clean rebuild's capture, with no receipt to go by)."""
    out = tmp_path / "out"
    for f in range(40):
        write(out / "d" / f"f{f:02}.txt", "the same\n" * 50)  # ten batches of four files
    on_threads: list[bytes] = []
    monkeypatch.setattr(treecapture, "compress",
                        lambda data, level: on_threads.append(bytes(data)) or compress(data, level))

    def files(compressed: list[bytes]) -> int:
        return sum(data == b"the same\n" * 50 for data in compressed)  # not the entry list's part

    store = Store(tmp_path / "store")
    first = store.capture([Target("out", out)])
    assert helpers_used[0].batches > 0
    assert files(on_threads) + helpers_used[0].frames <= 10  # at most one a batch (40 before)
    on_threads.clear()
    again = store.capture([Target("out", out)])
    assert helpers_used[1].batches > 0 and helpers_used[1].frames == 0 and files(on_threads) == 0
    assert again.parts == first.parts and again.new_bytes == 0


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
            helpers.read([(os.fsencode(path), b"f", st.st_size, st.st_ino)], every)
        ok = write(tmp_path / "g", "fine\n")  # the helper goes on serving
        assert helpers.read([(os.fsencode(ok), b"g", ok.stat().st_size, ok.stat().st_ino)], every)[0][0] == \
            chunk_id(b"fine\n")


@pytest.mark.parametrize("fork", [False, True])
def test_a_helper_that_died_is_an_error_not_a_hang(tmp_path, fork):
    path = write(tmp_path / "f", "content\n")
    with running_helper(fork=fork) as helpers:
        helpers._all[0].process.kill()
        helpers._all[0].process.wait()
        started = time.monotonic()
        ended = r"helper process ended unexpectedly \(exit status -9\)"
        with pytest.raises(CheckpointError, match=ended):
            helpers.read([(os.fsencode(path), b"f", path.stat().st_size, path.stat().st_ino)], every)
        assert time.monotonic() - started < 5


def test_a_capture_goes_on_on_threads_when_no_helper_starts(tmp_path, helpers_used, monkeypatch):
    def refused(to_child, from_child):
        raise BlockingIOError(errno.EAGAIN, "fork: Resource temporarily unavailable")

    monkeypatch.setattr(smallfiles.sys, "executable", str(tmp_path / "no-python"))  # a capture's
    monkeypatch.setattr(smallfiles, "_fork", refused)  # a restore's
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    assert helpers_used[0].batches == 0 and not helpers_used[0].running
    store.restore(manifest_of(info, ["out"]), tmp_path / "back", files=info.files)  # started at once, in vain
    assert helpers_used[1].batches == 0 and not helpers_used[1].running
    assert (tmp_path / "back" / "out" / "same-b").read_text() == "twin\n"


def test_a_restore_that_starts_its_helpers_at_once_waits_for_them(tmp_path, monkeypatch):
    """Its workers do not write the first files themselves while the helpers start (slowly
    here): every file is written by a helper."""
    serve = smallfiles._serve

    def slow(requests, replies):  # in the helper, forked with the patch
        time.sleep(0.5)
        serve(requests, replies)

    monkeypatch.setattr(smallfiles, "_serve", slow)
    by_helpers = []

    class Counted(smallfiles.HelperProcesses):
        def write(self, files, links=()):
            written = super().write(files, links)
            by_helpers.append(written)
            return written

    monkeypatch.setattr(treewrite, "PROCESS_AFTER", 5)
    monkeypatch.setattr(treewrite, "_GROUP_FILES", 4)
    monkeypatch.setattr(treewrite, "HelperProcesses", Counted)
    out = tmp_path / "out"
    small_tree(out)
    store = Store(tmp_path / "store")
    info = store.capture([Target("out", out)])
    restored = store.restore(manifest_of(info, ["out"]), tmp_path / "back", files=info.files)
    assert None not in by_helpers and sum(by_helpers) == restored.written == info.size


def test_a_helper_imports_neither_pluggy_nor_fastcdc():
    """A capture's helpers are new interpreters: what they import is most of their start,
    so the modules they run leave out what they never use."""
    import subprocess
    import sys

    probe = ("import sys, gaia_core.checkpoints.smallfiles; "
             "print(sorted(m for m in ('pluggy', 'pyfastcdc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_restore_s_helper_is_this_process_forked_holding_only_its_pipes(tmp_path):
    """No interpreter of its own to start (a twentieth of a CPU second each, which a
    restore feels); of what this process has open it keeps only its two pipes, in a
    session of its own."""
    held = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT)
    try:
        with running_helper(fork=True) as helpers:
            pid = helpers._all[0].process.pid
            assert Path(f"/proc/{pid}/cmdline").read_bytes() == Path("/proc/self/cmdline").read_bytes()
            open_fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
            assert len(open_fds) == 5 and open_fds[:3] == [0, 1, 2] and held not in open_fds[3:]
            assert all(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") for fd in open_fds[3:])
            assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
            assert os.getsid(pid) == pid != os.getsid(0)
    finally:
        os.close(held)


@pytest.mark.parametrize("fork", [True, False])
def test_a_helper_ends_with_its_pipe_whatever_the_other_helpers_hold(fork):
    """The second helper, started after the first, holds none of the first one's pipes: the
    first ends as soon as its own pipe is closed."""
    helpers = smallfiles.HelperProcesses([], 2, fork=fork)
    try:
        helpers.start()
        deadline = time.monotonic() + 30
        while len(helpers._all) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        first, second = helpers._all
        first.close()
        assert first.process.returncode == 0 and second.process.poll() is None
    finally:
        helpers.close()


def test_helpers_are_all_told_to_end_before_any_is_waited_for(monkeypatch):
    """Each ends within a ms or two of its pipe's end (a forked one frees its copy of the
    caller's memory): told all at once, they end side by side, not one after the other."""
    helpers = smallfiles.HelperProcesses([], 2, fork=True)
    helpers.start()
    deadline = time.monotonic() + 30
    while len(helpers._all) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(helpers._all) == 2
    seen = []
    reap = smallfiles._Helper.reap

    def reaped(helper):
        seen.append([other._out.fd for other in helpers._all])
        reap(helper)

    monkeypatch.setattr(smallfiles._Helper, "reap", reaped)
    helpers.close()
    assert seen == [[-1, -1], [-1, -1]]
    assert all(h.process.returncode == 0 for h in helpers._all)


@pytest.mark.parametrize("fork", [False, True])
def test_helpers_closed_before_they_are_needed_end_quietly(capfd, fork):
    """A run that ends or fails while its helpers start closes their pipes before they got
    a word: they end without a traceback on the terminal they share."""
    for _ in range(3):
        helpers = smallfiles.HelperProcesses([], 2, fork=fork)
        helpers.start()
        helpers.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed" not in err


def test_a_helper_imports_nothing_from_the_working_directory(tmp_path, monkeypatch):
    """Captures run in build trees: a module there must not stand in for the helper's own."""
    (tmp_path / "zstandard.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "f", "content\n")
    with running_helper() as helpers:
        read = helpers.read([(b"f", b"f", path.stat().st_size, path.stat().st_ino)], every)
        assert read[0][0] == chunk_id(b"content\n")
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


_SLOW_RESTORE_CLI = """
import sys, time
sys.path.insert(0, {tests!r})
from checkpoint_plugin import CounterPlugin
from gaia_core.checkpoints import smallfiles, treewrite
from gaia_core.cli import main
from gaia_core.plugins import get_plugin_manager

treewrite.PROCESS_AFTER, treewrite._GROUP_FILES = 2, 1  # helpers at once, a request a file
write_files, fork = smallfiles.write_files, smallfiles._fork

def slow(files, links, packs):  # in the forked helpers: a slow disk
    open({busy!r}, "a").close()
    time.sleep(0.3)
    return write_files(files, links, packs)

def noted(to_child, from_child):
    child = fork(to_child, from_child)
    with open({pids!r}, "a") as out:
        out.write(f"{{child.pid}}\\n")
    return child

smallfiles.write_files, smallfiles._fork = slow, noted
pm = get_plugin_manager(load_entrypoints=False)
pm.register(CounterPlugin(), name="counter")
main(sys.argv[1:], pm)
"""


def test_sigterm_during_a_full_restore_ends_the_run_and_its_forked_helpers(gaia_cli, pm, project, tmp_path):
    """A full restore whose helpers are busy: SIGTERM ends the run within 5 s, its helpers
    soon after (they hold no pipe of another and end at their pipe's end), and the next
    run restores the tree whole."""
    import sys

    from gaia_core.errors import ExitCode

    project.write(files=300)
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    busy, pids = tmp_path / "busy", tmp_path / "pids"
    script = tmp_path / "gaia_slow.py"
    script.write_text(_SLOW_RESTORE_CLI.format(tests=str(Path(__file__).parent), busy=str(busy), pids=str(pids)))
    with running([sys.executable, str(script), "run", str(project.build)], cwd=project.root) as proc:
        deadline = time.monotonic() + 60
        while not busy.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert busy.exists(), proc.communicate(timeout=30)
        out, err, elapsed = stopped(proc)
    assert proc.returncode == ExitCode.TERMINATED and elapsed < 5 + 1.5, (elapsed, out, err)
    helpers = [int(line) for line in pids.read_text().split()]
    assert len(helpers) == treewrite._HELPERS
    assert all(wait_until(lambda pid=pid: not alive(pid), 5) for pid in helpers)
    assert "restored" in run(gaia_cli, pm, "run", project.build).output
    assert len(list((project.out / "many").iterdir())) == 300

