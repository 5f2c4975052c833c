"""Packs and the local pack store: their format, their bounds, and hostile packs and indexes
(each read fails, none gives wrong content, none costs unbounded memory)."""

from __future__ import annotations

import errno
import io
import os
import random
import threading
import tracemalloc
from pathlib import Path

import blake3
import pytest
import zstandard
from tree_store import Store, dir_entry, file_entry, manifest_of, store_object, write

from gaia_core.anchors import Target
from gaia_core.checkpoints import packstore, tree
from gaia_core.checkpoints.chunking import MAX_CHUNK, SMALL_FILE, chunk_id
from gaia_core.checkpoints.packs import (
    MAX_FRAME,
    MIN_PACK_LIMIT,
    PACK_MAGIC,
    ChunkCorrupt,
    IndexEntry,
    PackWriter,
    compress,
    decode_index,
    encode_index,
    open_frame,
)
from gaia_core.checkpoints.packstore import ChunkMissing, Location, PackStore
from gaia_core.checkpoints.treecapture import capture_tree
from gaia_core.errors import CheckpointError


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def captured(store, tmp_path):
    """A tree of a few files in one pack of the store: (info, manifest, source dir)."""
    out = tmp_path / "out"
    write(out / "a.bin", data_of(300_000, 1))
    write(out / "b.txt", "hello\n" * 1000)
    write(out / "c.bin", data_of(2 * SMALL_FILE, 2))
    info = store.capture([Target("out", out)])
    assert len(info.packs) == 1
    return info, manifest_of(info, ["out"]), out


def file_chunks(store: Store, manifest) -> list[tuple[bytes, int]]:
    return [c for e in tree.entries(store.packs, manifest) for c in e.chunk_list()]


def restore(store: Store, manifest, dest: Path):
    return store.restore(manifest, dest)


# -- the format ---------------------------------------------------------------------------


def test_a_pack_is_named_by_its_hash_and_indexed_by_chunk(tmp_path):
    chunks = [data_of(n, n) for n in (1, 1000, 70_000)] + [b"\0" * 100_000]
    writer = PackWriter(tmp_path)
    for data in chunks:
        writer.add(chunk_id(data), compress(data), len(data))
    pack = writer.finish()
    raw = pack.path.read_bytes()
    assert pack.path.name == f"{pack.pack_id}.pack" and blake3.blake3(raw).hexdigest() == pack.pack_id
    assert raw.startswith(PACK_MAGIC) and len(raw) == pack.size
    assert [p.name for p in tmp_path.iterdir()] == [pack.path.name]  # no temporary left
    entries = decode_index(pack.index, pack.size, "test")
    assert sorted(entries, key=lambda e: e.offset) == pack.entries
    for entry in entries:
        data = open_frame(raw[entry.offset:entry.offset + entry.clen], entry.chunk, entry.plen, "test")
        assert chunk_id(data) == entry.chunk and data in chunks
    assert encode_index(reversed(pack.entries)) == pack.index  # sorted by chunk: one index per pack


def test_packs_stay_within_their_limit(store, tmp_path):
    out = tmp_path / "out"
    for index in range(30):
        write(out / f"f{index:02}", data_of(900_000, index))
    info = store.capture([Target("out", out)], pack_limit=MIN_PACK_LIMIT)
    assert len(info.packs) >= 3
    assert all(p.size <= MIN_PACK_LIMIT for p in info.packs)
    assert all(size <= MIN_PACK_LIMIT for size in store.packs.local_packs().values())
    dest = tmp_path / "restored"
    restore(store, manifest_of(info, ["out"]), dest)
    assert (dest / "out" / "f29").read_bytes() == data_of(900_000, 29)


