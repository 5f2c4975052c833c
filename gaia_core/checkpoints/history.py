"""The records a build can see: its store's journal and what its tiers share, merged by id.

``remote=True`` first brings the cache of each tier's shared records up to date
(:func:`.shared.refresh`: only what is new is fetched); without it nothing leaves the
machine and the cache is read as it is. A tier that cannot be used is named in
``errors`` (the command exits 5 through the engine's ``unavailable``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.journal import Journal
from gaia_core.checkpoints.records import epoch
from gaia_core.checkpoints.shared import Cache, day_of, refresh
from gaia_core.errors import BackendError
from gaia_core.outcomes import HITS

if TYPE_CHECKING:
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.engine import Checkpoints

#: a record claiming a time further in the future than this is taken as of now
CLOCK_SKEW = 3600.0


@dataclasses.dataclass
class History:
    #: oldest first, each with ``t`` (its time, seconds since the epoch) added
    records: list[dict[str, Any]]
    #: records or shared objects that were not valid
    ignored: int = 0
    #: tier -> why its shared records could not be brought up to date
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    fetched: int = 0


def tiers_of(points: list[Point]) -> list[str]:
    """Every tier of the points, each once, in the points' order."""
    return list(dict.fromkeys(ref for p in points for ref in p.backends))


def gather(cp: Checkpoints, points: list[Point], *, since: float = 0.0, remote: bool = False,
           keep: bool = True) -> History:
    """The records of ``points`` (every one kept, or from ``since`` on), oldest first;
    ``keep=False`` leaves the cache as it is (queries write nothing)."""
    found, ignored = Journal(cp.store.root).read()
    history = History([], ignored)
    for ref in tiers_of(points):
        if remote:
            try:
                fresh = refresh(cp, ref, since, keep=keep)
                found += fresh.records
                history.fetched += fresh.fetched
                history.ignored += fresh.ignored
            except BackendError as exc:
                history.errors[ref] = str(exc)
        found += Cache(cp.store.root, ref).read(day_of(since - 86400) if since else "")
    ids = {p.id for p in points}
    now = time.time()
    merged: dict[str, dict[str, Any]] = {}
    for record in found:
        t = epoch(record["at"])
        if record["point"] not in ids or t is None or t < since:
            continue
        merged[record["id"]] = {**record, "t": min(t, now + CLOCK_SKEW)}
    history.records = sorted(merged.values(), key=lambda r: r["t"])
    return history


def store_sizes(cp: Checkpoints, tiers: list[str], *, remote: bool) -> dict[str, int | None]:
    """Bytes of packs in the local store and (``remote``) in each tier now; None for a tier
    that was not asked or could not be listed."""
    from gaia_core.backends import PACKS
    from gaia_core.checkpoints.records import LOCAL

    sizes: dict[str, int | None] = {LOCAL: sum(cp.store.packs.local_packs().values())}
    for ref in tiers:
        sizes[ref] = None
        if remote:
            try:
                with cp.session(ref) as backend:
                    sizes[ref] = sum(e.size or 0 for e in backend.list_files(PACKS) if not e.temporary)
            except BackendError:
                pass  # named by the engine's ``unavailable``
    return sizes


def last_uses(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(point, object key) -> when a run last used that object (restored it, or found it in
    place), on any host whose records are here. The key is the object's own (a variant's,
    :mod:`.variants`), the point's fingerprint where the record names no object."""
    now = time.time()
    used: dict[tuple[str, str], float] = {}
    for record in records:
        used_key = (record.get("object") or {}).get("fingerprint") or record["fingerprint"]
        if record["decision"] in HITS and used_key:
            key = (record["point"], used_key)
            used[key] = max(used.get(key, 0.0), min(record["t"], now))
    return used


__all__ = ["History", "gather", "last_uses", "store_sizes", "tiers_of"]
