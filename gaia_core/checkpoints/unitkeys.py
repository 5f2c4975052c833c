"""Unit keys: each unit of an anchor keyed by its own inputs and the keys of its dependencies.

A unit's key is the sha256 of its inputs, the anchor's shared inputs and salt, its paths
and the keys of the units it depends on, so a changed input reaches the unit and every
unit that depends on it, and nothing else (Yocto's sstate signatures work the same way).
A unit whose inputs the anchor could not read has no key, and neither has anything that
depends on it: they are built. The keys come in dependency order (every unit after the
units it depends on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gaia_core.anchors import UNIT_NAME, Unit, Units
from gaia_core.checkpoints.fingerprint import FORMAT_KEY, canonical_json
from gaia_core.checkpoints.manifest import FORMAT_VERSION
from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor

#: 1: the first layout of unit keys and unit objects
UNITS_VERSION = 1


@dataclasses.dataclass(frozen=True)
class UnitKey:
    unit: Unit
    #: hex sha256; None when it cannot be computed (``why`` says why)
    key: str | None
    why: str | None = None
    #: what the key covers, kept in the unit's manifest to explain the next miss
    inputs: Mapping[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.unit.name


def check_units(units: Units, target_names: list[str]) -> None:
    """Refuse a declaration the core cannot work with (the anchor's bug, not the user's)."""
    seen: dict[str, str] = {}
    owned: dict[tuple[str, ...], str] = {}
    for unit in units.units:
        if not UNIT_NAME.match(unit.name):
            raise CheckpointError(f"unit name {unit.name[:100]!r} is not [A-Za-z0-9][A-Za-z0-9._+-]*")
        if unit.name in seen:
            raise CheckpointError(f"unit '{unit.name}' is declared twice")
        seen[unit.name] = unit.name
        for path in unit.paths:
            parts = tuple(path.split("/"))
            if len(parts) < 2 or parts[0] not in target_names or posixpath.normpath(path) != path \
                    or any(p in ("", ".", "..") for p in parts):
                raise CheckpointError(f"unit '{unit.name}' owns {path[:200]!r}, which is not "
                                      f"<target>/<relative path> below one of {', '.join(target_names)}")
            for other, who in owned.items():
                if parts[:len(other)] == other or other[:len(parts)] == parts:
                    raise CheckpointError(f"units '{who}' and '{unit.name}' both own {'/'.join(min(other, parts))}")
            owned[parts] = unit.name
    for path in units.assembled:
        parts = path.split("/")
        if len(parts) < 2 or parts[0] not in target_names or any(p in ("", ".", "..") for p in parts):
            raise CheckpointError(f"assembled path {path[:200]!r} is not <target>/<relative path>")


def order(units: Units) -> tuple[list[Unit], dict[str, str]]:
    """The units with every one after its dependencies (by name where free to choose), and
    why a unit cannot be keyed: a dependency that is no unit, or a dependency cycle it is in
    (the units that depend on such a one are ordered after it, and have no key either)."""
    by_name = {u.name: u for u in units.units}
    why: dict[str, str] = {}
    for unit in units.units:
        missing = sorted(d for d in unit.deps if d not in by_name)
        if missing:
            why[unit.name] = f"it depends on '{missing[0]}', which is not among the units"
    done: list[Unit] = []
    placed: set[str] = set()
    pending = sorted(by_name)
    while pending:
        ready = [n for n in pending if all(d in placed or d not in by_name for d in by_name[n].deps)]
        if not ready:
            for name in pending:
                path = _cycle(name, by_name, set(pending))
                if path:
                    why.setdefault(name, f"it is in a dependency cycle ({' -> '.join(path)})")
                    ready.append(name)
        for name in ready:
            done.append(by_name[name])
            placed.add(name)
        pending = [n for n in pending if n not in placed]
    return done, why


def _cycle(start: str, by_name: Mapping[str, Unit], among: set[str]) -> list[str] | None:
    """A path of dependencies from ``start`` back to itself, within ``among``."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for dep in sorted(by_name[name].deps):
            if dep == start:
                return [*path, start]
            if dep in among and dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


def unit_keys(units: Units, anchor: Anchor) -> dict[str, UnitKey]:
    """The key of every unit, in dependency order."""
    check_units(units, [t.name for t in anchor.targets()])
    ordered, unorderable = order(units)
    salt = {f"{anchor.task}:{k}": v for k, v in anchor.fingerprint_salt().items()}
    shared = {"shared": units.shared, "salt": salt, FORMAT_KEY: FORMAT_VERSION, "gaia.units": UNITS_VERSION}
    keys: dict[str, UnitKey] = {}
    for unit in ordered:
        why = unorderable.get(unit.name)
        if why is None and unit.inputs is None:
            why = unit.unknown or "the anchor could not read its inputs"
        if why is None:
            blocked = next((d for d in sorted(unit.deps) if keys[d].key is None), None)
            if blocked is not None:
                why = f"its dependency '{blocked}' has no key"
        if why is not None:
            keys[unit.name] = UnitKey(unit, None, why)
            continue
        inputs = {"unit": unit.name, "paths": list(unit.paths), "inputs": unit.inputs,
                  "deps": {d: keys[d].key for d in sorted(set(unit.deps))}, **shared}
        digest = hashlib.sha256(canonical_json({"anchor_task": anchor.task, **inputs})).hexdigest()
        keys[unit.name] = UnitKey(unit, digest, None, json_copy(inputs))
    return keys


def json_copy(value: Any) -> Any:
    import json

    return json.loads(canonical_json(value))


def flat_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A unit's inputs as one level of dotted keys (``inputs.symbols``, ``deps.busybox``),
    the shape :func:`~gaia_core.checkpoints.inputdiff.input_changes` explains."""
    flat: dict[str, Any] = {}
    for top in ("inputs", "deps", "shared"):
        value = inputs.get(top)
        if isinstance(value, Mapping):
            for key, item in value.items():
                flat[f"{top}.{key}"] = item
        elif value is not None:
            flat[top] = value
    for key, value in inputs.items():
        if key not in ("inputs", "deps", "shared", "unit"):
            flat[key] = value
    return flat


__all__ = ["UNITS_VERSION", "UnitKey", "check_units", "flat_inputs", "order", "unit_keys"]
