"""Capture: walk the anchor's targets into entries and new chunks, in one pass.

The walk is depth-first with names sorted by their bytes (the canonical order of
:mod:`.entries`), ``lstat`` only, never through a link. Each entry is checked by the same
:class:`~gaia_core.checkpoints.entries.EntryChecker` restore uses, so capture refuses
what restore would and names the member. A regular file whose ``lstat`` matches the
tree's receipt is not read again: its digest, chunks and roots come from the receipt.
Other files are read, cut, hashed and scanned for the roots the tree embeds by worker
threads (BLAKE3, zstd and reads run without the GIL); only chunks no local pack holds
yet are compressed and appended to new packs. The entry list itself is stored as parts,
chunks like any other. Nothing is published here: the packs wait in ``staging`` for
:meth:`~gaia_core.checkpoints.store.Store.publish`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from gaia_core.anchors import Target
from gaia_core.checkpoints import chunking, collector
from gaia_core.checkpoints.entries import Entry, EntryChecker, PartWriter, UnsafeEntry
from gaia_core.checkpoints.packs import DEFAULT_LEVEL, DEFAULT_PACK_LIMIT, FinishedPack, PackWriter, compress
from gaia_core.checkpoints.packstore import Location, PackStore
from gaia_core.checkpoints.receipt import Cursor, Record, ReceiptWriter, record_of
from gaia_core.checkpoints.relocate import FileScanner, RootFinder
from gaia_core.checkpoints.smallfiles import (PROCESS_AFTER, Framed, HelperProcesses, check_size, open_regular,
                                             read_files)
from gaia_core.errors import CheckpointError

#: files, and bytes of small files, in flight between the walk and the packs: up to WINDOW
#: files, up to WIDE_WINDOW once helper processes read the small files or while the files
#: average WIDE_FILE bytes or more. Files of a few KiB keep the threads busy compressing; on
#: threads tiny ones are all Python, where more of them in flight only fight over the GIL
#: (50k files of 0-2 KiB: 2.1 s in a window of 256, 2.9 s in one of 4096; 1.9 s with helpers)
WINDOW, WIDE_WINDOW, WIDE_FILE = 256, 4096, 4096
INFLIGHT_BYTES = 64 << 20
#: chunks of a large file cut ahead of the walk (their compression runs in parallel)
STREAM_CHUNKS = 8
#: small files read by one worker task
BATCH_FILES, BATCH_BYTES = 128, 4 << 20
#: one reader a CPU: more threads than CPUs spend the time they gain on the GIL
_WORKERS = max(2, min(8, os.cpu_count() or 2))
#: helper processes that read small files (see :mod:`.smallfiles`); 0: threads only
_HELPERS = max(1, min(4, os.cpu_count() or 1))
_NO_ROOTS: Mapping[str, Path] = {}
_T = TypeVar("_T")


@dataclasses.dataclass
class TreeInfo:
    """What a capture wrote: the manifest's ``tree`` and relocation data, and the new packs."""

    entries: int
    files: int
    size: int  # bytes of file content
    packed: int  # compressed bytes of the distinct chunks the tree needs
    chunks: int  # distinct chunks the tree needs, parts included
    new_bytes: int  # compressed bytes written into new packs
    parts: list[dict]
    embedded: list[dict]
    external_links: list[str]
    packs: list[FinishedPack]
    #: per target name: the receipt written in staging, to be moved beside the marker
    receipts: dict[str, Path]

    def tree(self) -> dict:
        return {"hash": chunking.HASH, "chunking": chunking.CHUNKING, "entries": self.entries,
                "files": self.files, "size": self.size, "packed": self.packed, "chunks": self.chunks,
                "parts": self.parts}


