"""Store tiers found down, remembered on disk so that the next runs on this host skip them.

A tier that timed out or refused costs a run its probe budget; a CI runner starting a fresh
workspace every job would pay it in every job. So a run that finds a tier down writes it
here, with the time until which later runs skip it without a connection
(``[checkpoints] down_for``), and a run that reaches it again afterwards clears it.

The file is ``$XDG_CACHE_HOME/gaia/down-tiers-<host>.json`` (``~/.cache`` when the variable
is unset or not absolute): per user, since the cache directory is the user's, and per host,
since a home directory shared over NFS is read from several hosts and a tier down from one
may be up from another. Each tier is keyed by what its backend describes (kind, name and
location, never a secret). Changes are read-modify-write under an OS lock beside the file,
which is replaced atomically, so concurrent runs lose nothing; a file that cannot be read
or has the wrong shape counts as empty. The memory is a convenience: when it cannot be read
or written the runs go on as if it were empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock

from gaia_core import atomic

VERSION = 1
#: how long a run waits for another run's change of the file before it does without
LOCK_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class Down:
    """A tier found down: by which ref, where, why, when, and until when it is skipped."""

    ref: str
    where: str
    reason: str
    since: float
    until: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def state_file() -> Path:
    """Where this user's memory of down tiers on this host lives."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"
    return root / "gaia" / f"down-tiers-{host}.json"


def _entry(where: str, raw: Any) -> Down | None:
    """An entry of the file, or None when it is not well-formed."""
    if not isinstance(raw, dict):
        return None
    try:
        down = Down(ref=str(raw["ref"]), where=where, reason=str(raw["reason"]), since=float(raw["since"]),
                    until=float(raw["until"]))
    except (KeyError, TypeError, ValueError):
        return None
    return down


class DownTiers:
    """The memory of down tiers in ``path`` (:func:`state_file` by default)."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time):
        self.path = path or state_file()
        self.clock = clock

    def read(self) -> dict[str, Down]:
        """Every well-formed entry, expired ones included; empty when the file is missing or corrupt."""
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        tiers = data.get("tiers") if isinstance(data, dict) and data.get("version") == VERSION else None
        if not isinstance(tiers, dict):
            return {}
        return {where: down for where, raw in tiers.items() if (down := _entry(str(where), raw)) is not None}

    def get(self, where: str) -> Down | None:
        """The entry of ``where`` while it holds (its ``until`` is still ahead), else None."""
        down = self.read().get(where)
        return down if down is not None and down.until > self.clock() else None

    def mark_down(self, ref: str, where: str, reason: str, seconds: float) -> Down | None:
        """Remember ``where`` as down for ``seconds`` from now; the entry, None when not written."""
        now = self.clock()
        down = Down(ref, where, reason[:500], now, now + seconds)
        return down if self._change(lambda tiers: tiers.__setitem__(where, down)) else None

    def mark_up(self, where: str) -> bool:
        """Forget ``where``; whether the file held it."""
        if where not in self.read():
            return False
        return self._change(lambda tiers: tiers.pop(where, None))

    def _change(self, change: Callable[[dict[str, Down]], object]) -> bool:
        """Apply ``change`` to the entries under the lock, drop expired ones, write atomically."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with filelock.FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT):
                tiers = self.read()
                change(tiers)
                now = self.clock()
                kept = {where: {k: v for k, v in down.to_dict().items() if k != "where"}
                        for where, down in tiers.items() if down.until > now}
                atomic.write_json(self.path, {"version": VERSION, "tiers": kept}, sort_keys=True)
        except (OSError, filelock.Timeout):
            return False
        return True


__all__ = ["Down", "DownTiers", "state_file"]
