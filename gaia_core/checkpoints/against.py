"""``status --explain --against HOST|FINGERPRINT``: why this machine misses what another has.

The costliest misses are between machines: a laptop that never matches CI, a runner
image that changed the host system. Against a fingerprint (or a unique prefix of one),
the object's manifest is found in the local store or the point's tiers and its inputs are
compared with this machine's, value by value and, for trees, file by file. Against a host,
the records (this store's and the shared ones) say which fingerprint that host last
computed; its object's manifest is compared the same way, and when no store holds it any
more, the record's digests of each input still say which inputs differ (not how).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.fingerprint import changed_inputs, miss_reason
from gaia_core.checkpoints.history import gather
from gaia_core.checkpoints.inputdiff import input_changes
from gaia_core.checkpoints.manifest import FORMAT_VERSION
from gaia_core.checkpoints.records import input_digests
from gaia_core.errors import BackendError, CheckpointError
from gaia_core.hostinfo import host_system

if TYPE_CHECKING:
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.engine import Checkpoints

_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")


def _local(cp: Checkpoints, point: Point, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    return [("local", o.manifest) for o in cp.store.objects(point.id)
            if o.fingerprint.startswith(prefix) and o.manifest.get("format") == FORMAT_VERSION]


def _remote(cp: Checkpoints, point: Point, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    from gaia_core.checkpoints.remote import fetch_manifest

    found = []
    for ref in point.backends:
        try:
            with cp.session(ref) as backend:
                for entry in backend.list_entries(point.id):
                    fp = entry.fingerprint
                    if not entry.is_manifest or not fp or not fp.startswith(prefix) or \
                            any(fp == m.get("fingerprint") for _, m in found):
                        continue
                    try:
                        manifest = fetch_manifest(backend, point.id, fp, f"{ref}:{entry.key}", entry.file_name or "")
                    except CheckpointError:
                        continue
                    if manifest is not None:
                        found.append((ref, manifest))
        except BackendError:
            continue  # named by the engine's ``unavailable``
    return found


def find_objects(cp: Checkpoints, point: Point, prefix: str, *, remote: bool) -> list[tuple[str, dict[str, Any]]]:
    """(where, manifest) of each object of ``point`` whose fingerprint starts with ``prefix``,
    one per fingerprint, the local store first."""
    found = _local(cp, point, prefix)
    if remote and not found:
        found = _remote(cp, point, prefix)
    return found


def _diff(cp: Checkpoints, point: Point, manifest: dict[str, Any], label: str) -> tuple[list[str], list[Any]]:
    fp = cp.fingerprint(point)
    theirs = manifest.get("fingerprint_inputs") or {}
    changes = input_changes(theirs, fp.inputs)
    if not changes:
        return [f"{label}: the same inputs as this machine"], []
    lines = [f"{label} differs from this machine in {len(changes)} value(s) "
             f"({miss_reason(changed_inputs(theirs, fp.inputs))}):"]
    for change in changes:
        lines += [f"  {line}" for line in change.lines()]
    return lines, [change.to_dict() for change in changes]


def explain_against(cp: Checkpoints, point: Point, target: str, *, remote: bool) -> dict[str, Any]:
    """Lines for humans and the comparison as data (``against``)."""
    fp = cp.fingerprint(point)
    if not fp.known:
        return {"lines": [f"fingerprint unknown: {fp.pending}"], "against": None}
    target = target.strip()
    if _PREFIX.match(target.lower()):
        objects = find_objects(cp, point, target.lower(), remote=remote)
        if len({m["fingerprint"] for _, m in objects}) > 1:
            shown = ", ".join(sorted(m["fingerprint"][:16] for _, m in objects))
            return {"lines": [f"'{target}' names {len(objects)} objects of {point.id} ({shown}); give more of it"],
                    "against": None}
        if objects:
            where, manifest = objects[0]
            lines, diff = _diff(cp, point, manifest, f"object {manifest['fingerprint'][:12]} ({where})")
            return {"lines": lines, "against": {"kind": "object", "target": target, "where": where,
                                                "fingerprint": manifest["fingerprint"], "diff": diff}}
    return _against_host(cp, point, target, remote=remote)


def _against_host(cp: Checkpoints, point: Point, host: str, *, remote: bool) -> dict[str, Any]:
    fp = cp.fingerprint(point)
    history = gather(cp, [point], remote=remote, keep=False)
    theirs = [r for r in history.records if r["host"]["name"] == host and r["fingerprint"]]
    if not theirs:
        hosts = sorted({r["host"]["name"] for r in history.records})
        known = ", ".join(hosts[:20]) or "none"
        return {"lines": [f"no object of {point.id} starts with '{host}', and no record names a host '{host}' "
                          f"(hosts in the records: {known}{'' if remote else '; --no-remote: shared records not fetched'})"],
                "against": None}
    last = theirs[-1]
    system = last["host"]["system"]
    head = (f"host {host} ({system}) last ran {point.id} at {last['at']}: {last['decision']} "
            f"{last['fingerprint'][:12]}")
    against: dict[str, Any] = {"kind": "host", "target": host, "system": system, "at": last["at"],
                               "fingerprint": last["fingerprint"], "decision": last["decision"], "diff": []}
    if last["fingerprint"] == fp.value:
        return {"lines": [f"{head}: the same fingerprint as this machine"], "against": against}
    lines = [head]
    if system != host_system():
        lines.append(f"host system: {system} there, {host_system()} here")
    objects = find_objects(cp, point, last["fingerprint"], remote=remote)
    if objects:
        where, manifest = objects[0]
        more, against["diff"] = _diff(cp, point, manifest, f"its object ({where})")
        against["where"] = where
        return {"lines": lines + more, "against": against}
    mine = input_digests(fp.inputs)
    differ = sorted(k for k in set(mine) | set(last["inputs"]) if mine.get(k) != last["inputs"].get(k))
    against["diff"] = [{"key": k} for k in differ]
    lines.append(f"its object is in no store{'' if remote else ' this command looked in (--no-remote)'}; the "
                 f"record's digests say which inputs differ, not how: {', '.join(differ) or 'none'}")
    return {"lines": lines, "against": against}


__all__ = ["explain_against", "find_objects"]
