"""What the cache did, from the records: hit rates, time saved, misses and why, store growth.

Counted runs are the records whose point decided something (an ``inactive`` point is
not one). A hit is ``hit`` or ``remote_hit``; the time saved is the sum of the hits'
``saved_seconds`` (the build time recorded with the object, less the restore; a tree
already in place counts as a hit but saves no estimate). A miss is *evicted* when its
fingerprint's object was known before it and could be reached by the missing host: made
or used by that host, or seen in a shared tier (a remote hit, an upload); the object was
gone by then. Bytes stored per tier are what each run saw when it listed the tier, and
now (when the command measured them).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from gaia_core.checkpoints.records import LOCAL, WORKSPACE
from gaia_core.outcomes import HITS

#: restores listed as the slowest
SLOWEST = 5
#: how far before the period the records are read, to tell a miss of an evicted object
LOOKBACK = 30 * 86400.0


def _rate(hits: int, runs: int) -> float | None:
    return round(hits / runs, 4) if runs else None


def _counts() -> dict[str, Any]:
    return {"runs": 0, "hits": 0, "remote_hits": 0, "misses": 0, "refused": 0, "saved_seconds": 0.0,
            "misses_by_reason": collections.Counter(), "refused_by_reason": collections.Counter()}


def _count(into: dict[str, Any], record: dict[str, Any]) -> None:
    decision = record["decision"]
    into["runs"] += 1
    if decision in HITS:
        into["hits"] += 1
        into["remote_hits"] += decision == "remote_hit"
        into["saved_seconds"] += record["saved_seconds"] or 0.0
    elif decision == "miss":
        into["misses"] += 1
        into["misses_by_reason"][record["reason"]] += 1
    else:
        into["refused"] += 1
        into["refused_by_reason"][record["reason"]] += 1


def _finish(counts: dict[str, Any]) -> dict[str, Any]:
    counts["hit_rate"] = _rate(counts["hits"], counts["runs"])
    counts["saved_seconds"] = round(counts["saved_seconds"], 1)
    for key in ("misses_by_reason", "refused_by_reason"):
        counts[key] = dict(counts[key].most_common())
    return counts


def evicted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The misses of a fingerprint whose object the missing host could have had before
    (``records`` oldest first, all of them: the object may be older than the window)."""
    local: set[tuple[str, str, str]] = set()  # host, point, fingerprint
    shared: set[tuple[str, str]] = set()  # point, fingerprint
    found = []
    for record in records:
        point, host, fp = record["point"], record["host"]["name"], record["fingerprint"]
        if record["decision"] == "miss" and fp and ((host, point, fp) in local or (point, fp) in shared):
            found.append(record)
        obj = record["object"]
        if obj is None:
            continue
        local.add((host, point, obj["fingerprint"]))
        if record["decision"] == "remote_hit" or record["bytes"]["uploaded"] or "upload" in record["seconds"]:
            shared.add((point, obj["fingerprint"]))
    return found


def tier_samples(records: list[dict[str, Any]], local_host: str | None) -> dict[str, list[tuple[float, int]]]:
    """Per tier, (time, bytes) as each record saw it; the ``local`` store is each host's own,
    so only ``local_host``'s records say what this machine's holds."""
    samples: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for record in records:
        for tier, size in record["stored"].items():
            if tier != LOCAL or record["host"]["name"] == local_host:
                samples[tier].append((record["t"], size))
    return samples


def tier_growth(records: list[dict[str, Any]], now_sizes: dict[str, int | None],
                local_host: str | None = None) -> dict[str, dict[str, Any]]:
    """Per tier: the bytes stored as the window's first and last records saw them, now
    (when measured), and the growth over the window."""
    samples = tier_samples(records, local_host)
    out = {}
    for tier in dict.fromkeys([*now_sizes, *samples]):
        seen = samples.get(tier, [])
        first = seen[0][1] if seen else None
        latest = now_sizes.get(tier)
        if latest is None and seen:
            latest = seen[-1][1]
        out[tier] = {"bytes": latest, "first": first, "growth": None if first is None or latest is None
                     else latest - first, "samples": len(seen), "measured": now_sizes.get(tier) is not None}
    return out


def compute(records: list[dict[str, Any]], *, since: float, point_ids: list[str],
            tier_sizes: dict[str, int | None] | None = None, local_host: str | None = None) -> dict[str, Any]:
    """The stats of the records from ``since`` on (``records``: every record, oldest first;
    ``local_host``: the machine whose local store ``tier_sizes`` measured)."""
    window = [r for r in records if r["t"] >= since and r["decision"] != "inactive"]
    points = {pid: _counts() for pid in point_ids}
    hosts: dict[str, dict[str, Any]] = {}
    reasons: collections.Counter[str] = collections.Counter()
    for record in window:
        _count(points.setdefault(record["point"], _counts()), record)
        host = hosts.setdefault(record["host"]["name"], {**_counts(), "system": "", "last_seen": None})
        _count(host, record)
        host["system"], host["last_seen"] = record["host"]["system"], record["at"]
        if record["decision"] == "miss":
            reasons[record["reason"]] += 1
    gone = [r for r in evicted(records) if r["t"] >= since]
    for pid, counts in points.items():
        counts["evicted_misses"] = sum(1 for r in gone if r["point"] == pid)
        _finish(counts)
    for counts in hosts.values():
        _finish(counts)
    restores = sorted((r for r in window if r["decision"] in HITS and r["tier"] != WORKSPACE
                       and "restore" in r["seconds"]), key=lambda r: r["seconds"]["restore"], reverse=True)
    total = _finish(_counts_of(window))
    return {
        "since": since, "until": time.time(), "records": len(window), "hosts_seen": len(hosts),
        "runs": total["runs"], "hits": total["hits"], "misses": total["misses"], "refused": total["refused"],
        "hit_rate": total["hit_rate"], "saved_seconds": total["saved_seconds"],
        "points": points, "hosts": dict(sorted(hosts.items())), "misses_by_reason": dict(reasons.most_common()),
        "evicted": [_brief(r) for r in gone],
        "slowest_restores": [_brief(r) for r in restores[:SLOWEST]],
        "tiers": tier_growth(window, tier_sizes or {}, local_host),
    }


def _counts_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = _counts()
    for record in records:
        _count(counts, record)
    return counts


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    return {"at": record["at"], "host": record["host"]["name"], "point": record["point"],
            "fingerprint": record["fingerprint"], "decision": record["decision"], "reason": record["reason"],
            "tier": record["tier"], "seconds": record["seconds"].get("restore"), "explain": record["explain"]}


__all__ = ["LOOKBACK", "SLOWEST", "compute", "evicted", "tier_growth", "tier_samples"]
