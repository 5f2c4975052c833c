"""Restore's writer: checked entries into a tree, files written by several threads.

:func:`write_tree` fills an empty directory (a full restore's staging dir, swapped in
afterwards); :func:`update_tree` brings a tree that holds an earlier checkpoint to a new
one in place, writing only what differs. Both take entries that already passed
:class:`~gaia_core.checkpoints.entries.EntryChecker` (names plain, parents listed before
children, no path through a link) and chunks from the local pack store, each checked
against its id as it is read. Files are created with ``O_EXCL | O_NOFOLLOW`` and never
get set-id bits or a foreign owner; directories get their modes and mtimes last, deepest
first, so writing into them does not change what was restored.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.checkpoints.entries import Entry, sort_key
from gaia_core.checkpoints.receipt import Cursor, Record
from gaia_core.checkpoints.packstore import ChunkMissing, Location, PackStore
from gaia_core.errors import CheckpointError

_SETID = stat.S_ISUID | stat.S_ISGID
_WORKERS = max(2, min(8, (os.cpu_count() or 2) * 2))
#: file entries whose chunks are looked up together
_BATCH = 512
#: files written by one worker task
_GROUP_FILES, _GROUP_BYTES = 64, 4 << 20
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: the temporary a file is written to before it replaces the one an update found
_NEW_PREFIX = b".gaia-new."


@dataclasses.dataclass
class WriteInfo:
    entries: int = 0
    written: int = 0  # bytes of file content written
    files_written: int = 0
    kept: int = 0  # entries an update found as they should be
    removed: int = 0  # entries an update deleted
    #: files restored without their setuid/setgid bits
    stripped_setid: list[str] = dataclasses.field(default_factory=list)


class _Writer:
    def __init__(self, top: Callable[[str], Path], packs: PackStore, progress: Callable[[int], None] | None):
        self.top = top  # the directory of a target, by name
        self.packs = packs
        self.progress = progress
        self.info = WriteInfo()
        self.dirs: list[tuple[bytes, int, int]] = []  # (path, mode, mtime_ns)
        self.links: list[tuple[bytes, bytes]] = []  # hard links: (path, head path)
        self.pool = concurrent.futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="gaia-restore")
        self.futures: list[concurrent.futures.Future] = []
        self.batch: list[tuple[bytes, Entry, bool]] = []
        self._lock = threading.Lock()
        self._tops: dict[str, bytes] = {}

    def path(self, entry_path: str) -> bytes:
        """Where an entry goes: its target's directory, then the rest of its path."""
        top, _, rest = entry_path.partition("/")
        directory = self._tops.get(top)
        if directory is None:
            directory = self._tops[top] = os.fsencode(self.top(top))
        return directory + b"/" + rest.encode("utf-8", "surrogateescape") if rest else directory

    def mode(self, entry: Entry) -> int:
        if entry.mode & _SETID:
            self.info.stripped_setid.append(entry.path)
        return entry.mode & ~_SETID

    # -- entries ------------------------------------------------------------------------

    def directory(self, path: bytes, entry: Entry, *, exists: bool = False) -> None:
        if not exists:
            os.mkdir(path, 0o700)
        self.dirs.append((path, self.mode(entry), entry.mtime_ns))

    def symlink(self, path: bytes, entry: Entry) -> None:
        assert entry.link is not None
        os.symlink(os.fsencode(entry.link), path)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def file(self, path: bytes, entry: Entry, *, replace: bool = False) -> None:
        """Write a file; ``replace``: over an existing one, through a temporary beside it."""
        self.batch.append((path, entry, replace))
        if len(self.batch) >= _BATCH:
            self.flush()

    def hard_link(self, path: bytes, entry: Entry) -> None:
        assert entry.link is not None
        self.links.append((path, self.path(entry.link)))

    def flush(self) -> None:
        """Look the batch's chunks up in one query and hand its files to the workers, small
        ones several to a task (per-file overhead is what costs on a tree of small files)."""
        if not self.batch:
            return
        wanted = [c for _, e, _ in self.batch for c, _ in e.chunk_list()]
        located = self.packs.locate(wanted) if wanted else {}
        group: list[tuple[bytes, Entry, list[Location], bool]] = []
        size = 0
        for path, entry, replace in self.batch:
            missing = [c for c, _ in entry.chunk_list() if c not in located]
            if missing:
                raise ChunkMissing(f"the local store lacks chunk {missing[0].hex()[:16]} of {entry.path[:200]!r}")
            group.append((path, entry, [located[c] for c, _ in entry.chunk_list()], replace))
            size += entry.size
            if len(group) >= _GROUP_FILES or size >= _GROUP_BYTES:
                self.futures.append(self.pool.submit(self._write_files, group))
                group, size = [], 0
        if group:
            self.futures.append(self.pool.submit(self._write_files, group))
        self.batch = []
        if len(self.futures) > 4 * _WORKERS:
            self._collect(len(self.futures) - 2 * _WORKERS)

    def _collect(self, count: int | None = None) -> None:
        done, self.futures = (self.futures, []) if count is None else (self.futures[:count], self.futures[count:])
        for future in done:
            size = future.result()
            if self.progress is not None and size:
                self.progress(size)  # here, not in the workers: it may raise to cancel

    def _write_files(self, group: list[tuple[bytes, Entry, list[Location], bool]]) -> int:
        return sum(self._write_file(*item) for item in group)

    def _write_file(self, path: bytes, entry: Entry, locations: list[Location], replace: bool = False) -> int:
        final = path
        if replace:
            head, tail = os.path.split(path)
            path = os.path.join(head, _NEW_PREFIX + tail)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by an update that was cut short
        fd = os.open(path, _OPEN_NEW, 0o600)
        try:
            for (chunk, plen), location in zip(entry.chunk_list(), locations):
                data = memoryview(self.packs.read(chunk, location, plen))
                while data:
                    data = data[os.write(fd, data):]
            os.fchmod(fd, self.mode(entry))
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        if replace:
            os.replace(path, final)
        with self._lock:
            self.info.written += entry.size
            self.info.files_written += 1
        return entry.size

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
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        return self.info

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def receipts_of_restored(targets: Sequence[Target], entries: Iterable[Entry], header: Mapping[str, object],
                         exclude: Sequence[str], relocated: set[str], embedded: Iterable[Mapping]) -> None:
    """Write each target's receipt after a restore: its tree as it is on disk now, with the
    content ``entries`` (the manifest's) give each path; ``relocated`` ones were rewritten
    for this workspace's paths."""
    from gaia_core.checkpoints.receipt import RECEIPT, ReceiptWriter, record_of
    from gaia_core.checkpoints.treecapture import walk

    holding = {e["path"]: (e["kind"], tuple(e["roots"])) for e in embedded}
    listed = iter(entries)
    pending = next(listed, None)
    for t in targets:
        writer = ReceiptWriter(t.path / RECEIPT, dict(header))
        try:
            for path, _fs_path, st in walk(t.path, t.name, exclude):
                while pending is not None and sort_key(pending.path) < sort_key(path):
                    pending = next(listed, None)
                if pending is None or pending.path != path:
                    continue  # not restored (cannot happen unless someone writes meanwhile)
                writer.add(record_of(path, st, digest=pending.digest, chunks=pending.chunks,
                                     link=pending.link if pending.type == "l" else None,
                                     relocated=path in relocated, embedded=holding.get(path)))
            writer.commit()
        except BaseException:
            writer.discard()
            raise


