"""Keeping stores in bounds and moving objects between them: gc, push and pull.

gc chooses among the objects of the given build file's points only, by last use: the run
records (this store's journal and the records its tiers share) say when a run on any host
last restored an object or found it in place; an object no record names counts from its
creation. It never deletes the
current fingerprint of a point, a local object a concurrent run holds, or an object in a
backend younger than the grace period (a reader on another machine may be downloading
it). Then it sweeps packs by reachability: the chunks of every manifest that stays (of
any point in that store) are marked, and a pack holding no marked chunk goes once it is
older than the grace period (an upload or capture in progress relies on young packs, and
touches the old ones it reuses); a local pack mostly dead is repacked. It also removes
litter: temporaries of killed transfers.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gaia_core.backends import PACKS
from gaia_core.checkpoints.config import Retention
from gaia_core.checkpoints.engine import Checkpoints, Log, NotUsedOffline
from gaia_core.errors import BackendError, CheckpointError
from gaia_core.checkpoints.variants import root_fingerprint

if TYPE_CHECKING:
    from gaia_core.backends import Backend, Entry
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.remote import Progress  # noqa: F401

#: default grace period of remote objects, seconds
DEFAULT_GRACE = 3600.0


@dataclasses.dataclass
class Candidate:
    """An object gc looked at."""

    where: str  # "local" or a backend ref
    point: str
    fingerprint: str
    created: float  # epoch seconds
    size: int
    #: the point's current fingerprint, or a variant of it (:mod:`.variants`): never removed
    current: bool = False
    #: why it stays (empty when it goes)
    kept: str = ""
    #: when a run last used it (epoch seconds; None when no record says)
    last_used: float | None = None

    @property
    def recency(self) -> float:
        """What retention orders by: the last use, else the creation."""
        return max(self.created, self.last_used or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _epoch(created_at: str | None, fallback: float | None = None) -> float:
    try:
        return datetime.fromisoformat(str(created_at)).timestamp()
    except ValueError:
        return fallback if fallback is not None else 0.0


def choose(objects: list[Candidate], retention: Retention, now: float) -> None:
    """Mark what stays (``kept`` says why). An object goes when it is beyond the ``keep_last``
    most recently used of its point or unused for ``max_age``; then the least recently used go
    until the rest fit ``max_size``. The current fingerprint, and objects already marked (the
    grace period), always stay."""
    objects.sort(key=lambda o: o.recency, reverse=True)
    for obj in objects:
        if obj.current:
            obj.kept = "current fingerprint"
    doomed: set[int] = set()
    if retention.keep_last is not None:
        seen: dict[str, int] = {}
        for obj in objects:  # the current one counts among the kept
            if obj.current:
                seen[obj.point] = seen.get(obj.point, 0) + 1
        for obj in objects:
            if obj.current:
                continue
            seen[obj.point] = seen.get(obj.point, 0) + 1
            if seen[obj.point] > retention.keep_last:
                doomed.add(id(obj))
    if retention.max_age is not None:
        doomed |= {id(o) for o in objects if not o.current and now - o.recency > retention.max_age}
    if retention.max_size is not None:
        total = 0
        for obj in objects:
            if id(obj) in doomed:
                continue
            total += obj.size
            if total > retention.max_size and not obj.current:
                doomed.add(id(obj))
                total -= obj.size
    for obj in objects:
        if not obj.kept:
            obj.kept = "" if id(obj) in doomed else ("within the retention rules" if retention.any
                                                      else "no retention rule")


def _last_uses(cp: Checkpoints, points: list[Point], *, remote: bool) -> dict[tuple[str, str], float]:
    """(point, fingerprint) -> last use, from every record this build can see (``remote``:
    the tiers' shared records brought up to date first)."""
    from gaia_core.checkpoints.history import gather, last_uses

    return last_uses(gather(cp, points, remote=remote).records)


def gc_local(cp: Checkpoints, points: list[Point], retention: Retention, *, dry_run: bool, log: Log,
             grace: float = DEFAULT_GRACE) -> dict[str, Any]:
    now = time.time()
    used = _last_uses(cp, points, remote=False) if retention.any else {}
    candidates: list[Candidate] = []
    objects = {}
    for point in points:
        current = cp.fingerprint(point).value
        for i, obj in enumerate(cp.store.objects(point.id)):  # newest first
            created = _epoch(obj.manifest.get("created_at"), obj.path.stat().st_mtime)
            size = int((obj.manifest.get("tree") or {}).get("packed") or 0)
            c = Candidate("local", point.id, obj.fingerprint, created, size,
                          current=current is not None and root_fingerprint(obj.manifest) == current,
                          last_used=used.get((point.id, obj.fingerprint)))
            if current is None and i == 0:
                c.kept = "newest (the current fingerprint is not known yet)"
            candidates.append(c)
            objects[(point.id, obj.fingerprint)] = obj
    choose(candidates, retention, now)
    doomed = set()
    for c in candidates:
        if c.kept:
            continue
        if dry_run or cp.store.remove(objects[(c.point, c.fingerprint)]):
            doomed.add((c.point, c.fingerprint))
            if not dry_run:
                log(f"gc: removed local {c.point}/{c.fingerprint[:12]}")
        else:
            c.kept = "in use by a concurrent run"
    from gaia_core.checkpoints.sweep import sweep_local

    sweep = sweep_local(cp, grace=grace, dry_run=dry_run, doomed=doomed, log=log)
    litter = cp.store.litter()
    if not dry_run:
        cp.store.reclaim_tmp()
    return {"objects": [c.to_dict() for c in candidates], "freed": sweep.freed, "packs": sweep.to_dict(),
            "litter": [str(p) for p in litter]}


def gc_remote(cp: Checkpoints, points: list[Point], retention: Retention, *, grace: float, dry_run: bool,
              log: Log, tiers: list[str] | None = None) -> dict[str, Any]:
    """Tier by tier (every tier of ``points``, or only ``tiers``): the objects of ``points``
    chosen as locally, then the tier's packs swept. A read-only tier is left alone; one
    that fails is reported and the next one collected all the same."""
    report: dict[str, Any] = {"objects": [], "freed": 0, "litter": [], "errors": [], "backends": {}, "tiers": {}}
    used = _last_uses(cp, points, remote=True) if retention.any else {}
    by_backend: dict[str, list[Point]] = {}
    for point in points:
        for ref in point.backends:
            if tiers is None or ref in tiers:
                by_backend.setdefault(ref, []).append(point)
    for ref, served in by_backend.items():
        part = report["tiers"][ref] = {"objects": [], "freed": 0, "litter": [], "skipped": None, "error": None}
        if cp.settings.tier_read_only(ref):
            part["skipped"] = "read_only: its table says read_only = true"
            continue
        try:
            _gc_tier(cp, ref, served, retention, part, used=used, grace=grace, dry_run=dry_run, log=log)
        except NotUsedOffline:
            part["skipped"] = f"offline ({cp.offline_source})"
        except BackendError as exc:
            part["error"] = cp.redact(ref, str(exc))
            report["errors"].append(f"{ref}: {part['error']}")
        report["objects"] += part["objects"]
        report["litter"] += part["litter"]
        report["freed"] += part["freed"]
        if "packs" in part:
            report["backends"][ref] = part["packs"]
    return report


def _gc_tier(cp: Checkpoints, ref: str, served: list[Point], retention: Retention, part: dict[str, Any], *,
             used: dict[tuple[str, str], float], grace: float, dry_run: bool, log: Log) -> None:
    """gc in one tier: its objects of ``served`` chosen, then its packs swept; into ``part``."""
    from gaia_core.checkpoints.remote import fetch_manifest
    from gaia_core.checkpoints.sweep import sweep_remote

    now = time.time()
    doomed: set[tuple[str, str]] = set()
    with cp.session(ref) as backend:
        for point in served:
            current = cp.fingerprint(point).value
            entries = backend.list_entries(point.id)
            by_fp: dict[str, list[Entry]] = {}
            for e in entries:
                if e.fingerprint:
                    by_fp.setdefault(e.fingerprint, []).append(e)
            candidates = []
            for fp, files in sorted(by_fp.items()):
                manifests = [e for e in files if e.is_manifest]
                if not manifests:
                    continue
                newest = max(manifests, key=lambda e: e.mtime or 0)
                try:
                    manifest = fetch_manifest(backend, point.id, fp, f"{ref}:{point.id}/{fp[:12]}",
                                              newest.file_name or "")
                except CheckpointError:
                    manifest = None
                size = int(((manifest or {}).get("tree") or {}).get("packed") or 0)
                c = Candidate(ref, point.id, fp, _epoch((manifest or {}).get("created_at"), newest.mtime),
                              size, current=fp == current or bool(manifest) and root_fingerprint(manifest) == current,
                              last_used=used.get((point.id, fp)))
                if any(e.mtime is None or now - e.mtime < grace for e in manifests):
                    c.kept = f"younger than the grace period ({grace:.0f}s)"
                candidates.append(c)
            choose(candidates, retention, now)
            for c in candidates:
                if c.kept:
                    continue
                doomed.add((point.id, c.fingerprint))
                if not dry_run:
                    _delete_object(backend, by_fp[c.fingerprint])
                    log(f"gc: removed {ref} {point.id}/{c.fingerprint[:12]}")
            part["objects"] += [c.to_dict() for c in candidates]
            for e in _remote_litter(entries, now, grace):
                part["litter"].append(f"{ref}:{e.key}")
                if not dry_run:
                    backend.delete(e.key)
        for e in _remote_litter(backend.list_files(PACKS), now, grace):
            part["litter"].append(f"{ref}:{e.key}")
            if not dry_run:
                backend.delete(e.key)
        sweep = sweep_remote(cp, backend, grace=grace, dry_run=dry_run, doomed=doomed, log=log)
        part["freed"] = sweep.freed
        part["packs"] = sweep.to_dict()


def _delete_object(backend: Backend, files: list[Entry]) -> None:
    """The manifests first: from then on readers see no object, never half of one."""
    for e in sorted(files, key=lambda e: not e.is_manifest):
        backend.delete(e.key)


def _remote_litter(entries: list[Entry], now: float, grace: float) -> list[Entry]:
    """Temporaries of killed uploads older than the grace period."""
    return [e for e in entries if e.temporary and e.mtime is not None and now - e.mtime >= grace]


def apply_retention(cp: Checkpoints, point: Point, log: Log) -> None:
    """The ``[checkpoints]`` retention defaults, applied to the local store after a capture."""
    if not cp.settings.retention.any:
        return
    report = gc_local(cp, [point], cp.settings.retention, dry_run=False, log=log)
    gone = [o for o in report["objects"] if not o["kept"]]
    if gone:
        from gaia_core.checkpoints.units import human_size

        log(f"checkpoint:{point.id} retention removed {len(gone)} older object(s), {human_size(report['freed'])}")


def push(cp: Checkpoints, points: list[Point], *, everything: bool, log: Log, progress_factory=None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Upload local objects to every writable tier of their point (each its own queue entry)."""
    from gaia_core.checkpoints.remote import upload

    results = []
    for point in points:
        tiers = cp.writable_tiers(point)
        if not tiers:
            why = "no backend" if not point.backends else "no writable tier (every one is read_only)"
            results.append({"id": point.id, "fingerprint": None, "tier": None, "pushed": False, "why": why})
            continue
        fp = cp.fingerprint(point)
        current = fp.value
        if everything:
            objects = cp.store.objects(point.id)
        else:
            found = cp.store.get(point.id, current) if current else None
            objects = [found] if found else []
        if not objects:
            why = "no local object of the current fingerprint" if current else f"fingerprint {fp.pending}"
            results.append({"id": point.id, "fingerprint": current, "tier": None, "pushed": False, "why": why})
            continue
        for obj in objects:
            for ref in tiers:
                ok = upload(cp, point.id, obj.fingerprint, ref, point.anchor_task, log, progress_factory)
                why = "" if ok else (f"offline ({cp.offline_source}): queued" if cp.offline and
                                     cp.backend(ref).needs_network else "failed")
                results.append({"id": point.id, "fingerprint": obj.fingerprint, "tier": ref, "pushed": ok,
                                "why": why})
    return {"results": results, "failed": sum(1 for r in results if not r["pushed"] and r["why"] == "failed")}


def pull(cp: Checkpoints, points: list[Point], *, log: Log, progress_factory=None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The current object of each point from the first tier that has it, then copied into
    the writable tiers before that one (a backfill, done before the command ends)."""
    from gaia_core.checkpoints.tiers import ANSWERED, UNTRUSTED, UNUSABLE, copy_into, fetch

    results = []
    for point in points:
        fp = cp.fingerprint(point)
        row: dict[str, Any] = {"id": point.id, "fingerprint": fp.value or "unknown", "pulled": False, "tier": None}
        if not point.backends:
            row["why"] = "no backend"
        elif not fp.known:
            row["why"] = f"the fingerprint is unknown ({fp.pending}); run the build once"
        elif cp.local_object(point, fp.value or "") is not None:
            row.update(pulled=True, tier="local", why="already in the local store")
        else:
            fetched = fetch(cp, point, fp.value or "", log, progress_factory)
            if fetched.obj is not None:
                row.update(pulled=True, tier=fetched.ref, why="")
                if fetched.backfill:
                    copied = copy_into(cp, point, fp.value or "", fetched.backfill, log)
                    row["backfilled"] = [ref for ref, ok in copied.items() if ok]
            else:
                answers = [a for a in fetched.answers if a is not None]
                refused = next((a for a in answers if a.reason or a.error), None)
                if fetched.failures:
                    row["why"] = fetched.failures[0][1]
                elif refused is not None:
                    row["why"] = refused.reason if refused.state in (UNTRUSTED, UNUSABLE) else refused.error
                elif all(a.state in ANSWERED for a in answers):
                    row["why"] = f"not in {', '.join(point.backends)}"
                else:
                    row["why"] = "no tier could be asked" + (f" (offline: {cp.offline_source})" if cp.offline else "")
        results.append(row)
    return {"results": results, "failed": sum(1 for r in results if not r["pulled"])}
