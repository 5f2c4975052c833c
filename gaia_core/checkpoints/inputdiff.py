"""What differs between two sets of fingerprint inputs, leaf by leaf and file by file.

Values are compared as dotted leaves (``buildroot.symbols.BR2_X``); a per-file tree
digest is one leaf whose difference is the files added, removed and changed. An empty table
on one side is no leaf of its own when the other side has keys under it, so adding the first
symbol reads as that symbol, not also as ``symbols.value: {} -> "<absent>"``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gaia_core.checkpoints.fingerprint import canonical_json
from gaia_core.treedigest import FileChanges, file_changes, is_file_digest

ABSENT = "<absent>"
#: files named per kind of change before "... and N more"
FILES_SHOWN = 10


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves of nested dicts (and of lists of dicts) as dotted keys:
    ``{"packages": {"nano": true}}`` -> ``packages.nano``; a per-file digest is one leaf."""
    if isinstance(value, dict) and value and not is_file_digest(value):
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out or {prefix: value}
    return {prefix: value}


def _leaves(inputs: dict[str, Any]) -> dict[str, Any]:
    """Every input's leaves; a config value with fingerprint sources gives the value's leaves
    under its path and each source's under ``<path> (<kind>)``, ``(contents)`` when the kind
    is the path: ``hello.source: "src"``, ``hello.source (hello.trees): 1 changed``."""
    flat: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, dict) and set(value) == {"value", "contents"} and isinstance(value["contents"], dict):
            flat.update(flatten(value["value"], key))
            for kind, digest in value["contents"].items():
                label = "contents" if kind == key else kind
                flat.update({f"{leaf} ({label})": v for leaf, v in flatten(digest, key).items()})
        else:
            flat.update(flatten(value, key))
    return flat


def _is_parent(key: str, others: dict[str, Any]) -> bool:
    return any(k.startswith((key + ".", key + "[")) for k in others)


@dataclasses.dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    #: for two per-file digests: which files differ (None when a listing is missing or damaged)
    files: FileChanges | None = None

    @property
    def is_tree(self) -> bool:
        return is_file_digest(self.old) or is_file_digest(self.new)

    def lines(self, where: str = "") -> list[str]:
        """The change for humans: one line, and for a tree the files under it."""
        suffix = f" ({where})" if where else ""
        if not self.is_tree:
            return [f"{self.key}: {json.dumps(self.old)} -> {json.dumps(self.new)}{suffix}"]
        if self.files is None:
            return [f"{self.key}: {_tree_summary(self.old)} -> {_tree_summary(self.new)}, files not listed{suffix}"]
        out = [f"{self.key}: {self.files.summary()}{suffix}"]
        for kind, names in (("changed", self.files.changed), ("added", self.files.added),
                            ("removed", self.files.removed)):
            out += [f"  {kind}: {name}" for name in names[:FILES_SHOWN]]
            if len(names) > FILES_SHOWN:
                out.append(f"  ... and {len(names) - FILES_SHOWN} more {kind}")
        return out

    def to_dict(self) -> dict[str, Any]:
        if not self.is_tree:
            return {"key": self.key, "old": self.old, "new": self.new}
        files = None if self.files is None else dataclasses.asdict(self.files)
        return {"key": self.key, "old": _tree_brief(self.old), "new": _tree_brief(self.new), "files": files}


def _tree_brief(value: Any) -> Any:
    """A per-file digest without its listing (the files are in ``files``)."""
    return {k: v for k, v in value.items() if k != "listing"} if is_file_digest(value) else value


def _tree_summary(value: Any) -> str:
    if is_file_digest(value):
        return f"{value.get('files', '?')} files"
    return json.dumps(value)


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every leaf that differs, sorted by key, parents of the other side's leaves left out."""
    flat_old, flat_new = _leaves(old), _leaves(new)
    changes = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, ABSENT), flat_new.get(key, ABSENT)
        if canonical_json(before) == canonical_json(after):
            continue
        if (before in ({}, []) and _is_parent(key, flat_new)) or (after in ({}, []) and _is_parent(key, flat_old)):
            continue  # an empty table on one side, its first keys on the other: those keys say it
        files = None
        if is_file_digest(before) and is_file_digest(after):
            try:
                files = file_changes(before, after)
            except ValueError:
                files = None
        changes.append(Change(key, before, after, files))
    return changes


def summary(changes: list[Change], limit: int = 3) -> str:
    """One line for a log: ``hello.source: 1 changed (configure), 2 added (Makefile.in, ...)``."""
    parts = []
    for change in changes[:limit]:
        if change.files is not None:
            named = [(k, v) for k, v in (("changed", change.files.changed), ("added", change.files.added),
                                          ("removed", change.files.removed)) if v]
            parts.append(f"{change.key}: " + ", ".join(
                f"{len(v)} {k} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in named))
        elif change.is_tree:
            parts.append(f"{change.key}: the tree changed")
        else:
            parts.append(f"{change.key}: {json.dumps(change.old)} -> {json.dumps(change.new)}")
    if len(changes) > limit:
        parts.append(f"{len(changes) - limit} more")
    return "; ".join(parts)
