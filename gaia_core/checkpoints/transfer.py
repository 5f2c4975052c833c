"""Chunks between the local pack store and a backend: only what is missing, N at a time.

A backend's packs are listed once per operation (``packs/``) and the index of each pack
not seen before is fetched and kept in the local database (:mod:`.packstore`), so "which
of these chunks does the store have, and where" costs one listing, not one request per
chunk. Downloads fetch whole packs when most of a pack is wanted and ranges of it
otherwise; every chunk is checked against its id and the size the signed manifest gives
before it is kept, and kept chunks go into new local packs that enter the store as they
fill, so a killed download re-sends at most the requests in flight. A pack deleted since
the listing (gc repacked it: its live chunks are in new packs first) costs one listing
more, and its chunks are fetched from the packs that hold them now. Uploads send the
local packs whose chunks the backend lacks, or, when it has some of them, new packs of
just the missing ones, then check that every pack the object relies on is still there
(a concurrent gc) before the caller publishes the manifest.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.backends import PACKS, Backend, pack_key
from gaia_core.checkpoints.packs import (
    PACK_ID,
    FinishedPack,
    IndexEntry,
    PackWriter,
    decode_index,
    index_name,
    open_frame,
    pack_name,
)
from gaia_core.checkpoints.packstore import Location, PackStore
from gaia_core.errors import CheckpointError, ObjectNotFound

if TYPE_CHECKING:
    from gaia_core.backends import Progress

#: a pack is fetched whole when at least this share of its bytes is wanted
WHOLE_PACK_SHARE = 0.9
#: ranges closer than this are fetched as one request
RANGE_GAP = 64 << 10
#: the most bytes one ranged request asks for
RANGE_MAX = 16 << 20
#: the most bytes of ranges fetched, or packs sent, at once (memory stays bounded whatever ``parallel``)
MAX_IN_FLIGHT = 256 << 20
#: an index larger than this is refused before it is read
MAX_INDEX_BYTES = 64 << 20


class RemoteIncomplete(CheckpointError):
    """The backend's packs lack chunks its manifest needs (gc, a killed upload, a lie)."""


@dataclasses.dataclass(frozen=True)
class _Request:
    pack: str
    offset: int
    length: int
    #: (chunk, location, plain size from the manifest) of the chunks in the range
    chunks: tuple[tuple[bytes, Location, int], ...]


class Sessions:
    """Connected backends of one ref, one per worker thread (libraries' clients and SSH
    channels are not shared across threads)."""

    def __init__(self, make: Callable[[], Backend]):
        self._make = make
        self._local = threading.local()
        self._open: list[Backend] = []
        self._lock = threading.Lock()

    def get(self) -> Backend:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            backend = self._make()
            backend.__enter__()
            self._local.backend = backend
            with self._lock:
                self._open.append(backend)
        return backend

    def close(self) -> None:
        with self._lock:
            opened, self._open = self._open, []
        for backend in opened:
            with contextlib.suppress(Exception):
                backend.close()


