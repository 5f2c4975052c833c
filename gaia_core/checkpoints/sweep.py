"""gc's second half: packs by reachability, in the local store and in a backend.

Mark: the chunks of every manifest that stays, of every point in that store (other build
files share the packs), go into a temporary table of the local database. Sweep: a pack
holding no marked chunk is deleted once it is older than the grace period, because a
capture or upload in progress relies on young packs (and a capture touches the old ones it
reuses); a pack as old whose live chunks fill less than half of it is rewritten with just
those. In a backend the new packs are uploaded, and listed, before the old one is deleted,
so a reader that planned reads from the old pack finds its chunks on its next listing and
an upload checking its packs before it publishes finds them too. A manifest whose entry
list cannot be read is broken and marks nothing; a backend that fails while marking stops
the sweep (nothing is deleted on partial knowledge).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.backends import PACKS, Backend, pack_key
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.entries import EntriesCorrupt, UnsafeEntry
from gaia_core.checkpoints.manifest import OldFormat, slot_of
from gaia_core.checkpoints.packs import PackWriter, index_name, pack_name
from gaia_core.checkpoints.packstore import ChunkMissing, PackStore
from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_core.checkpoints.engine import Checkpoints, Log
    from gaia_core.checkpoints.transfer import Transfers

#: a pack whose live chunks fill less than this share of it is rewritten (local) or repacked (remote)
REPACK_BELOW = 0.5


@dataclasses.dataclass
class SweepReport:
    removed: list[str] = dataclasses.field(default_factory=list)  # pack ids
    repacked: list[str] = dataclasses.field(default_factory=list)
    freed: int = 0  # bytes
    kept_young: int = 0  # dead packs spared by the grace period
    broken: list[str] = dataclasses.field(default_factory=list)  # manifests that marked nothing
    #: unit objects no staying checkpoint lists (removed), and those spared by the grace period
    units_removed: list[str] = dataclasses.field(default_factory=list)
    units_kept_young: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"packs_removed": len(self.removed), "packs_repacked": len(self.repacked), "freed": self.freed,
                "young_packs_kept": self.kept_young, "broken": self.broken, "units_removed": self.units_removed,
                "young_units_kept": self.units_kept_young}


class _Marks:
    """Live chunk ids in a temporary table (millions of ids, no Python set)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS live (id BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM temp.live")

    def add(self, chunks: Iterable[bytes]) -> None:
        batch = []
        for chunk in chunks:
            batch.append((chunk,))
            if len(batch) >= 4096:
                self.db.executemany("INSERT OR IGNORE INTO temp.live VALUES (?)", batch)
                batch = []
        self.db.executemany("INSERT OR IGNORE INTO temp.live VALUES (?)", batch)

    def pack_usage(self, packs: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Per pack: (live chunks, live compressed bytes)."""
        usage = {}
        for pack in packs:
            row = self.db.execute("SELECT COUNT(l.id), COALESCE(SUM(c.clen), 0) FROM chunks c JOIN temp.live l "
                                  "ON l.id = c.id WHERE c.pack = ?", (pack,)).fetchone()
            usage[pack] = (int(row[0]), int(row[1]))
        return usage

    def close(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS temp.live")


def _chunk_ids(packs: PackStore, manifest: dict[str, Any]) -> Iterator[bytes]:
    for chunk, _ in tree.chunks(packs, manifest):
        yield chunk


# -- local ------------------------------------------------------------------------------


def sweep_local(cp: Checkpoints, *, grace: float, dry_run: bool, doomed: set[tuple[str, str]],
                log: Log) -> SweepReport:
    """Mark the chunks of every local object that stays (``doomed`` ones do not, for a dry
    run), then remove or repack the local packs that are dead."""
    from gaia_core.checkpoints.unitgc import sweep_local_units, units_of

    store, packs = cp.store, cp.store.packs
    report = SweepReport()
    marks = _Marks(packs.db)
    live_units = set()
    try:
        for point_id in store.iter_point_ids():
            for obj in store.objects(point_id):
                if (point_id, obj.fingerprint) in doomed or obj.manifest.get("format") != 4:
                    continue
                live_units |= units_of(point_id, obj.manifest)
                try:
                    marks.add(_chunk_ids(packs, obj.manifest))
                except (ChunkMissing, EntriesCorrupt, UnsafeEntry, CheckpointError) as exc:
                    report.broken.append(f"local {point_id}/{obj.fingerprint[:12]}: {exc}")
        sweep_local_units(cp, live_units, marks.add, grace=grace, dry_run=dry_run, log=log, report=report)
        now = time.time()
        with store.lock.held("gc packs"):
            local = packs.local_packs()
            for pack, (live, live_bytes) in marks.pack_usage(local).items():
                size = local[pack]
                young = _age(packs.pack_path(pack), now) < grace
                if live == 0:
                    if young:
                        report.kept_young += 1
                        continue
                    report.removed.append(pack)
                    report.freed += size
                    if not dry_run:
                        packs.remove(pack)
                elif live_bytes < REPACK_BELOW * size and not young:
                    report.repacked.append(pack)
                    report.freed += size - live_bytes
                    if not dry_run:
                        _repack(packs, pack, store.tmp_dir(), marks)
    finally:
        marks.close()
    if report.removed or report.repacked:
        verb = "would remove" if dry_run else "removed"
        log(f"gc: {verb} {len(report.removed)} local pack(s) and repacked {len(report.repacked)}")
    return report


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return float("inf")


def _repack(packs: PackStore, pack: str, tmp: Path, marks: _Marks) -> None:
    """Copy the live chunks of ``pack`` into new packs (frames as they are), then drop it."""
    live = {bytes(row[0]) for row in marks.db.execute(
        "SELECT c.id FROM chunks c JOIN temp.live l ON l.id = c.id WHERE c.pack = ?", (pack,))}
    writer: PackWriter | None = None
    for entry in sorted(packs.chunks_of(pack), key=lambda e: e.offset):
        if entry.chunk not in live:
            continue
        location = packs.locate([entry.chunk])
        frame = packs.frame(entry.chunk, location[entry.chunk]) if entry.chunk in location else None
        if frame is None:
            continue
        if writer is None or not writer.fits(len(frame)):
            if writer is not None:
                packs.add(writer.finish())
            writer = PackWriter(tmp)
        writer.add(entry.chunk, frame, entry.plen)
    if writer is not None:
        packs.add(writer.finish())
    packs.remove(pack)


# -- remote -----------------------------------------------------------------------------


def remote_manifests(cp: Checkpoints, backend: Backend) -> Iterator[tuple[str, str, str, dict[str, Any] | None]]:
    """(point, fingerprint, manifest file, manifest or None when unreadable) of every object
    in the backend, every point and every signer's slot."""
    from gaia_core.checkpoints.remote import fetch_manifest

    for point_id in backend.list_dirs("points"):
        for entry in backend.list_entries(point_id):
            if entry.temporary or not entry.fingerprint or slot_of(entry.file_name or "") is None:
                continue
            where = f"{backend.ref}:{entry.key}"
            try:
                manifest = fetch_manifest(backend, point_id, entry.fingerprint, where, entry.file_name or "")
            except (OldFormat, CheckpointError):
                manifest = None
            yield point_id, entry.fingerprint, entry.file_name or "", manifest


def sweep_remote(cp: Checkpoints, backend: Backend, *, grace: float, dry_run: bool,
                 doomed: set[tuple[str, str]], log: Log) -> SweepReport:
    """Mark the chunks of every manifest the backend keeps, then delete its dead packs
    older than the grace period and repack those as old that are mostly dead."""
    from gaia_core.checkpoints.remote import scratch_transfers

    from gaia_core.checkpoints.unitgc import sweep_remote_units, units_of

    report = SweepReport()
    with scratch_transfers(cp, backend) as (transfers, scratch):
        listed = transfers.sync_index()
        marks = _Marks(scratch.db)
        live_units = set()
        try:
            for point_id, fp, name, manifest in remote_manifests(cp, backend):
                if (point_id, fp) in doomed or manifest is None:
                    continue
                live_units |= units_of(point_id, manifest)
                try:
                    transfers.fetch(dict(scratch.absent(tree.parts(manifest))))
                    marks.add(_chunk_ids(scratch, manifest))
                except (ChunkMissing, EntriesCorrupt, UnsafeEntry) as exc:
                    report.broken.append(f"{backend.ref} {point_id}/{fp[:12]}/{name}: {exc}")
                except CheckpointError as exc:
                    if "holds no pack" in str(exc):
                        report.broken.append(f"{backend.ref} {point_id}/{fp[:12]}/{name}: {exc}")
                    else:
                        raise
            sweep_remote_units(cp, backend, transfers, scratch, live_units, marks.add, grace=grace, dry_run=dry_run,
                               log=log, report=report)
            files = {e.key.rpartition("/")[2]: e for e in backend.list_files(PACKS) if not e.temporary}
            now = time.time()
            mostly_dead: dict[str, int] = {}  # pack -> live compressed bytes
            for pack, (live, live_bytes) in marks.pack_usage(listed).items():
                mtime = files[pack_name(pack)].mtime if pack_name(pack) in files else None
                young = mtime is None or now - mtime < grace
                size = listed.get(pack) or 0
                if live and not young and live_bytes < REPACK_BELOW * size:
                    mostly_dead[pack] = live_bytes
                if live:
                    continue
                if young:
                    report.kept_young += 1
                    continue
                report.removed.append(pack)
                report.freed += size
                if not dry_run:  # the index first: a pack without one is never read
                    backend.delete(pack_key(index_name(pack)))
                    backend.delete(pack_key(pack_name(pack)))
            if mostly_dead:
                going = set(report.removed) | set(mostly_dead)
                done = list(mostly_dead) if dry_run else _repack_remote(
                    cp, backend, transfers, scratch, marks, list(mostly_dead), going, log)
                for pack in done:
                    report.repacked.append(pack)
                    report.freed += (listed.get(pack) or 0) - mostly_dead[pack]
            for name, entry in sorted(files.items()):  # half of an upload a kill cut short
                stem, _, ext = name.rpartition(".")
                partner = f"{stem}.idx" if ext == "pack" else f"{stem}.pack"
                if ext in ("pack", "idx") and partner not in files and entry.mtime is not None \
                        and now - entry.mtime >= grace:
                    report.removed.append(stem)
                    report.freed += entry.size or 0
                    if not dry_run:
                        backend.delete(entry.key)
        finally:
            marks.close()
    if report.removed or report.repacked:
        verb = "would remove" if dry_run else "removed"
        log(f"gc: {verb} {len(report.removed)} pack(s) from {backend.ref} and "
            f"{'would repack' if dry_run else 'repacked'} {len(report.repacked)}")
    return report


def _repack_remote(cp: Checkpoints, backend: Backend, transfers: Transfers, scratch: PackStore, marks: _Marks,
                   packs: list[str], going: set[str], log: Log) -> list[str]:
    """Copy the live chunks of each of ``packs`` into new packs of the backend (frames as
    they are, within its pack limit), then, once a new listing shows every one of them in a
    pack that stays, delete the old pack: its index first. Readers that planned reads from
    an old pack list again (:meth:`Transfers.fetch`), an upload that counted on one finds
    its chunks in the new packs when it checks before publishing. Returns the packs done."""
    transfers.pack_limit = cp.pack_limit([backend.ref])
    copied = []
    for pack in packs:
        held = _held_by_staying(marks, backend.ref, pack, going)
        wanted = {c: n for c, n in _live_chunks(marks, pack).items() if c not in held}
        before = set(scratch.local_packs())
        try:
            transfers.fetch(dict(scratch.absent(wanted.items())))
            transfers.send(set(wanted))
        except CheckpointError as exc:  # a live chunk that does not match its id: the pack stays whole
            log(f"WARN: gc: left pack {pack[:16]} in {backend.ref} whole: {exc}")
            continue
        finally:
            for local in set(scratch.local_packs()) - before:  # the scratch store holds one pack's worth
                scratch.remove(local)
        copied.append(pack)
    transfers.sync_index()
    done = []
    for pack in copied:
        if len(_held_by_staying(marks, backend.ref, pack, going)) < len(_live_chunks(marks, pack)):
            log(f"WARN: gc: left pack {pack[:16]} in {backend.ref} whole: the packs its live chunks were "
                "copied to are not listed")
            continue
        backend.delete(pack_key(index_name(pack)))  # the index first: a pack without one is never read
        backend.delete(pack_key(pack_name(pack)))
        scratch.forget_index(pack)
        done.append(pack)
    return done


def _live_chunks(marks: _Marks, pack: str) -> dict[bytes, int]:
    """Chunk id -> plain size of the marked chunks of ``pack``."""
    return {bytes(c): int(n) for c, n in marks.db.execute(
        "SELECT c.id, c.plen FROM chunks c JOIN temp.live l ON l.id = c.id WHERE c.pack = ?", (pack,))}


def _held_by_staying(marks: _Marks, ref: str, pack: str, going: set[str]) -> set[bytes]:
    """The live chunks of ``pack`` that a pack the backend listed last holds too, other than
    the ``going`` ones."""
    rows = marks.db.execute(
        "SELECT c.id, o.pack FROM chunks c JOIN temp.live l ON l.id = c.id JOIN chunks o ON o.id = c.id "
        "JOIN remote_packs r ON r.pack = o.pack AND r.backend = ? WHERE c.pack = ?", (ref, pack))
    return {bytes(chunk) for chunk, holder in rows if holder not in going}


__all__ = ["SweepReport", "remote_manifests", "sweep_local", "sweep_remote"]
