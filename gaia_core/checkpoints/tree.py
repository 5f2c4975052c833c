"""The tree of a stored object: its entries, read from the parts its manifest lists.

Parts are chunks like any other (in the local packs), named by their id in the signed
manifest, so the entry list is checked byte for byte before a line of it is parsed; the
entries are then checked one by one against the safety rules and the manifest's totals
(:class:`~gaia_core.checkpoints.entries.EntryChecker`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gaia_core.checkpoints.entries import Entry, Limits, checked, chunks_of_part, decode_part
from gaia_core.checkpoints.packstore import ChunkMissing, PackStore


def parts(manifest: dict[str, Any]) -> list[tuple[bytes, int]]:
    """(chunk id, plain size) of each part of the entry list."""
    return [(bytes.fromhex(p["id"]), int(p["size"])) for p in manifest["tree"]["parts"]]


def list_key(manifest: dict[str, Any]) -> str:
    """What names the entry list of ``manifest`` (its parts' ids, which the signature covers)."""
    return ",".join(p["id"] for p in manifest["tree"]["parts"])


def raw_entries(packs: PackStore, manifest: dict[str, Any]) -> Iterator[Entry]:
    """The entries as the parts list them (each part checked against its id, nothing more)."""
    for number, data in enumerate(_part_data(packs, parts(manifest)), 1):
        yield from decode_part(data, f"part {number} of the entry list")


def entries(packs: PackStore, manifest: dict[str, Any]) -> Iterator[Entry]:
    """The entries, each checked against the safety rules and the manifest's totals."""
    tree = manifest["tree"]
    names = [t["name"] for t in manifest["targets"]]
    return checked(raw_entries(packs, manifest), names, Limits(tree["entries"], tree["size"]))


#: a restore reads an entry list of at most this many entries once and holds it (about
#: 400 bytes an entry): the chunk lookup before it, the update and its fallbacks share
#: it. A longer one is streamed, read again by each.
HELD_ENTRIES = 100_000


def entry_list(packs: PackStore, manifest: dict[str, Any]) -> list[Entry] | None:
    """The entries, checked (totals included) before the first is used, when the manifest
    lists at most :data:`HELD_ENTRIES`; None when it lists more (stream :func:`entries`)."""
    if int(manifest["tree"]["entries"]) > HELD_ENTRIES:
        return None
    return list(entries(packs, manifest))


def entries_held(packs: PackStore, manifest: dict[str, Any]) -> tuple[Iterator[Entry], list[Entry] | None]:
    """:func:`entries`, streamed, and the list they go into as they are read when the manifest
    lists at most :data:`HELD_ENTRIES` (whole once the stream has ended), else None: a full
    restore writes as it reads, and its receipt takes the entries from the list."""
    stream = entries(packs, manifest)
    if int(manifest["tree"]["entries"]) > HELD_ENTRIES:
        return stream, None
    held: list[Entry] = []

    def holding() -> Iterator[Entry]:
        for entry in stream:
            held.append(entry)
            yield entry

    return holding(), held


def needed_chunks(packs: PackStore, manifest: dict[str, Any],
                  held: Iterable[Entry] | None) -> Iterator[tuple[bytes, int]]:
    """:func:`chunks`, taken from ``held`` (the checked entries) when given."""
    if held is None:
        yield from chunks(packs, manifest)
        return
    yield from parts(manifest)
    for entry in held:
        yield from entry.chunk_list()


def chunks(packs: PackStore, manifest: dict[str, Any]) -> Iterator[tuple[bytes, int]]:
    """(chunk id, plain size) of every chunk the object needs, parts first (repeats included)."""
    listed = parts(manifest)
    yield from listed
    for number, data in enumerate(_part_data(packs, listed), 1):
        yield from chunks_of_part(data, f"part {number} of the entry list")


def _part_data(packs: PackStore, listed: list[tuple[bytes, int]]) -> Iterator[bytes]:
    located = packs.locate([p for p, _ in listed])
    for number, (part, size) in enumerate(listed, 1):
        if part not in located:
            raise ChunkMissing(f"the local store lacks part {number} of the entry list ({part.hex()[:16]})")
        yield packs.read(part, located[part], size)


__all__ = ["HELD_ENTRIES", "chunks", "entries", "entries_held", "entry_list", "list_key", "needed_chunks", "parts",
           "raw_entries"]