def _same_file(path: bytes, head: bytes) -> bool:
    try:
        a, b = os.lstat(path), os.lstat(head)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def write_tree(entries: Iterable[Entry], root: Path, packs: PackStore, *,
               progress: Callable[[int], None] | None = None) -> WriteInfo:
    """Write ``entries`` (checked) under the empty directory ``root`` (``root/<target>/...``)."""
    if any(os.scandir(root)):
        raise CheckpointError(f"restore staging directory {root} is not empty")
    writer = _Writer(lambda name: root / name, packs, progress)
    try:
        for entry in entries:
            writer.info.entries += 1
            _create(writer, writer.path(entry.path), entry)
        return writer.finish()
    finally:
        writer.close()


#: decides whether a file on disk, whose lstat still matches its receipt record, holds
#: what ``entry`` wants (same content, and rewritten for the same paths if it was)
Unchanged = Callable[[Entry, Record], bool]


def update_tree(entries: Iterable[Entry], targets: Sequence[Target], packs: PackStore, *,
                receipts: Mapping[str, Path], unchanged: Unchanged, exclude: Sequence[str] = (),
                progress: Callable[[int], None] | None = None) -> tuple[WriteInfo, set[str]]:
    """Bring the trees at ``targets`` to ``entries`` (checked) in place; the entries written.

    Each target's tree is walked beside the entries, in canonical order. An entry that is
    there as it should be (a file whose ``lstat`` matches its receipt record and that
    ``unchanged`` accepts; a link with the same text; a directory) is kept and only gets
    the entry's mode and mtime; anything else is written anew (a file through a temporary
    beside it, renamed over the old one), and what the entries do not list is deleted.
    The caller clears the tree's marker first: an update cut short leaves a tree that
    claims no checkpoint.
    """
    from gaia_core.checkpoints.receipt import records
    from gaia_core.checkpoints.treecapture import walk

    by_name = {t.name: t.path for t in targets}
    writer = _Writer(lambda name: by_name[name], packs, progress)
    written: set[str] = set()
    stream = iter(entries)
    pending: Entry | None = next(stream, None)
    try:
        for target in targets:
            cursor = Cursor(records(receipts[target.name])) if receipts.get(target.name) else None
            actual = walk(target.path, target.name, exclude, tolerant=True)
            found = next(actual, None)
            while pending is not None and pending.path.split("/", 1)[0] == target.name:
                key = sort_key(pending.path)
                while found is not None and sort_key(found[0]) < key:
                    _remove(writer, found[1], found[2])
                    found = next(actual, None)
                writer.info.entries += 1
                here = found if found is not None and found[0] == pending.path else None
                if here is None or not _keep(writer, pending, here, cursor, unchanged):
                    if here is not None:
                        _clear(writer, pending, here)
                    _create(writer, here[1] if here else writer.path(pending.path), pending,
                            replace=here is not None and pending.type == "f" and stat.S_ISREG(here[2].st_mode))
                    written.add(pending.path)
                if here is not None:
                    found = next(actual, None)
                pending = next(stream, None)
            while found is not None:
                _remove(writer, found[1], found[2])
                found = next(actual, None)
        return writer.finish(), written
    finally:
        writer.close()


