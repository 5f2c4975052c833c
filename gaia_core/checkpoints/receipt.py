"""The receipt of a tree: what gaia last left in it, so the next capture or restore can tell,
from ``lstat`` alone, which entries are still as it left them.

Every capture and restore writes one beside the tree's marker, after the last step that
touched the tree (mtime placement included): per entry its type, size, mode, mtime, inode
and ctime as they are on disk, and what its content is (digest and chunks; whether a
restore rewrote it for this workspace's paths; the roots it holds). An entry whose
``lstat`` still matches its record holds that content: a write changes the ctime, and
a replacement the inode. The next capture reads only entries that changed (as borg's and
restic's file caches do), and an incremental restore writes only entries that differ.

Records come in the canonical order of :mod:`.entries` (zstd-compressed JSON lines), so a
receipt of 500k entries is merged with a walk, never loaded whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Set
from operator import attrgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
import zstandard

from gaia_core.checkpoints.entries import json_line, sort_key

RECEIPT = ".gaia-receipt.jsonl.zst"
#: the name a receipt has while it is written or copied in beside the marker
RECEIPT_PARTIAL = RECEIPT + ".partial"
VERSION = 1
#: lines a frame of a draft receipt holds at least (unless the draft ends) and at most
_RUN_MIN, _RUN_MAX = 32, 4096
_T = TypeVar("_T")
_TYPES = {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l"}


@dataclasses.dataclass(slots=True)
class Record:
    path: str
    type: str
    mode: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    size: int = 0
    digest: bytes | None = None
    chunks: tuple[tuple[bytes, int], ...] | None = None
    link: str | None = None
    #: the content on disk is the digest's rewritten for this workspace's paths
    relocated: bool = False
    #: (kind, root names) of a file or link that holds roots
    embedded: tuple[str, tuple[str, ...]] | None = None
    #: the mtime the checkpoint gives the entry, when a restore placed another one on disk
    #: (None: the same); lets the next update keep mtimes the placement already set
    captured_ns: int | None = None
    #: the line it was read from (an update writes it again as it is when nothing changed)
    raw: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def captured(self) -> int:
        return self.mtime_ns if self.captured_ns is None else self.captured_ns

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` (an lstat) shows the entry as it was recorded."""
        return (_TYPES.get(stat.S_IFMT(st.st_mode)) == self.type and st.st_ino == self.ino
                and st.st_ctime_ns == self.ctime_ns and st.st_mtime_ns == self.mtime_ns
                and (self.type != "f" or st.st_size == self.size))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"p": self.path, "t": self.type, "m": self.mode, "n": self.mtime_ns,
                               "i": self.ino, "c": self.ctime_ns}
        if self.type == "f":
            out["s"] = self.size
            if self.digest is not None:
                out["d"] = self.digest.hex()
            if self.chunks is not None:
                out["k"] = [[c.hex(), n] for c, n in self.chunks]
            if self.relocated:
                out["x"] = 1
        if self.link is not None:
            out["l"] = self.link
        if self.embedded is not None:
            out["r"] = [self.embedded[0], list(self.embedded[1])]
        if self.captured_ns is not None and self.captured_ns != self.mtime_ns:
            out["o"] = self.captured_ns
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        embedded = data.get("r")
        return cls(
            path=data["p"], type=data["t"], mode=int(data["m"]), mtime_ns=int(data["n"]), ino=int(data["i"]),
            ctime_ns=int(data["c"]), size=int(data.get("s", 0)),
            digest=bytes.fromhex(data["d"]) if "d" in data else None,
            chunks=tuple((bytes.fromhex(c), int(n)) for c, n in data["k"]) if "k" in data else None,
            link=data.get("l"), relocated=bool(data.get("x")),
            embedded=(str(embedded[0]), tuple(embedded[1])) if embedded else None,
            captured_ns=int(data["o"]) if "o" in data else None,
        )

    @classmethod
    def from_item(cls, item: dict[str, Any], line: bytes) -> Record | None:
        """The record a receipt's ``line`` (read as ``item``) holds; None when it holds none."""
        try:
            record = cls.from_json(item)
        except (KeyError, TypeError, ValueError):
            return None
        record.raw = line
        return record

    @classmethod
    def from_line(cls, line: bytes) -> Record | None:
        """The record a line of :func:`lines` holds; None when it holds none."""
        item = _scan_line(line.rstrip(b"\n"))
        return None if item is None else cls.from_item(item, line)


