"""A point's fingerprint: sha256 over the effective config values it selects, the contents
they name, the anchor's salt and the store format version; the inputs are kept to explain
misses.

Values are the validated settings with their defaults (writing a default out changes
nothing, changing a plugin's default changes the fingerprint). Salt keys are namespaced
by the anchor task (``buildroot.build:host.system``), so they never read like config paths.
No absolute workspace path goes in: checkpoints relocate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.manifest import FORMAT_VERSION
from gaia_core.fingerprints import InputPending, _collect_input_times
from gaia_core.inputtimes import _InputTimes

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.build import Build
    from gaia_core.checkpoints.config import Point

FORMAT_KEY = "gaia.store_format"
#: the globs left out of the input trees, when there are any
EXCLUDE_KEY = "gaia.fingerprint_exclude"


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    #: hex sha256; None while an input waits for a task (``pending`` says which)
    value: str | None
    inputs: dict[str, Any]
    pending: InputPending | None = None
    #: the mtimes of the input files the sources read, some perhaps still being looked for
    input_times: _InputTimes | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def newest_input_ns(self) -> int | None:
        """The newest mtime among the input files the sources read (None: none reported); a
        tree in place older than it is moved after it (:mod:`.freshness`). The first call
        waits for the looks still under way (a restore makes it at its end)."""
        return self.input_times.newest_ns if self.input_times is not None else None

    @property
    def known(self) -> bool:
        return self.value is not None

    def short(self) -> str:
        return self.value[:12] if self.value else "unknown"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def owning_table(build: Build, path: str) -> str | None:
    """The registered module table that holds ``path`` (the longest matching one)."""
    best = None
    for table in build.registry.modules:
        if (path == table or path.startswith(table + ".")) and (best is None or len(table) > len(best)):
            best = table
    return best


def effective_value(build: Build, path: str) -> Any:
    """The validated value at ``path`` with defaults applied; None when its module is inactive."""
    table = owning_table(build, path)
    if table is None:
        return _jsonable(build.get(path))
    settings = build.settings.get(table)
    if settings is None:
        return None
    node: Any = settings.model_dump(mode="json")
    for part in path[len(table) + 1 :].split(".") if path != table else ():
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def fingerprint_excludes(point: Point, anchor: Anchor) -> tuple[str, ...]:
    """The point's ``fingerprint_exclude`` globs and the anchor's, sorted, each once."""
    return tuple(sorted({*point.fingerprint_exclude, *anchor.fingerprint_exclude}))


def selected_inputs(build: Build, point: Point, anchor: Anchor) -> dict[str, Any]:
    """Every input of the fingerprint; raises InputPending when one waits for a task."""
    paths = point.fingerprint_from or anchor.default_fingerprint_paths
    excludes = fingerprint_excludes(point, anchor)
    inputs: dict[str, Any] = {}
    for path in paths:
        value = effective_value(build, path)
        sources = build.registry.sources_by_path.get(path, [])
        if sources:
            inputs[path] = {"value": value, "contents": {
                provided.cls.kind: _jsonable(_digest(build, provided, path, value, excludes)) for provided in sources
            }}
        else:
            inputs[path] = value
    for key, value in anchor.fingerprint_salt().items():
        inputs[f"{anchor.task}:{key}"] = _jsonable(value)
    if excludes:
        inputs[EXCLUDE_KEY] = list(excludes)
    inputs[FORMAT_KEY] = FORMAT_VERSION
    return inputs


def _digest(build: Build, provided: Any, path: str, value: Any, excludes: tuple[str, ...]) -> Any:
    source = provided.make()
    source.exclude = excludes
    return source.digest(build, path, value)


def compute(build: Build, point: Point, anchor: Anchor) -> Fingerprint:
    try:
        with _collect_input_times() as times:
            inputs = selected_inputs(build, point, anchor)
    except InputPending as pending:
        return Fingerprint(None, {}, pending)
    payload = {"anchor_task": point.anchor_task, "id": point.id, "selected": inputs}
    return Fingerprint(hashlib.sha256(canonical_json(payload)).hexdigest(), inputs, input_times=times)


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
