"""What a miss of the whole tree would do with the units, and why each built one is built.

Read only, as ``status`` is: the units the tree holds (its marker), the unit objects in the
local store and, unless told not to, in the point's backends (one listing each, then the
manifests of the wanted keys, judged as a restore would). Before the tasks the units are
read from ran (Buildroot: ``buildroot.configure``), the answer is unknown, with what it waits for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.checkpoints.inputdiff import input_changes, summary
from gaia_core.checkpoints.unitrestore import BUILD, KEEP, RESTORE, decide, in_tree, local_available, read_units
from gaia_core.checkpoints.unitstore import read_held, unit_objects
from gaia_core.errors import BackendError, CheckpointError, GaiaError
from gaia_core.fingerprints import InputPending

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.unitkeys import UnitKey


def units_status(cp: Checkpoints, point: Point, *, probe_remote: bool, explain: bool = False) -> dict[str, Any]:
    """``{"state": "known", "keep": n, "restore": n, "build": n, "units": [...]}``, or
    ``{"state": "unknown", "why": ...}``."""
    anchor = cp.anchor(point)
    try:
        _spec, keys, _newest = read_units(anchor)
    except InputPending as pending:
        return {"state": "unknown", "why": str(pending)}
    except (GaiaError, CheckpointError) as exc:
        return {"state": "unknown", "why": str(exc)}
    targets = anchor.targets()
    held = in_tree(read_held(targets, point), keys, targets)
    local, why = local_available(cp, point, anchor, keys, discard=False)
    available = {n: "local store" for n in local}
    remote_error = None
    if probe_remote and point.backends and point.use_policy != "off":
        hoped = decide(keys, held, {**available, **{n: "?" for n, k in keys.items() if k.key is not None}})
        wanted = {n: str(d.key) for n, d in hoped.items() if d.action == RESTORE and n not in local}
        found, remote_why, remote_error = _probe(cp, point, anchor, wanted)
        available.update(found)
        why.update(remote_why)
    decisions = decide(keys, held, available, why)
    rows = []
    objects = unit_objects(cp, point.id) if explain else []
    for name, d in decisions.items():
        row = {"name": name, "label": d.label, "key": d.key, "action": d.action, "why": d.why}
        if explain and d.action == BUILD:
            row["changes"] = changes_since(cp, point, keys[name], objects)
        rows.append(row)
    return {"state": "known", KEEP: sum(d.action == KEEP for d in decisions.values()),
            RESTORE: sum(d.action == RESTORE for d in decisions.values()),
            BUILD: sum(d.action == BUILD for d in decisions.values()), "remote_error": remote_error, "units": rows}


def _probe(cp: Checkpoints, point: Point, anchor: Anchor,
           wanted: dict[str, str]) -> tuple[dict[str, str], dict[str, str], str | None]:
    from gaia_core.checkpoints.unitremote import find_unit, remote_keys

    found: dict[str, str] = {}
    why: dict[str, str] = {}
    errors = []
    for ref in point.backends:
        remaining = {n: k for n, k in wanted.items() if n not in found}
        if not remaining:
            break
        try:
            with cp.session(ref) as backend:
                present = remote_keys(cp, backend, point)
                for name, key in remaining.items():
                    if key not in present:
                        why.setdefault(name, f"not in {ref}")
                        continue
                    unit, refused = find_unit(cp, backend, point, anchor, name, key)
                    if unit is not None:
                        found[name] = ref
                        why.pop(name, None)
                    else:
                        why[name] = f"{ref}: {refused}" if refused else f"not in {ref}"
        except BackendError as exc:
            errors.append(f"{ref}: {cp.redact(ref, str(exc))}")
    return found, why, "; ".join(errors) or None


def _nearest(cp: Checkpoints, point: Point, k: UnitKey, objects: list | None = None):  # type: ignore[no-untyped-def]
    """The newest local object of the same unit with another key, and the changes since it
    (``objects``: the point's unit objects, when the caller has them already)."""
    if k.inputs is None:
        return None, []
    for obj in unit_objects(cp, point.id) if objects is None else objects:
        unit = obj.manifest.get("unit")
        old = obj.manifest.get("fingerprint_inputs")
        if isinstance(unit, dict) and unit.get("name") == k.name and isinstance(old, dict) and obj.fingerprint != k.key:
            return obj, input_changes(old, dict(k.inputs))
    return None, []


def changes_since(cp: Checkpoints, point: Point, k: UnitKey, objects: list | None = None) -> list[str]:
    """What changed since the newest local object of the same unit (its inputs, file by file)."""
    obj, changes = _nearest(cp, point, k, objects)
    if obj is None:
        return []
    lines = [f"since {obj.fingerprint[:12]} ({obj.created_at[:19]}):"]
    for change in changes:
        lines += [f"  {line}" for line in change.lines()]
    return lines


def why_line(cp: Checkpoints, point: Point, k: UnitKey, objects: list | None = None) -> str:
    """One line on what changed since the unit's newest local object ("" when there is none)."""
    obj, changes = _nearest(cp, point, k, objects)
    return f"changed since {obj.fingerprint[:12]}: {summary(changes)}" if obj is not None else ""


def local_unit_rows(cp: Checkpoints, point: Point) -> list[dict[str, Any]]:
    """The point's unit objects in the local store, each with the whole trees that list it."""
    listed: dict[str, list[str]] = {}
    for obj in cp.store.objects(point.id):
        for item in (obj.manifest.get("units") or {}).values():
            if isinstance(item, dict):
                listed.setdefault(str(item.get("key")), []).append(obj.fingerprint)
    rows = []
    for obj in unit_objects(cp, point.id):
        unit = obj.manifest.get("unit") if isinstance(obj.manifest.get("unit"), dict) else {}
        signature = obj.manifest.get("signature")
        rows.append({"name": unit.get("name", "?"), "label": unit.get("label", ""), "key": obj.fingerprint,
                     "size": (obj.manifest.get("tree") or {}).get("packed"), "created_at": obj.created_at,
                     "signer": signature.get("key") if isinstance(signature, dict) else "unsigned",
                     "listed_by": listed.get(obj.fingerprint, [])})
    return sorted(rows, key=lambda r: (r["name"], r["created_at"]))


def remote_unit_rows(cp: Checkpoints, backend: Any, point: Point) -> list[dict[str, Any]]:
    """The point's unit objects in a backend, one per signer's manifest, with what this
    build makes of each (as :func:`.status.remote_objects` does for whole trees)."""
    from gaia_core.checkpoints.manifest import slot_of
    from gaia_core.checkpoints.remote import fetch_manifest
    from gaia_core.checkpoints.signing import verify
    from gaia_core.checkpoints.unitremote import remote_keys, unit_dir
    from gaia_core.checkpoints.unitstore import unit_problem

    anchor = cp.anchor(point)
    rows = []
    for key in sorted(remote_keys(cp, backend, point)):
        for entry in backend.list_files(unit_dir(point.id, key)):
            name = entry.file_name or ""
            if entry.temporary or slot_of(name) is None:
                continue
            row: dict[str, Any] = {"key": key, "file": name, "name": "?", "label": "", "size": None,
                                   "created_at": None, "signer": slot_of(name) or "unsigned"}
            try:
                manifest = fetch_manifest(backend, point.id, key, f"{backend.ref}:{entry.key}", name, key=entry.key)
            except CheckpointError as exc:
                rows.append({**row, "trust": "bad", "why": str(exc)})
                continue
            if manifest is None:
                continue
            unit = manifest.get("unit") if isinstance(manifest.get("unit"), dict) else {}
            verdict = verify(manifest, cp.settings.trusted_keys)
            row.update(name=unit.get("name", "?"), label=unit.get("label", ""),
                       size=(manifest.get("tree") or {}).get("packed"), created_at=manifest.get("created_at"),
                       signer=verdict.signer, trust=verdict.state, why=verdict.why)
            problem = unit_problem(cp, manifest, point, key, anchor)
            if problem:
                row.update(trust="bad", why=problem)
            rows.append(row)
    return sorted(rows, key=lambda r: (r["name"], r["key"]))


__all__ = ["changes_since", "local_unit_rows", "remote_unit_rows", "units_status", "why_line"]
