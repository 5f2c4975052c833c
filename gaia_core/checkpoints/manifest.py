"""The manifest: the commit marker of a checkpoint object, and what makes it trustworthy.

Besides the seed's fields it records what a restore must check before it trusts and
writes the tree: the ids and sizes of the parts that list the tree's entries (each entry
names its chunks), the entry count and byte total (restore stops past them), how chunks
were hashed and cut, the absolute roots the tree embeds and the files that hold them
(relocation), the directories outside the tree its links need (prerequisites), and an
ed25519 signature over all of it, which so commits to every chunk of the tree.

Each signer has its own manifest file under a fingerprint (:func:`manifest_name`): an
object published by someone else, trusted or not, never stands in another's way.
"""

from __future__ import annotations

import getpass
import json
import os
import posixpath
import re
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gaia_core.errors import CheckpointError

#: 1: first release; 2: relocatable (no workspace paths), pax tar, effective values;
#: 3: signatures, sha-named payloads, sizes and entry counts; 4: content-addressed chunks in
#: packs, entries listed in parts, one manifest per signer
FORMAT_VERSION = 4
#: a manifest larger than this is refused before it is parsed
MAX_MANIFEST_BYTES = 16 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KINDS = {"text", "binary", "symlink"}
#: the name of the manifest of an unsigned object, and the form of a signer's
UNSIGNED_MANIFEST = "manifest.json"
_SIGNED_MANIFEST = re.compile(r"^manifest\.key\.([A-Za-z0-9][A-Za-z0-9._-]{0,127})\.json$")
#: a name an anchor gives a root, or that name with ``:real`` (its resolved form)
_ROOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:real)?$")


def now() -> str:
    return datetime.now(UTC).isoformat()


def manifest_name(signer: str | None) -> str:
    """The file of a signer's slot under a fingerprint (``manifest.key.<name>.json``), or the
    unsigned one: each signer writes its own, so no object can block another's."""
    if signer is None:
        return UNSIGNED_MANIFEST
    if not _KEY_NAME.match(signer):
        raise CheckpointError(f"invalid key name {signer!r}")
    return f"manifest.key.{signer}.json"


def slot_of(file_name: str) -> str | None:
    """The signer a manifest file name belongs to: a key name, ``""`` for the unsigned
    slot, None for a name that is no manifest."""
    if file_name == UNSIGNED_MANIFEST:
        return ""
    match = _SIGNED_MANIFEST.match(file_name)
    return match.group(1) if match else None


def signer_of(manifest: dict[str, Any]) -> str | None:
    signature = manifest.get("signature")
    return str(signature.get("key")) if isinstance(signature, dict) else None


class OldFormat(CheckpointError):
    """A manifest of another store format: a miss (``format_changed``), not a corrupt object."""


def build_manifest(*, point_id: str, anchor_task: str, fingerprint: str, lineage: str, trust_mode: str,
                   inputs: dict[str, Any], targets: list[str], tree: dict[str, Any], roots: dict[str, str],
                   embedded: list[dict[str, Any]], prerequisites: list[str],
                   build_seconds: float | None = None, units: dict[str, Any] | None = None,
                   unit: dict[str, Any] | None = None) -> dict[str, Any]:
    """``build_seconds``: how long the anchor ran (the time a hit on this object saves);
    ``units``: the units a whole tree holds (name -> key, paths, label); ``unit``: what a
    unit's own object is (:mod:`.unitcapture`). Neither is there when None."""
    from gaia_core import __version__

    manifest = {
        "version": FORMAT_VERSION,
        "format": FORMAT_VERSION,
        "id": point_id,
        "anchor_task": anchor_task,
        "fingerprint": fingerprint,
        "lineage": lineage,
        "created_at": now(),
        "trust_mode": trust_mode,
        "fingerprint_inputs": inputs,
        "targets": [{"name": t} for t in targets],
        "tree": tree,
        "roots": roots,
        "embedded": embedded,
        "prerequisites": prerequisites,
        "gaia_version": __version__,
        "producer": _producer(),
        **({"units": units} if units is not None else {}),
        **({"unit": unit} if unit is not None else {}),
    }
    if build_seconds is not None:
        manifest["build_seconds"] = round(build_seconds, 3)
    return manifest


