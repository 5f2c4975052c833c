"""Packs: zstd-compressed chunks gathered into objects of bounded size, each with an index.

A pack is a magic line followed by one zstd frame per chunk; its name is the BLAKE3 hash
of its bytes (``<id>.pack``). Its index (``<id>.idx``) lists, per chunk, the chunk id, the
frame's offset and length and the chunk's plain length, so a reader can fetch one chunk
with a ranged read. Neither is signed: the signed manifest lists chunk ids and sizes, and
:func:`open_frame` checks every chunk against both, so a hostile pack or index can only
make a read fail. A frame must declare its content size, and that size must be the one
the manifest gives, before a byte is decompressed (no decompression bomb).
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import blake3
import zstandard

from gaia_core.checkpoints.chunking import ID_BYTES, MAX_CHUNK, chunk_id
from gaia_core.errors import CheckpointError

PACK_MAGIC = b"GAIAPK1\n"
INDEX_MAGIC = b"GAIAIX1\n"
_ENTRY = struct.Struct("<32sQII")
_COUNT = struct.Struct("<I")
#: the largest frame a chunk of MAX_CHUNK bytes can compress to (zstd's worst case, rounded up)
MAX_FRAME = MAX_CHUNK + (MAX_CHUNK >> 7) + (64 << 10)
#: the smallest pack bound a store may set: one frame of the largest chunk must fit
MIN_PACK_LIMIT = 8 << 20
DEFAULT_PACK_LIMIT = 32 << 20
#: zstd's level for new chunks (``[checkpoints] compression_level``): zstd's own default, and
#: what the benches compare with (``zstd -3``)
DEFAULT_LEVEL = 3
#: the levels a store may be written at: zstd's fastest positive one to its strongest without
#: ``--ultra`` (which, on chunks of at most 4 MiB, would cost much time for little)
LEVELS = range(1, 20)
PACK_ID = re.compile(r"^[0-9a-f]{64}$")

_local = threading.local()


class ChunkCorrupt(CheckpointError):
    """A chunk read from a pack does not match its id or size: the pack or its index lies."""


class IndexEntry(NamedTuple):
    """One row of a pack's index (a tuple: a pack of tiny files has tens of thousands)."""

    chunk: bytes
    offset: int
    clen: int
    plen: int


def pack_name(pack_id: str) -> str:
    return f"{pack_id}.pack"


def index_name(pack_id: str) -> str:
    return f"{pack_id}.idx"


