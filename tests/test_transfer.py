"""Chunks between a local pack store and a backend (the built-in ``dir`` backend): the
backend's packs learnt once, only missing chunks sent, whole packs or ranges fetched, and
hostile packs or indexes of the backend refused."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from tree_store import Store, manifest_of, write

from gaia_core.anchors import Target
from gaia_core.backends import PACKS, pack_key
from gaia_core.builtin.dir_backend import DirBackend, DirConfig
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.packs import ChunkCorrupt, IndexEntry, decode_index, encode_index, index_name, pack_name
from gaia_core.checkpoints.transfer import RANGE_GAP, RemoteIncomplete, Transfers
from gaia_core.errors import BackendError
from gaia_core.retry import temporary_name


class RecordingDir(DirBackend):
    """The dir backend, recording the calls that move bytes (``calls`` is shared by every
    session of one store)."""

    def __init__(self, calls: list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = calls
        self._lock = threading.Lock()

    def _record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self._record("range", key, offset, length)
        return super().read_range(key, offset, length)

    def download(self, key, dest, *, progress=None):
        self._record("download", key)
        return super().download(key, dest, progress=progress)

    def upload(self, key, source, *, progress=None):
        self._record("upload", key, Path(source).stat().st_size)
        return super().upload(key, source, progress=progress)


class Remote:
    """A ``dir`` store in ``path``, and the sessions a Transfers opens on it."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.calls: list[tuple] = []

    def backend(self) -> RecordingDir:
        return RecordingDir(self.calls, "it", DirConfig(path=str(self.path)))

    def transfers(self, store: Store, **options) -> Transfers:
        return Transfers(self.backend(), self.backend, store.packs, store.tmp, **options)

    def packs(self) -> dict[str, Path]:
        return {p.name[:-5]: p for p in (self.path / PACKS).glob("*.pack")}

    def index(self, pack_id: str) -> list[IndexEntry]:
        return decode_index((self.path / PACKS / index_name(pack_id)).read_bytes(), None, "idx")

    def of(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path / "remote")


@pytest.fixture
def stores(tmp_path: Path):
    made: list[Store] = []

    def make(name: str) -> Store:
        made.append(Store(tmp_path / name))
        return made[-1]

    yield make
    for store in made:
        store.close()


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def build(out: Path, files: int = 30, size: int = 100_000) -> None:
    for index in range(files):
        write(out / "pkg" / f"f{index:02}", data_of(size, index))


def needed(store: Store, manifest) -> dict[bytes, int]:
    """Chunk id -> plain size of everything the object needs, parts included."""
    return dict(tree.chunks(store.packs, manifest))


def uploaded_bytes(remote: Remote) -> int:
    return sum(c[2] for c in remote.of("upload"))


@pytest.fixture
def published(tmp_path, stores, remote):
    """An object captured into store ``a`` and sent to the remote: (store a, manifest, out)."""
    out = tmp_path / "out"
    build(out)
    a = stores("a")
    info = a.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    transfers = remote.transfers(a)
    try:
        transfers.sync_index()
        chunks = set(needed(a, manifest))
        assert transfers.missing(chunks) == chunks
        transfers.send(chunks)
    finally:
        transfers.close()
    return a, manifest, out


# -- the backend's packs --------------------------------------------------------------------


def test_sync_index_learns_each_pack_once(published, stores, remote):
    a, manifest, _ = published
    b = stores("b")
    transfers = remote.transfers(b)
    try:
        listed = transfers.sync_index()
        assert listed == {p: path.stat().st_size for p, path in remote.packs().items()}
        assert len(remote.of("download")) == len(listed)  # one index each
        wanted = needed(a, manifest)
        assert set(b.packs.remote_locate(remote.backend().ref, list(wanted))) == set(wanted)
        assert transfers.missing(set(wanted)) == set()
        assert b.packs.local_packs() == {}  # learnt where chunks are, fetched none
        remote.calls.clear()
        assert transfers.sync_index() == listed
        assert remote.of("download") == []  # indexes already known are not fetched again
    finally:
        transfers.close()


