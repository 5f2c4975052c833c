"""Unit objects in the local store, and the record of which units a tree holds.

A unit's object has the layout and rules of any format-4 object, in its own area:
``<store>/units/<point id>/<unit key>/manifest.json`` (remote: ``units/<point id>/<unit
key>/<signer's slot>``), a signed manifest listing the unit's entries in parts, its chunks
in the store's shared packs. Its manifest says what it is (``unit``: name, paths, the keys
of its dependencies) and keeps the unit's inputs (``fingerprint_inputs``) to explain the
next miss. The whole tree's manifest lists its units (``units``: name -> key, paths), which
is how gc keeps the units of the checkpoints it keeps.

The units marker (``.gaia-units.json`` in the first target, never captured) records which
unit, by key and paths, the tree holds now: written after a capture, a restore of the
whole tree and a restore of units; a unit it does not name is not trusted to be in the tree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gaia_core import atomic
from gaia_core.checkpoints.engine import UNITS_MARKER, Checkpoints
from gaia_core.checkpoints.fingerprint import lineage
from gaia_core.checkpoints.portability import current_roots
from gaia_core.checkpoints.store import UNITS, LocalObject, store_faults

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.checkpoints.config import Point

#: held: unit name -> (key, paths)
Held = dict[str, tuple[str, tuple[str, ...]]]


def unit_lineage(anchor_task: str, key: str) -> str:
    return lineage(f"{anchor_task}#unit", key)


def unit_problem(cp: Checkpoints, manifest: dict[str, Any], point: Point, key: str, anchor: Anchor,
                 name: str | None = None) -> str | None:
    """Why a manifest is not the unit object of ``key`` for this point (None when it is)."""
    unit = manifest.get("unit")
    if not isinstance(unit, dict):
        return "manifest is not a unit's"
    if manifest.get("id") != point.id or manifest.get("anchor_task") != point.anchor_task:
        return "manifest names another point or anchor"
    if manifest.get("fingerprint") != key or manifest.get("lineage") != unit_lineage(point.anchor_task, key):
        return "manifest names another unit key"
    if name is not None and unit.get("name") != name:
        return f"manifest is unit '{unit.get('name')}', not '{name}'"
    anchor_targets = [t.name for t in anchor.targets()]
    names = [t["name"] for t in manifest.get("targets", [])]
    if not set(names) <= set(anchor_targets) or names != [n for n in anchor_targets if n in names]:
        return f"targets {names} are not among the anchor's {anchor_targets}"
    foreign = sorted(set(manifest.get("roots") or {}) - set(current_roots(anchor)))
    if foreign:
        return f"relocation roots {foreign} are not among the anchor's"
    return None


def local_unit(cp: Checkpoints, point: Point, key: str, anchor: Anchor, name: str | None = None, *,
               discard: bool = True) -> LocalObject | None:
    """The local object of a unit key, when it is one of this point's (a stray one is
    discarded unless ``discard`` is off: status and list write nothing)."""
    obj = cp.store.get(point.id, key, quiet=not discard, area=UNITS)
    if obj is None:
        return None
    problem = unit_problem(cp, obj.manifest, point, key, anchor, name)
    if problem:
        if discard:
            cp.store.discard(point.id, key, problem, area=UNITS)
        return None
    return obj


def unit_objects(cp: Checkpoints, point_id: str) -> list[LocalObject]:
    """The unit objects of a point with a readable manifest, newest first."""
    return cp.store.objects(point_id, area=UNITS)


def units_field(keys: Mapping[str, Any]) -> dict[str, Any]:
    """The ``units`` of a whole tree's manifest: each unit with a key, its key and paths."""
    return {name: {"key": k.key, "paths": list(k.unit.paths), "label": k.unit.label}
            for name, k in keys.items() if k.key is not None}


# -- the units marker --------------------------------------------------------------------


def read_held(targets: list[Target], point: Point) -> Held:
    """The units the tree holds, by the marker (nothing when there is none or it is not this point's)."""
    if not targets:
        return {}
    try:
        data = json.loads((targets[0].path / UNITS_MARKER).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("point") != point.id or not isinstance(data.get("units"), dict):
        return {}
    held: Held = {}
    for name, item in data["units"].items():
        if isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("paths"), list) \
                and all(isinstance(p, str) for p in item["paths"]):
            held[str(name)] = (item["key"], tuple(item["paths"]))
    return held


def write_held(targets: list[Target], point: Point, held: Held) -> None:
    if not targets:
        return
    with store_faults("writing the units marker"):
        atomic.write_json(targets[0].path / UNITS_MARKER, {
            "point": point.id, "anchor_task": point.anchor_task,
            "units": {name: {"key": key, "paths": list(paths)} for name, (key, paths) in sorted(held.items())},
        })


def held_of_manifest(manifest: dict[str, Any]) -> Held:
    """What a whole tree restored from ``manifest`` holds."""
    units = manifest.get("units")
    if not isinstance(units, dict):
        return {}
    return {name: (item["key"], tuple(item["paths"])) for name, item in units.items()}


def clear_held(targets: list[Target]) -> None:
    if targets:
        with store_faults("removing the units marker"):
            (targets[0].path / UNITS_MARKER).unlink(missing_ok=True)


__all__ = ["Held", "clear_held", "held_of_manifest", "local_unit", "read_held", "unit_lineage", "unit_objects",
           "unit_problem", "units_field", "write_held"]
