"""gc of unit objects: by reachability from the checkpoints that stay.

A whole tree's manifest lists its units; a unit object that no remaining whole tree of its
point lists goes once it is older than the grace period (a run may have just downloaded it
for a build that is still going, or captured it right before its whole tree). The unit
objects that stay mark their chunks, so the packs they need stay too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints import tree
from gaia_core.checkpoints.entries import EntriesCorrupt, UnsafeEntry
from gaia_core.checkpoints.manifest import OldFormat, slot_of
from gaia_core.checkpoints.packstore import ChunkMissing
from gaia_core.checkpoints.store import UNITS
from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_core.backends import Backend
    from gaia_core.checkpoints.engine import Checkpoints, Log
    from gaia_core.checkpoints.packstore import PackStore
    from gaia_core.checkpoints.transfer import Transfers

#: (point id, unit key)
UnitRef = tuple[str, str]


def units_of(point_id: str, manifest: dict[str, Any]) -> set[UnitRef]:
    """The units a whole tree's manifest lists."""
    units = manifest.get("units")
    if not isinstance(units, dict):
        return set()
    return {(point_id, item["key"]) for item in units.values() if isinstance(item, dict) and isinstance(item.get("key"), str)}


def sweep_local_units(cp: Checkpoints, live: set[UnitRef], mark: Callable[[Iterable[bytes]], None], *, grace: float,
                      dry_run: bool, log: Log, report: Any) -> None:
    """Remove the local unit objects no staying checkpoint lists (past the grace period);
    mark the chunks of the others."""
    store = cp.store
    now = time.time()
    for point_id in store.iter_point_ids(UNITS):
        for obj in store.objects(point_id, area=UNITS):
            ref = (point_id, obj.fingerprint)
            if ref not in live:
                try:
                    age = now - (obj.path / "manifest.json").stat().st_mtime
                except OSError:
                    continue
                if age >= grace:
                    if dry_run or store.remove(obj):
                        report.units_removed.append(f"{point_id}/{obj.fingerprint[:12]}")
                        if not dry_run:
                            log(f"gc: removed local unit {point_id}/{obj.fingerprint[:12]} "
                                f"({(obj.manifest.get('unit') or {}).get('name', '?')}): no checkpoint kept lists it")
                        continue
                else:
                    report.units_kept_young += 1
            if obj.manifest.get("format") != 4:
                continue
            try:
                mark(chunk for chunk, _ in tree.chunks(store.packs, obj.manifest))
            except (ChunkMissing, EntriesCorrupt, UnsafeEntry, CheckpointError) as exc:
                report.broken.append(f"local unit {point_id}/{obj.fingerprint[:12]}: {exc}")


def sweep_remote_units(cp: Checkpoints, backend: Backend, transfers: Transfers, scratch: PackStore,
                       live: set[UnitRef], mark: Callable[[Iterable[bytes]], None], *, grace: float, dry_run: bool,
                       log: Log, report: Any) -> None:
    """The same in a backend: unlisted unit objects past the grace period are deleted (their
    manifests first), the chunks of the others marked."""
    from gaia_core.checkpoints.remote import fetch_manifest

    now = time.time()
    for point_id in backend.list_dirs(UNITS):
        for key in backend.list_dirs(f"{UNITS}/{point_id}"):
            files = [e for e in backend.list_files(f"{UNITS}/{point_id}/{key}") if not e.temporary]
            manifests = [e for e in files if slot_of(e.file_name or "") is not None]
            if (point_id, key) not in live:
                if manifests and all(e.mtime is not None and now - e.mtime >= grace for e in manifests):
                    report.units_removed.append(f"{point_id}/{key[:12]}")
                    if not dry_run:
                        for entry in sorted(files, key=lambda e: slot_of(e.file_name or "") is None):
                            backend.delete(entry.key)
                        log(f"gc: removed unit {point_id}/{key[:12]} from {backend.ref}: no checkpoint kept lists it")
                    continue
                report.units_kept_young += 1
            for entry in manifests:
                where = f"{backend.ref}:{entry.key}"
                try:
                    manifest = fetch_manifest(backend, point_id, key, where, entry.file_name or "", key=entry.key)
                except (OldFormat, CheckpointError):
                    continue
                if manifest is None:
                    continue
                try:
                    transfers.fetch(dict(scratch.absent(tree.parts(manifest))))
                    mark(chunk for chunk, _ in tree.chunks(scratch, manifest))
                except (ChunkMissing, EntriesCorrupt, UnsafeEntry) as exc:
                    report.broken.append(f"{where}: {exc}")
                except CheckpointError as exc:
                    if "holds no pack" not in str(exc):
                        raise
                    report.broken.append(f"{where}: {exc}")


__all__ = ["UnitRef", "sweep_local_units", "sweep_remote_units", "units_of"]