def test_full_packs_are_sealed_beside_the_capture_and_the_last_by_it(store, tmp_path, monkeypatch):
    """A pack's fsync waits for the disk: a full pack is sealed on a thread of its own while
    the capture fills the next; the last one by the capture itself. Every pack is sealed
    before capture returns, and in the order it was filled."""
    out = tmp_path / "out"
    for index in range(30):
        write(out / f"f{index:02}", data_of(900_000, index))
    sealed: list[tuple[str, str]] = []
    real_finish = PackWriter.finish

    def finish(self):
        pack = real_finish(self)
        sealed.append((pack.pack_id, threading.current_thread().name))
        return pack

    monkeypatch.setattr(PackWriter, "finish", finish)
    info = store.capture([Target("out", out)], pack_limit=MIN_PACK_LIMIT)
    by = dict(sealed)  # pack -> the thread that sealed it (in the order they ended)
    assert len(info.packs) >= 3 and len(sealed) == len(by) == len(info.packs)
    assert all(by[p.pack_id].startswith("gaia-seal") for p in info.packs[:-1])
    assert by[info.packs[-1].pack_id] == threading.current_thread().name
    file_of = {chunk_id(data_of(900_000, index)): index for index in range(30)}
    files = [sorted(file_of[e.chunk] for e in p.entries if e.chunk in file_of) for p in info.packs]
    assert sum(files, []) == list(range(30))  # each pack holds the files after the one before's
    assert all(store.packs.pack_path(p.pack_id).exists() for p in info.packs)


def test_a_pack_that_fails_to_seal_fails_the_capture_and_leaves_no_pack(tmp_path, monkeypatch):
    """A full pack whose fsync fails (a disk that cannot write it back) fails the capture by
    its error, once the capture ends; no pack, sealed or not, stays in staging."""
    out = tmp_path / "out"
    for index in range(30):
        write(out / f"f{index:02}", data_of(900_000, index))
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(CheckpointError, match="writing the checkpoint pack .* failed: Input/output error"):
        capture_tree([Target("out", out)], PackStore(tmp_path / "store"), staging, pack_limit=MIN_PACK_LIMIT)
    assert len(calls) >= 3  # packs after the failed one were filled and sealed
    assert list(staging.iterdir()) == []


def test_a_pack_limit_below_the_largest_frame_is_raised_to_fit_it(tmp_path):
    writer = PackWriter(tmp_path, limit=1024)
    assert writer.limit == MIN_PACK_LIMIT >= MAX_FRAME
    writer.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda raw: b"GAIAIX0\n" + raw[8:], "not a pack index"),
    (lambda raw: raw[:-1], "does not match its"),
    (lambda raw: raw + b"\0", "does not match its"),
    (lambda raw: raw[:8] + (5).to_bytes(4, "little") + raw[12:], "does not match its"),
])
def test_a_malformed_index_is_refused(mutate, match):
    index = encode_index([IndexEntry(chunk_id(b"a"), 8, 10, 1), IndexEntry(chunk_id(b"b"), 18, 10, 1)])
    decode_index(index, 28, "idx")
    with pytest.raises(CheckpointError, match=match):
        decode_index(mutate(index), 28, "idx")


@pytest.mark.parametrize(("entry", "pack_size"), [
    (IndexEntry(chunk_id(b"a"), 0, 10, 1), 100),  # over the magic
    (IndexEntry(chunk_id(b"a"), 8, 0, 1), 100),  # an empty frame
    (IndexEntry(chunk_id(b"a"), 8, 93, 1), 100),  # past the end
    (IndexEntry(chunk_id(b"a"), 2**63, 10, 1), 100),
    (IndexEntry(chunk_id(b"a"), 8, MAX_FRAME + 1, 1), None),  # a frame no chunk needs
    (IndexEntry(chunk_id(b"a"), 8, 10, MAX_CHUNK + 1), None),  # a chunk larger than any
], ids=["magic", "empty", "past-end", "far", "huge-frame", "huge-chunk"])
def test_an_index_entry_outside_its_pack_is_refused(entry, pack_size):
    with pytest.raises(CheckpointError, match="lies outside the pack"):
        decode_index(encode_index([entry]), pack_size, "idx")


# -- frames -------------------------------------------------------------------------------


