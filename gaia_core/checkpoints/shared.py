"""Records shared through the stores themselves, so that a team's view needs no server.

With ``[checkpoints] share_records = true`` a run publishes its records to every
writable tier of its points, one small object per run and tier, created only if absent:
``records/<YYYY-MM-DD>/<run id>.json`` (the day the run ended, UTC). Nothing is ever
rewritten, so any store that takes manifests takes records, and readers merge them by
record id.

Readers keep what they fetched in ``<store>/records/shared/<tier>/<day>.jsonl``: a
refresh lists the day directories inside the window it is asked for, and fetches only
the objects not cached yet. A day listed more than ``FINAL_AFTER`` after it ended is
complete (every run that ended that day published long ago) and is not listed again, so
once the cache is warm a refresh costs a listing of the last day or two.

Whatever a store holds there is untrusted: an object larger than ``MAX_OBJECT_BYTES``, or
with more than ``MAX_RECORDS_PER_OBJECT`` records, is refused, and each record is kept
only when :func:`.records.check_record` accepts it. A forged record can mislead stats
and gc's ordering by last use (it can claim an object is in use), never a restore.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core import atomic
from gaia_core.checkpoints.journal import RECORDS_DIR, encode, locked
from gaia_core.checkpoints.records import check_record
from gaia_core.errors import BackendError, ObjectExists, ObjectNotFound

if TYPE_CHECKING:
    from gaia_core.backends import Backend
    from gaia_core.checkpoints.engine import Checkpoints, Log

PREFIX = "records"
MAX_OBJECT_BYTES = 256 << 10
MAX_RECORDS_PER_OBJECT = 1000
#: a day listed this long after its end is complete
FINAL_AFTER = 6 * 3600.0
#: small reads in flight at once while a cache fills
FETCH_PARALLEL = 8
#: days of fetched records a cache keeps (it stays bounded; the tiers keep theirs)
CACHE_DAYS = 400
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[0-9a-f]{32}\.json$")


def day_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def day_end(day: str) -> float:
    return (datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)).timestamp()


def record_key(day: str, run_id: str) -> str:
    return f"{PREFIX}/{day}/{run_id}.json"


def decode(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The valid records of one shared object, and how many it held that were not valid
    (all of them, counted as one, when the object itself is malformed)."""
    if len(data) > MAX_OBJECT_BYTES:
        return [], 1
    try:
        body = json.loads(data)
    except ValueError:
        return [], 1
    raw = body.get("records") if isinstance(body, dict) else None
    if not isinstance(raw, list) or len(raw) > MAX_RECORDS_PER_OBJECT:
        return [], 1
    checked = [check_record(r) for r in raw]
    return [r for r in checked if r is not None], sum(r is None for r in checked)


