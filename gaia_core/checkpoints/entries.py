"""The entries of a captured tree: what a format-4 manifest lists, in one canonical order.

Each entry is one line of JSON (path, type, mode, mtime to the ns, size, content digest
and chunks, link text or hard-link head). Entries come in *canonical order*: a depth-first
walk with the names of a directory sorted by their bytes, which is the order of the paths'
component tuples. Capture writes them in that order, restore and every reader check it,
so a list can be merged with a walk of a tree or a receipt without holding either in
memory.

:class:`EntryChecker` applies the safety rules of extraction to a stream of entries from
any source (hostile ones included) before anything is written: names are relative and
plain (no ``..``, no ``/`` at either end, no NUL), every entry's parent is a directory
listed just before it (so no entry passes through a link and none replaces one), hard
links name an earlier file, only directories, files and links exist, and the counts and
bytes stay within what the signed root says.
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from typing import Annotated

import msgspec

from gaia_core.checkpoints.chunking import ID_BYTES, MAX_CHUNK, SMALL_FILE
from gaia_core.errors import CheckpointError

TYPES = ("d", "f", "l", "h")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: plain bytes of one part of the entry list (a part is stored as one chunk)
PART_BYTES = 1 << 20
_MAX_LINE = 64 << 10
_MODE_BITS = 0o7777


class UnsafeEntry(CheckpointError):
    """An entry that restore refuses (a name, type or link rule); capture refuses it too."""


class EntriesCorrupt(CheckpointError):
    """The entry list does not parse, is out of order, or disagrees with the signed root."""


@dataclasses.dataclass(slots=True)
class Entry:
    path: str  # "<target name>" or "<target name>/<relative path>", os.fsdecode'd
    type: str  # d (directory), f (file), l (symlink), h (hard link to an earlier file)
    mode: int = 0o755
    mtime_ns: int = 0
    size: int = 0
    #: files: BLAKE3 of the content (the chunk id of a one-chunk file)
    digest: bytes | None = None
    #: files cut into several chunks: (chunk id, plain size) in order
    chunks: tuple[tuple[bytes, int], ...] | None = None
    #: symlinks: the link text; hard links: the path of the file they join
    link: str | None = None
    #: a file that later entries may hard-link to
    head: bool = False
    #: a file of a unit object that the captured tree hard-linked to this path of another
    #: unit: a restore of both may link them again (:mod:`.unitrestore`); ignored otherwise
    twin: str | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    def chunk_list(self) -> tuple[tuple[bytes, int], ...]:
        """(chunk id, plain size) of a file's content, in order (none for an empty file)."""
        if self.type != "f" or not self.size:
            return ()
        if self.chunks is not None:
            return self.chunks
        assert self.digest is not None
        return ((self.digest, self.size),)

    def to_json(self) -> dict:
        out: dict = {"p": self.path, "t": self.type, "m": self.mode, "n": self.mtime_ns}
        if self.type == "f":
            out["s"] = self.size
            if self.digest is not None:
                out["d"] = self.digest.hex()
            if self.chunks is not None:
                out["c"] = [[c.hex(), n] for c, n in self.chunks]
            if self.head:
                out["H"] = 1
            if self.twin is not None:
                out["L"] = self.twin
        elif self.type in ("l", "h"):
            out["l"] = self.link
        return out

    @classmethod
    def from_json(cls, data: object) -> Entry:
        if not isinstance(data, dict):
            raise EntriesCorrupt("an entry is not a JSON object")
        try:
            path, kind, mode, mtime_ns = data["p"], data["t"], data["m"], data["n"]
            if type(path) is str and type(mode) is int and mode >= 0 and type(mtime_ns) is int:
                entry = cls(path, kind, mode, mtime_ns)  # what the helpers below check, without a call each
            else:
                entry = cls(path=_string(path), type=kind, mode=_count(mode), mtime_ns=_int(mtime_ns))
            if kind == "f":
                size = data["s"]
                entry.size = size if type(size) is int and size >= 0 else _count(size)
                entry.head = bool(data.get("H"))
                if "L" in data:
                    entry.twin = _string(data["L"])
                if "d" in data:
                    entry.digest = _digest(data["d"])
                if "c" in data:
                    raw = data["c"]
                    if not isinstance(raw, list):
                        raise EntriesCorrupt("chunks are not a list")
                    entry.chunks = tuple((_digest(c[0]), _count(c[1])) for c in raw if _pair(c))
                    if len(entry.chunks) != len(raw):
                        raise EntriesCorrupt("a chunk is not [id, size]")
            elif kind in ("l", "h"):
                entry.link = _string(data["l"])
            elif kind != "d":
                raise EntriesCorrupt(f"unknown entry type {str(kind)[:10]!r}")
        except (KeyError, TypeError, IndexError) as exc:
            raise EntriesCorrupt(f"malformed entry: {exc}") from None
        return entry


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise EntriesCorrupt("a path or link is not a string")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise EntriesCorrupt("a number is not an integer")
    return value