def test_sync_index_skips_temporaries_packs_without_index_and_bad_indexes(published, stores, remote):
    a, manifest, _ = published
    (pack_id,) = remote.packs()
    packs = remote.path / PACKS
    lone = "1" * 64
    (packs / pack_name(lone)).write_bytes(b"GAIAPK1\n")  # a killed upload: pack, no index
    bad = "2" * 64
    (packs / pack_name(bad)).write_bytes(b"GAIAPK1\n" + b"x" * 100)
    (packs / index_name(bad)).write_bytes(b"not an index")
    (packs / temporary_name(pack_name("3" * 64))).write_bytes(b"GAIAPK1\n")  # an upload under way
    (packs / temporary_name(index_name("3" * 64))).write_bytes(encode_index([]))
    b = stores("b")
    transfers = remote.transfers(b)
    try:
        listed = transfers.sync_index()
        assert set(listed) == {pack_id, bad}
        assert b.packs.known_indexes([pack_id, bad, lone]) == {pack_id}
        assert transfers.missing(set(needed(a, manifest))) == set()
    finally:
        transfers.close()


# -- upload ---------------------------------------------------------------------------------


def test_send_uploads_only_what_the_backend_lacks(tmp_path, published, remote):
    a, first, out = published
    full = uploaded_bytes(remote)
    assert full >= 30 * 100_000
    write(out / "pkg" / "f07", data_of(100_000, 1000))  # one package changed
    info = a.capture([Target("out", out)])
    second = manifest_of(info, ["out"])
    remote.calls.clear()
    transfers = remote.transfers(a)
    try:
        transfers.sync_index()
        chunks = set(needed(a, second))
        missing = transfers.missing(chunks)
        assert len(missing) == 2  # the changed file and the entry list
        sent = transfers.send(missing)
        assert transfers.still_there(chunks) == set()
    finally:
        transfers.close()
    assert sent == uploaded_bytes(remote) - sum(c[2] for c in remote.of("upload") if c[1].endswith(".idx"))
    assert 100_000 < uploaded_bytes(remote) < full / 20


def test_send_repacks_the_chunks_of_a_pack_the_backend_has_some_of(tmp_path, stores, remote):
    out = tmp_path / "out"
    build(out, files=10)
    a = stores("a")
    info = a.capture([Target("out", out)])
    manifest = manifest_of(info, ["out"])
    (local,) = a.packs.local_packs()
    chunks = list(needed(a, manifest))
    some = set(chunks[:3])
    transfers = remote.transfers(a)
    try:
        transfers.sync_index()
        transfers.send(some)
        (first,) = remote.packs()
        assert first != local and {e.chunk for e in remote.index(first)} == some
        transfers.sync_index()
        rest = transfers.missing(set(chunks))
        assert rest == set(chunks) - some
        transfers.send(rest)
        transfers.sync_index()
        assert transfers.missing(set(chunks)) == set()
    finally:
        transfers.close()
    assert len(remote.packs()) == 2


def test_send_keeps_uploaded_packs_within_the_backends_limit(tmp_path, stores, remote):
    out = tmp_path / "out"
    build(out, files=30, size=900_000)
    a = stores("a")
    info = a.capture([Target("out", out)])  # one pack of the default limit
    assert len(info.packs) == 1 and info.packs[0].size > 8 << 20
    transfers = remote.transfers(a, pack_limit=8 << 20)
    try:
        transfers.sync_index()
        transfers.send(set(needed(a, manifest_of(info, ["out"]))))
    finally:
        transfers.close()
    sizes = [p.stat().st_size for p in remote.packs().values()]
    assert len(sizes) >= 4 and max(sizes) <= 8 << 20


def test_after_a_failed_pack_upload_no_other_pack_upload_starts(tmp_path, stores, remote, monkeypatch):
    # a call started after the failure would go on sending (a backend retrying a refused
    # connection) after the run gave up, and a retry would then count it twice
    out = tmp_path / "out"
    build(out, files=30, size=900_000)
    a = stores("a")
    info = a.capture([Target("out", out)], pack_limit=4 << 20)
    assert len(info.packs) >= 4
    started: list[str] = []

    def refused(self, key, source, *, progress=None):
        if key.endswith(".pack"):
            started.append(key)
            if len(started) == 1:  # the next pack is already queued
                raise BackendError("connection refused")
        return DirBackend.upload(self, key, source, progress=progress)

    monkeypatch.setattr(RecordingDir, "upload", refused)
    transfers = remote.transfers(a, parallel=1)
    try:
        transfers.sync_index()
        with pytest.raises(BackendError, match="refused"):
            transfers.send(set(needed(a, manifest_of(info, ["out"]))))
    finally:
        transfers.close()
    time.sleep(0.2)  # a worker that took the next pack would have started it by now
    assert len(started) == 1, started