def _producer() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    return {"host": socket.gethostname(), "user": user, "command": command}


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and check the shape; hostile input when it came from a remote."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"checkpoint manifest {path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable checkpoint manifest {path}: {exc}") from None
    check_shape(data, str(path))
    return data


def check_shape(data: Any, where: str) -> None:
    """Refuse anything a restore could be misled by; raises :class:`OldFormat` for other formats."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"invalid checkpoint manifest {where}: {why}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    if data.get("format") != FORMAT_VERSION:
        raise OldFormat(f"checkpoint manifest {where} has store format {data.get('format')!r}; "
                        f"this gaia reads format {FORMAT_VERSION}")
    for key in ("id", "anchor_task", "fingerprint", "lineage", "created_at"):
        if not isinstance(data.get(key), str):
            raise bad(f"'{key}' missing or not a string")
    if not _HEX64.match(data["fingerprint"]) or not _HEX64.match(data["lineage"]):
        raise bad("fingerprint/lineage are not sha256 hex")
    _check_tree(data.get("tree"), bad)
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets:
        raise bad("'targets' missing")
    for t in targets:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not _TARGET_NAME.match(t["name"]):
            raise bad(f"target {t!r} has an unsafe name")
    if not isinstance(data.get("fingerprint_inputs", {}), dict):
        raise bad("'fingerprint_inputs' is not an object")
    roots = data.get("roots")
    if not isinstance(roots, dict) or not all(isinstance(k, str) and _absolute(v) for k, v in roots.items()):
        raise bad("'roots' must map names to absolute paths")
    for name, path in roots.items():
        if not _ROOT_NAME.match(name) or path == "/" or posixpath.normpath(path) != path:
            raise bad(f"relocation root {name[:100]!r} = {path[:200]!r} is not a normalised directory below '/'")
    variant = data.get("variant_of")
    if variant is not None and not (isinstance(variant, dict) and all(
            isinstance(variant.get(k), str) and _HEX64.match(variant[k]) for k in ("fingerprint", "parent"))
            and isinstance(variant.get("reason"), str)):
        raise bad("'variant_of' must name a fingerprint, a parent (sha256 hex) and a reason")
    prerequisites = data.get("prerequisites")
    if not isinstance(prerequisites, list) or not all(_absolute(p) for p in prerequisites):
        raise bad("'prerequisites' must be a list of absolute paths")
    embedded = data.get("embedded")
    if not isinstance(embedded, list):
        raise bad("'embedded' must be a list")
    names = {t["name"] for t in targets}
    for item in embedded:
        if not (isinstance(item, dict) and isinstance(item.get("path"), str) and item.get("kind") in _KINDS
                and isinstance(item.get("roots"), list) and all(r in roots for r in item["roots"])):
            raise bad(f"embedded entry {str(item)[:200]} is malformed")
        parts = item["path"].split("/")
        if parts[0] not in names or any(p in ("", ".", "..") for p in parts):
            raise bad(f"embedded path {item['path'][:200]!r} is not inside a target")
    if "units" in data:
        _check_units(data["units"], names, bad)
    if "unit" in data:
        _check_unit(data["unit"], names, bad)
    signature = data.get("signature")
    if signature is not None and not (isinstance(signature, dict) and isinstance(signature.get("key"), str)
                                      and isinstance(signature.get("sig"), str)):
        raise bad("'signature' is malformed")


def _check_tree(tree: Any, bad: Any) -> None:
    from gaia_core.checkpoints.chunking import HASH, MAX_CHUNK

    if not isinstance(tree, dict):
        raise bad("'tree' missing")
    if tree.get("hash") != HASH:
        raise bad(f"chunk ids are not {HASH} ({str(tree.get('hash'))[:20]})")
    for key in ("entries", "files", "size", "packed", "chunks"):
        if not _count(tree.get(key)):
            raise bad(f"tree {key} missing")
    parts = tree.get("parts")
    if not isinstance(parts, list) or not parts:
        raise bad("tree parts missing")
    total = 0
    for part in parts:
        if not (isinstance(part, dict) and isinstance(part.get("id"), str) and _HEX64.match(part["id"])
                and _count(part.get("size")) and 0 < part["size"] <= MAX_CHUNK and _count(part.get("entries"))):
            raise bad(f"tree part {str(part)[:200]} is malformed")
        total += part["entries"]
    if total != tree["entries"]:
        raise bad(f"tree parts list {total} entries, the tree {tree['entries']}")


_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _unit_paths(paths: Any, targets: set[str]) -> bool:
    return isinstance(paths, list) and all(
        isinstance(p, str) and "\0" not in p and p.split("/")[0] in targets and len(p.split("/")) > 1
        and not any(part in ("", ".", "..") for part in p.split("/")) for p in paths)


def _check_units(units: Any, targets: set[str], bad: Any) -> None:
    """A whole tree's ``units``: name -> {key, paths, label}."""
    if not isinstance(units, dict):
        raise bad("'units' is not an object")
    for name, item in units.items():
        if not (_UNIT_NAME.match(str(name)) and isinstance(item, dict) and isinstance(item.get("key"), str)
                and _HEX64.match(item["key"]) and _unit_paths(item.get("paths"), targets)
                and isinstance(item.get("label", ""), str)):
            raise bad(f"unit {str(name)[:100]!r} is malformed")


def _check_unit(unit: Any, targets: set[str], bad: Any) -> None:
    """A unit's own object: its name, paths and the keys of its dependencies."""
    if not (isinstance(unit, dict) and isinstance(unit.get("name"), str) and _UNIT_NAME.match(unit["name"])
            and _unit_paths(unit.get("paths"), targets) and isinstance(unit.get("label", ""), str)):
        raise bad("'unit' is malformed")
    deps = unit.get("deps")
    if not isinstance(deps, dict) or not all(_UNIT_NAME.match(str(k)) and isinstance(v, str) and _HEX64.match(v)
                                             for k, v in deps.items()):
        raise bad("'unit.deps' must map unit names to keys")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _absolute(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\0" not in value
