"""Restore's writer: checked entries into a tree, files written by several threads or
helper processes.

:func:`write_tree` fills an empty directory (a full restore's staging dir, swapped in
afterwards); :func:`update_tree` brings a tree that holds an earlier checkpoint to a new
one in place, writing only what differs. Both take entries that already passed
:class:`~gaia_core.checkpoints.entries.EntryChecker` (names plain, parents listed before
children, no path through a link) and chunks from the local pack store, each checked
against its id as it is read. Files are created with ``O_EXCL | O_NOFOLLOW`` and never
get set-id bits or a foreign owner (a large file is created first, then written in pieces
by several workers at their offsets); directories get their modes and mtimes last,
deepest first, so writing into them does not change what was restored. A full restore of
many files has its new files, links and large files' pieces written by helper processes
(:mod:`.smallfiles`), started at once; others start them once many files were handed out.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import os
import queue
import shutil
import stat
import sys
import threading
import time
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence, Set
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.checkpoints import chunking, collector
from gaia_core.checkpoints.entries import Entry, sort_key
from gaia_core.checkpoints.mtimes import STEP_NS, Placement, distinct_sorted, filesystem_now_ns, fit_placement
from gaia_core.checkpoints.receipt import (RECEIPT, Cursor, ReceiptDraft, Record, kept_line, line_path, lines,
                                          record_of)
from gaia_core.checkpoints.packstore import ChunkMissing, Location, PackStore
from gaia_core.checkpoints.smallfiles import (PROCESS_AFTER, ChunkCorruptIn, HelperProcesses, create_new, make_link,
                                             pwrite_all, settle_new, write_all)
from gaia_core.errors import CheckpointError

_SETID = stat.S_ISUID | stat.S_ISGID
_REGULAR, _DIRECTORY = stat.S_IFREG, stat.S_IFDIR
#: how a name on disk becomes an entry's (as os.fsdecode does it)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
#: one writer a CPU: on a fresh journaled ext4, 2 writers restore the 493 MiB bench corpus
#: in 0.93-1.03 s on 2 CPUs, 4 in 1.04-1.21 s (more threads spend what they gain on the GIL)
_WORKERS = max(2, min(8, os.cpu_count() or 2))
#: helper processes that write new small files (see :mod:`.smallfiles`); 0: threads only
_HELPERS = max(1, min(4, os.cpu_count() or 1))
#: seconds the workers of a restore that started its helpers at once wait for them at most
_HELPERS_WAIT = 1.0
#: requests a helper started at once holds (the next one waits in its pipe while it works), and
#: so workers a helper: 1 left each helper idle for 0.1 s of 1.2 s, between an answer and the next
_DEPTH = 2
#: file entries whose chunks are looked up together (the first batch of a restore that starts
#: its helpers at once: they get their first files sooner; an update's threads writing its
#: first files while it walks the tree slowed the walk down)
_BATCH, _FIRST_BATCH = 512, 64
#: files written by one worker task (a directory's files end a task past a quarter of either); a file
#: larger than _GROUP_BYTES is written in pieces of about that size, a task each
_GROUP_FILES, _GROUP_BYTES = 64, 4 << 20
#: the temporary a file is written to before it replaces the one an update found
_NEW_PREFIX = b".gaia-new."
#: how a file is written: into a new name, over the one there, or only if that one differs;
#: or a symlink made
_NEW, _REPLACE, _VERIFY, _LINK = 0, 1, 2, 3


@dataclasses.dataclass
class WriteInfo:
    entries: int = 0
    written: int = 0  # bytes of file content written
    files_written: int = 0
    kept: int = 0  # entries an update found as they should be
    removed: int = 0  # entries an update deleted
    #: files restored without their setuid/setgid bits
    stripped_setid: list[str] = dataclasses.field(default_factory=list)
    #: the placement the entries were written with (write_tree's ``place``)
    placement: Placement | None = None


class _Writer:
    def __init__(self, top: Callable[[str], Path], packs: PackStore, progress: Callable[[int], None] | None, *,
                 dir_mtimes: bool = True, helpers_at_once: bool = False):
        self.top = top  # the directory of a target, by name
        self.dir_mtimes = dir_mtimes  # False: an update, whose placement sets them
        self.packs = packs
        self.progress = progress
        self.info = WriteInfo()
        self.dirs: list[tuple[bytes, int, int]] = []  # (path, mode, mtime_ns)
        self.links: list[tuple[bytes, bytes]] = []  # hard links: (path, head path)
        early = helpers_at_once and _HELPERS > 0
        self.workers = _HELPERS * _DEPTH if early else _WORKERS
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="gaia-restore")
        #: tasks handed to the workers and not collected yet, and those of them that ended, in
        #: the order they ended (a wait on every task for the first to end cost a restore of
        #: 10,000 files 40 ms of the GIL)
        self.pending = 0
        self.ended: queue.SimpleQueue[concurrent.futures.Future] = queue.SimpleQueue()
        self.batch: list[tuple[bytes, Entry, int]] = []
        self._lock = threading.Lock()
        self._tops: dict[str, bytes] = {}
        self.rewritten: set[str] = set()  # entries written after all, by verify
        self.umask = _umask()
        self.large: set[_LargeFile] = set()  # large files written in pieces, until their last piece ends
        #: processes that write batches of new small files once they run (see :mod:`.smallfiles`)
        self.helpers = HelperProcesses([], _HELPERS, _DEPTH if early else 1, fork=True) if _HELPERS > 0 else None
        self._handed = 0  # files handed to the workers so far
        self._first_batch = _FIRST_BATCH if early else _BATCH
        self._pack_paths: dict[str, str] = {}  # pack id -> its file, as a helper opens it
        #: until when the workers wait for helpers started at once, rather than write themselves
        self.helpers_by = 0.0
        if early:
            assert self.helpers is not None
            self.helpers.start()
            self.helpers_by = time.monotonic() + _HELPERS_WAIT
        #: an update's: the directories it creates, replaces or removes entries in
        self.changed: set[bytes] | None = None

    def path(self, entry_path: str) -> bytes:
        """Where an entry goes: its target's directory, then the rest of its path."""
        top, _, rest = entry_path.partition("/")
        directory = self._tops.get(top)
        if directory is None:
            directory = self._tops[top] = os.fsencode(self.top(top))
        return directory + b"/" + rest.encode("utf-8", "surrogateescape") if rest else directory

    def mtime(self, entry: Entry) -> int:
        """The mtime ``entry`` is written with: its placed one (when the placement is known
        before the write, :func:`write_tree`'s ``place``), or the captured one."""
        placement = self.info.placement
        return entry.mtime_ns if placement is None else placement.placed_ns(entry.mtime_ns)

    def mode(self, entry: Entry, *, note: bool = True) -> int:
        if note and entry.mode & _SETID:
            self.info.stripped_setid.append(entry.path)
        return entry.mode & ~_SETID

    # -- entries ------------------------------------------------------------------------

    def directory(self, path: bytes, entry: Entry, *, found: os.stat_result | None = None) -> None:
        """Make a directory (``found``: an update found it there, with this lstat)."""
        if found is None:
            os.mkdir(path, 0o700)
        mode = self.mode(entry)
        if found is None or stat.S_IMODE(found.st_mode) != mode or self.dir_mtimes:
            self.dirs.append((path, mode, self.mtime(entry)))  # its mode (and mtime) set at the end

    def symlink(self, path: bytes, entry: Entry) -> None:
        """Made by the workers with the files: a link is a leaf whose directory exists, and a
        system call on this thread waits for the GIL to come back from them (0.5 ms a link)."""
        assert entry.link is not None
        self._add((path, entry, _LINK))

    def file(self, path: bytes, entry: Entry, *, replace: bool = False, verify: bool = False) -> None:
        """Write a file; ``replace``: over an existing one, through a temporary beside it;
        ``verify``: only if the one there does not hold the entry's content (read and hashed)."""
        self._add((path, entry, _VERIFY if verify else _REPLACE if replace else _NEW))

    def _add(self, item: tuple[bytes, Entry, int]) -> None:
        if not self._handed and len(self.batch) >= self._first_batch and \
                _parent(item[0]) != _parent(self.batch[-1][0]):
            self.flush()  # the first batch, once a directory's files are in it
        self.batch.append(item)
        if len(self.batch) >= _BATCH:
            self.flush()

    def hard_link(self, path: bytes, entry: Entry) -> None:
        assert entry.link is not None
        self.links.append((path, self.path(entry.link)))

    def flush(self) -> None:
        """Look the batch's chunks up in one query and hand its files to the workers, small
        ones several to a task (per-file overhead is what costs on a tree of small files),
        one directory's files to as few tasks as their bytes allow (threads that create
        files in the same directory at once wait on its lock), a large file in pieces that
        several workers write at once (one thread would take a third of a second for a
        100 MB binary while the others wait)."""
        if not self.batch:
            return
        wanted = [c for _, e, _ in self.batch for c, _ in e.chunk_list()]
        located = self.packs.locate(wanted) if wanted else {}
        group: list[tuple[bytes, Entry, list[Location], int]] = []
        size, directory = 0, b""
        for path, entry, how in self.batch:
            parent = _parent(path)
            if group and (size >= _GROUP_BYTES or len(group) >= _GROUP_FILES or
                          (parent != directory and (size >= _GROUP_BYTES >> 2 or len(group) >= _GROUP_FILES >> 2))):
                self._submit(group)
                group, size = [], 0
            directory = parent
            chunks = entry.chunk_list()
            try:
                locations = [located[c] for c, _ in chunks]
            except KeyError as exc:
                raise ChunkMissing(f"the local store lacks chunk {exc.args[0].hex()[:16]} of {entry.path[:200]!r}") \
                    from None
            if entry.size > _GROUP_BYTES and len(chunks) > 1 and how in (_NEW, _REPLACE):
                self._split(path, entry, locations, how == _REPLACE)
                continue
            group.append((path, entry, locations, how))
            size += entry.size
        if group:
            self._submit(group)
        self.batch = []
        if self.pending > 4 * self.workers:
            self._collect(2 * self.workers)

    def _submit(self, group: list[tuple[bytes, Entry, list[Location], int]]) -> None:
        self._handed += len(group)
        if self.helpers is not None and self._handed >= PROCESS_AFTER:
            self.helpers.start()
        self._hand(self._write_files, group)

    def _split(self, path: bytes, entry: Entry, locations: list[Location], replace: bool) -> None:
        """Create a large file here and hand its chunks to the workers in pieces of about
        ``_GROUP_BYTES``, each written at its offset."""
        pieces: list[tuple[int, list[tuple[bytes, Location, int]]]] = []
        offset = start = 0
        run: list[tuple[bytes, Location, int]] = []
        for (chunk, plen), location in zip(entry.chunk_list(), locations):
            run.append((chunk, location, plen))
            offset += plen
            if offset - start >= _GROUP_BYTES:
                pieces.append((start, run))
                start, run = offset, []
        if run:
            pieces.append((start, run))
        large = _LargeFile(self, path, entry, replace, len(pieces))
        self.large.add(large)
        for start, run in pieces:
            self._hand(self._write_piece, large, start, run)

    def _hand(self, task: Callable[..., int], *args: object) -> None:
        future = self.pool.submit(task, *args)
        future.add_done_callback(self.ended.put)
        self.pending += 1

    def _helped(self) -> bool:
        """Whether helper processes run (waiting a little for those started at once: files
        the workers write meanwhile cost more, and slow the helpers' start down)."""
        if self.helpers is None:
            return False
        if not self.helpers.running and self.helpers_by:
            self.helpers.wait_running(self.helpers_by)
        return self.helpers.running

    def _write_piece(self, large: _LargeFile, offset: int, run: list[tuple[bytes, Location, int]]) -> int:
        """Write a piece of a large file at its offset: by a helper process once they run."""
        written, ok = 0, False
        try:
            helped = None
            if self._helped():
                assert self.helpers is not None
                with self._damaged(run):
                    helped = self.helpers.write_piece((large.path, large.created, offset, self._chunks_for_helper(run)))
            if helped is not None:
                written = helped
            else:
                for data in self.packs.read_run(run):
                    pwrite_all(large.fd, data, offset + written)
                    written += len(data)
            ok = True
        finally:
            large.piece_done(ok)
        with self._lock:
            self.info.written += written
        return written

    def _collect(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` tasks are left, taking them as they end (not in the
        order given: the oldest may be a large file's piece while others are done)."""
        while self.pending > keep:
            future = self.ended.get()
            self.pending -= 1
            size = future.result()
            if self.progress is not None and size:
                self.progress(size)  # here, not in the workers: it may raise to cancel

    def _write_files(self, group: list[tuple[bytes, Entry, list[Location], int]]) -> int:
        """Write a task's files; the chunks of those written for sure come from the packs
        in one run of reads (:meth:`PackStore.read_run`). New files and links (a task of
        nothing else): by a helper process once they run."""
        if all(how in (_NEW, _LINK) for *_, how in group) and self._helped():
            written = self._write_helped(group)
            if written is not None:
                return written
        plain = self.packs.read_run([(chunk, location, plen) for _, entry, locations, how in group if how < _VERIFY
                                     for (chunk, plen), location in zip(entry.chunk_list(), locations)])
        written = files = 0
        for path, entry, locations, how in group:
            if how == _LINK:
                make_link(path, os.fsencode(entry.link or ""), self.mtime(entry))
                continue
            if how == _VERIFY:
                if self._holds(path, entry):
                    with self._lock:
                        self.info.kept += 1
                    continue
                with self._lock:
                    self.rewritten.add(entry.path)
                chunks = entry.chunk_list()
                self._write_file(path, entry, (self.packs.read(c, loc, n) for (c, n), loc in zip(chunks, locations)),
                                 len(chunks), True)
            else:
                self._write_file(path, entry, plain, len(locations), how == _REPLACE)
            written += entry.size
            files += 1
        with self._lock:
            self.info.written += written
            self.info.files_written += files
        return written

    def _write_helped(self, group: list[tuple[bytes, Entry, list[Location], int]]) -> int | None:
        """:meth:`_write_files` of new files and links by a helper process; None when none runs."""
        assert self.helpers is not None
        files, links, run = [], [], []
        for path, entry, locations, how in group:
            if how == _LINK:
                links.append((path, os.fsencode(entry.link or ""), self.mtime(entry)))
                continue
            mode = self.mode(entry, note=False)
            chunks = [(chunk, location, plen) for (chunk, plen), location in zip(entry.chunk_list(), locations)]
            files.append((path, mode, not mode & self.umask, self.mtime(entry), self._chunks_for_helper(chunks)))
            run += chunks
        with self._damaged(run):
            written = self.helpers.write(files, links)
        if written is None:
            return None
        with self._lock:
            self.info.stripped_setid += [entry.path for _, entry, _, how in group
                                         if how == _NEW and entry.mode & _SETID]
            self.info.written += written
            self.info.files_written += len(files)
        return written

    def _chunks_for_helper(self, run: list[tuple[bytes, Location, int]]) -> list[tuple[bytes, str, int, int, int]]:
        """Chunks as a helper process reads them: (id, pack file, offset, frame length, plain size)."""
        paths = self._pack_paths
        chunks = []
        for chunk, location, plen in run:
            pack = paths.get(location.pack)
            if pack is None:
                pack = paths[location.pack] = os.fspath(self.packs.pack_path(location.pack))
            chunks.append((chunk, pack, location.offset, location.clen, plen))
        return chunks

    @contextlib.contextmanager
    def _damaged(self, run: list[tuple[bytes, Location, int]]) -> Iterator[None]:
        """A chunk of ``run`` a helper found damaged is forgotten where it lies, as a
        thread's read forgets it (:meth:`PackStore.read`)."""
        try:
            yield
        except ChunkCorruptIn as exc:
            for chunk, location, plen in run:
                if chunk == exc.chunk:
                    self.packs.note_damaged(chunk, location, plen)
            raise

    def _write_file(self, path: bytes, entry: Entry, plain: Iterator[bytes], count: int, replace: bool) -> None:
        """Write the next ``count`` chunks of ``plain`` into a new file at ``path`` (``replace``:
        through a temporary beside it, renamed over the one there)."""
        final = path
        path, fd, whole = self.open_new(path, entry, replace)
        try:
            for _ in range(count):
                write_all(fd, next(plain))
        except BaseException:
            os.close(fd)
            raise
        self.close_new(fd, entry, whole)
        if replace:
            os.replace(path, final)

    def open_new(self, path: bytes, entry: Entry, replace: bool) -> tuple[bytes, int, bool]:
        """(the name it is written under, descriptor, whether its mode is whole) of a new
        file for ``entry`` at ``path``, or beside it (``replace``). A file is created with
        its mode when the umask leaves that mode whole: a ``fchmod`` less a file."""
        if replace:
            head, tail = os.path.split(path)
            path = os.path.join(head, _NEW_PREFIX + tail)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by an update that was cut short
        mode = self.mode(entry)
        whole = not mode & self.umask
        return path, create_new(path, mode, whole), whole

    def close_new(self, fd: int, entry: Entry, whole: bool) -> None:
        """Give a file written through ``fd`` its mode (unless it has it) and mtime; close it."""
        try:
            settle_new(fd, self.mode(entry, note=False), whole, self.mtime(entry))
        finally:
            os.close(fd)

    def _holds(self, path: bytes, entry: Entry) -> bool:
        """Whether the regular file at ``path`` (one name) holds ``entry``'s content, each
        chunk hashed as read; given the entry's mode if it does."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size or (st.st_nlink > 1 and not entry.head):
                return False
            expected = entry.chunk_list()
            matched = 0
            for (chunk, size), data in zip(expected, chunking.cut_as(fd, [n for _, n in expected])):
                if len(data) != size or chunking.chunk_id(data) != chunk:
                    return False
                matched += 1
            if matched != len(expected) or os.fstat(fd).st_size != entry.size:
                return False
            mode = self.mode(entry)
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
            return True
        finally:
            os.close(fd)

    # -- end ----------------------------------------------------------------------------

    def finish(self) -> WriteInfo:
        self.flush()
        self._collect()
        for path, head in self.links:
            if _same_file(path, head):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # an update found another file there
            os.link(head, path, follow_symlinks=False)
        for path, mode, mtime_ns in reversed(self.dirs):  # children before their parents
            os.chmod(path, mode, follow_symlinks=False)
            if self.dir_mtimes:
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        return self.info

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for large in list(self.large):  # pieces cancelled after an error: they never ran
            large.abandon()
        if self.helpers is not None:
            self.helpers.close()


class _LargeFile:
    """A file that several workers write at once, a piece each: created by the thread that
    hands the pieces out, given its mode and mtime (and renamed over the one it replaces)
    by whichever piece ends last, once all of them have succeeded."""

    def __init__(self, writer: _Writer, path: bytes, entry: Entry, replace: bool, pieces: int):
        self.writer = writer
        self.entry = entry
        self.final = path
        self.path, self.fd, self.whole = writer.open_new(path, entry, replace)
        st = os.fstat(self.fd)
        self.created = (st.st_dev, st.st_ino)  # what a helper process checks it writes into
        self.replace = replace
        self.left = pieces
        self.failed = False
        self.lock = threading.Lock()

    def piece_done(self, ok: bool) -> None:
        with self.lock:
            self.left -= 1
            self.failed |= not ok
            if self.left:
                return
        self.writer.large.discard(self)
        if self.failed:
            os.close(self.fd)
            return
        self.writer.close_new(self.fd, self.entry, self.whole)
        if self.replace:
            os.replace(self.path, self.final)
        with self.writer._lock:
            self.writer.info.files_written += 1

    def abandon(self) -> None:
        with self.lock:
            if self.left:
                self.left = 0
                os.close(self.fd)
        self.writer.large.discard(self)


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, for every
    thread); all bits set where the kernel does not tell, so that every file gets its
    mode by ``fchmod``."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o7777


def receipts_of_restored(targets: Sequence[Target], entries: Iterable[Entry], header: Mapping[str, object],
                         exclude: Sequence[str], relocated: set[str], embedded: Iterable[Mapping]) -> None:
    """Write each target's receipt after a restore: its tree as it is on disk now, with the
    content ``entries`` (the manifest's) give each path; ``relocated`` ones were rewritten
    for this workspace's paths. Each entry is ``lstat``-ed where the entries say it is,
    relative to its directory, opened without following a link: no listing of the tree.
    What is not there (nothing, unless someone writes meanwhile) is left out, as is what
    lies under something that is not a directory."""
    from gaia_core.checkpoints.receipt import ReceiptWriter

    holding = {e["path"]: (e["kind"], tuple(e["roots"])) for e in embedded}
    listed = iter(entries)
    pending = next(listed, None)
    for t in targets:
        writer = ReceiptWriter(t.path / RECEIPT, dict(header))
        inside, skipped = t.name + "/", {f"{t.name}/{name}" for name in exclude}  # gaia's own files
        opened: list[tuple[str, int]] = []  # (entry path, descriptor) of the directories above the next entry
        try:
            while pending is not None and (pending.path.startswith(inside) or pending.path == t.name):
                entry, pending = pending, next(listed, None)
                path = entry.path
                while opened and not path.startswith(opened[-1][0] + "/"):
                    os.close(opened.pop()[1])
                parent, _, name = path.rpartition("/")
                if parent and (not opened or opened[-1][0] != parent) or path in skipped:
                    continue  # its directory is not there
                try:
                    st = os.lstat(name, dir_fd=opened[-1][1]) if parent else os.lstat(t.path)
                    if entry.type == "d" and stat.S_ISDIR(st.st_mode):
                        opened.append((path, os.open(name if parent else t.path, _OPEN_DIRECTORY,
                                                     dir_fd=opened[-1][1] if parent else None)))
                except OSError as exc:
                    if exc.errno not in _GONE:
                        raise
                    continue  # gone, or replaced by what is not a directory since the lstat
                writer.add(record_of(path, st, digest=entry.digest, chunks=entry.chunks,
                                     link=entry.link if entry.type == "l" else None,
                                     relocated=path in relocated, embedded=holding.get(path),
                                     captured_ns=entry.mtime_ns))
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        finally:
            for _, fd in opened:
                os.close(fd)


def _same_file(path: bytes, head: bytes) -> bool:
    try:
        a, b = os.lstat(path), os.lstat(head)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@collector.paused()  # the entry list makes many short-lived objects, no cycles
def write_tree(entries: Iterable[Entry], root: Path, packs: PackStore, *,
               progress: Callable[[int], None] | None = None, files: int = 0,
               place: Callable[[list[Entry]], Placement] | None = None) -> WriteInfo:
    """Write ``entries`` (checked) under the empty directory ``root`` (``root/<target>/...``).
    ``files``: how many files the entries hold, as their manifest says; from
    :data:`PROCESS_AFTER` on, the helper processes start at once, not half-way through.
    ``place``: given every entry (read whole first, while the helpers start), the placement
    of their mtimes (:func:`~gaia_core.checkpoints.mtimes.plan_placement`): each entry is
    written with its placed mtime, and no walk of the tree places them afterwards."""
    if any(os.scandir(root)):
        raise CheckpointError(f"restore staging directory {root} is not empty")
    writer = _Writer(lambda name: root / name, packs, progress, helpers_at_once=files >= PROCESS_AFTER)
    try:
        if place is not None:
            entries = list(entries)
            writer.info.placement = place(entries)
        for entry in entries:
            writer.info.entries += 1
            _create(writer, writer.path(entry.path), entry)
        return writer.finish()
    finally:
        writer.close()


#: decides whether a file on disk, whose lstat still matches its receipt record and whose
#: content the record gives as the entry's, holds what ``entry`` wants: asked only when a
#: relocation is involved (the entry is one to rewrite, or the record says it was rewritten),
#: whether it was rewritten for the same paths; any other such file holds it
Unchanged = Callable[[Entry, Record], bool]
#: entries an update touches (writes, re-modes, places) that it keeps track of; beyond that it
#: places every entry and takes the receipt from a walk, as after a full restore
MAX_TOUCHED = 1 << 16


class Update:
    """What :func:`update_tree` did, and what it still owes the tree: mtimes, then receipts.

    Entries it left alone keep the mtimes an earlier placement gave them (the receipt says
    which captured mtime each stands for); :meth:`place` fits the others around them, in
    the captured order (:func:`~gaia_core.checkpoints.mtimes.fit_placement`), and
    :meth:`commit_receipts` writes each target's receipt from what the update saw, with
    an ``lstat`` of the touched entries only. Past :data:`MAX_TOUCHED` touched entries, or
    when the kept mtimes leave no room, both fall back to every entry.
    """

    def __init__(self, targets: Sequence[Target], entries: Callable[[], Iterable[Entry]], exclude: Sequence[str],
                 embedded: Iterable[Mapping], relocating: Set[str]):
        self.targets = list(targets)
        self.info = WriteInfo()
        self.written: set[str] = set()
        self._entries = entries  # the entry list again, for the fallbacks
        self._exclude = exclude
        self._holding = {e["path"]: (e["kind"], tuple(e["roots"])) for e in embedded}
        self._relocating = relocating
        self._mtimes = array("q")  # captured mtime of every entry but hard links
        self._pins: list[tuple[int, int]] = []  # (captured, on disk) of entries that keep their mtime
        self._touched: list[tuple[bytes, int]] = []  # (where, captured mtime) of entries to place
        self.drafts: dict[str, ReceiptDraft] | None = {}
        self._placed_all = False
        #: directories kept as they were, until the update changes what they hold: (where,
        #: captured mtime, position in the draft, entry path, draft)
        self._kept_dirs: list[tuple[bytes, int, int, str, ReceiptDraft]] = []
        #: the directories the update created, replaced or removed entries in
        self.changed: set[bytes] = set()

    def note(self, entry: Entry, fs_path: bytes, st: os.stat_result | None, record: Record | None,
             how: str) -> None:
        """One entry as the update left it: ``written`` (or to be read and written if it
        differs), ``kept`` as it was, or ``touched`` (kept, with another mode); ``st`` its
        lstat before the update."""
        captured = entry.mtime_ns
        if entry.type != "h":
            self._mtimes.append(captured)
        if self.drafts is None:
            return
        # the mtime the last placement gave this captured one, as the receipt saw it (not for a
        # target's own directory: gaia's marker and receipt beside the tree change it)
        pin = record.mtime_ns if record is not None and record.captured == captured and "/" in entry.path \
            and entry.type != "h" else None
        if pin is not None:
            self._pins.append((captured, pin))
        # left as it is, mtime included: an entry kept whose lstat the receipt vouches for
        settled = how == "kept" and pin is not None and entry.type in ("f", "l") and st is not None \
            and record is not None and record.matches(st) \
            and not (entry.type == "f" and (st.st_nlink > 1 or entry.head))  # links change ctimes
        touched = not settled
        if touched and entry.type != "h":
            self._touched.append((fs_path, captured))
            if len(self._touched) > MAX_TOUCHED:  # too many to hold: every entry is placed and recorded
                self.drafts, self._pins, self._touched = None, [], []
                return
        draft = self.draft(entry.path.split("/", 1)[0])
        link = entry.link if entry.type == "l" else None
        embedded = self._holding.get(entry.path)
        if touched:
            draft.add(Record(entry.path, "?", 0, 0, 0, 0, digest=entry.digest, chunks=entry.chunks, link=link,
                             embedded=embedded, captured_ns=captured), fs_path)
            return
        assert st is not None and record is not None  # kept as it was, and pinned: it has a record
        relocated = entry.path in self._relocating
        if record.raw is not None and record.digest == entry.digest and record.chunks == entry.chunks and \
                record.link == link and record.embedded == embedded and record.relocated == relocated:
            draft.add(record, raw=record.raw)  # the record says it all already (it matches the lstat)
        else:
            draft.add(record_of(entry.path, st, digest=entry.digest, chunks=entry.chunks, link=link,
                                relocated=relocated, embedded=embedded, captured_ns=captured))

    def draft(self, target: str) -> ReceiptDraft:
        assert self.drafts is not None
        draft = self.drafts.get(target)
        if draft is None:
            draft = self.drafts[target] = ReceiptDraft()
        return draft

    def kept_as_is(self, entry: Entry, fs_path: bytes, st: os.stat_result, line: bytes, draft: ReceiptDraft) -> bool:
        """Whether ``entry`` is a file, link or directory the update leaves exactly as it is,
        content, mode and placed mtime included: ``line``, the last receipt's next line, is
        the one ``st`` and the entry's content and captured mtime make, byte for byte. It is
        then noted, the line going into the receipt as it is (a directory's is taken again
        if the update changes what it holds). False: :meth:`note` it once it is dealt with.
        (Most entries of an update are these: no record is made of them.)"""
        kind, path = entry.type, entry.path
        if kind == "f":
            if st.st_mode != _REGULAR | entry.mode or entry.mode & _SETID or st.st_nlink != 1 or entry.head \
                    or entry.chunks is not None or st.st_size != entry.size:
                return False
        elif kind == "d":  # not a target's own: gaia's marker and receipt are written in it
            if st.st_mode != _DIRECTORY | entry.mode or entry.mode & _SETID or "/" not in path:
                return False
        elif kind != "l" or not stat.S_ISLNK(st.st_mode) or os.fsdecode(os.readlink(fs_path)) != entry.link:
            return False
        captured = entry.mtime_ns
        if self.drafts is None or path in self._relocating or path in self._holding \
                or line != kept_line(path, st, entry.size, entry.digest, entry.link if kind == "l" else None, captured):
            return False
        self._mtimes.append(captured)
        self._pins.append((captured, st.st_mtime_ns))
        position = draft.add_line(line)
        if kind == "d":  # placed and recorded again if the update changes what it holds
            self._kept_dirs.append((fs_path, captured, position, path, draft))
        return True

    def _settle_dirs(self) -> None:
        """The directories kept as they were whose entries the update changed after all (their
        mtime changed): placed and recorded again like any entry it touched."""
        kept, self._kept_dirs = self._kept_dirs, []
        if self.drafts is None:
            return
        for fs_path, captured, position, path, draft in kept:
            if fs_path in self.changed:
                self._touched.append((fs_path, captured))
                draft.retake(position, Record(path, "?", 0, 0, 0, 0, captured_ns=captured), fs_path)
        if len(self._touched) > MAX_TOUCHED:  # too many to hold: every entry is placed and recorded
            self.drafts, self._pins, self._touched = None, [], []

    def place(self, clock_dir: Path, not_before_ns: int | None) -> Placement:
        """Give every entry its placed mtime (see the class); the placement."""
        started = time.monotonic()
        self._settle_dirs()
        placement = None
        if self.drafts is not None:
            placement = fit_placement(self._mtimes, self._pins, clock_dir=clock_dir, not_before_ns=not_before_ns)
        if placement is not None:
            for fs_path, captured in self._touched:
                value = placement.placed_ns(captured)
                os.utime(fs_path, ns=(value, value), follow_symlinks=False)
        else:
            placement = fit_placement(self._mtimes, (), clock_dir=clock_dir, not_before_ns=not_before_ns)
            if placement is None:  # an input newer than the clock: placed anyway, the caller warns
                ranking = distinct_sorted(self._mtimes)
                placement = Placement(at_ns=filesystem_now_ns(clock_dir), step_ns=STEP_NS,
                                      entries=len(self._mtimes), distinct=len(ranking), ranking=ranking)
            by_name = {t.name: os.fsencode(t.path) for t in self.targets}
            for entry in self._entries():
                if entry.type != "h":
                    top, _, rest = entry.path.partition("/")
                    value = placement.placed_ns(entry.mtime_ns)
                    os.utime(by_name[top] + b"/" + rest.encode("utf-8", "surrogateescape") if rest else by_name[top],
                             ns=(value, value), follow_symlinks=False)
            self._placed_all = True
        return dataclasses.replace(placement, seconds=time.monotonic() - started)

    def commit_receipts(self, header: Mapping[str, object], relocated: set[str]) -> None:
        """Write each target's receipt, after the last step that touched the trees."""
        self._settle_dirs()
        if self.drafts is None or self._placed_all:
            receipts_of_restored(self.targets, self._entries(), header, self._exclude, relocated,
                                 [{"path": p, "kind": k, "roots": list(r)} for p, (k, r) in self._holding.items()])
            return
        for t in self.targets:
            self.drafts.get(t.name, ReceiptDraft()).commit(t.path / RECEIPT, dict(header), relocated)


@collector.paused()  # the entry list and the receipt make many short-lived objects, no cycles
def update_tree(entries: Iterable[Entry], targets: Sequence[Target], packs: PackStore, *,
                receipts: Mapping[str, Path], unchanged: Unchanged, exclude: Sequence[str] = (),
                progress: Callable[[int], None] | None = None, again: Callable[[], Iterable[Entry]] | None = None,
                embedded: Iterable[Mapping] = (), relocating: Set[str] = frozenset()) -> Update:
    """Bring the trees at ``targets`` to ``entries`` (checked) in place.

    Each target's tree is walked beside the entries and the receipt, in canonical order. An
    entry that is there as it should be (a file whose ``lstat`` matches its receipt record,
    with the entry's content, and that ``unchanged`` accepts; a link with the same text; a
    directory) is kept with its mtime and only gets the entry's mode (most entries: their
    receipt line goes into the next receipt as it is, see :meth:`Update.kept_as_is`);
    anything else is written anew (a file through a temporary beside it, renamed over the
    old one), and what the entries do not list is deleted. The caller then relocates what
    was written, and calls :meth:`Update.place` and :meth:`Update.commit_receipts` (``again``
    gives the entries once more if those fall back to every entry; ``embedded`` is the
    manifest's list of files holding roots, ``relocating`` the entries the relocation plan
    rewrites). The caller clears the tree's marker first: an update cut short leaves a tree
    that claims no checkpoint.
    """
    by_name = {t.name: t.path for t in targets}
    writer = _Writer(lambda name: by_name[name], packs, progress, dir_mtimes=False)
    update = Update(targets, again or (lambda: entries), exclude, embedded, relocating)
    writer.changed = update.changed
    counted = kept = 0
    actual: Generator[tuple[str, bytes, os.stat_result], None, None] | None = None
    recorded: Generator[bytes, None, None] | None = None
    try:
        stream = iter(entries)
        pending: Entry | None = next(stream, None)
        keep_as_is = update.kept_as_is
        for target in targets:
            recorded = lines(receipts[target.name]) if receipts.get(target.name) else None
            cursor = Cursor(recorded, line_path) if recorded is not None else None
            peek = cursor.peek if cursor is not None else lambda: None
            draft = update.draft(target.name) if update.drafts is not None else None
            actual = _listing(target.path, target.name, exclude)
            found = next(actual, None)
            inside = target.name + "/"
            while pending is not None:
                path = pending.path
                if not path.startswith(inside) and path != target.name:
                    break  # the next target's
                counted += 1
                if found is not None and found[0] != path:
                    key = sort_key(path)
                    while found is not None and sort_key(found[0]) < key:
                        _remove(writer, found[1], found[2])
                        found = next(actual, None)
                if found is not None and found[0] == path:
                    line = peek()
                    if line is not None and draft is not None and keep_as_is(pending, found[1], found[2], line, draft):
                        cursor.take()  # type: ignore[union-attr]
                        kept += 1
                    else:
                        line = cursor.get(path) if cursor is not None else None
                        _update_entry(writer, update, pending, found, None if line is None else Record.from_line(line),
                                      unchanged, relocating)
                    found = next(actual, None)
                else:
                    fs_path = writer.path(path)
                    _create(writer, fs_path, pending)
                    update.written.add(path)
                    update.note(pending, fs_path, None, None, "written")
                pending = next(stream, None)
            while found is not None:
                _remove(writer, found[1], found[2])
                found = next(actual, None)
        writer.info.entries += counted
        writer.info.kept += kept
        update.info = writer.finish()
        update.written |= writer.rewritten
        return update
    finally:
        for reading in (actual, recorded):
            if reading is not None:
                reading.close()  # the walk's directories and the receipt, closed at once
        writer.close()


def _listing(root: Path, name: str,
             exclude: Sequence[str]) -> Generator[tuple[str, bytes, os.stat_result], None, None]:
    """``(entry path, file path, lstat)`` of ``root`` and everything under it, in canonical
    order, as an update walks the tree it changes: what it removed since a directory was
    listed is left out, and what it replaced a directory with is not listed. Each ``lstat``
    is taken relative to its open directory (an update's walk is mostly its ``lstat`` calls)."""
    top = os.fsencode(root)
    yield name, top, os.lstat(top)
    stack: list[tuple[int, bytes, str, Iterator[bytes]]] = []
    try:
        _enter(stack, top, name, {os.fsencode(e) for e in exclude})
        while stack:
            fd, directory, prefix, names = stack[-1]
            for child in names:
                try:
                    st = os.lstat(child, dir_fd=fd)
                except FileNotFoundError:
                    continue  # removed by the update
                path, entry_path = directory + b"/" + child, prefix + "/" + child.decode(_FS_ENCODING, _FS_ERRORS)
                yield entry_path, path, st
                if stat.S_ISDIR(st.st_mode):
                    _enter(stack, path, entry_path, ())
                    break
            else:
                os.close(fd)
                stack.pop()
    finally:
        for fd, *_ in stack:
            os.close(fd)


def _enter(stack: list[tuple[int, bytes, str, Iterator[bytes]]], directory: bytes, prefix: str,
           excluded: Set[bytes] | Sequence[bytes]) -> None:
    """Open ``directory`` and list its names in canonical order onto ``stack`` (nothing when
    the update removed it or put something else there since it was listed)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        names = sorted(n for n in os.listdir(directory) if n not in excluded) if excluded else \
            sorted(os.listdir(directory))
    except BaseException:
        os.close(fd)
        raise
    stack.append((fd, directory, prefix, iter(names)))


def _update_entry(writer: _Writer, update: Update, entry: Entry, here: tuple[str, bytes, os.stat_result],
                  record: Record | None, unchanged: Unchanged, relocating: Set[str]) -> None:
    """An entry the tree has something at: kept (its mode set) or written anew; noted."""
    how = _keep(writer, entry, here, record, unchanged, relocating)
    if how == "verify":  # the receipt says nothing of it: hashed, written if it differs
        _changes(writer, here[1])
        writer.file(here[1], entry, verify=True)
    elif how is None:
        _clear(writer, entry, here)
        _create(writer, here[1], entry, replace=entry.type == "f" and stat.S_ISREG(here[2].st_mode))
        update.written.add(entry.path)
    update.note(entry, here[1], here[2], record, "written" if how in (None, "verify") else how)


def _keep(writer: _Writer, entry: Entry, here: tuple[str, bytes, os.stat_result], record: Record | None,
          unchanged: Unchanged, relocating: Set[str]) -> str | None:
    """Keep what is on disk when it is the entry, with its mtime; set its mode. ``kept`` (as
    it was), ``touched`` (another mode), ``verify`` (a file the receipt does not vouch for,
    to be read to tell, unless a relocation rewrites it), or None: write it anew."""
    _path, fs_path, st = here
    kind = stat.S_IFMT(st.st_mode)
    how = "kept"
    if entry.type == "d" and kind == stat.S_IFDIR:
        writer.directory(fs_path, entry, found=st)
        how = "touched"
    elif entry.type == "l" and kind == stat.S_IFLNK:
        if os.fsdecode(os.readlink(fs_path)) != entry.link:
            return None
    elif entry.type == "f" and kind == stat.S_IFREG:
        if st.st_size != entry.size or (st.st_nlink > 1 and not entry.head):
            return None
        if record is None or not record.matches(st):
            # touched since (a build's chmod, a copy): its content is unknown, not changed
            return None if entry.path in relocating else "verify"
        if record.digest != entry.digest or \
                ((record.relocated or entry.path in relocating) and not unchanged(entry, record)):
            return None
        mode = writer.mode(entry)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(fs_path, mode, follow_symlinks=False)
            how = "touched"
    else:
        return None  # another type, or a hard link (made anew, it joins its head's inode)
    writer.info.kept += 1
    return how


def _clear(writer: _Writer, entry: Entry, here: tuple[str, bytes, os.stat_result]) -> None:
    """Take what is on disk out of the way of ``entry`` (a file is replaced in one rename)."""
    st = here[2]
    if entry.type in ("f", "h") and stat.S_ISREG(st.st_mode):
        return  # a file is replaced in one rename; a hard link is checked once its head is final
    _remove(writer, here[1], st)


def _remove(writer: _Writer, path: bytes, st: os.stat_result) -> None:
    _changes(writer, path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # never follows a link inside
    else:
        os.unlink(path)
    writer.info.removed += 1


def _create(writer: _Writer, path: bytes, entry: Entry, *, replace: bool = False) -> None:
    _changes(writer, path)
    if entry.type == "d":
        writer.directory(path, entry)
    elif entry.type == "f":
        writer.file(path, entry, replace=replace)
    elif entry.type == "l":
        writer.symlink(path, entry)
    else:
        writer.hard_link(path, entry)


def _changes(writer: _Writer, path: bytes) -> None:
    """An update is about to create, replace or remove ``path``: its directory's mtime changes."""
    if writer.changed is not None:
        writer.changed.add(_parent(path))


def _parent(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


__all__ = ["MAX_TOUCHED", "Unchanged", "Update", "WriteInfo", "receipts_of_restored", "update_tree", "write_tree"]
