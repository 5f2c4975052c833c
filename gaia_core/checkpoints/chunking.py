"""Content chunks: how a file's bytes become chunks, and what names a chunk.

A chunk's id is the BLAKE3 hash of its plain bytes, so a chunk is checked against its id
whenever it is read, from any store, and the signed manifest, which lists every id,
commits to every byte of the tree. Files up to :data:`SMALL_FILE` are one chunk (most of
a build tree). Larger files are cut by content-defined chunking (FastCDC): a cut depends
only on the bytes around it, so an insertion in a large file shifts no later cut and the
chunks after it stay the same ones.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence

import blake3

#: the hash of chunk ids, as recorded in manifests
HASH = "blake3"
#: files up to this size are one chunk
SMALL_FILE = 1 << 20
#: FastCDC's bounds for larger files; no chunk is ever larger than MAX_CHUNK
MIN_CHUNK, AVG_CHUNK, MAX_CHUNK = 256 << 10, 1 << 20, 4 << 20
#: what a manifest records so that a reader knows how its chunks were cut
CHUNKING = f"fastcdc2020:{MIN_CHUNK}:{AVG_CHUNK}:{MAX_CHUNK}"
ID_BYTES = 32
#: read size of large files while they are cut
_READ = 8 << 20


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """The id of a chunk: BLAKE3 of its plain bytes (32 bytes)."""
    return blake3.blake3(data).digest()


class ContentHasher:
    """The digest of a whole file, fed piece by piece (equal to the chunk id of a one-chunk file)."""

    def __init__(self) -> None:
        self._h = blake3.blake3()

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


def cut(fd: int, size: int) -> Iterator[bytes | memoryview]:
    """The chunks of the open file ``fd`` of ``size`` bytes, in order.

    A file that changed size while it was read yields what it holds now; the caller
    compares the total with ``size`` and refuses a file that changed under it. A large
    file's chunks are views into the buffer they were read into (see :func:`_cut_large`).
    """
    if size <= SMALL_FILE:
        data = read_small(fd, size)
        if data:
            yield data
        return
    yield from _cut_large(fd)


@functools.cache
def _cutter():  # type: ignore[no-untyped-def]
    """FastCDC's cutter, made on first use: the helper processes of a restore never cut,
    and its import is a tenth of their start."""
    from pyfastcdc import FastCDC

    return FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def _cut_large(fd: int) -> Iterator[memoryview]:
    """FastCDC over buffers of :data:`_READ` bytes, each chunk a view into a buffer of its own.

    pyfastcdc's stream cutter holds the GIL while it moves what is left of its buffer down
    after every chunk, and its chunks are views into that one buffer, to be copied before the
    next; its buffer cutter finds cut points without the GIL. So each buffer here is new, the
    reads and the cutting run without the GIL, and a chunk is handed on uncopied (the views
    keep their buffer alive). A cut is kept only once :data:`MAX_CHUNK` bytes after the
    chunk's start were in view, or the file ended: what the stream cutter would decide, so the
    cut points, and the chunk ids, are the same.
    """
    carry: memoryview | None = None
    while True:
        kept = len(carry) if carry is not None else 0
        buffer = bytearray(kept + _READ)
        view = memoryview(buffer)
        if carry is not None:
            view[:kept] = carry
        filled = kept + _read_into(fd, view[kept:])
        ended = filled < len(buffer)
        view = view[:filled]
        carry = None
        for chunk in _cutter().cut_buf(view):
            if not ended and filled - chunk.offset < MAX_CHUNK:
                carry = view[chunk.offset:]
                break
            yield chunk.data
        if ended:
            return


def cut_as(fd: int, sizes: Sequence[int]) -> Iterator[bytes | memoryview]:
    """The open file's bytes cut where ``sizes`` say, in order, to check a file against the
    chunks an entry or record names: a read and a hash a chunk, no cutting (the content they
    name has these cuts; another content fails a hash whatever its own cuts would be). The
    last chunk is shorter when the file ends early. A large chunk is a view into one buffer
    reused for the next: hash it before asking for the next."""
    if len(sizes) == 1 and sizes[0] <= SMALL_FILE:
        yield read_small(fd, sizes[0])
        return
    buffer = memoryview(bytearray(max(sizes, default=0)))
    for size in sizes:
        got = _read_into(fd, buffer[:size])
        yield buffer[:got]
        if got < size:
            return


def _read_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; the bytes read (fewer only at the end of the file)."""
    done = 0
    while done < len(view):
        got = os.readv(fd, [view[done:]])
        if not got:
            break
        done += got
    return done


def read_small(fd: int, size: int) -> bytes:
    """The content of a file of ``size`` <= SMALL_FILE bytes, one byte more if it grew: one
    ``read`` when it returns just ``size`` bytes (a regular file reads short only at its end),
    which halves the system calls of a tree of tiny files."""
    data = os.read(fd, size + 1)
    if len(data) >= size:
        return data
    rest = _read_all(fd, size + 1 - len(data))
    return data + rest if rest else data


def _read_all(fd: int, limit: int) -> bytes:
    parts = []
    left = limit
    while left > 0:
        data = os.read(fd, min(left, _READ))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


__all__ = ["AVG_CHUNK", "CHUNKING", "HASH", "MAX_CHUNK", "SMALL_FILE", "ContentHasher", "chunk_id", "cut", "cut_as",
           "read_small"]