_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_scan_once = json.JSONDecoder().scan_once
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
#: where a receipt's line names a chunk: its content digest, and each of its chunk ids
_NAMED_IDS = (re.compile(rb'"d":"([0-9a-f]{64})"'), re.compile(rb'\["([0-9a-f]{64})"'))


def _encode(r: Record) -> bytes:
    """``json.dumps(r.to_json())`` as one line, built directly (one per entry of a tree)."""
    line = f'{{"p":{_quote(r.path)},"t":"{r.type}","m":{r.mode},"n":{r.mtime_ns},"i":{r.ino},"c":{r.ctime_ns}'
    if r.type == "f":
        line += f',"s":{r.size}'
        if r.digest is not None:
            line += f',"d":"{r.digest.hex()}"'
        if r.chunks is not None:
            line += ',"k":[' + ",".join(f'["{c.hex()}",{n}]' for c, n in r.chunks) + "]"
        if r.relocated:
            line += ',"x":1'
    if r.link is not None:
        line += f',"l":{_quote(r.link)}'
    if r.embedded is not None:
        line += f',"r":[{_quote(r.embedded[0])},[' + ",".join(_quote(n) for n in r.embedded[1]) + "]]"
    if r.captured_ns is not None and r.captured_ns != r.mtime_ns:
        line += f',"o":{r.captured_ns}'
    return (line + "}\n").encode()


def record_of(path: str, st: os.stat_result, **content: Any) -> Record:
    return Record(path, _TYPES.get(stat.S_IFMT(st.st_mode), "?"), stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                  st.st_ino, st.st_ctime_ns, st.st_size if stat.S_ISREG(st.st_mode) else 0, **content)