# -- download -------------------------------------------------------------------------------


def fetch_all(remote: Remote, store: Store, wanted: dict[bytes, int], **options) -> int:
    transfers = remote.transfers(store)
    try:
        transfers.sync_index()
        remote.calls.clear()
        return transfers.fetch(wanted, **options)
    finally:
        transfers.close()


def test_fetch_takes_whole_packs_when_most_is_wanted(tmp_path, published, stores, remote):
    a, manifest, out = published
    b = stores("b")
    moved = fetch_all(remote, b, needed(a, manifest))
    sizes = {p: path.stat().st_size for p, path in remote.packs().items()}
    ranges = remote.of("range")
    assert sorted((c[1], c[2], c[3]) for c in ranges) == sorted((pack_key(pack_name(p)), 0, s) for p, s in sizes.items())
    assert moved <= sum(sizes.values())
    dest = tmp_path / "restored"
    b.restore(manifest, dest)
    assert (dest / "out" / "pkg" / "f29").read_bytes() == data_of(100_000, 29)


def test_fetch_takes_ranges_when_little_is_wanted(tmp_path, published, stores, remote):
    a, manifest, out = published
    entries = {e.path: e for e in tree.entries(a.packs, manifest)}
    wanted = dict(entries["out/pkg/f03"].chunk_list() + entries["out/pkg/f20"].chunk_list())
    b = stores("b")
    moved = fetch_all(remote, b, wanted)
    ranges = remote.of("range")
    (size,) = [p.stat().st_size for p in remote.packs().values()]
    assert len(ranges) == 2  # two files far apart: two requests
    assert all(c[2] > 0 and c[3] < 200_000 for c in ranges)
    assert moved == sum(c[3] for c in ranges) < size / 10
    assert b.packs.missing(list(wanted)) == []


def test_fetch_coalesces_neighbouring_chunks_into_one_range(published, stores, remote):
    a, manifest, _ = published
    (pack,) = remote.packs()
    index = sorted(remote.index(pack), key=lambda e: e.offset)
    neighbours = index[3:6]
    assert all(later.offset - (e.offset + e.clen) <= RANGE_GAP for e, later in zip(neighbours, neighbours[1:]))
    b = stores("b")
    fetch_all(remote, b, {e.chunk: e.plen for e in neighbours})
    (call,) = remote.of("range")
    assert call[2:] == (neighbours[0].offset, neighbours[-1].offset + neighbours[-1].clen - neighbours[0].offset)


def test_fetch_without_keep_checks_and_stores_nothing(published, stores, remote):
    a, manifest, _ = published
    b = stores("b")
    moved = fetch_all(remote, b, needed(a, manifest), keep=False)
    assert moved > 0 and b.packs.local_packs() == {}


def test_fetch_of_a_chunk_no_listed_pack_holds_is_remote_incomplete(published, stores, remote):
    a, manifest, _ = published
    b = stores("b")
    with pytest.raises(RemoteIncomplete, match="holds no pack with chunk"):
        fetch_all(remote, b, {**needed(a, manifest), chunk_id(b"never sent"): 10})
    assert remote.of("range") == []  # nothing fetched before the whole is known to be there



def repack_by_hand(remote: Remote, a: Store, keep: set[bytes]) -> tuple[str, set[str]]:
    """What gc does to a mostly dead pack: ``keep`` sent in new packs first, then the old
    pack's index and the pack deleted. (the old pack, the new ones)"""
    (old,) = remote.packs()
    transfers = remote.transfers(a)
    try:
        transfers.send(keep)  # the local pack holds more than ``keep``: a new pack of just these
    finally:
        transfers.close()
    (remote.path / PACKS / index_name(old)).unlink()
    (remote.path / PACKS / pack_name(old)).unlink()
    return old, set(remote.packs())