def compress(data: bytes | memoryview, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame at ``level`` that records its content size (one compressor per thread
    and level). Frames of any level read back alike: the level is the writer's choice."""
    compressors = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return compressor.compress(data)


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (one is not to be shared by threads)."""
    made = getattr(_local, "decompressor", None)
    if made is None:
        made = _local.decompressor = zstandard.ZstdDecompressor()
    return made


def open_frame(frame: bytes | memoryview, chunk: bytes, plen: int, where: str) -> bytes:
    """The plain bytes of ``frame``, checked against the chunk id and the size the manifest gives."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise ChunkCorrupt(f"{where}: chunk {chunk.hex()[:16]} is not a zstd frame ({exc})") from None
    if declared != plen:
        raise ChunkCorrupt(f"{where}: chunk {chunk.hex()[:16]} declares {declared} bytes, the manifest {plen}")
    try:
        data = decompressor().decompress(frame)
    except zstandard.ZstdError as exc:
        raise ChunkCorrupt(f"{where}: chunk {chunk.hex()[:16]} does not decompress ({exc})") from None
    if len(data) != plen or chunk_id(data) != chunk:
        raise ChunkCorrupt(f"{where}: chunk {chunk.hex()[:16]} does not match its id")
    return data


def encode_index(entries: Iterable[IndexEntry]) -> bytes:
    rows = sorted(entries, key=lambda e: e.chunk)
    return b"".join([INDEX_MAGIC, _COUNT.pack(len(rows)),
                     *(_ENTRY.pack(e.chunk, e.offset, e.clen, e.plen) for e in rows)])


def decode_index(data: bytes, pack_size: int | None, where: str) -> list[IndexEntry]:
    """The entries of an index, each checked to lie inside a pack of ``pack_size`` bytes."""
    head = len(INDEX_MAGIC) + _COUNT.size
    if len(data) < head or not data.startswith(INDEX_MAGIC):
        raise CheckpointError(f"{where}: not a pack index")
    (count,) = _COUNT.unpack_from(data, len(INDEX_MAGIC))
    if len(data) != head + count * _ENTRY.size:
        raise CheckpointError(f"{where}: pack index length does not match its {count} entries")
    entries = []
    for chunk, offset, clen, plen in _ENTRY.iter_unpack(memoryview(data)[head:]):
        if offset < len(PACK_MAGIC) or not 0 < clen <= MAX_FRAME or plen > MAX_CHUNK or \
                (pack_size is not None and offset + clen > pack_size):
            raise CheckpointError(f"{where}: pack index entry {chunk.hex()[:16]} lies outside the pack")
        entries.append(IndexEntry(chunk, offset, clen, plen))
    return entries


@dataclasses.dataclass(frozen=True)
class FinishedPack:
    pack_id: str
    path: Path  # the pack file, in the writer's directory, named by its id
    index: bytes
    size: int
    entries: list[IndexEntry]


class PackWriter:
    """Appends frames to a new pack in ``directory`` until the next one would pass ``limit``."""

    def __init__(self, directory: Path, limit: int = DEFAULT_PACK_LIMIT):
        self.directory = directory
        self.limit = max(limit, MIN_PACK_LIMIT)
        fd, name = tempfile.mkstemp(prefix=".pack-", suffix=".partial", dir=directory)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)  # frames of tiny files: few write calls
        self._path = Path(name)
        self._hash = blake3.blake3(PACK_MAGIC)
        self._file.write(PACK_MAGIC)
        self.size = len(PACK_MAGIC)
        self.entries: list[IndexEntry] = []

    def fits(self, frame_length: int) -> bool:
        return not self.entries or self.size + frame_length <= self.limit

    def add(self, chunk: bytes, frame: bytes, plen: int) -> IndexEntry:
        if len(chunk) != ID_BYTES:
            raise ValueError("a chunk id is 32 bytes")
        entry = IndexEntry(chunk, self.size, len(frame), plen)
        try:
            self._file.write(frame)
        except OSError as exc:  # a full disk: say which file
            raise CheckpointError(f"writing the checkpoint pack {self._path} failed: {exc.strerror or exc}") from None
        self._hash.update(frame)
        self.size += len(frame)
        self.entries.append(entry)
        return entry

    def finish(self) -> FinishedPack:
        """Close the pack, fsynced, under its final name in ``directory``."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            pack_id = self._hash.hexdigest()
            final = self.directory / pack_name(pack_id)
            os.replace(self._path, final)
        except OSError as exc:
            self.discard()
            raise CheckpointError(f"writing the checkpoint pack {self._path} failed: {exc.strerror or exc}") from None
        return FinishedPack(pack_id, final, encode_index(self.entries), self.size, self.entries)

    def discard(self) -> None:
        try:
            self._file.close()  # closes the file also when its buffered bytes cannot be written
        except OSError:
            pass  # a full disk: they were to be thrown away; the error was reported where it arose
        finally:
            self._path.unlink(missing_ok=True)


def read_frame(fd: int, entry: IndexEntry, where: str) -> bytes:
    """The frame of ``entry`` from the pack open as ``fd`` (a short read is a corrupt pack)."""
    frame = os.pread(fd, entry.clen, entry.offset)
    if len(frame) != entry.clen:
        raise ChunkCorrupt(f"{where}: chunk {entry.chunk.hex()[:16]} lies past the end of the pack")
    return frame


__all__ = [
    "DEFAULT_LEVEL", "DEFAULT_PACK_LIMIT", "LEVELS", "MIN_PACK_LIMIT", "ChunkCorrupt", "FinishedPack", "IndexEntry",
    "PackWriter", "compress", "decode_index", "encode_index", "index_name", "open_frame", "pack_name", "read_frame",
]
