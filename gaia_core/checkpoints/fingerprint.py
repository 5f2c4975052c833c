"""A point's fingerprint: sha256 over the selected config values, the contents they name,
the anchor's salt and the store format version; the inputs are kept to explain misses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.manifest import FORMAT_VERSION

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.build import Build
    from gaia_core.checkpoints.config import Point


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    value: str
    inputs: dict[str, Any]


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def selected_inputs(build: Build, point: Point, anchor: Anchor) -> dict[str, Any]:
    paths = point.fingerprint_from or anchor.default_fingerprint_paths
    inputs: dict[str, Any] = {}
    for path in paths:
        value = _jsonable(build.get(path))
        sources = build.registry.sources_by_path.get(path, [])
        if sources:
            contents = {src.kind: _jsonable(src().digest(build, path, value)) for src in sources}
            inputs[path] = {"value": value, "contents": contents}
        else:
            inputs[path] = value
    for key, value in anchor.fingerprint_salt().items():
        inputs[key] = _jsonable(value)
    inputs["gaia.store_format"] = FORMAT_VERSION
    return inputs


def compute(build: Build, point: Point, anchor: Anchor) -> Fingerprint:
    inputs = selected_inputs(build, point, anchor)
    payload = {"anchor_task": point.anchor_task, "id": point.id, "selected": inputs}
    return Fingerprint(hashlib.sha256(canonical_json(payload)).hexdigest(), inputs)


def lineage(anchor_task: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{anchor_task}\n{fingerprint}".encode()).hexdigest()


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if canonical_json(old.get(k, "<absent>")) != canonical_json(new.get(k, "<absent>"))]


def miss_reason(changed: list[str]) -> str:
    if not changed:
        return "fingerprint_changed"
    shown = ",".join(changed[:3])
    more = f"(+{len(changed) - 3})" if len(changed) > 3 else ""
    return f"inputs_changed:{shown}{more}"


def _jsonable(value: Any) -> Any:
    return json.loads(canonical_json(value))