class Cache:
    """What was fetched from one tier, by day; written only by this machine."""

    def __init__(self, store_root: Path, ref: str):
        self.dir = store_root / RECORDS_DIR / "shared" / re.sub(r"[^A-Za-z0-9._-]", "_", ref)

    def _day_file(self, day: str) -> Path:
        return self.dir / f"{day}.jsonl"

    def final_days(self) -> set[str]:
        try:
            days = json.loads((self.dir / "final.json").read_bytes()).get("days", [])
        except (OSError, ValueError, AttributeError):
            return set()
        return {d for d in days if isinstance(d, str) and _DAY.match(d)}

    def mark_final(self, days: set[str]) -> None:
        if days:
            with locked(self.dir):
                atomic.write_json(self.dir / "final.json", {"days": sorted(self.final_days() | days)})

    def _lines(self, day: str) -> list[dict[str, Any]]:
        try:
            with open(self._day_file(day), "rb") as f:
                lines = []
                for line in f:
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue  # a line a killed refresh cut short: fetched again
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        lines.append(item)
                return lines
        except OSError:
            return []

    def names(self, day: str) -> set[str]:
        return {item["name"] for item in self._lines(day)}

    def add(self, day: str, entries: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Cache fetched objects (an empty list of records for one that was refused, so it is
        not fetched again)."""
        if not entries:
            return
        data = encode([{"name": name, "records": records} for name, records in entries])
        with locked(self.dir), open(self._day_file(day), "ab") as f:
            f.write(data)

    def days(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.jsonl") if _DAY.match(p.stem))

    def prune(self, before: str) -> None:
        """Forget the days before ``before`` (``YYYY-MM-DD``)."""
        for day in self.days():
            if day < before:
                self._day_file(day).unlink(missing_ok=True)

    def read(self, since_day: str = "") -> list[dict[str, Any]]:
        """The cached records of the days from ``since_day`` on (checked again: the cache is
        a file like any other)."""
        found = []
        for day in self.days():
            if day < since_day:
                continue
            for item in self._lines(day):
                records = item.get("records")
                if isinstance(records, list):
                    found += [r for r in map(check_record, records) if r is not None]
        return found


@dataclasses.dataclass
class Refresh:
    #: the records fetched (not yet in the cache before)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fetched: int = 0
    #: records (or objects) that were not valid
    ignored: int = 0
    days_listed: int = 0


def refresh(cp: Checkpoints, ref: str, since: float, *, keep: bool = True) -> Refresh:
    """Fetch the records of ``ref`` from ``since`` on that the cache lacks, and cache them
    (without ``keep``, a query that writes nothing, only return them). Raises BackendError
    (worded by the engine) when the tier cannot be used."""
    cache = Cache(cp.store.root, ref)
    report = Refresh()
    final = cache.final_days()
    first_day = day_of(since - 86400)  # a run that started the day before may have ended in the window
    now = time.time()
    with cp.session(ref) as backend:
        days = sorted(d for d in backend.list_dirs(PREFIX) if _DAY.match(d) and d >= first_day and d not in final)
        newly_final = set()
        for day in days:
            report.days_listed += 1
            listed = [e for e in backend.list_files(f"{PREFIX}/{day}") if not e.temporary]
            known = cache.names(day)
            wanted = [e for e in listed if _NAME.match(e.key.rpartition("/")[2])
                      and e.key.rpartition("/")[2] not in known]
            fetched = _fetch_all(cp, backend, [e.key for e in wanted], [e.size for e in wanted])
            for _name, records, ignored in fetched:
                report.records += records
                report.fetched += len(records)
                report.ignored += ignored
            if keep:
                cache.add(day, [(name, records) for name, records, _ in fetched])
            if now > day_end(day) + FINAL_AFTER:
                newly_final.add(day)
        if keep:
            cache.mark_final(newly_final)
            cache.prune(day_of(now - CACHE_DAYS * 86400))
    return report


def _fetch_all(cp: Checkpoints, backend: Backend, keys: list[str],
               sizes: list[int | None]) -> list[tuple[str, list[dict[str, Any]], int]]:
    """(name, valid records, invalid count) of each key, fetched a few at a time; one that
    vanished since the listing is left out (it is fetched again if it comes back)."""
    from gaia_core.checkpoints.transfer import Sessions, _ordered, _Workers

    if not keys:
        return []
    sessions = Sessions(lambda: cp.backend(backend.ref))

    def fetch(item: tuple[str, int | None]) -> tuple[str, list[dict[str, Any]], int] | None:
        key, size = item
        name = key.rpartition("/")[2]
        if size is not None and size > MAX_OBJECT_BYTES:
            return name, [], 1
        try:
            data = sessions.get().read_small(key, MAX_OBJECT_BYTES)
        except ObjectNotFound:
            return None
        return (name, *decode(data))

    pool = _Workers(min(FETCH_PARALLEL, len(keys)))
    try:
        results = list(_ordered(pool, fetch, list(zip(keys, sizes)), 2 * FETCH_PARALLEL))
    finally:
        pool.shutdown(wait=False)
        sessions.close()
    return [r for r in results if r is not None]


def publish(cp: Checkpoints, records: list[dict[str, Any]], run_id: str, log: Log) -> list[str]:
    """Publish the run's records to each writable tier of their points (each tier gets the
    records of the points it serves); the tiers that took them. A tier that fails costs a
    warning."""
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        point = next((p for p in cp.points if p.id == record["point"]), None)
        for ref in cp.writable_tiers(point) if point is not None else ():
            by_tier.setdefault(ref, []).append(record)
    done = []
    day = day_of(time.time())
    for ref, mine in by_tier.items():
        key = record_key(day, run_id)
        with tempfile.NamedTemporaryFile(dir=cp.store.tmp_dir(), prefix="records-", suffix=".json") as f:
            f.write(json.dumps({"v": 1, "records": mine}, separators=(",", ":")).encode())
            f.flush()
            try:
                with cp.session(ref) as backend:
                    backend.publish(key, Path(f.name))
            except ObjectExists:
                pass  # the same run id twice: what is there is this run's
            except BackendError as exc:
                log(f"WARN: the run's records were not shared via {ref}: {exc}")
                continue
        Cache(cp.store.root, ref).add(day, [(f"{run_id}.json", mine)])  # never fetched back
        done.append(ref)
    return done


__all__ = ["CACHE_DAYS", "FINAL_AFTER", "MAX_OBJECT_BYTES", "MAX_RECORDS_PER_OBJECT", "PREFIX", "Cache", "Refresh", "day_of",
           "decode", "publish", "record_key", "refresh"]