def test_a_pack_repacked_between_listing_and_reading_is_read_from_its_new_pack(published, stores, remote):
    a, manifest, _ = published
    entries = {e.path: e for e in tree.entries(a.packs, manifest)}
    wanted = dict(entries["out/pkg/f03"].chunk_list() + entries["out/pkg/f20"].chunk_list())
    b = stores("b")
    transfers = remote.transfers(b)
    try:
        transfers.sync_index()  # the plan will name the old pack ...
        old, new = repack_by_hand(remote, a, set(wanted))  # ... which a gc repacks now
        assert old not in new
        remote.calls.clear()
        moved = transfers.fetch(wanted)
    finally:
        transfers.close()
    assert b.packs.missing(list(wanted)) == []  # every chunk, checked against its id
    ranges = remote.of("range")
    assert {c[1] for c in ranges} == {pack_key(pack_name(old))} | {pack_key(pack_name(p)) for p in new}
    assert moved == sum(e.clen for p in new for e in remote.index(p))
    assert len(remote.of("download")) == len(new)  # the new packs' indexes: learnt on one more listing


def test_a_chunk_gc_dropped_between_listing_and_reading_is_still_remote_incomplete(published, stores, remote):
    a, manifest, _ = published
    entries = {e.path: e for e in tree.entries(a.packs, manifest)}
    live = dict(entries["out/pkg/f03"].chunk_list())
    dead = dict(entries["out/pkg/f20"].chunk_list())
    b = stores("b")
    transfers = remote.transfers(b)
    try:
        transfers.sync_index()
        repack_by_hand(remote, a, set(live))
        with pytest.raises(RemoteIncomplete, match="holds no pack with chunk"):
            transfers.fetch({**live, **dead})
    finally:
        transfers.close()


# -- hostile backends -----------------------------------------------------------------------


