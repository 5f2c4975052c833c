"""The local pack store: ``<store>/packs/<id>.pack`` and ``.idx``, and where each chunk lies.

Which chunk lies where is kept in a SQLite database (``<store>/chunks.db``) so that a
store of millions of chunks answers "do we have these?" and "where is this?" without
holding them in memory. The database is derived data: the ``.idx`` files beside the packs
are the truth, and :meth:`PackStore.rebuild` makes the database anew from them when it is
missing or unreadable. It also caches the indexes of packs seen in backends
(``remote_packs``), so a backend's packs are listed and their indexes fetched once.

A pack enters the store (file, index, rows) before any manifest that needs it is written,
and leaves it only through gc, which holds the store lock; readers check every chunk
against its id (:func:`~gaia_core.checkpoints.packs.open_frame`), so a pack lost or
damaged on disk is a failed read, never wrong content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
from urllib.parse import quote
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from gaia_core import atomic
from gaia_core.checkpoints.packs import (
    PACK_ID,
    ChunkCorrupt,
    FinishedPack,
    IndexEntry,
    decode_index,
    index_name,
    open_frame,
    pack_name,
    read_frame,
)
from gaia_core.errors import CheckpointError

DB_FILE = "chunks.db"
PACKS_DIR = "packs"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (id TEXT PRIMARY KEY, size INTEGER NOT NULL, chunks INTEGER NOT NULL,
                                  local INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chunks (id BLOB NOT NULL, pack TEXT NOT NULL, offset INTEGER NOT NULL,
                                   clen INTEGER NOT NULL, plen INTEGER NOT NULL,
                                   PRIMARY KEY (id, pack)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks (pack);
CREATE TABLE IF NOT EXISTS remote_packs (backend TEXT NOT NULL, pack TEXT NOT NULL, size INTEGER,
                                         PRIMARY KEY (backend, pack)) WITHOUT ROWID;
"""
_BATCH = 900
#: ids asked of :meth:`PackStore.absent` at a time (in one blob, not one parameter each)
_ABSENT_BATCH = 4096
#: the places in blob ?1 of ids ?2 bytes long (?3 of them) that no local pack holds
_ABSENT_SQL = ("WITH RECURSIVE q(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM q WHERE i + 1 < ?3) "
               "SELECT group_concat(i, ' ') FROM q WHERE NOT EXISTS (SELECT 1 FROM chunks c JOIN packs p "
               "ON p.id = c.pack WHERE p.local = 1 AND c.id = substr(?1, i * ?2 + 1, ?2))")
#: SQLite's page cache per connection (its default, 2 MiB, makes a 500k-chunk capture's inserts crawl)
_CACHE_KIB = 64 << 10
_OPENING = threading.Lock()
#: :meth:`PackStore.read_run` reads frames apart by at most _GAP bytes together, up to _SPAN bytes a read
_GAP, _SPAN = 4 << 10, 1 << 20


class ChunkMissing(CheckpointError):
    """The local store lacks a chunk a tree needs (it was not fetched, or gc removed it)."""


@dataclasses.dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    clen: int
    plen: int

    def entry(self, chunk: bytes) -> IndexEntry:
        return IndexEntry(chunk, self.offset, self.clen, self.plen)


def _batches(items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), _BATCH):
        yield items[start:start + _BATCH]


