"""An attacker's toolkit for store format 4: craft objects in a store as anyone who can write
it could, to test that gaia never uses what it must not.

A store here is a directory laid out as gaia lays out a ``dir`` backend or its local store:
``points/<id>/<fp>/<manifest file>`` and ``packs/<id>.pack`` + ``.idx``. The toolkit writes
entry lists (as parts), chunks and packs (honest ones, or ones that lie: a frame that does
not match its id, an index with wrong offsets) and manifests, unsigned or signed by any key
(the attacker's own, or a stolen one). It uses gaia's own encoders, as an attacker with the
source would; the lies are made by hand. A local store also gets its chunk database rebuilt
from the ``.idx`` files, as gaia itself would. It also reads a store back without gaia's
database (:func:`stored_entries`, every chunk checked; :func:`packs_holding`), for tests
that look at what gaia stored, and ages files for gc's grace period (:func:`age`).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import blake3

from gaia_core.checkpoints.chunking import CHUNKING, HASH, MAX_CHUNK, SMALL_FILE, chunk_id
from gaia_core.checkpoints.entries import Entry, decode_part, encode, sort_key
from gaia_core.checkpoints.manifest import manifest_name
from gaia_core.checkpoints.packs import (
    PACK_MAGIC,
    IndexEntry,
    compress,
    decode_index,
    encode_index,
    index_name,
    open_frame,
    pack_name,
)
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.signing import SigningKey, sign

MTIME_NS = 1_700_000_000 * 10**9
UNSIGNED = "manifest.json"

# -- where things are -------------------------------------------------------------------


def object_dirs(root: Path, point: str = "base") -> list[Path]:
    """The fingerprint directories of ``point`` in the store at ``root`` that hold a manifest
    in any slot."""
    base = root / "points" / point
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and slots(p))


def slots(obj: Path) -> list[str]:
    """The manifest files under one fingerprint (``manifest.json``, ``manifest.key.<k>.json``)."""
    return sorted(p.name for p in obj.iterdir()
                  if p.name == UNSIGNED or (p.name.startswith("manifest.key.") and p.name.endswith(".json")))


def read_manifest(obj: Path, name: str | None = None) -> dict[str, Any]:
    """The manifest in slot ``name``, or the only one there is."""
    if name is None:
        [name] = slots(obj)
    return json.loads((obj / name).read_text())


def write_manifest(obj: Path, manifest: dict[str, Any], name: str | None = None) -> Path:
    """Write ``manifest`` into slot ``name`` (default: the slot its signature names)."""
    if name is None:
        signature = manifest.get("signature")
        name = manifest_name(signature["key"] if isinstance(signature, dict) else None)
    obj.mkdir(parents=True, exist_ok=True)
    path = obj / name
    path.write_text(json.dumps(manifest))
    return path


def pack_files(root: Path) -> dict[str, Path]:
    """Pack id -> pack file of the store at ``root``."""
    packs = root / "packs"
    return {p.name[:-5]: p for p in sorted(packs.glob("*.pack"))} if packs.is_dir() else {}


def chunks_of_pack(root: Path, pack_id: str) -> list[IndexEntry]:
    """What the ``.idx`` of a pack says it holds, in pack order."""
    path = root / "packs" / index_name(pack_id)
    return sorted(decode_index(path.read_bytes(), None, str(path)), key=lambda e: e.offset)


def find_chunk(root: Path, chunk: bytes) -> tuple[Path, IndexEntry]:
    """The pack file and index entry of ``chunk`` in the store at ``root``."""
    for pack_id, path in pack_files(root).items():
        for entry in chunks_of_pack(root, pack_id):
            if entry.chunk == chunk:
                return path, entry
    raise LookupError(f"no pack of {root} holds chunk {chunk.hex()[:16]}")


# -- entries ------------------------------------------------------------------------------


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "d", mode, MTIME_NS)


def f(path: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    """A file entry whose digest and chunks describe ``data`` (cut as gaia would for small
    files, in MAX_CHUNK pieces for large ones)."""
    entry = Entry(path, "f", mode, MTIME_NS, size=len(data), digest=blake3.blake3(data).digest() if data else None)
    if len(data) > SMALL_FILE:
        entry.chunks = tuple((chunk_id(piece), len(piece)) for piece in _pieces(data))
    return entry


def link(path: str, text: str) -> Entry:
    return Entry(path, "l", 0o777, MTIME_NS, link=text)


def hard(path: str, head: str) -> Entry:
    return Entry(path, "h", 0o644, MTIME_NS, link=head)


def _pieces(data: bytes) -> list[bytes]:
    if len(data) <= SMALL_FILE:
        return [data] if data else []
    return [data[i:i + MAX_CHUNK] for i in range(0, len(data), MAX_CHUNK)]


# -- packs --------------------------------------------------------------------------------


class Frames:
    """Chunks to put into one pack: honest ones (``add``) and lies (``add_frame``)."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes, int]] = []  # chunk id, frame, plain size the index says
        self._seen: set[bytes] = set()

    def add(self, data: bytes) -> bytes:
        chunk = chunk_id(data)
        if chunk not in self._seen:
            self._seen.add(chunk)
            self.frames.append((chunk, compress(data), len(data)))
        return chunk

    def add_file(self, data: bytes) -> None:
        for piece in _pieces(data):
            self.add(piece)

    def add_frame(self, chunk: bytes, frame: bytes, plen: int) -> None:
        """A frame filed under ``chunk`` whatever it holds (the lie of a hostile pack)."""
        self._seen.add(chunk)
        self.frames.append((chunk, frame, plen))


