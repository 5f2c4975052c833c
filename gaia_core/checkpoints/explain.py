"""A miss explained input by input, against the nearest object locally and in the backend.

A fresh CI runner has no local object; what it needs to know is why the team's remote
did not serve it. The nearest object is the one with the most inputs in common among the
local objects and the 20 newest manifests of the point in each of its tiers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.checkpoints.fingerprint import changed_inputs, miss_reason
from gaia_core.checkpoints.inputdiff import input_changes
from gaia_core.checkpoints.manifest import FORMAT_VERSION
from gaia_core.errors import BackendError, CheckpointError

if TYPE_CHECKING:
    from gaia_core.checkpoints.config import Point

#: remote manifests compared, newest first
REMOTE_CANDIDATES = 20


def _remote_manifests(cp: Checkpoints, point: Point, ref: str) -> tuple[list[dict[str, Any]], str | None]:
    from gaia_core.checkpoints.engine import NotUsedOffline
    from gaia_core.checkpoints.remote import fetch_manifest

    manifests = []
    try:
        with cp.session(ref) as backend:
            entries = [e for e in backend.list_entries(point.id) if e.is_manifest]
            entries.sort(key=lambda e: e.mtime or 0, reverse=True)
            for entry in entries[:REMOTE_CANDIDATES]:
                assert entry.fingerprint
                try:
                    manifest = fetch_manifest(backend, point.id, entry.fingerprint, f"{ref}:{entry.key}",
                                              entry.file_name or "")
                except CheckpointError:
                    continue
                if manifest is not None:
                    manifests.append(manifest)
    except NotUsedOffline:
        return manifests, None
    except BackendError as exc:
        return manifests, cp.redact(ref, str(exc))
    return manifests, None


def explain_miss(cp: Checkpoints, point: Point, *, probe_remote: bool = True) -> dict[str, Any]:
    fp = cp.fingerprint(point)
    if not fp.known:
        return {"lines": [f"fingerprint unknown: {fp.pending}"], "nearest": None}
    local = [o.manifest for o in cp.store.objects(point.id) if o.manifest.get("format") == FORMAT_VERSION]
    if any(m.get("fingerprint") == fp.value for m in local):
        return {"lines": [], "nearest": None}
    candidates: list[tuple[str, str | None, dict[str, Any]]] = [("local", None, m) for m in local]
    errors = []
    if probe_remote and point.use_policy != "off":
        for ref in point.backends:
            remote, error = _remote_manifests(cp, point, ref)
            if error:
                errors.append(error)
            if any(m.get("fingerprint") == fp.value for m in remote):
                return {"lines": [], "nearest": None}
            candidates += [("remote", ref, m) for m in remote]
    nearest = cp.nearest(point, fp, [m for _, _, m in candidates])
    error = "; ".join(errors) or None
    lines = [f"remote not compared: {e}" for e in errors]
    if nearest is None:
        lines.append("no other object of this point to compare with")
        return {"lines": lines, "nearest": None, "remote_error": error}
    where, tier = next((w, t) for w, t, m in candidates if m is nearest)
    short = nearest["fingerprint"][:12]
    label = f"{where} {tier}" if tier and len(point.backends) > 1 else where
    changes = input_changes(nearest["fingerprint_inputs"], fp.inputs)
    lines.append(f"nearest: {label} {short} ({miss_reason(changed_inputs(nearest['fingerprint_inputs'], fp.inputs))})")
    for change in changes:
        lines += change.lines(f"{label} {short}")
    return {"lines": lines, "remote_error": error,
            "nearest": {"where": where, "tier": tier, "fingerprint": nearest["fingerprint"],
                        "diff": [change.to_dict() for change in changes]}}


def explain_units(cp: Checkpoints, point: Point, *, probe_remote: bool = True) -> dict[str, Any]:
    """Per unit what a miss would do, and for each one built, why (what changed since the
    newest local object of the same unit, input by input)."""
    from gaia_core.checkpoints.unitstatus import units_status

    found = units_status(cp, point, probe_remote=probe_remote, explain=True)
    if found["state"] != "known":
        return {**found, "lines": [f"units unknown: {found['why']}"]}
    lines = [f"units: {found['keep']} kept, {found['restore']} restored, {found['build']} built"]
    if found.get("remote_error"):
        lines.append(f"  backends not asked: {found['remote_error']}")
    for row in found["units"]:
        where = f" ({row['why']})" if row["action"] != "keep" else ""
        lines.append(f"  {row['action']:<7} {row['name']} {row['label']}".rstrip() + where)
        lines += [f"    {line}" for line in row.get("changes") or []]
    return {**found, "lines": lines}