@dataclasses.dataclass(slots=True)
class _Pending:
    entry: Entry
    record: Record
    name: bytes  # "<target>/<path>" for the root finder
    path: bytes  # where the file is, for reading
    reuse: Record | None = None
    future: concurrent.futures.Future | None = None
    stream: queue.Queue | None = None
    #: the item's place in its batch's results (small files are read in batches)
    index: int | None = None
    #: the receipt's line for it, when the record the capture takes is the same (a file the
    #: receipt vouches for, recorded at its captured mtime): written again as it is
    line: bytes | None = None


@dataclasses.dataclass(slots=True)
class _FileData:
    digest: bytes
    #: (chunk id, plain size, frame or where a local pack already has it) of a small
    #: file; a large file's chunks come through ``_Pending.stream`` instead
    chunks: list[tuple[bytes, int, bytes | Location | None]]
    found: frozenset[int] = frozenset()
    binary: bool = False


_END = object()


class _Batch:
    """Small files waiting to be read by one worker task."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor, reader: _Reader):
        self.pool, self.reader = pool, reader
        self.items: list[tuple[_Pending, os.stat_result]] = []
        self.size = 0
        self.seen, self.started = 0, False

    def add(self, item: _Pending, st: os.stat_result) -> None:
        item.index = len(self.items)
        self.items.append((item, st))
        self.size += st.st_size
        self.seen += 1
        if self.seen >= PROCESS_AFTER and self.reader.helpers is not None and not self.started:
            self.reader.helpers.start()
            self.started = True
        if len(self.items) >= BATCH_FILES or self.size >= BATCH_BYTES:
            self.submit()

    def submit(self) -> None:
        if not self.items:
            return
        future = self.pool.submit(self.reader.read_batch,
                                  [(i.path, i.name, st.st_size, st.st_ino) for i, st in self.items])
        for item, _ in self.items:
            item.future = future
        self.items, self.size = [], 0


def _done(call: Callable[[], FinishedPack]) -> concurrent.futures.Future[FinishedPack]:
    """``call()`` made here, as a future (its error kept for the one who asks)."""
    future: concurrent.futures.Future[FinishedPack] = concurrent.futures.Future()
    try:
        future.set_result(call())
    except BaseException as exc:
        future.set_exception(exc)
    return future


class _Packer:
    """New chunks into packs of bounded size; knows which chunks the tree references."""

    def __init__(self, packs: PackStore, staging: Path, limit: int, progress: Callable[[int], None] | None):
        self.packs = packs
        self.staging = staging
        self.limit = limit
        self.writer: PackWriter | None = None
        self.finished: list[FinishedPack] = []
        #: full packs being sealed, in order (see :meth:`_roll`)
        self._sealing: list[concurrent.futures.Future[FinishedPack]] = []
        self._sealer: concurrent.futures.ThreadPoolExecutor | None = None
        #: chunk id -> compressed size of every distinct chunk referenced (this tree's)
        self.referenced: dict[bytes, int] = {}
        #: chunks written into this capture's packs (workers read it to skip compressing them)
        self.added: set[bytes] = set()
        #: packs of the store this tree uses (touched once each)
        self.touched: set[str] = set()
        self.new_bytes = 0
        self._progress = progress
        #: where the local store holds chunks of unchanged files (None: it does not)
        self._looked: dict[bytes, Location | None] = {}

    def reference(self, chunk: bytes, plen: int, stored: bytes | Location | None) -> None:
        """Use ``chunk``. ``stored`` is its frame, stored here unless a pack already holds the
        chunk, or where a pack of the store holds it (None: look it up). A pack of the store
        that the tree uses is touched, so gc's grace period spares it until it is published."""
        if chunk in self.referenced:
            return
        if isinstance(stored, bytes):
            if self.writer is None or not self.writer.fits(len(stored)):
                self._roll()
            assert self.writer is not None
            entry = self.writer.add(chunk, stored, plen)
            self.added.add(chunk)
            self.new_bytes += entry.clen
            self.referenced[chunk] = entry.clen
            return
        if stored is None:
            stored = self.packs.locate([chunk]).get(chunk)
            if stored is None:
                raise CheckpointError(f"chunk {chunk.hex()[:16]} vanished from the local store during capture")
        if stored.pack not in self.touched:
            self.touched.add(stored.pack)
            self.packs.touch(stored.pack)
        self.referenced[chunk] = stored.clen

    def look_up(self, items: Sequence[_Pending]) -> None:
        """Where the local store holds the chunks of the receipt's files among ``items``: one
        query for a window of unchanged files, not one a file (:meth:`looked_up` takes them)."""
        wanted = [c for item in items if item.reuse is not None
                  for c, _ in item.reuse.chunks or ((item.reuse.digest, 0),) if c not in self._looked]
        if not wanted:
            return
        found = self.packs.locate(wanted)
        for chunk in wanted:
            self._looked[chunk] = found.get(chunk)

    def has_looked(self, reuse: Record) -> bool:
        return (reuse.chunks[0][0] if reuse.chunks else reuse.digest) in self._looked

    def looked_up(self, chunks: Sequence[bytes]) -> dict[bytes, Location]:
        """The locations :meth:`look_up` found for ``chunks`` (forgotten once taken)."""
        located = {}
        for chunk in chunks:
            where = self._looked.pop(chunk) if chunk in self._looked else self.packs.locate([chunk]).get(chunk)
            if where is not None:
                located[chunk] = where
        return located

    def _roll(self) -> None:
        """A new pack; the full one is sealed (fsynced) on a thread of its own meanwhile: the
        kernel writes a pack's pages back only when asked, so an fsync waits for the disk
        (0.2 s for the 158 MiB of the bench's corpus), and the capture goes on beside it."""
        if self.writer is not None:
            if self._sealer is None:
                self._sealer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gaia-seal")
            self._sealing.append(self._sealer.submit(self.writer.finish))
        self.writer = PackWriter(self.staging, self.limit)

    def finish(self) -> list[FinishedPack]:
        """Every pack, sealed (the last one here: the capture's data is all there)."""
        writer, self.writer = self.writer, None
        if writer is not None and writer.entries:
            self._sealing.append(_done(writer.finish))
        elif writer is not None:
            writer.discard()
        self._close_sealer()
        sealed = [future.result() for future in self._sealing]  # one that failed discarded itself
        self.finished.extend(sealed)
        self._sealing = []
        return self.finished

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.discard()
        self._close_sealer()
        for future in self._sealing:
            if future.exception() is None:
                self.finished.append(future.result())
        for pack in self.finished:
            pack.path.unlink(missing_ok=True)

    def _close_sealer(self) -> None:
        if self._sealer is not None:
            self._sealer.shutdown(wait=True)
            self._sealer = None