class ReceiptWriter:
    """Writes a receipt to a temporary file beside ``path``; :meth:`commit` puts it in place."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        # one name per receipt (excluded from captures when it is the target's own), so a
        # receipt cut short is overwritten next time, never captured or left to pile up
        self._tmp = path.with_name(path.name + ".partial")
        self._raw = open(self._tmp, "wb")
        self._out = zstandard.ZstdCompressor(level=1).stream_writer(self._raw, closefd=False)
        self._lines: list[bytes] = []
        self._framed = False  # something went into the compressor's frame since it was last ended
        self._write({"receipt": VERSION, **header})

    def _write(self, obj: dict[str, Any]) -> None:
        self._lines.append(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        if len(self._lines) >= 1024:
            self._flush()

    def _flush(self) -> None:
        if self._lines:
            self._out.write(b"".join(self._lines))
            self._lines, self._framed = [], True

    def add(self, record: Record) -> None:
        self.add_line(_encode(record))

    def add_line(self, line: bytes) -> None:
        """A record already encoded (one line, newline included)."""
        self._lines.append(line)
        if len(self._lines) >= 1024:
            self._flush()

    def add_lines(self, lines: bytes) -> None:
        """Records already encoded (whole lines)."""
        self._flush()
        self._out.write(lines)
        self._framed = True

    def add_frame(self, frame: bytes) -> None:
        """Records already encoded and compressed: one whole zstd frame of whole lines."""
        self._flush()
        if self._framed:  # the frame being written ends first (never an empty one: it would end a read)
            self._out.flush(zstandard.FLUSH_FRAME)
            self._framed = False
        self._raw.write(frame)

    def commit(self) -> None:
        self._flush()
        self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()
        with contextlib.suppress(OSError):
            self._raw.close()
        self._tmp.unlink(missing_ok=True)


class ReceiptDraft:
    """The receipt of a tree an update is bringing to a checkpoint, taken as the update walks it.

    An entry the update leaves alone is recorded at once, from the ``lstat`` the walk took;
    one it touches (writes, re-modes, places, links to) is recorded with the content it
    gets and ``lstat``-ed again at :meth:`commit`, after the last step that touched the
    tree. The records are held zstd-compressed, a frame a run of lines, cut around the
    touched ones, so that :meth:`commit` copies the frames without one as they are; the
    touched records are held whole, so their number is bounded by the caller.
    """

    def __init__(self) -> None:
        self._compress = zstandard.ZstdCompressor(level=1).compress
        self._frames = io.BytesIO()  # the lines so far, a zstd frame a run of them
        #: (first position, end position, end offset in the frames) of each frame
        self._runs: list[tuple[int, int, int]] = []
        self._lines: list[bytes] = []  # the run not compressed yet
        self._first = 0  # its first line's position
        self._touching = False  # it holds a touched entry
        self.count = 0
        #: position -> (record, where it is on disk) of the entries to lstat again
        self.touched: dict[int, tuple[Record, bytes]] = {}

    def add(self, record: Record, fs_path: bytes | None = None, *, raw: bytes | None = None) -> int:
        """Record the next entry (``raw``: the line of an earlier receipt that says it all);
        with ``fs_path`` it is touched. Returns its position."""
        if raw is not None:
            return self.add_line(raw)
        if fs_path is None:
            return self.add_line(_encode(record))
        if not self._touching and len(self._lines) >= _RUN_MIN:
            self._cut()  # the run before stays as it is compressed
        self._touching = True
        self.touched[self.count] = (record, fs_path)
        return self._append(b"\n")

    def retake(self, position: int, record: Record, fs_path: bytes) -> None:
        """The entry recorded at ``position`` is touched after all: ``lstat``-ed again at commit."""
        self.touched[position] = (record, fs_path)

    def add_line(self, line: bytes) -> int:
        """Record the next entry by its line (an earlier receipt's, when that says it all)."""
        if self._touching and len(self._lines) >= _RUN_MIN:
            self._cut()  # the run with a touched entry is written again at commit: kept short
        return self._append(line)

    def _append(self, line: bytes) -> int:
        self._lines.append(line)
        self.count += 1
        if len(self._lines) >= _RUN_MAX:
            self._cut()
        return self.count - 1

    def _cut(self) -> None:
        if self._lines:
            self._frames.write(self._compress(b"".join(self._lines)))
            self._runs.append((self._first, self.count, self._frames.tell()))
            self._lines, self._first, self._touching = [], self.count, False

    def commit(self, path: Path, header: dict[str, Any], relocated: set[str]) -> None:
        """Write the receipt at ``path``; ``relocated``: the touched entries that hold content
        rewritten for this workspace's paths. A run of lines with no touched entry goes in
        as the frame it was compressed into."""
        self._cut()
        frames = self._frames.getbuffer()
        touched = sorted(self.touched)
        writer = ReceiptWriter(path, header)
        try:
            at = offset = 0  # the next touched entry; where the next frame starts
            for first, end, frame_end in self._runs:
                if at == len(touched) or touched[at] >= end:
                    writer.add_frame(frames[offset:frame_end])
                    offset = frame_end
                    continue
                lines: list[bytes | None] = zstandard.ZstdDecompressor().decompress(  # type: ignore[assignment]
                    frames[offset:frame_end]).split(b"\n")[:-1]
                offset, gone = frame_end, False
                while at < len(touched) and touched[at] < end:
                    record, fs_path = self.touched[touched[at]]
                    try:
                        st = os.lstat(fs_path)
                    except FileNotFoundError:
                        lines[touched[at] - first], gone = None, True  # not there after all: read next time
                    else:
                        lines[touched[at] - first] = _encode(record_of(
                            record.path, st, digest=record.digest, chunks=record.chunks, link=record.link,
                            relocated=record.path in relocated, embedded=record.embedded,
                            captured_ns=record.captured_ns))[:-1]
                    at += 1
                kept = [line for line in lines if line is not None] if gone else lines
                if kept:
                    writer.add_lines(b"\n".join(kept) + b"\n")  # type: ignore[arg-type]
            del frames
            writer.commit()
        except BaseException:
            writer.discard()
            raise


def install(source: Path, path: Path) -> None:
    """Put the receipt written at ``source`` (the store's tmp) at ``path`` (beside a marker),
    atomically also when the two lie on different filesystems."""
    try:
        os.replace(source, path)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = path.with_name(RECEIPT_PARTIAL)
    shutil.copyfile(source, partial)
    os.replace(partial, path)
    source.unlink(missing_ok=True)


def remove(directory: Path) -> None:
    for name in (RECEIPT, RECEIPT_PARTIAL):
        (directory / name).unlink(missing_ok=True)


def read_header(path: Path) -> dict[str, Any] | None:
    """The receipt's header, or None when there is no usable receipt."""
    for item in _lines(path):
        return item if item.get("receipt") == VERSION else None
    return None


def records(path: Path) -> Iterator[Record]:
    """The records after the header, in canonical order (nothing when the receipt is unreadable;
    a damaged receipt is a partial one: what follows its first line that is no record is read
    from the tree)."""
    return _records_of(_record_blocks(path))


def lines(path: Path) -> Generator[bytes, None, None]:
    """The record lines after the header, as they are (newline included), not read: an
    update in place compares most of them with the line the entry's ``lstat`` makes
    (:func:`kept_line`) and writes them again as they are, and reads the others
    (:meth:`Record.from_line`, :func:`line_path`). Nothing when the receipt is unreadable."""
    for block in _record_blocks(path):
        yield from block.splitlines(keepends=True)


def line_path(line: bytes) -> str | None:
    """The entry path a receipt line names (its first field), None when it names none."""
    if not line.startswith(b'{"p":"'):
        return None
    try:
        path, _end = _scanstring(line.decode("utf-8"), 6)
    except (UnicodeDecodeError, ValueError):
        return None
    return path


def kept_line(path: str, st: os.stat_result, size: int, digest: bytes | None, link: str | None,
              captured_ns: int) -> bytes:
    """The line :class:`ReceiptWriter` writes for the record of ``path`` as ``st`` shows it,
    with this content (a file of at most one chunk, a link or a directory, nothing rewritten
    for other paths, no roots held), standing for the captured mtime ``captured_ns``: when the last
    receipt has this very line, the entry is still what that receipt says it is."""
    mtime = st.st_mtime_ns
    if link is not None:
        kind, content = "l", f',"l":{_quote(link)}'
    elif stat.S_ISDIR(st.st_mode):
        kind, content = "d", ""
    else:
        kind, content = "f", f',"s":{size}' if digest is None else f',"s":{size},"d":"{digest.hex()}"'
    placed = "" if captured_ns == mtime else f',"o":{captured_ns}'
    return (f'{{"p":{_quote(path)},"t":"{kind}","m":{stat.S_IMODE(st.st_mode)},"n":{mtime},"i":{st.st_ino},'
            f'"c":{st.st_ctime_ns}{content}{placed}}}\n').encode()


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for item, _line in _items(path):
        yield item


def _items(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The receipt's lines as JSON objects, with the line, up to the first one that is not
    (a receipt is read whole by every capture and restore: json's C scanner reads each
    line where it lies in the decompressed block, not a copy of it through ``json.loads``)."""
    for block in _blocks(path):
        for item in _block_items(block):
            if item is None:
                return
            yield item


def _blocks(path: Path) -> Iterator[bytes]:
    """The receipt decompressed, about a MiB of whole lines at a time (nothing of a last
    line cut short, nor of what follows damage: that is read from the tree)."""
    try:
        raw = open(path, "rb")
    except OSError:
        return
    with raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
        buffer = b""
        try:
            while chunk := reader.read(1 << 20):
                cut = chunk.rfind(b"\n") + 1
                if not cut:
                    buffer += chunk
                    continue
                block, buffer = buffer + chunk[:cut], chunk[cut:]
                yield block
        except (zstandard.ZstdError, OSError):
            return


def _record_blocks(path: Path) -> Iterator[bytes]:
    """:func:`_blocks` without the header line (nothing when it is not a receipt's)."""
    blocks = _blocks(path)
    first = next(blocks, b"")
    header, _, rest = first.partition(b"\n")
    item = _scan_line(header)
    if item is None or item.get("receipt") != VERSION:
        return
    yield rest
    yield from blocks


def records_naming(path: Path, ids: Set[bytes]) -> Iterator[Record]:
    """The records that may name one of ``ids`` (chunk ids in hex, as ASCII bytes), in
    order: a block of lines none of which names one is not read line by line (a download
    looks for the chunks it lacks in the tree, which mostly holds none of them)."""
    return _records_of(block for block in _record_blocks(path)
                       if not all(ids.isdisjoint(named.findall(block)) for named in _NAMED_IDS))


def _records_of(blocks: Iterable[bytes]) -> Iterator[Record]:
    """The records of ``blocks``, up to the first line that holds none (a damaged receipt is
    a partial one: what follows is read from the tree)."""
    for block in blocks:
        for record in _block_records(block):
            if record is None:
                return
            yield record


class _RecordLine(msgspec.Struct):
    """A record's line as :func:`_encode` writes it (a key left out is UNSET, never None)."""

    p: str
    t: str
    m: int
    n: int
    i: int
    c: int
    s: int = 0
    d: str | msgspec.UnsetType = msgspec.UNSET
    k: list[tuple[str, int]] | msgspec.UnsetType = msgspec.UNSET
    l: str | msgspec.UnsetType = msgspec.UNSET  # noqa: E741 (the key _encode writes)
    x: int = 0
    r: tuple[str, list[str]] | msgspec.UnsetType = msgspec.UNSET
    o: int | msgspec.UnsetType = msgspec.UNSET


_decode_record = msgspec.json.Decoder(_RecordLine).decode


def _block_records(block: bytes) -> Iterator[Record | None]:
    """Each line of ``block`` (whole lines) as its record; None for the first that holds none.

    Every capture with a receipt reads it whole, so a line as :func:`_encode` writes it (ASCII,
    one object from its first byte to its last) is read by msgspec's decoder, which takes
    only what :meth:`Record.from_json` takes alike; any other line is read by json's scanner
    and :meth:`Record.from_item`, as all were before (50,000 records: 77-79 ms, from
    130-150 ms)."""
    if not block.isascii():
        for read in _block_items(block):
            yield None if read is None else Record.from_item(*read)
        return
    decode, unset = _decode_record, msgspec.UNSET
    start, size = 0, len(block)
    while start < size:
        end = block.find(b"\n", start) + 1 or size
        line = block[start:end]
        start = end
        record = None
        if line.startswith(b"{") and line.endswith(b"}\n") and b"\r" not in line:
            try:
                r = decode(line)
                record = Record(r.p, r.t, r.m, r.n, r.i, r.c, r.s,
                                None if r.d is unset else bytes.fromhex(r.d),
                                None if r.k is unset else tuple((bytes.fromhex(c), n) for c, n in r.k),
                                None if r.l is unset else r.l, bool(r.x),
                                None if r.r is unset else (r.r[0], tuple(r.r[1])),
                                None if r.o is unset else r.o, line)
            except (msgspec.DecodeError, ValueError):
                pass
        if record is None and line.endswith(b"\n"):  # anything else is read as before
            record = Record.from_line(line)
        yield record
        if record is None:
            return


def _block_items(block: bytes) -> Iterator[tuple[dict[str, Any], bytes] | None]:
    """Each line of ``block`` (whole lines) as a JSON object with the line; None for the
    first that is not exactly one object (whitespace around it, nothing, another value)."""
    try:
        text = block.decode("ascii")  # receipts are written in ASCII: offsets in text and block agree
    except UnicodeDecodeError:
        for line in block.split(b"\n")[:-1]:  # a damaged receipt: up to its first line that is no record
            item = _scan_line(line)
            yield None if item is None else (item, line + b"\n")
            if item is None:
                return
        return
    start, size = 0, len(text)
    while start < size:
        try:
            item, end = _scan_once(text, start)
        except (StopIteration, ValueError):
            yield None
            return
        if type(item) is not dict or text[end:end + 1] != "\n":
            yield None
            return
        end += 1
        yield item, block[start:end]
        start = end


def _scan_line(line: bytes) -> dict[str, Any] | None:
    try:
        item = json_line(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return item if isinstance(item, dict) else None


def keep_across(targets, exclude, change):  # type: ignore[no-untyped-def]
    """Run ``change()`` (a step that rewrites the trees' mtimes, nothing else) and keep each
    target's receipt true: the records that match the tree before the step are written again
    with the tree's ``lstat`` after it; the others are dropped (their files are read again).
    Returns what ``change`` returns."""
    from gaia_core.checkpoints.treecapture import walk

    still: dict[str, Path] = {}
    for t in targets:
        path = t.path / RECEIPT
        header = read_header(path)
        if header is None:
            continue
        kept = t.path.parent / f".{t.path.name}.gaia-receipt-kept"
        writer = ReceiptWriter(kept, header)
        cursor = Cursor(records(path))
        for entry_path, _fs, st in walk(t.path, t.name, exclude):
            record = cursor.get(entry_path)
            if record is not None and record.matches(st):
                writer.add(record)
        writer.commit()
        still[t.name] = kept
    result = change()
    for t in targets:
        if t.name not in still:
            continue
        header = read_header(still[t.name]) or {}
        header.pop("receipt", None)
        writer = ReceiptWriter(t.path / RECEIPT, header)
        cursor = Cursor(records(still[t.name]))
        for entry_path, _fs, st in walk(t.path, t.name, exclude):
            record = cursor.get(entry_path)
            if record is not None:
                record.captured_ns = record.captured
                record.mtime_ns, record.ctime_ns, record.ino = st.st_mtime_ns, st.st_ctime_ns, st.st_ino
                writer.add(record)
        writer.commit()
        still[t.name].unlink(missing_ok=True)
    return result


class Cursor(Generic[_T]):
    """Looks records up by path while a walk moves forward in canonical order (each path
    asked once, in that order); ``path`` says where an item's path is (receipt lines:
    :func:`line_path`), None for an item that is none (it ends what is read of the receipt)."""

    def __init__(self, stream: Iterator[_T], path: Callable[[_T], str | None] = attrgetter("path")):
        self._stream = stream
        self._path = path
        self._current = next(stream, None)
        self._taken = False

    def peek(self) -> _T | None:
        """The next item not handed out yet: usually that of the walk's next path."""
        if self._taken:  # handed out for an earlier path: the walk has moved past it
            self._current = next(self._stream, None)
            self._taken = False
        return self._current

    def take(self) -> None:
        """Hand out the item :meth:`peek` gave: it was the walk's path's."""
        self._taken = True

    def get(self, path: str) -> _T | None:
        current = self.peek()
        if current is None:
            return None
        here = self._path(current)
        if here != path:  # not the next one (the receipt has more entries, or fewer)
            key = sort_key(path)
            while here is None or sort_key(here) < key:
                current = self._current = None if here is None else next(self._stream, None)
                if current is None:
                    return None
                here = self._path(current)
            if here != path:
                return None
        self._taken = True
        return current


__all__ = ["RECEIPT", "RECEIPT_PARTIAL", "Cursor", "ReceiptDraft", "Record", "ReceiptWriter", "install", "read_header",
           "kept_line", "line_path", "lines", "record_of", "records", "records_naming", "remove"]