class Transfers:
    """Moves chunks for one object between ``packs`` and the backend ``primary`` is of."""

    def __init__(self, primary: Backend, make: Callable[[], Backend], packs: PackStore, tmp: Path,
                 *, parallel: int = 4, pack_limit: int | None = None, bad: set[tuple[str, str]] | None = None):
        self.primary = primary
        #: (backend ref, pack id) of packs that served a chunk not matching its id: from then
        #: on their chunks count as missing (an upload sends them again)
        self.bad = bad if bad is not None else set()
        self.ref = primary.ref
        self.packs = packs
        self.tmp = tmp
        self.parallel = max(1, parallel)
        self.pack_limit = pack_limit
        self._sessions = Sessions(make)

    def close(self) -> None:
        self._sessions.close()

    @property
    def _ahead(self) -> int:
        """Requests in flight: enough to keep every stream busy, at most MAX_IN_FLIGHT bytes."""
        return max(1, min(2 * self.parallel, MAX_IN_FLIGHT // RANGE_MAX))

    @contextlib.contextmanager
    def _pool(self) -> Iterator[_Workers]:
        pool = _Workers(self.parallel)
        try:
            yield pool
        except BaseException:
            # a failure or a cancellation (SIGTERM): stop waiting for what is in flight;
            # closing the backends ends the socket calls that can be ended (SSH), and the
            # daemon workers never keep the process alive
            pool.shutdown(wait=False)
            self._sessions.close()
            raise
        pool.shutdown(wait=True)

    # -- the backend's packs ----------------------------------------------------------

    def sync_index(self) -> dict[str, int | None]:
        """List the backend's packs and learn the index of each one not seen before."""
        listed: dict[str, int | None] = {}
        indexes: dict[str, int | None] = {}
        for entry in self.primary.list_files(PACKS):
            name = entry.key.rpartition("/")[2]
            if entry.temporary:
                continue
            if name.endswith(".pack") and PACK_ID.match(name[:-5]):
                listed[name[:-5]] = entry.size
            elif name.endswith(".idx") and PACK_ID.match(name[:-4]):
                indexes[name[:-4]] = entry.size
        packs = {p: size for p, size in listed.items()
                 if p in indexes and (indexes[p] or 0) <= MAX_INDEX_BYTES and (self.ref, p) not in self.bad}
        known = self.packs.known_indexes(packs)
        unknown = [p for p in packs if p not in known]
        if unknown:
            with self._pool() as pool:
                for pack_id, entries in zip(unknown, pool.map(lambda p: self._read_index(p, packs[p]), unknown)):
                    if entries is not None:
                        self.packs.add_index(pack_id, packs[pack_id] or 0, entries)
        self.packs.set_remote_packs(self.ref, packs)
        return packs

    def _read_index(self, pack_id: str, pack_size: int | None) -> list[IndexEntry] | None:
        sink = _Bounded(MAX_INDEX_BYTES, f"{self.ref}: index of pack {pack_id[:16]}")
        try:
            self._sessions.get().download(pack_key(index_name(pack_id)), sink)  # type: ignore[arg-type]
        except (ObjectNotFound, _TooLarge):
            return None  # gone since the listing (a concurrent gc), or no index: its pack is hidden
        try:
            return decode_index(bytes(sink.data), pack_size, f"{self.ref}: index of pack {pack_id[:16]}")
        except CheckpointError:
            return None  # a bad index hides its pack; its chunks are fetched from others or sent again

    # -- download ---------------------------------------------------------------------

    def fetch(self, wanted: Mapping[bytes, int], progress: Progress | None = None, *, keep: bool = True) -> int:
        """Fetch ``wanted`` (chunk id -> plain size) into new local packs (or, without
        ``keep``, only check them); the bytes moved. A pack deleted since the listing (a
        concurrent gc repacked it: its live chunks went into new packs first) costs one new
        listing, and its chunks are fetched from wherever they are now."""
        moved, vanished = self._fetch(wanted, progress, keep=keep)
        if vanished:
            self.sync_index()
            more, gone = self._fetch(vanished, progress, keep=keep)
            moved += more
            if gone:
                raise RemoteIncomplete(f"{self.ref} deleted the pack holding chunk {next(iter(gone)).hex()[:16]} "
                                       f"while it was read, and lists no other ({len(gone)} chunk(s) missing)")
        return moved

    def _fetch(self, wanted: Mapping[bytes, int], progress: Progress | None, *,
               keep: bool) -> tuple[int, dict[bytes, int]]:
        """One pass of :meth:`fetch`: the bytes moved, and the chunks of packs found gone."""
        if not wanted:
            return 0, {}
        located = self.packs.remote_locate(self.ref, list(wanted))
        absent = [c for c in wanted if c not in located]
        if absent:
            raise RemoteIncomplete(f"{self.ref} holds no pack with chunk {absent[0].hex()[:16]} "
                                   f"({len(absent)} chunk(s) missing)")
        requests = _plan(located, wanted, self.packs.remote_pack_sizes(self.ref))
        moved = 0
        vanished: dict[bytes, int] = {}
        writer: PackWriter | None = None
        try:
            with self._pool() as pool:
                for frames, gone in _ordered(pool, self._fetch_one, requests, self._ahead):
                    vanished.update(gone)
                    for chunk, frame, plen in frames:
                        moved += len(frame)
                        if progress is not None:
                            progress(len(frame))
                        if not keep:
                            continue
                        if writer is None or not writer.fits(len(frame)):
                            if writer is not None:
                                self._keep(writer)
                            writer = PackWriter(self.tmp)
                        writer.add(chunk, frame, plen)
            if writer is not None:
                self._keep(writer)
                writer = None
        finally:
            if writer is not None:
                writer.discard()
        return moved, vanished

    def _keep(self, writer: PackWriter) -> None:
        """A full local pack of fetched chunks enters the store now: a killed download keeps it."""
        if writer.entries:
            self.packs.add(writer.finish())
        else:
            writer.discard()

    def _fetch_one(self, request: _Request) -> tuple[list[tuple[bytes, bytes, int]], dict[bytes, int]]:
        """The checked frames of one request, or, when its pack is gone, its chunks."""
        where = f"{self.ref}: pack {request.pack[:16]}"
        try:
            data = memoryview(self._sessions.get().read_range(pack_key(pack_name(request.pack)), request.offset,
                                                              request.length))
        except ObjectNotFound:
            return [], {chunk: plen for chunk, _, plen in request.chunks}
        frames = []
        for chunk, location, plen in request.chunks:
            start = location.offset - request.offset
            frame = data[start:start + location.clen]  # a view: the range is copied once, below
            try:
                open_frame(frame, chunk, plen, where)
            except CheckpointError:
                self.bad.add((self.ref, request.pack))
                self.packs.forget_index(request.pack)
                raise
            frames.append((chunk, bytes(frame), plen))
        return frames, {}

    # -- upload -----------------------------------------------------------------------

    def missing(self, chunks: set[bytes]) -> set[bytes]:
        """Those of ``chunks`` no listed pack of the backend holds (after :meth:`sync_index`)."""
        return chunks - set(self.packs.remote_locate(self.ref, list(chunks)))

    def send(self, chunks: set[bytes], progress: Progress | None = None) -> int:
        """Upload ``chunks`` (which the backend lacks) in packs; the bytes sent."""
        if not chunks:
            return 0
        located = self.packs.locate(list(chunks))
        absent = [c for c in chunks if c not in located]
        if absent:
            raise CheckpointError(f"the local store lacks chunk {absent[0].hex()[:16]} it was to upload")
        by_pack: dict[str, list[bytes]] = {}
        for chunk, location in located.items():
            by_pack.setdefault(location.pack, []).append(chunk)
        local_sizes = self.packs.local_packs()
        whole = [p for p, wanted in by_pack.items()
                 if len(wanted) == len(self.packs.chunks_of(p)) and _fits(local_sizes.get(p, 0), self.pack_limit)]
        rest = [c for p, wanted in by_pack.items() if p not in whole for c in wanted]
        sent = 0
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self.tmp) as scratch, self._pool() as pool:
            uploads = [(self.packs.pack_path(p), self.packs.index_path(p).read_bytes(), p) for p in whole]
            for pack in self._repack(rest, located, Path(scratch)):
                uploads.append((pack.path, pack.index, pack.pack_id))
            for size in _ordered(pool, self._send_one, uploads, self._ahead):
                sent += size
                if progress is not None:
                    progress(size)
        return sent

    def _repack(self, chunks: list[bytes], located: Mapping[bytes, Location], scratch: Path) -> Iterator[FinishedPack]:
        """New packs holding just ``chunks`` (their frames copied, not recompressed)."""
        writer: PackWriter | None = None
        for chunk in sorted(chunks, key=lambda c: (located[c].pack, located[c].offset)):
            location = located[chunk]
            frame = self.packs.frame(chunk, location)
            if writer is None or not writer.fits(len(frame)):
                if writer is not None:
                    yield writer.finish()
                writer = PackWriter(scratch, self.pack_limit or 0)
            writer.add(chunk, frame, location.plen)
        if writer is not None:
            yield writer.finish()

    def _send_one(self, upload: tuple[Path, bytes, str]) -> int:
        path, index, pack_id = upload
        backend = self._sessions.get()
        backend.upload(pack_key(pack_name(pack_id)), path)
        with tempfile.NamedTemporaryFile(dir=self.tmp, prefix="idx-") as f:
            f.write(index)
            f.flush()
            backend.upload(pack_key(index_name(pack_id)), Path(f.name))
        self.bad.discard((self.ref, pack_id))  # replaced by this run's good copy
        return path.stat().st_size

    def still_there(self, chunks: set[bytes]) -> set[bytes]:
        """List again: the chunks of ``chunks`` whose packs vanished since (a concurrent gc)."""
        self.sync_index()
        return self.missing(chunks)


def _fits(size: int, limit: int | None) -> bool:
    return limit is None or size <= limit


def _plan(located: Mapping[bytes, Location], wanted: Mapping[bytes, int],
          sizes: Mapping[str, int | None]) -> list[_Request]:
    """Whole packs where most is wanted, coalesced ranges elsewhere."""
    by_pack: dict[str, list[tuple[bytes, Location]]] = {}
    for chunk, location in located.items():
        by_pack.setdefault(location.pack, []).append((chunk, location))
    requests = []
    for pack, items in sorted(by_pack.items()):
        items.sort(key=lambda item: item[1].offset)
        size = sizes.get(pack) or 0
        wanted_bytes = sum(location.clen for _, location in items)
        if size and size <= RANGE_MAX and wanted_bytes >= WHOLE_PACK_SHARE * size:
            requests.append(_request(pack, items, wanted, start=0, end=size))
            continue
        group: list[tuple[bytes, Location]] = []
        for chunk, location in items:
            if group:
                start = group[0][1].offset
                end = group[-1][1].offset + group[-1][1].clen
                if location.offset - end > RANGE_GAP or location.offset + location.clen - start > RANGE_MAX:
                    requests.append(_request(pack, group, wanted))
                    group = []
            group.append((chunk, location))
        if group:
            requests.append(_request(pack, group, wanted))
    return requests


def _request(pack: str, items: list[tuple[bytes, Location]], wanted: Mapping[bytes, int], *,
             start: int | None = None, end: int | None = None) -> _Request:
    lo = items[0][1].offset if start is None else start
    hi = max(location.offset + location.clen for _, location in items) if end is None else end
    return _Request(pack, lo, hi - lo, tuple((chunk, location, wanted[chunk]) for chunk, location in items))


class _Workers:
    """``count`` daemon threads that run submitted calls. Not a ThreadPoolExecutor: its
    workers are joined when the interpreter exits, so a transfer frozen on a dead server
    would hold a cancelled run for a stall timeout or more. After one call fails no other
    one starts: what waits would only be thrown away, and a call started while the backend
    retries could go on sending after the run gave up."""

    def __init__(self, count: int):
        self._failure: BaseException | None = None
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        #: calls submitted and not done (done ones are dropped: they hold their results)
        self._futures: set[concurrent.futures.Future] = set()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name="gaia-transfer", daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, func, args = item
            if not future.set_running_or_notify_cancel():
                continue
            if self._failure is not None:
                future.set_exception(self._failure)
                continue
            try:
                future.set_result(func(*args))
            except BaseException as exc:  # noqa: BLE001 -- handed to the waiting thread
                self._failure = exc
                future.set_exception(exc)

    def submit(self, func, *args) -> concurrent.futures.Future:  # type: ignore[no-untyped-def]
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        self._calls.put((future, func, args))
        return future

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def map(self, func, items):  # type: ignore[no-untyped-def]
        return [future.result() for future in [self.submit(func, item) for item in items]]

    def shutdown(self, *, wait: bool) -> None:
        """Let the workers end; without ``wait``, calls not yet started never start."""
        if not wait:
            with self._lock:
                pending = list(self._futures)
            for future in pending:
                future.cancel()
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _ordered(pool: _Workers, func, items, ahead: int):  # type: ignore[no-untyped-def]
    """``func`` over ``items`` on the pool, results in order, at most ``ahead`` in flight
    (so memory stays bounded)."""
    pending: list[concurrent.futures.Future] = []
    for item in items:
        pending.append(pool.submit(func, item))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    while pending:
        yield pending.pop(0).result()


class _TooLarge(CheckpointError):
    """More bytes than an index can hold."""


class _Bounded:
    """An in-memory destination that refuses more than ``limit`` bytes."""

    def __init__(self, limit: int, what: str):
        self.limit, self.what = limit, what
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        if len(self.data) + len(data) > self.limit:
            raise _TooLarge(f"{self.what} is larger than {self.limit} bytes")
        self.data += data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.data = bytearray()
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0

    def flush(self) -> None:
        pass


__all__ = ["RemoteIncomplete", "Sessions", "Transfers"]