class _Reader:
    """Reads, cuts, hashes and scans files on worker threads; compresses only new chunks."""

    def __init__(self, packs: PackStore, finder: RootFinder, added: set[bytes],
                 helpers: HelperProcesses | None = None, level: int = DEFAULT_LEVEL):
        self.packs = packs
        self.finder = finder
        self._added = added
        #: zstd's level for new chunks
        self.level = level
        #: processes that read batches of small files once they run (see :mod:`.smallfiles`)
        self.helpers = helpers
        self._local = threading.local()
        #: set when the capture fails: workers streaming a large file stop waiting for it
        self.cancelled = threading.Event()
        #: compresses the chunks of large files (never waits for anything: no deadlock)
        self.compressors = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="gaia-compress")

    @property
    def helped(self) -> bool:
        """Whether helper processes read the small files now."""
        return self.helpers is not None and self.helpers.running

    def _scanner(self) -> FileScanner | None:
        if not hasattr(self._local, "scanner"):
            self._local.scanner = self.finder.scanner()
        return self._local.scanner

    def _stored(self, chunk: bytes, data: bytes) -> bytes | Location | None:
        """The chunk's frame, or where a pack holds it already (None: this capture's packs)."""
        if chunk in self._added:
            return None
        known = self.packs.locate([chunk]).get(chunk)
        return known if known is not None else compress(data, self.level)

    def _compressing(self, chunk: bytes, data: bytes) -> concurrent.futures.Future:
        """:meth:`_stored` on the compression pool."""
        return self.compressors.submit(self._stored, chunk, data)

    def read(self, path: bytes, name: bytes, st: os.stat_result, stream: queue.Queue | None = None) -> _FileData:
        """A small file's content, or (``stream`` given) a large file's chunks put into ``stream``
        as they are cut, then the end marker: memory stays bounded whatever the file's size."""
        try:
            fd = open_regular(path, name, st.st_ino)
            try:
                scanner = self._scanner()
                if scanner is not None:
                    scanner.start()
                hasher = chunking.ContentHasher() if stream is not None else None
                chunks: list[tuple[bytes, int, bytes | Location | None]] = []
                total = 0
                for data in chunking.cut(fd, st.st_size):
                    total += len(data)
                    if scanner is not None:
                        scanner.feed(data, total >= st.st_size)
                    chunk = chunking.chunk_id(data)
                    if hasher is not None and stream is not None:
                        hasher.update(data)
                        # a large file's chunks compress on the other workers meanwhile: one
                        # file of hundreds of MiB must not hold one core while the rest wait
                        self._put(stream, (chunk, len(data), self._compressing(chunk, data)))
                    else:
                        chunks.append((chunk, len(data), self._stored(chunk, data)))
                check_size(name, total, st.st_size)
                digest = hasher.digest() if hasher is not None else (chunks[0][0] if chunks else b"")
                return _FileData(digest, chunks, *_found(scanner))
            finally:
                os.close(fd)
        finally:
            if stream is not None:
                self._put(stream, _END)

    def read_batch(self, files: list[tuple[bytes, bytes, int, int]]) -> list[_FileData]:
        """Small files read together: one task and one index query for many files (most of a
        build tree is files of a few KiB, where per-file overhead is what costs); by a helper
        process once they run, which compresses what is new too. Only the first file of a
        content that neither the store nor this capture holds is compressed: a later one of
        the same batch is stored with it (None), as one of a later batch is."""
        added, known = self._added, dict[bytes, Location]()

        def new(digests: list[bytes]) -> list[int]:
            known.update(self.packs.locate(digests))
            seen: set[bytes] = set()
            picked = []
            for i, digest in enumerate(digests):
                if digest not in added and digest not in known and digest not in seen:
                    picked.append(i)
                seen.add(digest)
            return picked

        read: Sequence[Framed] | None = self.helpers.read(files, new, self.level) if self.helpers is not None else None
        framed = read is not None
        if read is None:
            read = read_files(files, self._scanner())
            known.update(self.packs.locate([digest for digest, *_ in read]))
        seen: set[bytes] = set()

        def stored(digest: bytes, data: bytes | None) -> bytes | Location | None:
            if digest in added or digest in seen:
                return None
            seen.add(digest)
            return known.get(digest) or (data if framed else compress(data, self.level))  # type: ignore[arg-type]

        return [_FileData(digest, [(digest, size, stored(digest, data))], found, binary)
                for (digest, data, found, binary), (_, _, size, _) in zip(read, files)]

    def _put(self, stream: queue.Queue, item: object) -> None:
        """Hand a piece to the walk; give up when the capture ended without reading on."""
        while True:
            try:
                stream.put(item, timeout=0.2)
                return
            except queue.Full:
                if self.cancelled.is_set():
                    raise CheckpointError("capture cancelled") from None