def test_open_frame_checks_the_chunk_against_its_id_and_size():
    data = b"content" * 100
    frame = compress(data)
    assert open_frame(frame, chunk_id(data), len(data), "p") == data
    with pytest.raises(ChunkCorrupt, match="does not match its id"):
        open_frame(compress(b"other!!" * 100), chunk_id(data), len(data), "p")
    with pytest.raises(ChunkCorrupt, match="declares 700 bytes, the manifest 701"):
        open_frame(frame, chunk_id(data), len(data) + 1, "p")
    with pytest.raises(ChunkCorrupt, match="not a zstd frame"):
        open_frame(b"plain bytes, no frame", chunk_id(data), len(data), "p")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    with pytest.raises(ChunkCorrupt, match="declares -1 bytes"):
        open_frame(unsized, chunk_id(data), len(data), "p")


def zeros_frame(size: int, *, declare: bool) -> bytes:
    """One zstd frame of ``size`` zero bytes (small: zeros compress to almost nothing),
    streamed, with or without its content size in the header."""
    out = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare)
    with compressor.stream_writer(out, size=size if declare else -1, closefd=False) as writer:
        zeros = bytes(1 << 20)
        for _ in range(size >> 20):
            writer.write(zeros)
    return out.getvalue()


def lying_frame(size: int, claims: int) -> bytes:
    """A frame of ``size`` zeros whose header claims ``claims`` bytes (a 4-byte content size
    put into a header that had none)."""
    frame = zeros_frame(size, declare=False)
    descriptor = frame[4]
    assert descriptor & 0xC0 == 0 and not descriptor & 0x20 and descriptor & 0x03 == 0  # no size, window given
    return frame[:4] + bytes([descriptor | 0x80]) + frame[5:6] + claims.to_bytes(4, "little") + frame[6:]


