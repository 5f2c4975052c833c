"""``manifest.json``: the commit marker of a checkpoint object, and what makes it trustworthy.

Besides the seed's fields it records what a restore must check before it trusts and
unpacks the payload: the payload's sha-derived name, compressed and unpacked size and
entry count (extraction stops past them), the absolute roots the tree embeds and the files
that hold them (relocation), the directories outside the tree its links need
(prerequisites), and an ed25519 signature over all of it.
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
#: 3: signatures, sha-named payloads, sizes and entry counts
FORMAT_VERSION = 3
COMPRESSION_SUFFIX = {"zstd": ".tar.zst", "none": ".tar"}
#: a remote manifest larger than this is refused before it is parsed
MAX_MANIFEST_BYTES = 16 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PAYLOAD_NAME = re.compile(r"^payload-[0-9a-f]{64}\.tar(\.zst)?$")
_KINDS = {"text", "binary", "symlink"}
#: a name an anchor gives a root, or that name with ``:real`` (its resolved form)
_ROOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:real)?$")


def now() -> str:
    return datetime.now(UTC).isoformat()


def payload_file_name(sha256: str, compression: str) -> str:
    """``payload-<sha256>.tar.zst``: the name says the content, so no writer can tear it."""
    return f"payload-{sha256}{COMPRESSION_SUFFIX[compression]}"


class OldFormat(CheckpointError):
    """A manifest of another store format: a miss (``format_changed``), not a corrupt object."""


def build_manifest(*, point_id: str, anchor_task: str, fingerprint: str, lineage: str, trust_mode: str,
                   inputs: dict[str, Any], targets: list[str], compression: str, size: int, sha256: str,
                   unpacked_size: int, entries: int, roots: dict[str, str], embedded: list[dict[str, Any]],
                   prerequisites: list[str]) -> dict[str, Any]:
    from gaia_core import __version__

    return {
        "version": FORMAT_VERSION,
        "format": FORMAT_VERSION,
        "id": point_id,
        "anchor_task": anchor_task,
        "fingerprint": fingerprint,
        "lineage": lineage,
        "created_at": now(),
        "trust_mode": trust_mode,
        "fingerprint_inputs": inputs,
        "targets": [{"name": t, "payload_rel": t} for t in targets],
        "payload": {
            "file": payload_file_name(sha256, compression), "compression": compression, "size": size,
            "sha256": sha256, "unpacked_size": unpacked_size, "entries": entries,
        },
        "roots": roots,
        "embedded": embedded,
        "prerequisites": prerequisites,
        "gaia_version": __version__,
        "producer": _producer(),
    }


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
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise bad("'payload' missing")
    compression = payload.get("compression")
    if compression not in COMPRESSION_SUFFIX:
        raise bad(f"compression {compression!r} not supported")
    for key in ("size", "unpacked_size", "entries"):
        if not _count(payload.get(key)):
            raise bad(f"payload {key} missing")
    if not isinstance(payload.get("sha256"), str) or not _HEX64.match(payload["sha256"]):
        raise bad("payload sha256 missing")
    # the name derives from the sha256 (checked with the hash, which permissive mode skips)
    if not isinstance(payload.get("file"), str) or not _PAYLOAD_NAME.match(payload["file"]) or \
            not payload["file"].endswith(COMPRESSION_SUFFIX[compression]):
        raise bad(f"payload file {str(payload.get('file'))[:100]!r} is not a payload name for {compression}")
    targets = data.get("targets")
    if not isinstance(targets, list) or not targets:
        raise bad("'targets' missing")
    for t in targets:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not _TARGET_NAME.match(t["name"]):
            raise bad(f"target {t!r} has an unsafe name")
        if t.get("payload_rel", t["name"]) != t["name"]:
            raise bad(f"target {t['name']!r} has a payload_rel that differs from its name")
    if not isinstance(data.get("fingerprint_inputs", {}), dict):
        raise bad("'fingerprint_inputs' is not an object")
    roots = data.get("roots")
    if not isinstance(roots, dict) or not all(isinstance(k, str) and _absolute(v) for k, v in roots.items()):
        raise bad("'roots' must map names to absolute paths")
    for name, path in roots.items():
        if not _ROOT_NAME.match(name) or path == "/" or posixpath.normpath(path) != path:
            raise bad(f"relocation root {name[:100]!r} = {path[:200]!r} is not a normalised directory below '/'")
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
    signature = data.get("signature")
    if signature is not None and not (isinstance(signature, dict) and isinstance(signature.get("key"), str)
                                      and isinstance(signature.get("sig"), str)):
        raise bad("'signature' is malformed")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _absolute(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\0" not in value
