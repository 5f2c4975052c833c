"""Chunks from the tree itself: what a download need not fetch because the target holds it.

A CI runner that restores checkpoint N+1 over the tree of checkpoint N (or over its own
build) may have lost its local store, but its tree still holds most chunks. The tree's
receipt says which file holds which chunks; a file whose ``lstat`` still matches its
record, and that no restore rewrote for other paths, is read, cut again and each chunk
checked against its id before it enters a local pack. Only what is left is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.checkpoints import chunking
from gaia_core.checkpoints.packs import DEFAULT_LEVEL, PackWriter, compress
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.receipt import records_naming


def import_from_tree(targets: Sequence[Target], receipts: Mapping[str, Path | None], packs: PackStore,
                     tmp: Path, wanted: dict[bytes, int], level: int = DEFAULT_LEVEL) -> int:
    """Move the chunks of ``wanted`` (id -> plain size) that the trees hold into local packs
    (compressed at zstd's ``level``), removing them from ``wanted``; returns the plain bytes
    imported."""
    imported = 0
    hex_ids = {chunk.hex().encode() for chunk in wanted}
    writer: PackWriter | None = None
    try:
        for target in targets:
            receipt = receipts.get(target.name)
            if receipt is None or not wanted:
                continue
            for record in records_naming(receipt, hex_ids):
                if record.type != "f" or record.relocated or record.digest is None:
                    continue
                listed = record.chunks or ((record.digest, record.size),)
                if not any(chunk in wanted for chunk, _ in listed):
                    continue
                path = target.path / record.path.split("/", 1)[1] if "/" in record.path else target.path
                for chunk, data in _chunks_if_unchanged(path, record):
                    if chunk not in wanted:
                        continue
                    frame = compress(data, level)
                    if writer is None or not writer.fits(len(frame)):
                        if writer is not None:
                            packs.add(writer.finish())
                        writer = PackWriter(tmp)
                    writer.add(chunk, frame, len(data))
                    imported += len(data)
                    del wanted[chunk]
        if writer is not None:
            if writer.entries:
                packs.add(writer.finish())
            else:
                writer.discard()
            writer = None
    finally:
        if writer is not None:
            writer.discard()
    return imported


def _chunks_if_unchanged(path: Path, record) -> Iterator[tuple[bytes, bytes]]:  # type: ignore[no-untyped-def]
    """The file's chunks one by one, each checked against the record's ids (a chunk is its
    id's bytes whatever happened to the file; the first that is not ends the file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not record.matches(os.fstat(fd)):
            return
        expected = record.chunks or ((record.digest, record.size),)
        for (chunk, size), data in zip(expected, chunking.cut_as(fd, [n for _, n in expected])):
            if len(data) != size or chunking.chunk_id(data) != chunk:
                return
            yield chunk, data
    finally:
        os.close(fd)


__all__ = ["import_from_tree"]