def bounded(func) -> int:
    """Run ``func``; the peak of Python's allocations while it ran."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["declares 1 GiB", "declares nothing", "claims 1 MiB"])
def test_a_zstd_bomb_in_a_pack_is_refused_before_it_is_decompressed(store, tmp_path, how):
    claimed = 1 << 20  # what the manifest says the file holds
    gib = 1 << 30
    frame = {"declares 1 GiB": lambda: zeros_frame(gib, declare=True),
             "declares nothing": lambda: zeros_frame(gib, declare=False),
             "claims 1 MiB": lambda: lying_frame(gib, claimed)}[how]()
    assert len(frame) < 1 << 20  # a small frame ...
    chunk = chunk_id(bytes(claimed))  # ... in place of a chunk of the size the manifest gives
    entry = file_entry("t/zeros", b"")
    entry.size, entry.digest = claimed, chunk
    manifest = store_object(store, [dir_entry("t"), entry], frames=[(chunk, frame, claimed)])
    dest = tmp_path / "restored"
    raised = []

    def run() -> None:
        with pytest.raises(ChunkCorrupt, match="declares|does not decompress") as info:
            restore(store, manifest, dest)
        raised.append(info.value)

    peak = bounded(run)
    assert raised and peak < 16 << 20, peak
    zeros = dest / "t" / "zeros"
    assert not zeros.exists() or zeros.stat().st_size <= claimed


def test_an_entry_list_part_that_is_a_bomb_is_refused(store):
    part_frame = zeros_frame(1 << 30, declare=True)
    part = b'{"p":"t","t":"d","m":493,"n":0}\n'
    writer = store.new_pack()
    writer.add(chunk_id(part), part_frame, len(part))
    store.packs.add(writer.finish())
    manifest = {"tree": {"entries": 1, "size": 0, "parts": [{"id": chunk_id(part).hex(), "size": len(part),
                                                                "entries": 1}]},
                "targets": [{"name": "t"}]}
    peak = bounded(lambda: pytest.raises(ChunkCorrupt, list, tree.entries(store.packs, manifest)))
    assert peak < 16 << 20


# -- hostile packs at restore --------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 1, 4, 0.5, -1])
@pytest.mark.parametrize("which", ["a.bin", "c.bin", "part"])
def test_a_pack_whose_chunk_does_not_match_its_id_is_corrupt_at_restore(store, tmp_path, captured, where, which):
    info, manifest, _ = captured
    entries = {e.path: e for e in tree.entries(store.packs, manifest)}
    chunk = (bytes.fromhex(info.parts[0]["id"]) if which == "part"
             else entries[f"out/{which}"].chunk_list()[-1][0])
    location = store.packs.locate([chunk])[chunk]
    at = location.offset + (int(location.clen * where) if isinstance(where, float) else where % location.clen)
    path = store.packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x20
    path.write_bytes(raw)
    with pytest.raises(ChunkCorrupt, match=f"local pack {location.pack[:16]}: chunk {chunk.hex()[:16]}"):
        restore(store, manifest, tmp_path / "restored")


def rewrite_index(store: Store, pack_id: str, change) -> None:
    path = store.packs.index_path(pack_id)
    size = store.packs.pack_path(pack_id).stat().st_size
    entries = decode_index(path.read_bytes(), size, "idx")
    path.write_bytes(encode_index(change(sorted(entries, key=lambda e: e.offset))))
    store.packs.rebuild()


def test_an_index_that_lies_about_offsets_is_caught_by_the_chunk_check(store, tmp_path, captured):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))

    def swap_first_two(entries):
        a, b = entries[0], entries[1]
        return [IndexEntry(a.chunk, b.offset, b.clen, a.plen), IndexEntry(b.chunk, a.offset, a.clen, b.plen),
                *entries[2:]]

    rewrite_index(store, pack, swap_first_two)
    with pytest.raises(ChunkCorrupt):
        restore(store, manifest, tmp_path / "restored")


def test_an_index_pointing_into_the_middle_of_a_frame_is_corrupt(store, tmp_path, captured):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))
    rewrite_index(store, pack, lambda entries: [IndexEntry(e.chunk, e.offset + 3, e.clen - 3, e.plen)
                                                for e in entries])
    with pytest.raises(ChunkCorrupt):
        restore(store, manifest, tmp_path / "restored")


def test_an_index_pointing_outside_its_pack_hides_the_pack(store, tmp_path, captured):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))
    size = store.packs.pack_path(pack).stat().st_size
    rewrite_index(store, pack, lambda entries: [*entries[:-1], IndexEntry(entries[-1].chunk, size - 2, 10, 1)])
    assert store.packs.local_packs() == {}
    with pytest.raises(ChunkMissing):
        restore(store, manifest, tmp_path / "restored")


def test_a_manifest_naming_a_chunk_no_pack_holds_is_chunk_missing(store, tmp_path):
    manifest = store_object(store, [dir_entry("t"), file_entry("t/f", b"never stored")])
    with pytest.raises(ChunkMissing, match="lacks chunk .* of 't/f'"):
        restore(store, manifest, tmp_path / "restored")
    manifest["tree"]["parts"][0]["id"] = chunk_id(b"another part").hex()
    with pytest.raises(ChunkMissing, match="part 1 of the entry list"):
        restore(store, manifest, tmp_path / "restored-2")


@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_a_truncated_pack_is_corrupt_and_hidden_once_the_store_is_rebuilt(store, tmp_path, captured, keep):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))
    path = store.packs.pack_path(pack)
    size = path.stat().st_size
    os.truncate(path, int(size * keep) if isinstance(keep, float) else size + keep)
    with pytest.raises(ChunkCorrupt, match="lies past the end of the pack|does not"):
        restore(store, manifest, tmp_path / "restored")
    store.packs.rebuild()  # the database is derived data: made anew, it lists no chunk past the end
    assert store.packs.local_packs() == {}
    with pytest.raises(ChunkMissing):
        restore(store, manifest, tmp_path / "restored-2")


def test_a_pack_that_vanished_is_corrupt_not_a_crash(store, tmp_path, captured):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))
    store.packs.pack_path(pack).unlink()
    with pytest.raises(ChunkCorrupt, match="cannot be read"):
        restore(store, manifest, tmp_path / "restored")


# -- the local pack store ------------------------------------------------------------------


def test_the_database_is_rebuilt_from_the_indexes_when_lost_or_damaged(store, tmp_path, captured):
    info, manifest, out = captured
    wanted = [c for c, _ in file_chunks(store, manifest)]
    located = store.packs.locate(wanted)
    store.close()
    db = store.packs.db_path
    for damage in ("delete", "garbage"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if damage == "garbage":
            db.write_bytes(b"this is not a database" * 100)
        packs = PackStore(store.root)
        try:
            # a reader answers from the index files and writes nothing (status, list)
            assert packs.locate(wanted) == located, damage
            assert packs.missing([*wanted, chunk_id(b"absent")]) == [chunk_id(b"absent")]
            assert not Path(f"{db}.corrupt").exists()
            # the first writer makes the database anew, the damaged one set aside
            assert packs.rebuild() == len(set(located[c].pack for c in wanted))
            assert packs.locate(wanted) == located, damage
        finally:
            packs.close()
    assert Path(f"{db}.corrupt").read_bytes().startswith(b"this is not a database")


def test_a_pack_without_a_readable_index_holds_nothing(store, captured):
    pack = next(iter(store.packs.local_packs()))
    store.packs.index_path(pack).write_bytes(b"garbage")
    assert store.packs.rebuild() == 0
    assert store.packs.local_packs() == {}


def test_the_store_is_shared_between_threads(store, captured):
    import concurrent.futures

    _, manifest, out = captured
    chunks = file_chunks(store, manifest)
    located = store.packs.locate([c for c, _ in chunks])

    def read(item):
        chunk, size = item
        return chunk_id(store.packs.read(chunk, located[chunk], size)) == chunk

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, chunks * 20))


def test_a_removed_pack_leaves_the_store(store, tmp_path, captured):
    _, manifest, _ = captured
    pack = next(iter(store.packs.local_packs()))
    chunks = [c for c, _ in file_chunks(store, manifest)]
    store.packs.remove(pack)
    assert store.packs.local_packs() == {}
    assert set(store.packs.missing(chunks)) == set(chunks)
    assert not store.packs.pack_path(pack).exists() and not store.packs.index_path(pack).exists()
    with pytest.raises(ChunkMissing):
        restore(store, manifest, tmp_path / "restored")



def pack_of(store: Store, contents: list[bytes]) -> list[tuple[bytes, Location, int]]:
    """``contents`` as chunks of one new pack, in that order: (chunk, location, size) each."""
    writer = store.new_pack()
    for data in contents:
        writer.add(chunk_id(data), compress(data), len(data))
    store.packs.add(writer.finish())
    located = store.packs.locate([chunk_id(data) for data in contents])
    return [(chunk_id(data), located[chunk_id(data)], len(data)) for data in contents]


def counting_preads(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = os.pread

    def pread(fd, length, offset):
        sizes.append(length)
        return real(fd, length, offset)

    monkeypatch.setattr(packstore.os, "pread", pread)
    return sizes


def test_frames_that_follow_each_other_are_read_together_each_checked(store, monkeypatch):
    contents = [data_of(size, seed) for seed, size in enumerate([10, 5000, 1, 70_000, 300])]
    wanted = pack_of(store, contents)
    reads = counting_preads(monkeypatch)
    assert list(store.packs.read_run(wanted)) == contents
    assert len(reads) == 1
    reads.clear()
    assert list(store.packs.read_run(wanted[::-1])) == contents[::-1]  # backwards: a read each
    assert len(reads) == len(contents)
    reads.clear()
    monkeypatch.setattr(packstore, "_SPAN", 6000)  # no read longer than the span
    assert list(store.packs.read_run(wanted)) == contents
    assert 1 < len(reads) < len(contents) and max(reads) <= max(6000, wanted[3][1].clen)


def test_a_damaged_frame_in_a_run_fails_there_and_is_forgotten(store):
    contents = [data_of(4000, seed) for seed in range(4)]
    wanted = pack_of(store, contents)
    chunk, location, _ = wanted[2]
    path = store.packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[location.offset + location.clen // 2] ^= 0x01
    path.write_bytes(raw)
    run = store.packs.read_run(wanted)
    assert [next(run), next(run)] == contents[:2]
    with pytest.raises(ChunkCorrupt, match=f"chunk {chunk.hex()[:16]}"):
        next(run)
    assert store.packs.missing([c for c, _, _ in wanted]) == [chunk]


def test_a_run_past_the_end_of_a_truncated_pack_is_corrupt(store):
    wanted = pack_of(store, [data_of(4000, seed) for seed in range(3)])
    path = store.packs.pack_path(wanted[0][1].pack)
    os.truncate(path, path.stat().st_size - 10)
    with pytest.raises(ChunkCorrupt, match=f"chunk {wanted[2][0].hex()[:16]} lies past the end of the pack"):
        list(store.packs.read_run(wanted))


def test_lookups_give_each_chunk_where_it_lies_batch_after_batch(tmp_path, monkeypatch):
    """locate, remote_locate and absent read each batch's rows as one text: every chunk of
    every batch comes back with its own pack, offset and sizes, and only from the packs asked.
    absent sends its ids in one blob a batch: those of another width are asked apart."""
    monkeypatch.setattr(packstore, "_BATCH", 7)
    monkeypatch.setattr(packstore, "_ABSENT_BATCH", 7)
    packs = PackStore(tmp_path / "store")
    contents = [data_of(100 + i, seed=i) for i in range(40)]
    written: dict[bytes, list[Location]] = {}
    finished = []
    for first, last in ((0, 25), (20, 40)):  # chunks 20-24 in both packs
        writer = PackWriter(tmp_path, 1 << 20)
        for data in contents[first:last]:
            entry = writer.add(chunk_id(data), compress(data), len(data))
            written.setdefault(entry.chunk, []).append(Location("", entry.offset, entry.clen, entry.plen))
        finished.append(writer.finish())
    packs.add(finished[0])
    packs.add_index(finished[1].pack_id, finished[1].size, finished[1].entries)  # a backend's, not local
    packs.set_remote_packs("far", {finished[1].pack_id: finished[1].size})
    ids = [chunk_id(data) for data in contents]
    unknown = chunk_id(b"in no pack")

    def where(located: dict[bytes, Location], pack: int) -> dict[bytes, tuple[int, int, int]]:
        assert {loc.pack for loc in located.values()} == {finished[pack].pack_id}
        return {c: (loc.offset, loc.clen, loc.plen) for c, loc in located.items()}

    local = where(packs.locate([*ids, unknown, ids[0]]), 0)
    assert local == {c: (w[0].offset, w[0].clen, w[0].plen) for c, w in written.items() if c in ids[:25]}
    far = where(packs.remote_locate("far", [unknown, *reversed(ids)]), 1)
    assert far == {c: (w[-1].offset, w[-1].clen, w[-1].plen) for c, w in written.items() if c in ids[20:]}
    assert packs.remote_locate("near", ids) == {}
    assert [c for c, _ in packs.absent((c, 1) for c in [*ids, unknown])] == [*ids[25:], unknown]
    odd = [b"", b"short", ids[3][:31]]  # widths no chunk id has: never held
    asked = [ids[30], odd[0], ids[2], odd[1], ids[2], ids[26], odd[2], ids[4], ids[31]]
    assert list(packs.absent((c, i) for i, c in enumerate(asked))) == \
        [(ids[30], 0), (odd[0], 1), (odd[1], 3), (ids[26], 5), (odd[2], 6), (ids[31], 8)]
    assert packs.missing([unknown, *ids]) == [unknown, *ids[25:]]
