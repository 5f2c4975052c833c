"""The store's run journal: records as JSON lines, appended atomically, rotated by size.

``<store>/records/journal.jsonl`` grows by one line per point and run. A run appends all
its lines with one ``write`` on a file opened for appending, under an OS lock that
concurrent runs (and the rotation) take, then fsyncs: no two runs' lines interleave and
no line is torn by another writer. A run killed in the middle of its write can leave a
line without its end; the next append starts on a new line, and readers skip whatever
does not parse as a record. Past ``ROTATE_BYTES`` the journal becomes ``journal.1.jsonl``
(the older ones shift, ``KEEP_ROTATED`` are kept), so the journal stays bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gaia_core.checkpoints.records import check_record

RECORDS_DIR = "records"
JOURNAL = "journal.jsonl"
#: the journal is rotated when an append would take it past this size
ROTATE_BYTES = 4 << 20
#: rotated journals kept (``journal.1.jsonl`` is the newest of them)
KEEP_ROTATED = 4
#: a line longer than this is no record (it is skipped unread)
MAX_LINE = 64 << 10


def encode(records: list[dict[str, Any]]) -> bytes:
    """One line per record; ASCII only, so no character of a value can end a line."""
    return b"".join(json.dumps(r, separators=(",", ":"), ensure_ascii=True).encode() + b"\n" for r in records)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive OS lock on ``directory/.lock`` (released when the process dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Journal:
    def __init__(self, store_root: Path):
        self.dir = store_root / RECORDS_DIR
        self.path = self.dir / JOURNAL

    def rotated(self, n: int) -> Path:
        return self.dir / f"journal.{n}.jsonl"

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as one write; raises OSError (a full disk) with nothing half-written
        that a reader would take for a record."""
        data = encode(records)
        if not data:
            return
        with locked(self.dir):
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > ROTATE_BYTES:
                self._rotate()
                size = 0
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a killed writer's torn line stays alone on its line
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        self.rotated(KEEP_ROTATED).unlink(missing_ok=True)
        for n in range(KEEP_ROTATED - 1, 0, -1):
            if self.rotated(n).exists():
                os.replace(self.rotated(n), self.rotated(n + 1))
        os.replace(self.path, self.rotated(1))

    def files(self) -> list[Path]:
        """The journal's files, oldest first."""
        return [p for p in [*(self.rotated(n) for n in range(KEEP_ROTATED, 0, -1)), self.path] if p.is_file()]

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """Every valid record, oldest first, and how many lines were not one."""
        return read_lines(self.files())


def read_lines(paths: list[Path]) -> tuple[list[dict[str, Any]], int]:
    """The valid records of JSON-lines files, and the count of lines that were not one."""
    records: list[dict[str, Any]] = []
    bad = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    record = None
                    if len(line) <= MAX_LINE:
                        try:
                            record = check_record(json.loads(line))
                        except ValueError:
                            record = None
                    if record is None:
                        bad += 1
                    else:
                        records.append(record)
        except OSError:
            continue
    return records, bad


__all__ = ["JOURNAL", "KEEP_ROTATED", "RECORDS_DIR", "ROTATE_BYTES", "Journal", "encode", "locked", "read_lines"]
