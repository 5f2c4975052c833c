"""``manifest.json``: the commit marker of a checkpoint object, and what makes it trustworthy."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gaia_core.errors import CheckpointError

FORMAT_VERSION = 1
PAYLOAD_NAMES = {"zstd": "payload.tar.zst", "none": "payload.tar"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def build_manifest(*, point_id: str, anchor_task: str, fingerprint: str, lineage: str, trust_mode: str,
                   inputs: dict[str, Any], targets: list[str], compression: str, size: int,
                   sha256: str) -> dict[str, Any]:
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
        "payload": {"file": PAYLOAD_NAMES[compression], "compression": compression, "size": size, "sha256": sha256},
        "gaia_version": __version__,
        "producer": _producer(),
    }


def _producer() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {"host": socket.gethostname(), "user": user, "command": " ".join(Path(a).name if i == 0 else a
                                                                             for i, a in enumerate(sys.argv[:3]))}


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and check the shape; hostile input when it came from a remote."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable checkpoint manifest {path}: {exc}") from None
    check_shape(data, str(path))
    return data


def check_shape(data: Any, where: str) -> None:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"invalid checkpoint manifest {where}: {why}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    if data.get("format") != FORMAT_VERSION:
        raise bad(f"format {data.get('format')!r} is not supported (this gaia reads format {FORMAT_VERSION})")
    for key in ("id", "anchor_task", "fingerprint", "lineage", "created_at"):
        if not isinstance(data.get(key), str):
            raise bad(f"'{key}' missing or not a string")
    if not _HEX64.match(data["fingerprint"]) or not _HEX64.match(data["lineage"]):
        raise bad("fingerprint/lineage are not sha256 hex")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise bad("'payload' missing")
    compression = payload.get("compression")
    if compression not in PAYLOAD_NAMES or payload.get("file") != PAYLOAD_NAMES[compression]:
        raise bad(f"payload file {payload.get('file')!r} / compression {compression!r} not supported")
    if not isinstance(payload.get("size"), int) or payload["size"] < 0:
        raise bad("payload size missing")
    if not isinstance(payload.get("sha256"), str) or not _HEX64.match(payload["sha256"]):
        raise bad("payload sha256 missing")
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
