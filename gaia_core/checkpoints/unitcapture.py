"""Capture of units: each unit's object cut out of the whole tree's object, reading no file.

Right after a capture the whole tree's entries are in the store, with their digests and
chunks; a unit's object lists the entries below the unit's paths (and the directories
above them), so it stores nothing but its entry list: every chunk is the whole tree's.

Hard links across units (Buildroot prepares a package's ``per-package`` dir with ``rsync
--link-dest`` from its dependencies') are kept as content plus a *twin*: a file of unit U
whose inode the tree shares with a file of a unit U depends on names that file, and a
restore of both links them again (:mod:`.unitrestore`). A hard link inside one unit stays a
hard link; one whose first name lies in another unit becomes a file of its own.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints import chunking, tree
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.entries import Entry, EntryChecker, PartWriter
from gaia_core.checkpoints.manifest import build_manifest
from gaia_core.checkpoints.packs import FinishedPack, PackWriter, compress
from gaia_core.checkpoints.relocate import RootFinder
from gaia_core.checkpoints.signing import sign
from gaia_core.checkpoints.store import UNITS
from gaia_core.checkpoints.unitstore import local_unit, unit_lineage
from gaia_core.checkpoints.units import human_size

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject
    from gaia_core.checkpoints.unitkeys import UnitKey


def owner_index(keys: Mapping[str, UnitKey]) -> dict[tuple[str, ...], str]:
    """Each path a unit owns, as components, -> the unit's name."""
    return {tuple(path.split("/")): name for name, k in keys.items() for path in k.unit.paths}


def owner_of(path: str, owners: Mapping[tuple[str, ...], str]) -> str | None:
    parts = tuple(path.split("/"))
    for end in range(2, len(parts) + 1):
        found = owners.get(parts[:end])
        if found is not None:
            return found
    return None


def closure(keys: Mapping[str, UnitKey]) -> dict[str, set[str]]:
    """Each unit's dependencies, direct or not (``keys`` come in dependency order)."""
    found: dict[str, set[str]] = {}
    for name, k in keys.items():
        found[name] = set()
        for dep in k.unit.deps:
            found[name] |= {dep, *found.get(dep, ())}
    return found


@dataclasses.dataclass
class _Cut:
    """One unit's object while its entries pass."""

    key: UnitKey
    writer: PartWriter
    checker: EntryChecker
    finder: RootFinder
    parts: list[dict] = dataclasses.field(default_factory=list)
    chunks: dict[bytes, int] = dataclasses.field(default_factory=dict)  # id -> plain size
    embedded: list[dict] = dataclasses.field(default_factory=list)
    files: int = 0
    size: int = 0
    owned: int = 0
    dirs: set[str] = dataclasses.field(default_factory=set)
    #: first name in this unit of a hard-link group of the whole tree (group head -> path)
    heads: dict[str, str] = dataclasses.field(default_factory=dict)
    targets: list[str] = dataclasses.field(default_factory=list)

    def add(self, entry: Entry) -> None:
        self.checker.check(entry)
        self.writer.add(entry)
        if entry.type == "f":
            self.files += 1
            self.size += entry.size
            for chunk, plen in entry.chunk_list():
                self.chunks[chunk] = plen
        elif entry.type == "l":
            self.finder.member(os.fsencode(entry.path), "symlink", os.fsencode(entry.link or ""), 0)
        top = entry.path.split("/", 1)[0]
        if top not in self.targets:
            self.targets.append(top)


def _groups(entries: Iterator[Entry]) -> tuple[dict[str, list[str]], dict[str, Entry]]:
    """Hard-link groups of the whole tree: first name -> every name, and each first name's entry."""
    members: dict[str, list[str]] = {}
    heads: dict[str, Entry] = {}
    for entry in entries:
        if entry.type == "f" and entry.head:
            members[entry.path] = [entry.path]
            heads[entry.path] = entry
        elif entry.type == "h" and entry.link in members:
            members[entry.link].append(entry.path)
    return members, heads