def tamper(remote: Remote, a: Store, manifest, name: str) -> tuple[str, bytes]:
    """Flip a byte in the frame of ``name``'s chunk in the backend's pack."""
    (entry,) = [e for e in tree.entries(a.packs, manifest) if e.path == name]
    chunk = entry.chunk_list()[0][0]
    (pack,) = remote.packs()
    (at,) = [e for e in remote.index(pack) if e.chunk == chunk]
    path = remote.packs()[pack]
    raw = bytearray(path.read_bytes())
    raw[at.offset + at.clen // 2] ^= 0x01
    path.write_bytes(raw)
    return pack, chunk


@pytest.mark.parametrize("wanted", ["all", "one"])
def test_a_backend_pack_with_a_tampered_chunk_is_refused_and_its_index_forgotten(published, stores, remote, wanted):
    a, manifest, _ = published
    pack, chunk = tamper(remote, a, manifest, "out/pkg/f11")
    b = stores("b")
    want = needed(a, manifest) if wanted == "all" else {chunk: 100_000}
    transfers = remote.transfers(b)
    try:
        transfers.sync_index()
        with pytest.raises(ChunkCorrupt, match=f"pack {pack[:16]}: chunk {chunk.hex()[:16]}"):
            transfers.fetch(want)
        assert b.packs.known_indexes([pack]) == set()
        assert b.packs.remote_locate(remote.backend().ref, list(want)) == {}
        assert b.packs.missing([chunk]) == [chunk]  # nothing of it kept
        with pytest.raises(RemoteIncomplete):
            transfers.fetch(want)
    finally:
        transfers.close()


def test_a_backend_index_that_lies_about_offsets_is_refused(published, stores, remote):
    a, manifest, _ = published
    (pack,) = remote.packs()
    entries = sorted(remote.index(pack), key=lambda e: e.offset)
    first, second = entries[0], entries[1]
    swapped = [IndexEntry(first.chunk, second.offset, second.clen, first.plen),
               IndexEntry(second.chunk, first.offset, first.clen, second.plen), *entries[2:]]
    (remote.path / PACKS / index_name(pack)).write_bytes(encode_index(swapped))
    b = stores("b")
    with pytest.raises(ChunkCorrupt):
        fetch_all(remote, b, {first.chunk: first.plen, second.chunk: second.plen})
    assert b.packs.missing([first.chunk, second.chunk]) == [first.chunk, second.chunk]


def test_a_backend_index_pointing_outside_its_pack_hides_the_pack(published, stores, remote):
    a, manifest, _ = published
    (pack,) = remote.packs()
    entries = remote.index(pack)
    size = remote.packs()[pack].stat().st_size
    entries[0] = IndexEntry(entries[0].chunk, size, 10, entries[0].plen)
    (remote.path / PACKS / index_name(pack)).write_bytes(encode_index(entries))
    b = stores("b")
    with pytest.raises(RemoteIncomplete):
        fetch_all(remote, b, needed(a, manifest))
    assert b.packs.known_indexes([pack]) == set()


def test_a_truncated_backend_pack_is_refused(published, stores, remote):
    a, manifest, _ = published
    (pack,) = remote.packs()
    b = stores("b")
    transfers = remote.transfers(b)
    try:
        transfers.sync_index()  # the index is learnt while the pack is whole ...
        path = remote.packs()[pack]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # ... then the pack is cut
        with pytest.raises(ChunkCorrupt):
            transfers.fetch(needed(a, manifest))
    finally:
        transfers.close()
    assert b.packs.local_packs() == {}  # nothing of the cut pack kept


def test_an_oversized_backend_index_hides_its_pack_only(published, stores, remote):
    a, manifest, _ = published
    (pack,) = remote.packs()
    huge = "4" * 64
    (remote.path / PACKS / pack_name(huge)).write_bytes(b"GAIAPK1\n")
    with open(remote.path / PACKS / index_name(huge), "wb") as f:
        f.truncate((64 << 20) + 1)
    b = stores("b")
    moved = fetch_all(remote, b, needed(a, manifest))
    assert moved > 0 and b.packs.known_indexes([huge]) == set()


def test_an_index_removed_between_listing_and_reading_hides_its_pack_only(published, stores, remote, tmp_path):
    # a concurrent gc deletes a pack and its index right after this run listed them
    a, manifest, out = published
    build(tmp_path / "other", files=3, size=1000)
    other = stores("other")
    info = other.capture([Target("other", tmp_path / "other")])
    transfers = remote.transfers(other)
    try:
        transfers.sync_index()
        transfers.send(set(needed(other, manifest_of(info, ["other"]))))
    finally:
        transfers.close()
    (gone,) = set(remote.packs()) - {p for p in remote.packs() if {e.chunk for e in remote.index(p)} &
                                     set(needed(a, manifest))}

    class Collected(RecordingDir):
        def list_files(self, prefix):
            listed = super().list_files(prefix)
            for name in (pack_name(gone), index_name(gone)):
                (remote.path / PACKS / name).unlink(missing_ok=True)
            return listed

    b = stores("b")
    make = lambda: Collected(remote.calls, "it", DirConfig(path=str(remote.path)))  # noqa: E731
    transfers = Transfers(make(), make, b.packs, b.tmp)
    try:
        transfers.sync_index()
        assert transfers.fetch(needed(a, manifest)) > 0
    finally:
        transfers.close()


def test_a_huge_backend_pack_is_never_read_into_memory_whole(stores, remote):
    # a hostile index may claim that the wanted chunks fill a pack of any size (each frame
    # up to MAX_FRAME): fetching it must not hold the whole pack in memory at once
    import tracemalloc

    from gaia_core.checkpoints.chunking import MAX_CHUNK
    from gaia_core.checkpoints.packs import MAX_FRAME, PACK_MAGIC

    count = (1 << 30) // MAX_FRAME
    wanted = {chunk_id(str(index).encode()): MAX_CHUNK for index in range(count)}
    entries = [IndexEntry(chunk, len(PACK_MAGIC) + index * MAX_FRAME, MAX_FRAME, MAX_CHUNK)
               for index, chunk in enumerate(wanted)]
    huge = "5" * 64
    packs = remote.path / PACKS
    packs.mkdir()
    with open(packs / pack_name(huge), "wb") as f:
        f.write(PACK_MAGIC)
        f.truncate(len(PACK_MAGIC) + count * MAX_FRAME)  # sparse: 1 GiB that takes no disk
    (packs / index_name(huge)).write_bytes(encode_index(entries))
    b = stores("b")
    transfers = remote.transfers(b)
    tracemalloc.start()
    try:
        transfers.sync_index()
        with pytest.raises(ChunkCorrupt):
            transfers.fetch(wanted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        transfers.close()
    assert peak < 256 << 20, f"{peak >> 20} MiB"