def _count(value: object) -> int:
    if _int(value) < 0:
        raise EntriesCorrupt("a size or mode is negative")
    return value  # type: ignore[return-value]


def _digest(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * ID_BYTES:
        raise EntriesCorrupt("a digest is not 64 hex digits")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        raise EntriesCorrupt("a digest is not hex") from None
    if len(digest) != ID_BYTES:  # fromhex skips spaces
        raise EntriesCorrupt("a digest is not 64 hex digits")
    return digest


def _pair(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2


def sort_key(path: str) -> tuple[bytes, ...]:
    """Canonical order: the path's components as bytes (a depth-first walk, names sorted)."""
    return tuple(path.encode("utf-8", "surrogateescape").split(b"/"))


# -- encoding -----------------------------------------------------------------------------


def encode(entry: Entry) -> bytes:
    """One line of JSON, as ``json.dumps(entry.to_json())`` writes it, built directly (a
    tree has hundreds of thousands of entries). Strings are escaped to ASCII: names that
    are not UTF-8 travel as ``\\udcXX`` escapes and come back as the same bytes."""
    head = f'{{"p":{_quote(entry.path)},"t":"{entry.type}","m":{entry.mode},"n":{entry.mtime_ns}'
    if entry.type == "f":
        tail = f',"s":{entry.size}'
        if entry.digest is not None:
            tail += f',"d":"{entry.digest.hex()}"'
        if entry.chunks is not None:
            tail += ',"c":[' + ",".join(f'["{c.hex()}",{n}]' for c, n in entry.chunks) + "]"
        if entry.head:
            tail += ',"H":1'
        if entry.twin is not None:
            tail += f',"L":{_quote(entry.twin)}'
    elif entry.type in ("l", "h"):
        tail = f',"l":{_quote(entry.link or "")}'
    else:
        tail = ""
    return (head + tail + "}\n").encode()


_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def decode_part(data: bytes, where: str) -> Iterator[Entry]:
    """The entries of one part. Every restore reads the list at least once, so a part as
    capture writes it (ASCII, each line one entry) is read by msgspec's decoder, a slice
    of lines at a time (a full restore hands out its first files before the part is read
    whole); from a slice with anything irregular on, it is read line by line, which names
    the line at fault."""
    lines = data.split(b"\n")
    if not data.isascii() or max(map(len, lines)) > _MAX_LINE:
        yield from _decode_lines(lines, where)
        return
    for start in range(0, len(lines), _SLICE):
        entries = _read_regular(lines[start:start + _SLICE])
        if entries is None:
            yield from _decode_lines(lines[start:], where, start + 1)
            return
        yield from entries


_Count = Annotated[int, msgspec.Meta(ge=0)]
_Hex = Annotated[str, msgspec.Meta(min_length=2 * ID_BYTES, max_length=2 * ID_BYTES)]


class _Line(msgspec.Struct):
    """An entry's line as :func:`encode` writes it (a key left out is UNSET, never None)."""

    p: str
    t: str
    m: _Count
    n: int
    s: _Count = 0
    d: _Hex | msgspec.UnsetType = msgspec.UNSET
    c: list[tuple[_Hex, _Count]] | msgspec.UnsetType = msgspec.UNSET
    H: int = 0
    L: str | msgspec.UnsetType = msgspec.UNSET
    l: str | msgspec.UnsetType = msgspec.UNSET  # noqa: E741 (the key encode writes)


_decode_line = msgspec.json.Decoder(_Line).decode
#: lines of a part read by msgspec at a time
_SLICE = 512


class _Irregular(Exception):
    """A line the regular reading does not take (the line-by-line one says what is wrong)."""


def _read_regular(lines: list[bytes]) -> list[Entry] | None:
    """The entries of ``lines`` (ASCII) as capture writes them, or None for anything else
    (no entry is taken here that :meth:`Entry.from_json` would refuse)."""
    try:
        return [_entry_of(_decode_line(line)) for line in lines if line]
    except (msgspec.DecodeError, ValueError, _Irregular):
        return None


def _entry_of(line: _Line) -> Entry:
    kind = line.t
    entry = Entry(line.p, kind, line.m, line.n)
    if kind == "f":
        entry.size, entry.head = line.s, bool(line.H)
        if line.L is not msgspec.UNSET:
            entry.twin = line.L
        if line.d is not msgspec.UNSET:
            entry.digest = _id(line.d)
        if line.c is not msgspec.UNSET:
            entry.chunks = tuple((_id(c), n) for c, n in line.c)
    elif kind == "l" or kind == "h":
        if line.l is msgspec.UNSET:
            raise _Irregular
        entry.link = line.l
    elif kind != "d":
        raise _Irregular
    return entry


def _id(text: str) -> bytes:
    value = bytes.fromhex(text)  # ValueError: not hex
    if len(value) != ID_BYTES:  # spaces, which fromhex skips
        raise _Irregular
    return value


_scan_once = json.JSONDecoder().scan_once


def json_line(text: str) -> object | None:
    """The one JSON value ``text`` is, without whitespace around it, read by json's C scanner
    (entry lists and receipts are read line by line, and a ``json.loads`` a line costs 3x);
    None when it is anything else (or ``null``)."""
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        return None
    return value if end == len(text) else None


def chunks_of_part(data: bytes, where: str) -> Iterator[tuple[bytes, int]]:
    """(chunk id, plain size) of every file of one part, in order: what the chunk lookups
    before a restore and a download need, read without making an entry of every line
    (a part with anything unexpected is read as entries, which says what is wrong)."""
    found = _chunk_lines(data)
    if found is None:
        for entry in decode_part(data, where):
            yield from entry.chunk_list()
        return
    yield from found


def _chunk_lines(data: bytes) -> list[tuple[bytes, int]] | None:
    values = _scan_lines(data)
    if values is None:
        return None
    found: list[tuple[bytes, int]] = []
    try:
        for value in values:
            if value.get("t") != "f":  # type: ignore[union-attr]
                continue
            size = value["s"]  # type: ignore[index]
            if type(size) is not int or size <= 0:
                if size != 0 or type(size) is not int:
                    return None
                continue
            listed = value.get("c")  # type: ignore[union-attr]
            pairs = ((value["d"], size),) if listed is None else listed  # type: ignore[index]
            for chunk, plain in pairs:
                if type(chunk) is not str or len(chunk) != 2 * ID_BYTES or type(plain) is not int or plain <= 0:
                    return None
                found.append((bytes.fromhex(chunk), plain))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return found


def _scan_lines(data: bytes) -> list[object] | None:
    """The JSON value of each non-empty line, when every line is exactly one value (no
    whitespace around it) of at most ``_MAX_LINE`` bytes; None otherwise."""
    if not data.isascii():  # entries are written as ASCII: the lines are read one by one
        return None
    values: list[object] = []
    for line in data.decode("ascii").split("\n"):
        if not line:
            continue
        value = json_line(line) if len(line) <= _MAX_LINE else None
        if value is None:
            return None
        values.append(value)
    return values


def _decode_lines(lines: list[bytes], where: str, first: int = 1) -> Iterator[Entry]:
    """The entries of ``lines``, one ``json.loads`` each (``first``: the number of the first)."""
    for number, line in enumerate(lines, first):
        if not line:
            continue
        if len(line) > _MAX_LINE:
            raise EntriesCorrupt(f"{where}: line {number} is longer than {_MAX_LINE} bytes")
        try:
            yield Entry.from_json(json.loads(line))
        except ValueError as exc:
            raise EntriesCorrupt(f"{where}: line {number} is not JSON: {exc}") from None
        except EntriesCorrupt as exc:
            raise EntriesCorrupt(f"{where}: line {number}: {exc}") from None


class PartWriter:
    """Gathers encoded entries into parts of about PART_BYTES; ``emit(data, count)`` gets each."""

    def __init__(self, emit):  # type: ignore[no-untyped-def]
        self._emit = emit
        self._lines: list[bytes] = []
        self._size = 0

    def add(self, entry: Entry) -> None:
        line = encode(entry)
        if len(line) > _MAX_LINE:
            raise UnsafeEntry(f"refusing to capture {entry.path[:200]!r}: its entry is longer than "
                              f"{_MAX_LINE} bytes (a name or link text that long is not supported)")
        self._lines.append(line)
        self._size += len(line)
        if self._size >= PART_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._emit(b"".join(self._lines), len(self._lines))
            self._lines, self._size = [], 0


# -- checking -----------------------------------------------------------------------------


@dataclasses.dataclass
class Limits:
    """What the signed root promises: no more entries, and no more file bytes, than this."""

    entries: int | None = None
    size: int | None = None


class EntryChecker:
    """Checks a stream of entries against the safety rules; raises on the first violation."""

    def __init__(self, targets: Sequence[str], limits: Limits | None = None):
        for name in targets:
            if not _TARGET_NAME.match(name):
                raise UnsafeEntry(f"invalid target name {name!r}")
        if len(set(targets)) != len(targets):
            raise UnsafeEntry(f"a target name is used twice: {', '.join(targets)}")
        self._targets = list(targets)
        self._next_target = 0
        self._limits = limits or Limits()
        self._dirs: list[str] = []  # the open directories of the depth-first walk
        self._last: tuple[bytes, ...] | None = None
        self._heads: set[str] = set()
        self.entries = 0
        self.size = 0
        self.setid: list[str] = []

    def check(self, entry: Entry) -> Entry:
        path = entry.path
        parts = path.split("/")
        self.entries += 1
        if self._limits.entries is not None and self.entries > self._limits.entries:
            raise EntriesCorrupt(f"the tree holds more than the {self._limits.entries} entries its manifest says")
        if "\0" in path or "" in parts or "." in parts or ".." in parts:
            raise UnsafeEntry(f"entry {path[:200]!r}: not a plain relative name")
        key = sort_key(path)
        # canonical order holds within each target; targets come in the order listed
        if len(parts) > 1 and self._last is not None and key <= self._last:
            raise EntriesCorrupt(f"entry {path[:200]!r} is out of order (or listed twice)")
        self._last = key
        if len(parts) == 1:
            self._check_target_root(entry)
        else:
            dirs, parent = self._dirs, path.rpartition("/")[0]
            while dirs and dirs[-1] != parent:
                dirs.pop()
            if not dirs:
                raise UnsafeEntry(f"entry {path[:200]!r}: its parent is not a directory listed before it "
                                  "(a path through a link, or a missing directory)")
        if entry.mode & ~_MODE_BITS:
            raise UnsafeEntry(f"entry {path[:200]!r}: mode {entry.mode:o} has bits beyond permissions")
        if entry.type == "d":
            self._dirs.append(path)
        elif entry.type == "f":
            self._check_file(entry)
        elif entry.type == "l":
            if not entry.link or "\0" in entry.link:
                raise UnsafeEntry(f"entry {entry.path[:200]!r}: empty link text")
        elif entry.type == "h":
            if entry.link not in self._heads:
                raise UnsafeEntry(f"entry {entry.path[:200]!r}: a hard link must join an earlier file "
                                  f"({str(entry.link)[:200]!r} is none)")
        else:
            raise UnsafeEntry(f"entry {entry.path[:200]!r}: type {entry.type!r} is not allowed "
                              "(devices, fifos and sockets never are)")
        return entry

    def _check_target_root(self, entry: Entry) -> None:
        expected = self._targets[self._next_target] if self._next_target < len(self._targets) else None
        if entry.path != expected or entry.type != "d":
            raise UnsafeEntry(f"entry {entry.path[:200]!r}: expected the directory of target {expected!r}")
        self._next_target += 1
        self._dirs = []

    def _check_file(self, entry: Entry) -> None:
        self.size += entry.size
        if self._limits.size is not None and self.size > self._limits.size:
            raise EntriesCorrupt(f"the tree holds more than the {self._limits.size} bytes its manifest says")
        if entry.size and entry.digest is None:
            raise EntriesCorrupt(f"entry {entry.path[:200]!r}: a file without a digest")
        if entry.chunks is None:
            if entry.size > SMALL_FILE:
                raise EntriesCorrupt(f"entry {entry.path[:200]!r}: a large file without its chunks")
        elif sum(n for _, n in entry.chunks) != entry.size or any(not 0 < n <= MAX_CHUNK for _, n in entry.chunks):
            raise EntriesCorrupt(f"entry {entry.path[:200]!r}: its chunk sizes do not add up to its size")
        if entry.head:
            self._heads.add(entry.path)
        if entry.mode & (stat.S_ISUID | stat.S_ISGID):
            self.setid.append(entry.path)

    def finish(self) -> None:
        if self._next_target != len(self._targets):
            missing = self._targets[self._next_target:]
            raise EntriesCorrupt(f"the tree has no entries for target(s) {', '.join(missing)}")
        if self._limits.entries is not None and self.entries != self._limits.entries:
            raise EntriesCorrupt(f"the tree holds {self.entries} entries, its manifest says {self._limits.entries}")
        if self._limits.size is not None and self.size != self._limits.size:
            raise EntriesCorrupt(f"the tree holds {self.size} bytes, its manifest says {self._limits.size}")


def checked(entries: Iterable[Entry], targets: Sequence[str], limits: Limits | None = None) -> Iterator[Entry]:
    """``entries``, each checked before it is yielded; the end of the stream checks the totals."""
    checker = EntryChecker(targets, limits)
    for entry in entries:
        yield checker.check(entry)
    checker.finish()


__all__ = ["PART_BYTES", "Entry", "EntriesCorrupt", "EntryChecker", "Limits", "PartWriter", "UnsafeEntry",
           "checked", "chunks_of_part", "decode_part", "encode", "json_line", "sort_key"]