class PackStore:
    """Packs of one local store; safe to share between threads (one connection each)."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / PACKS_DIR
        self.db_path = root / DB_FILE
        self._local = threading.local()
        self._fds: dict[str, int] = {}
        self._fds_lock = threading.Lock()

    # -- database ---------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """A connection for reading, which never writes a byte of the store (``status`` and
        ``list`` write nothing): the database read-only, or, while there is none (or it is
        unreadable), one made in memory from the ``.idx`` files."""
        conn = getattr(self._local, "reader", None)
        if conn is not None and getattr(self._local, "in_memory", False) and self.db_path.exists():
            conn.close()
            conn = None
        if conn is None:
            conn, in_memory = self._open_reader()
            self._local.reader, self._local.in_memory = conn, in_memory
        return conn

    @property
    def wdb(self) -> sqlite3.Connection:
        """A connection for writing (created with the database, rebuilt when it is corrupt)."""
        conn = getattr(self._local, "writer", None)
        if conn is None:
            try:
                conn = self._local.writer = self._open()
            except sqlite3.OperationalError as exc:  # a full disk, a read-only store
                raise CheckpointError(f"opening the chunk index {self.db_path} failed: {exc}") from None
        return conn

    def _open_reader(self) -> tuple[sqlite3.Connection, bool]:
        if self.db_path.exists():
            try:
                conn = sqlite3.connect(f"file:{quote(str(self.db_path))}?mode=ro", uri=True, timeout=60,
                                       isolation_level=None, check_same_thread=False)
                conn.execute("SELECT 1 FROM packs LIMIT 1")
                return conn, False
            except sqlite3.DatabaseError:
                pass  # unreadable: answer from the index files; a writer sets it aside
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_SCHEMA)
        if self.dir.is_dir():
            self._rebuild(conn)
        return conn, True

    def _open(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        with _OPENING:  # the first connections of worker threads must not race to create or set aside
            fresh = not self.db_path.exists()
            try:
                conn = self._connect()
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                    raise  # busy or locked: another connection works on it, it is not damaged
                self._set_aside()
                conn, fresh = self._connect(), True
            if fresh and self.dir.is_dir():
                self._rebuild(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            # a rollback journal, not WAL: readers open the file read-only and write nothing
            conn.execute("PRAGMA journal_mode=DELETE")
            # inserts of a large pack's rows touch pages all over the chunk index: keep them in memory
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _set_aside(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.db_path}{suffix}")
            if path.exists():
                os.replace(path, f"{path}.corrupt")

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # a full disk, a read-only store
            raise CheckpointError(f"updating the chunk index {self.db_path} failed: {exc}") from None

    def rebuild(self) -> int:
        """Make the database anew from the ``.idx`` files; returns the number of packs."""
        return self._rebuild(self.wdb)

    def _rebuild(self, conn: sqlite3.Connection) -> int:
        count = 0
        with self._transaction(conn):
            conn.execute("DELETE FROM chunks WHERE pack IN (SELECT id FROM packs WHERE local = 1)")
            conn.execute("DELETE FROM packs WHERE local = 1")
            for pack_id, size in self._pack_files():
                try:
                    entries = decode_index((self.dir / index_name(pack_id)).read_bytes(), size,
                                           f"local pack index {pack_id[:16]}")
                except (OSError, CheckpointError):
                    continue  # a pack without a readable index holds nothing we can find
                self._insert(conn, pack_id, size, entries, local=True)
                count += 1
        return count

    def _pack_files(self) -> Iterator[tuple[str, int]]:
        if not self.dir.is_dir():
            return
        for item in os.scandir(self.dir):
            name = item.name
            if name.endswith(".pack") and PACK_ID.match(name[:-5]) and item.is_file(follow_symlinks=False):
                yield name[:-5], item.stat(follow_symlinks=False).st_size

    @staticmethod
    def _insert(conn: sqlite3.Connection, pack_id: str, size: int, entries: Iterable[IndexEntry],
                *, local: bool) -> None:
        rows = sorted((e.chunk, pack_id, e.offset, e.clen, e.plen) for e in entries)  # B-tree order: 2x faster
        conn.execute("INSERT INTO packs (id, size, chunks, local) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(id) DO UPDATE SET local = MAX(local, excluded.local)",
                     (pack_id, size, len(rows), int(local)))
        conn.executemany("INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?)", rows)

    # -- packs ------------------------------------------------------------------------

    def add(self, pack: FinishedPack) -> None:
        """Move a finished pack (written in a directory of this store) in, with its index."""
        conn = self.wdb  # first: a database made now is built from the packs already in
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(self.dir / index_name(pack.pack_id), pack.index)
        os.replace(pack.path, self.dir / pack_name(pack.pack_id))
        with self._transaction(conn):
            self._insert(conn, pack.pack_id, pack.size, pack.entries, local=True)

    def local_packs(self) -> dict[str, int]:
        """Pack id -> size of every pack in this store."""
        return dict(self.db.execute("SELECT id, size FROM packs WHERE local = 1"))

    def pack_path(self, pack_id: str) -> Path:
        return self.dir / pack_name(pack_id)

    def index_path(self, pack_id: str) -> Path:
        return self.dir / index_name(pack_id)

    def remove(self, pack_id: str) -> None:
        """Forget a local pack and delete its files (gc, under the store lock)."""
        with self._fds_lock:
            fd = self._fds.pop(pack_id, None)
        if fd is not None:
            os.close(fd)
        with self._transaction(self.wdb) as conn:
            conn.execute("UPDATE packs SET local = 0 WHERE id = ?", (pack_id,))
        for path in (self.pack_path(pack_id), self.index_path(pack_id)):
            path.unlink(missing_ok=True)

    def touch(self, pack_id: str) -> None:
        """Mark a pack as just used: gc spares packs younger than its grace period, so a
        capture that relies on this pack is published before gc may take it."""
        try:
            os.utime(self.pack_path(pack_id))
        except OSError:
            pass  # gone: publish finds out (every chunk is checked when read)

    def chunks_of(self, pack_id: str) -> list[IndexEntry]:
        return [IndexEntry(bytes(c), o, cl, pl) for c, o, cl, pl in
                self.db.execute("SELECT id, offset, clen, plen FROM chunks WHERE pack = ?", (pack_id,))]

    # -- chunks -----------------------------------------------------------------------

    def locate(self, chunks: Sequence[bytes]) -> dict[bytes, Location]:
        """Where each of ``chunks`` lies in a local pack (absent ones are left out)."""
        return self._locations("JOIN packs p ON p.id = c.pack WHERE p.local = 1", (), chunks)

    def _locations(self, where: str, params: tuple, chunks: Sequence[bytes]) -> dict[bytes, Location]:
        """The locations of ``chunks`` in the packs ``where`` picks (a chunk in several: the
        first row's). Each batch's rows come back as one text: a row a step gives the GIL up
        and takes it back, and beside another thread that wants it (a capture's walk) the
        lookups took twice as long (48,000 chunks: 0.35-0.38 s against 0.18-0.19 s)."""
        found: dict[bytes, Location] = {}
        db = self.db
        for batch in _batches(list(dict.fromkeys(chunks))):
            marks = ",".join("?" * len(batch))
            (rows,) = db.execute(
                "SELECT group_concat(hex(c.id) || ' ' || c.pack || ' ' || c.offset || ' ' || c.clen || ' ' || c.plen, "
                f"' ') FROM chunks c {where} AND c.id IN ({marks})", (*params, *batch)).fetchone()
            fields = rows.split(" ") if rows else ()
            for i in range(0, len(fields), 5):
                chunk = bytes.fromhex(fields[i])
                if chunk not in found:
                    found[chunk] = Location(fields[i + 1], int(fields[i + 2]), int(fields[i + 3]), int(fields[i + 4]))
        return found

    def missing(self, chunks: Sequence[bytes]) -> list[bytes]:
        """The chunks of ``chunks`` no local pack holds, in their order, once each."""
        have = self.locate(chunks)
        return [c for c in dict.fromkeys(chunks) if c not in have]

    def absent(self, chunks: Iterable[tuple[bytes, int]]) -> Iterator[tuple[bytes, int]]:
        """Those of ``chunks`` (id, plain size) no local pack holds, each once, streamed."""
        batch: dict[bytes, int] = {}
        seen: set[bytes] = set()
        for chunk, size in chunks:
            if chunk in seen:
                continue
            seen.add(chunk)
            batch[chunk] = size
            if len(batch) >= _ABSENT_BATCH:
                yield from self._absent(batch)
                batch = {}
        yield from self._absent(batch)

    def _absent(self, batch: dict[bytes, int]) -> list[tuple[bytes, int]]:
        """Those of ``batch`` no local pack holds, in its order. A restore asks this of every
        chunk of a checkpoint and most are there: the ids go in as one blob that SQLite cuts
        itself, and only the absent ones' places come back (9,000 chunks, 1% absent: 7-8 ms,
        against 13-14 ms for an ``IN`` list whose present ids came back as hex)."""
        by_width: dict[int, list[bytes]] = {}
        for chunk in batch:
            by_width.setdefault(len(chunk), []).append(chunk)
        gone: set[bytes] = set()
        for width, ids in by_width.items():
            (places,) = self.db.execute(_ABSENT_SQL, (b"".join(ids), width, len(ids))).fetchone()
            if places:
                gone.update(ids[int(i)] for i in places.split(" "))
        return [(c, n) for c, n in batch.items() if c in gone] if gone else []

    def frame(self, chunk: bytes, location: Location) -> bytes:
        """The compressed frame of ``chunk`` (not checked: :func:`open_frame` checks it)."""
        return read_frame(self._fd(location.pack), location.entry(chunk), f"local pack {location.pack[:16]}")

    def read(self, chunk: bytes, location: Location, plen: int) -> bytes:
        """The plain bytes of ``chunk``, checked against its id and the manifest's size."""
        where = f"local pack {location.pack[:16]}"
        try:
            return open_frame(read_frame(self._fd(location.pack), location.entry(chunk), where), chunk, plen, where)
        except ChunkCorrupt:
            self.note_damaged(chunk, location, plen)
            raise

    def read_run(self, wanted: Sequence[tuple[bytes, Location, int]]) -> Iterator[bytes]:
        """The plain bytes of each (chunk, location, plain size) of ``wanted``, in order, each
        checked as :meth:`read` checks it. Frames that follow each other in a pack (a tree's
        files were packed in the order a restore writes them) come from one ``pread`` of at
        most :data:`_SPAN` bytes: a restore's task of small files costs a read or two, not
        one a file."""
        count, i = len(wanted), 0
        while i < count:
            first = wanted[i][1]
            end, j = first.offset + first.clen, i + 1
            while j < count:
                following = wanted[j][1]
                if following.pack != first.pack or not end <= following.offset <= end + _GAP or \
                        following.offset + following.clen - first.offset > _SPAN:
                    break
                end, j = following.offset + following.clen, j + 1
            where = f"local pack {first.pack[:16]}"
            span = memoryview(os.pread(self._fd(first.pack), end - first.offset, first.offset))
            for chunk, location, plen in wanted[i:j]:
                start = location.offset - first.offset
                frame = span[start:start + location.clen]
                try:
                    if len(frame) != location.clen:
                        raise ChunkCorrupt(f"{where}: chunk {chunk.hex()[:16]} lies past the end of the pack")
                    data = open_frame(frame, chunk, plen, where)
                except ChunkCorrupt:
                    self.note_damaged(chunk, location, plen)
                    raise
                yield data
            i = j

    def note_damaged(self, chunk: bytes, location: Location, plen: int) -> None:
        """A chunk read from ``location`` did not match its id: forget it there, unless the
        reader expected another size than the pack's index gives (then the reader's entry lies)."""
        if plen == location.plen:  # the pack's own index agrees with the reader: the pack is damaged
            self.forget_chunk(chunk, location.pack)

    def forget_chunk(self, chunk: bytes, pack_id: str) -> None:
        """A chunk a local pack holds damaged: no longer found there, so the next capture
        stores it again and the next download fetches it again (gc drops the rest)."""
        with self._transaction(self.wdb) as conn:
            conn.execute("DELETE FROM chunks WHERE id = ? AND pack = ?", (chunk, pack_id))

    def _fd(self, pack_id: str) -> int:
        with self._fds_lock:
            fd = self._fds.get(pack_id)
            if fd is None:
                try:
                    fd = os.open(self.pack_path(pack_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError as exc:
                    raise ChunkCorrupt(f"local pack {pack_id[:16]} cannot be read: {exc.strerror or exc}") from None
                self._fds[pack_id] = fd
            return fd

    # -- packs of backends ------------------------------------------------------------

    def known_indexes(self, pack_ids: Iterable[str]) -> set[str]:
        """Those of ``pack_ids`` whose index is already in the database."""
        ids = list(pack_ids)
        known: set[str] = set()
        for start in range(0, len(ids), _BATCH):
            batch = ids[start:start + _BATCH]
            marks = ",".join("?" * len(batch))
            known |= {row[0] for row in self.db.execute(f"SELECT id FROM packs WHERE id IN ({marks})", batch)}
        return known

    def add_index(self, pack_id: str, size: int, entries: Sequence[IndexEntry]) -> None:
        """Remember what a pack of a backend holds (its index, checked against its size)."""
        with self._transaction(self.wdb) as conn:
            self._insert(conn, pack_id, size, entries, local=False)

    def forget_index(self, pack_id: str) -> None:
        """Drop what a backend's pack index said (it lied: a chunk did not match)."""
        with self._transaction(self.wdb) as conn:
            if not conn.execute("SELECT local FROM packs WHERE id = ? AND local = 1", (pack_id,)).fetchone():
                conn.execute("DELETE FROM chunks WHERE pack = ?", (pack_id,))
                conn.execute("DELETE FROM packs WHERE id = ?", (pack_id,))

    def set_remote_packs(self, backend: str, packs: dict[str, int | None]) -> None:
        """What a listing of ``backend`` showed: its packs now, replacing what was known."""
        with self._transaction(self.wdb) as conn:
            conn.execute("DELETE FROM remote_packs WHERE backend = ?", (backend,))
            conn.executemany("INSERT INTO remote_packs VALUES (?, ?, ?)",
                             [(backend, p, s) for p, s in packs.items()])

    def remote_pack_sizes(self, backend: str) -> dict[str, int | None]:
        return dict(self.db.execute("SELECT pack, size FROM remote_packs WHERE backend = ?", (backend,)))

    def remote_locate(self, backend: str, chunks: Sequence[bytes]) -> dict[bytes, Location]:
        """Where each of ``chunks`` lies in a pack ``backend`` listed (by the indexes known)."""
        return self._locations("JOIN remote_packs r ON r.pack = c.pack WHERE r.backend = ?", (backend,), chunks)

    def close(self) -> None:
        with self._fds_lock:
            for fd in self._fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds.clear()
        for name in ("reader", "writer"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)


__all__ = ["ChunkMissing", "Location", "PackStore"]