def capture_units(cp: Checkpoints, point: Point, anchor: Anchor, whole: LocalObject, keys: Mapping[str, UnitKey],
                  log: Log) -> list[str]:
    """Publish the object of every unit with a key that the store lacks; the names published."""
    wanted = {name: k for name, k in keys.items()
              if k.key is not None and local_unit(cp, point, k.key, anchor, name) is None}
    if not wanted:
        return []
    started = time.monotonic()
    owners = owner_index({n: k for n, k in keys.items() if k.key is not None})
    deps = closure(keys)
    packs = cp.store.packs
    groups, heads = _groups(tree.entries(packs, whole.manifest))
    member_head = {m: head for head, names in groups.items() for m in names[1:]}
    embedded = {item["path"]: item for item in whole.manifest.get("embedded", [])}
    roots = {name: path for name, path in (whole.manifest.get("roots") or {}).items()}
    staging = cp.store.new_staging(point.id, "units")
    pack_writer: PackWriter | None = None
    finished: list[FinishedPack] = []
    #: compressed size of each part chunk written into the new packs
    new_parts: dict[bytes, int] = {}

    def part_sink(cut_holder: list[_Cut]):  # type: ignore[no-untyped-def]
        def emit(data: bytes, count: int) -> None:
            nonlocal pack_writer
            part = chunking.chunk_id(data)
            cut = cut_holder[0]
            cut.parts.append({"id": part.hex(), "size": len(data), "entries": count})
            cut.chunks[part] = len(data)
            if part in new_parts or packs.locate([part]):
                return
            frame = compress(data, cp.settings.compression_level)
            if pack_writer is None or not pack_writer.fits(len(frame)):
                if pack_writer is not None:
                    finished.append(pack_writer.finish())
                pack_writer = PackWriter(staging, cp.pack_limit(point.backends))
            pack_writer.add(part, frame, len(data))
            new_parts[part] = len(frame)

        return emit

    cuts: dict[str, _Cut] = {}
    targets = anchor.targets()
    for name, k in wanted.items():
        holder: list[_Cut] = []
        cut = _Cut(k, PartWriter(part_sink(holder)), EntryChecker([t.name for t in targets if any(
            p.split("/")[0] == t.name for p in k.unit.paths)]), RootFinder(roots, targets))
        holder.append(cut)
        cuts[name] = cut
    published: list[str] = []
    try:
        open_dirs: list[Entry] = []
        for entry in tree.entries(packs, whole.manifest):
            parts = entry.path.split("/")
            while open_dirs and not entry.path.startswith(open_dirs[-1].path + "/"):
                open_dirs.pop()
            owner = owner_of(entry.path, owners) if len(parts) > 1 else None
            cut = cuts.get(owner) if owner else None
            if cut is not None:
                for directory in open_dirs:  # the directories above the unit's path
                    if directory.path not in cut.dirs:
                        cut.dirs.add(directory.path)
                        cut.add(_copy(directory))
                cut.owned += 1
                cut.add(_unit_entry(entry, cut, owner or "", groups, member_head, heads, embedded, owners, deps))
            if entry.type == "d" and owner is None:
                open_dirs.append(entry)
        for name, cut in cuts.items():
            if not cut.owned:
                log(f"checkpoint:{point.id} unit {name}: none of its paths is in the tree; not captured")
                continue
            cut.writer.flush()
        if pack_writer is not None:
            finished.append(pack_writer.finish())
            pack_writer = None
        first = True
        for name, cut in cuts.items():
            if not cut.owned:
                continue
            cut.checker.finish()
            manifest = _manifest(cp, point, cut, whole, packs, new_parts)
            key = cp.signing_key(log)
            if key is not None:
                manifest = sign(manifest, key)
            assert cut.key.key is not None
            if cp.store.get(point.id, cut.key.key, quiet=True, area=UNITS) is None:
                # an object of this key whose entry list was lost (a damaged pack) stays in the way of a new one
                cp.store.discard(point.id, cut.key.key, "unreadable; captured again", area=UNITS)
            cp.store.publish(point.id, cut.key.key, manifest, finished if first else [], area=UNITS)
            first = False
            published.append(name)
    finally:
        if pack_writer is not None:
            pack_writer.discard()
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    new_bytes = sum(p.size for p in finished)
    log(f"checkpoint:{point.id} captured {len(published)} unit(s) from {whole.fingerprint[:12]} "
        f"({human_size(new_bytes)} new: their entry lists) in {time.monotonic() - started:.1f}s")
    return published


def _copy(entry: Entry) -> Entry:
    return dataclasses.replace(entry)


def _unit_entry(entry: Entry, cut: _Cut, owner: str, groups: Mapping[str, list[str]],
                member_head: Mapping[str, str], heads: Mapping[str, Entry], embedded: Mapping[str, dict],
                owners: Mapping[tuple[str, ...], str], deps: Mapping[str, set[str]]) -> Entry:
    """``entry`` as the unit's object lists it: a hard link to a first name outside the unit
    becomes a file, and a file hard-linked to a file of a dependency names it as its twin."""
    if entry.type not in ("f", "h"):
        if entry.path in embedded:
            cut.embedded.append(embedded[entry.path])
        return _copy(entry)
    head = entry.path if entry.type == "f" else (entry.link or "")
    if entry.type == "h":
        first = cut.heads.get(head)
        if first is not None:
            return dataclasses.replace(entry, link=first)
        source = heads[head]
        entry = Entry(entry.path, "f", entry.mode, entry.mtime_ns, size=source.size, digest=source.digest,
                      chunks=source.chunks, head=True)
    else:
        entry = _copy(entry)
    group = groups.get(head, [])
    if len(group) > 1:
        cut.heads[head] = entry.path
        entry.head = True
        entry.twin = next((m for m in group if m != entry.path and owner_of(m, owners) in deps.get(owner, ())), None)
    record = embedded.get(head)
    if record is not None:
        cut.embedded.append({**record, "path": entry.path})
    return entry


def _manifest(cp: Checkpoints, point: Point, cut: _Cut, whole: LocalObject, packs: Any,
              new_parts: dict[bytes, int]) -> dict[str, Any]:
    """``packed`` counts the chunks in the store's packs and the new parts (not published yet)."""
    located = packs.locate(list(cut.chunks))
    packed = sum(location.clen for location in located.values())
    packed += sum(size for part, size in new_parts.items() if part in cut.chunks and part not in located)
    k = cut.key
    assert k.key is not None
    info = {"hash": chunking.HASH, "chunking": chunking.CHUNKING, "entries": cut.checker.entries,
            "files": cut.files, "size": cut.size, "packed": packed, "chunks": len(cut.chunks), "parts": cut.parts}
    unit = {"name": k.name, "label": k.unit.label, "paths": list(k.unit.paths),
            "deps": {d: str(k.inputs["deps"][d]) for d in sorted(k.inputs["deps"])} if k.inputs else {}}
    return build_manifest(
        point_id=point.id, anchor_task=point.anchor_task, fingerprint=k.key,
        lineage=unit_lineage(point.anchor_task, k.key), trust_mode=point.trust_mode, inputs=dict(k.inputs or {}),
        targets=cut.targets, tree=info, roots=dict(whole.manifest.get("roots") or {}),
        embedded=sorted(cut.embedded, key=lambda item: item["path"]), prerequisites=cut.finder.external_links,
        unit=unit,
    )


__all__ = ["capture_units", "closure", "owner_index", "owner_of"]