def _found(scanner: FileScanner | None) -> tuple[frozenset[int], bool]:
    return (frozenset(scanner.found), scanner.binary) if scanner is not None else (frozenset(), False)


def walk(root: Path, name: str, exclude: Sequence[str]) -> Iterator[tuple[str, bytes, os.stat_result]]:
    """``(entry path, file path, lstat)`` of ``root`` and everything under it, in canonical
    order; what vanishes while it is walked is an error (an update in place walks the tree
    it changes with a listing of its own, in :mod:`.treewrite`)."""
    top = os.fsencode(root)
    yield name, top, os.lstat(top)
    excluded = {os.fsencode(e) for e in exclude}
    stack: list[Iterator[tuple[str, bytes, os.stat_result]]] = [_children(top, name, excluded)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if stat.S_ISDIR(item[2].st_mode):
            stack.append(_children(item[1], item[0], set()))


def ahead(items: Iterator[_T], *, batch: int = 256, depth: int = 16) -> Iterator[_T]:
    """``items``, produced on a thread of their own ``batch`` at a time, up to ``depth``
    batches ahead: the walk's ``lstat`` calls then never make the capture's main thread
    wait for the GIL to come back (with the workers busy, that wait was most of a tiny
    file's cost). An error of the walk is raised here, where it would have been."""
    pipe: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        chunk: list[_T] = []
        try:
            for item in items:
                chunk.append(item)
                if len(chunk) >= batch:
                    if not _offer(pipe, chunk, stop):
                        return
                    chunk = []
            end: object = _END
        except BaseException as exc:  # handed to the consumer, after what came before it
            end = exc
        if _offer(pipe, chunk, stop):
            _offer(pipe, end, stop)

    thread = threading.Thread(target=produce, name="gaia-walk", daemon=True)
    thread.start()
    try:
        while True:
            got = pipe.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        thread.join()


def _offer(pipe: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer went away; whether it was put."""
    while not stop.is_set():
        try:
            pipe.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _children(directory: bytes, prefix: str, excluded: set[bytes]) -> Iterator[tuple[str, bytes, os.stat_result]]:
    with os.scandir(directory) as it:
        items = sorted((e.name, e.path) for e in it if e.name not in excluded)
    for child, path in items:
        yield f"{prefix}/{os.fsdecode(child)}", path, os.lstat(path)


@collector.paused()
def capture_tree(targets: Sequence[Target], packs: PackStore, staging: Path, *,
                 roots: Mapping[str, Path] = _NO_ROOTS, exclude: Sequence[str] = (),
                 receipts: Mapping[str, Path | None] | None = None, receipt_header: Mapping | None = None,
                 pack_limit: int = DEFAULT_PACK_LIMIT, level: int = DEFAULT_LEVEL,
                 progress: Callable[[int], None] | None = None) -> TreeInfo:
    """Capture ``targets`` into new packs in ``staging``; return what the manifest records.

    ``exclude`` names files at each target's root that are left out (the marker, the
    receipt). ``receipts`` maps a target name to the receipt of its tree (entries whose
    ``lstat`` matches are not read). ``level``: zstd's, for the chunks this capture stores.
    ``progress(n)``: n more bytes were read; it may raise to cancel.
    """
    finder = RootFinder({k: os.fspath(v) for k, v in roots.items()}, list(targets))
    checker = EntryChecker([t.name for t in targets])
    packer = _Packer(packs, staging, pack_limit, progress)
    helpers = HelperProcesses(finder.needles, _HELPERS) if _HELPERS > 0 else None
    reader = _Reader(packs, finder, packer.added, helpers, level)
    parts: list[dict] = []
    counts = {"files": 0, "size": 0}

    def emit_part(data: bytes, count: int) -> None:
        part = chunking.chunk_id(data)
        packer.reference(part, len(data), packs.locate([part]).get(part) or compress(data, level))
        parts.append({"id": part.hex(), "size": len(data), "entries": count})

    writer = PartWriter(emit_part)
    written: dict[str, Path] = {}
    heads: dict[tuple[int, int], str] = {}
    pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="gaia-capture")
    receipt_writers: list[ReceiptWriter] = []
    try:
        for target in targets:
            _check_target(target)
            out = ReceiptWriter(staging / f"receipt-{target.name}", dict(receipt_header or {}))
            receipt_writers.append(out)
            receipt_path = (receipts or {}).get(target.name)
            cursor = Cursor(_records(receipt_path)) if receipt_path else None
            pending: collections.deque[_Pending] = collections.deque()
            batch = _Batch(pool, reader)
            inflight = 0

            def finish(item: _Pending, out: ReceiptWriter = out, pending: collections.deque = pending) -> None:
                if item.reuse is not None and not packer.has_looked(item.reuse):
                    packer.look_up([item, *pending])
                _finish(item, packer, reader, progress)
                checker.check(item.entry)
                writer.add(item.entry)
                if item.line is not None:
                    out.add_line(item.line)
                else:
                    out.add(item.record)

            for path, fs_path, st, link in ahead(_with_links(walk(target.path, target.name, exclude))):
                entry, record = _entry(path, st, link, heads)
                item = _Pending(entry, record, os.fsencode(path), fs_path)
                if entry.type == "f":
                    counts["files"] += 1
                    counts["size"] += entry.size
                    if entry.size:
                        reuse = cursor.get(path) if cursor else None
                        if reuse is not None and reuse.matches(st) and reuse.digest is not None \
                                and not reuse.relocated:
                            item.reuse = reuse
                        elif entry.size > chunking.SMALL_FILE:
                            # tasks must reach the pool in walk order: a large file's worker
                            # waits for the walk to read its chunks, so an earlier file's task
                            # queued behind it would never run
                            batch.submit()
                            item.stream = queue.Queue(STREAM_CHUNKS)
                            item.future = pool.submit(reader.read, fs_path, item.name, st, item.stream)
                            inflight += chunking.SMALL_FILE
                        else:
                            batch.add(item, st)
                            inflight += entry.size
                elif entry.type == "l":
                    finder.member(item.name, "symlink", os.fsencode(entry.link or ""), 0)
                pending.append(item)
                while inflight > INFLIGHT_BYTES or len(pending) > WINDOW and (
                        len(pending) > WIDE_WINDOW or not reader.helped and inflight < len(pending) * WIDE_FILE):
                    done = pending.popleft()
                    if done.future is None and done.index is not None:
                        batch.submit()
                    if done.future is not None:
                        inflight -= min(done.entry.size, chunking.SMALL_FILE)
                    finish(done)
            batch.submit()
            while pending:
                finish(pending.popleft())
            written[target.name] = out.path
        writer.flush()
        checker.finish()
        finished = packer.finish()
        for out in receipt_writers:
            out.commit()
    except BaseException:
        reader.cancelled.set()
        pool.shutdown(wait=True, cancel_futures=True)
        reader.compressors.shutdown(wait=True, cancel_futures=True)
        if helpers is not None:
            helpers.close()
        packer.discard()
        for out in receipt_writers:
            out.discard()
        raise
    pool.shutdown(wait=True)
    reader.compressors.shutdown(wait=True)
    if helpers is not None:
        helpers.close()
    return TreeInfo(
        entries=checker.entries, files=counts["files"], size=counts["size"],
        packed=sum(packer.referenced.values()), chunks=len(packer.referenced), new_bytes=packer.new_bytes,
        parts=parts, embedded=finder.embedded, external_links=finder.external_links, packs=finished,
        receipts=written,
    )


def _records(path: Path) -> Iterator[Record]:
    from gaia_core.checkpoints.receipt import records

    return records(path)


def _check_target(target: Target) -> None:
    try:
        st = os.lstat(target.path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint target {target.name!r}: {target.path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"checkpoint target {target.name!r}: {target.path} is not a directory")


def _with_links(walked: Iterator[tuple[str, bytes, os.stat_result]]) -> Iterator[tuple[str, bytes, os.stat_result,
                                                                                   str | None]]:
    """The walk, with the text of each link (read on the walk's thread, see :func:`ahead`)."""
    for path, fs_path, st in walked:
        yield path, fs_path, st, os.fsdecode(os.readlink(fs_path)) if stat.S_ISLNK(st.st_mode) else None


def _entry(path: str, st: os.stat_result, link: str | None, heads: dict[tuple[int, int], str]) -> tuple[Entry, Record]:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        entry = Entry(path, "d", mode, st.st_mtime_ns)
    elif stat.S_ISLNK(st.st_mode):
        entry = Entry(path, "l", mode, st.st_mtime_ns, link=link)
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in heads:
            entry = Entry(path, "h", mode, st.st_mtime_ns, link=heads[key])
        else:
            if st.st_nlink > 1:
                heads[key] = path
            entry = Entry(path, "f", mode, st.st_mtime_ns, size=st.st_size, head=st.st_nlink > 1)
    else:
        kind = ("a fifo" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device")
        raise UnsafeEntry(f"refusing to capture the checkpoint: member {path[:200]!r}: {kind} is not allowed")
    return entry, record_of(path, st, link=entry.link if entry.type == "l" else None)


def _finish(item: _Pending, packer: _Packer, reader: _Reader, progress: Callable[[int], None] | None) -> None:
    entry, record, finder = item.entry, item.record, reader.finder
    if item.reuse is not None:
        reuse = item.reuse
        chunk_list = reuse.chunks or ((reuse.digest, entry.size),)
        located = packer.looked_up([c for c, _ in chunk_list])
        if all(c in located or c in packer.referenced for c, _ in chunk_list):
            for chunk, plen in chunk_list:
                packer.reference(chunk, plen, located.get(chunk))
            entry.digest, entry.chunks = reuse.digest, reuse.chunks
            record.digest, record.chunks, record.embedded = reuse.digest, reuse.chunks, reuse.embedded
            if reuse.raw is not None and reuse.captured_ns is None and reuse.mode == record.mode:
                item.line = reuse.raw
            if reuse.embedded:
                finder.record_embedded(item.name, reuse.embedded[0], reuse.embedded[1])
            return
        # a chunk the receipt names left the local store (gc): read the file after all
        item.index = None
        item.stream = queue.Queue(STREAM_CHUNKS) if entry.size > chunking.SMALL_FILE else None
        item.future = _now(reader.read, item.path, item.name, os.lstat(item.path), item.stream)
    if item.future is None:
        return
    if item.stream is None and item.index is not None:  # a small file of a batch: one chunk
        data = item.future.result()[item.index]
        ((chunk, plen, stored),) = data.chunks
        packer.reference(chunk, plen, stored)
        if progress is not None:
            progress(plen)
        entry.digest = record.digest = data.digest
        if data.found:
            _record_roots(item, data, finder)
        return
    chunk_list = []
    result = item.future.result() if item.stream is None else None
    data: _FileData = result[item.index] if item.index is not None else result  # type: ignore[index,assignment]
    pieces = iter(item.stream.get, _END) if item.stream is not None else data.chunks
    for chunk, plen, stored in pieces:
        if isinstance(stored, concurrent.futures.Future):
            stored = stored.result()
        packer.reference(chunk, plen, stored)
        chunk_list.append((chunk, plen))
        if progress is not None:
            progress(plen)
    if item.stream is not None:
        data = item.future.result()
    entry.digest = data.digest
    entry.chunks = tuple(chunk_list) if entry.size > chunking.SMALL_FILE else None
    record.digest, record.chunks = entry.digest, entry.chunks
    _record_roots(item, data, finder)


def _record_roots(item: _Pending, data: _FileData, finder: RootFinder) -> None:
    added = finder.record_file(item.name, data.found, data.binary)
    if added is not None:
        item.record.embedded = (added["kind"], tuple(added["roots"]))


def _now(func: Callable, *args: object) -> concurrent.futures.Future:
    """Run ``func`` on a thread of its own, its outcome in a future (a large file streams into
    a queue, which must not fill up while nobody reads it)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # handed to whoever reads the future
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


__all__ = ["TreeInfo", "capture_tree", "walk"]