def write_pack(root: Path, frames: Frames, *, index: Iterable[IndexEntry] | None = None) -> str:
    """A pack of ``frames`` (and its index, or the given one) in the store at ``root``; the
    pack's id is the hash of its bytes, as gaia names packs. A local store (one with a
    chunk database) learns about it as gaia would, from the ``.idx`` files."""
    body = bytearray(PACK_MAGIC)
    honest = []
    for chunk, frame, plen in frames.frames:
        honest.append(IndexEntry(chunk, len(body), len(frame), plen))
        body += frame
    pack_id = blake3.blake3(bytes(body)).hexdigest()
    packs = root / "packs"
    packs.mkdir(parents=True, exist_ok=True)
    (packs / pack_name(pack_id)).write_bytes(bytes(body))
    (packs / index_name(pack_id)).write_bytes(encode_index(honest if index is None else index))
    refresh_local(root)
    return pack_id


def refresh_local(root: Path) -> None:
    """Make a local store's chunk database match its pack files (a no-op for a dir backend)."""
    if (root / "chunks.db").exists():
        packs = PackStore(root)
        try:
            packs.rebuild()
        finally:
            packs.close()


def rewrite_pack(root: Path, path: Path, data: bytes) -> None:
    """Replace a pack's bytes in place, under its old name (the name no longer matches)."""
    path.write_bytes(data)
    refresh_local(root)


