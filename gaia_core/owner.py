"""Who owns a temporary file or a lock: host, pid and the process's start time.

A pid alone is reused; with its start time (``/proc/<pid>/stat`` field 22) a later run
can tell for sure that the owner of a leftover is gone and reclaim it at once, instead of
waiting a day. An owner on another host is never judged gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gaia_core.safefs import read_regular

OWNER_FILE = ".gaia-owner.json"
#: an owner record is a few hundred bytes; anything larger is not one
MAX_OWNER_BYTES = 64 << 10


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def me(purpose: str = "") -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": process_start(pid),
        "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3])),
        "purpose": purpose,
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "since_epoch": time.time(),
    }


def is_gone(owner: dict[str, Any]) -> bool:
    """Whether the process recorded in ``owner`` has certainly ended (same host only)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    start = process_start(pid)
    return start is None or (owner.get("start") is not None and start != owner.get("start"))


def write_owner(directory: Path, purpose: str = "") -> None:
    (directory / OWNER_FILE).write_text(json.dumps(me(purpose)))


def read_owner(directory: Path) -> dict[str, Any] | None:
    """The record in ``directory``; None when there is none, or something else is in its
    place (a link is not followed, a FIFO not waited on)."""
    try:
        data = json.loads(read_regular(directory / OWNER_FILE, MAX_OWNER_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')} running '{owner.get('command')}'"
            + (f" ({owner['purpose']})" if owner.get("purpose") else "") + f" since {owner.get('since')}")