def _keep(writer: _Writer, entry: Entry, here: tuple[str, bytes, os.stat_result], cursor: Cursor | None,
          unchanged: Unchanged) -> bool:
    """Keep what is on disk when it is the entry; set its mode and mtime. False: write it anew."""
    _path, fs_path, st = here
    kind = stat.S_IFMT(st.st_mode)
    if entry.type == "d" and kind == stat.S_IFDIR:
        writer.directory(fs_path, entry, exists=True)
    elif entry.type == "l" and kind == stat.S_IFLNK:
        if os.fsdecode(os.readlink(fs_path)) != entry.link:
            return False
        if st.st_mtime_ns != entry.mtime_ns:
            os.utime(fs_path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    elif entry.type == "f" and kind == stat.S_IFREG:
        record = cursor.get(entry.path) if cursor is not None else None
        if record is None or not record.matches(st) or record.digest != entry.digest or \
                st.st_size != entry.size or (st.st_nlink > 1 and not entry.head) or not unchanged(entry, record):
            return False
        mode = writer.mode(entry)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(fs_path, mode, follow_symlinks=False)
        if st.st_mtime_ns != entry.mtime_ns:
            os.utime(fs_path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    else:
        return False  # another type, or a hard link (made anew, it joins its head's inode)
    writer.info.kept += 1
    return True


def _clear(writer: _Writer, entry: Entry, here: tuple[str, bytes, os.stat_result]) -> None:
    """Take what is on disk out of the way of ``entry`` (a file is replaced in one rename)."""
    st = here[2]
    if entry.type in ("f", "h") and stat.S_ISREG(st.st_mode):
        return  # a file is replaced in one rename; a hard link is checked once its head is final
    _remove(writer, here[1], st)


def _remove(writer: _Writer, path: bytes, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # never follows a link inside
    else:
        os.unlink(path)
    writer.info.removed += 1


def _create(writer: _Writer, path: bytes, entry: Entry, *, replace: bool = False) -> None:
    if entry.type == "d":
        writer.directory(path, entry)
    elif entry.type == "f":
        writer.file(path, entry, replace=replace)
    elif entry.type == "l":
        writer.symlink(path, entry)
    else:
        writer.hard_link(path, entry)


__all__ = ["Unchanged", "WriteInfo", "receipts_of_restored", "update_tree", "write_tree"]