def corrupt_chunk(root: Path, chunk: bytes) -> Path:
    """Flip a byte in the middle of ``chunk``'s frame wherever it is stored; the pack file."""
    path, entry = find_chunk(root, chunk)
    data = bytearray(path.read_bytes())
    data[entry.offset + entry.clen // 2] ^= 0xFF
    rewrite_pack(root, path, bytes(data))
    return path


# -- trees and manifests ------------------------------------------------------------------


def craft_tree(root: Path, entries: Sequence[Entry], contents: Iterable[bytes] = (), *, frames: Frames | None = None,
               sort: bool = True, **lies: Any) -> dict[str, Any]:
    """Store ``entries`` as the one part of an entry list, with the chunks of ``contents``
    (and any extra ``frames``), in a new pack of the store at ``root``; return the
    manifest's ``tree``. Its totals are those of ``entries`` unless ``lies`` say otherwise."""
    listed = sorted(entries, key=lambda e: sort_key(e.path)) if sort else list(entries)
    part = b"".join(encode(e) for e in listed)
    frames = frames or Frames()
    for data in contents:
        frames.add_file(data)
    part_id = frames.add(part)
    write_pack(root, frames)
    chunk_ids = {part_id} | {c for e in listed for c, _ in e.chunk_list()}
    tree = {"hash": HASH, "chunking": CHUNKING, "entries": len(listed),
            "files": sum(1 for e in listed if e.type == "f"), "size": sum(e.size for e in listed if e.type == "f"),
            "packed": sum(len(fr) for _, fr, _ in frames.frames), "chunks": len(chunk_ids),
            "parts": [{"id": part_id.hex(), "size": len(part), "entries": len(listed)}]}
    tree.update(lies)
    return tree


def forge(obj: Path, base: dict[str, Any], tree: dict[str, Any] | None = None, *, key: SigningKey | None = None,
          name: str | None = None, **fields: Any) -> dict[str, Any]:
    """A manifest like ``base`` with ``tree`` and ``fields`` replaced, its signature dropped,
    then signed by ``key`` if given, written into slot ``name`` (default: its signer's)."""
    manifest = copy.deepcopy(base)
    manifest.pop("signature", None)
    if tree is not None:
        manifest["tree"] = tree
    manifest.update(fields)
    if key is not None:
        manifest = sign(manifest, key)
    write_manifest(obj, manifest, name)
    return manifest


def manifest_for(fingerprint: str, tree: dict[str, Any], *, point: str = "base", anchor_task: str = "counter.build",
                 targets: Sequence[str] = ("counter_out",)) -> dict[str, Any]:
    """A complete manifest made from scratch (what an attacker who knows the fingerprint
    writes before the producer ever ran)."""
    from gaia_core.checkpoints.fingerprint import lineage
    from gaia_core.checkpoints.manifest import build_manifest

    return build_manifest(point_id=point, anchor_task=anchor_task, fingerprint=fingerprint,
                          lineage=lineage(anchor_task, fingerprint), trust_mode="verify", inputs={},
                          targets=list(targets), tree=tree, roots={}, embedded=[], prerequisites=[])


def stored_entries(root: Path, manifest: dict[str, Any]) -> list[Entry]:
    """The entries of an object in the store at ``root``, every chunk of it read from the
    packs and checked against its id (raises when one is missing or does not match)."""

    def read(chunk: bytes, plen: int) -> bytes:
        path, entry = find_chunk(root, chunk)
        frame = path.read_bytes()[entry.offset:entry.offset + entry.clen]
        return open_frame(frame, chunk, plen, str(path))

    entries = []
    for part in manifest["tree"]["parts"]:
        entries += decode_part(read(bytes.fromhex(part["id"]), part["size"]), "part")
    for entry in entries:
        for chunk, plen in entry.chunk_list():
            read(chunk, plen)
    return entries


def trojan(target: str = "counter_out") -> tuple[list[Entry], list[bytes]]:
    """A tree that looks like the counter's output but carries a payload that runs code."""
    evil = b"$(shell touch /tmp/gaia-pwned)\n"
    return [d(target), f(f"{target}/value.txt", b"a"), f(f"{target}/.config", evil)], [b"a", evil]


def packs_holding(root: Path, manifest: dict[str, Any]) -> set[str]:
    """The ids of the packs of the store at ``root`` that hold a chunk of the object."""
    wanted = {bytes.fromhex(p["id"]) for p in manifest["tree"]["parts"]}
    wanted |= {c for e in stored_entries(root, manifest) for c, _ in e.chunk_list()}
    return {pack_id for pack_id in pack_files(root) if wanted & {e.chunk for e in chunks_of_pack(root, pack_id)}}


def age(paths: Iterable[Path], seconds: float) -> None:
    """Make files look ``seconds`` old (what gc's grace period looks at)."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


__all__ = [
    "UNSIGNED", "Frames", "age", "chunks_of_pack", "corrupt_chunk", "craft_tree", "d", "f", "find_chunk", "forge",
    "hard", "link", "manifest_for", "object_dirs", "pack_files", "packs_holding", "read_manifest", "refresh_local",
    "rewrite_pack", "slots", "stored_entries", "trojan", "write_manifest", "write_pack",
]
