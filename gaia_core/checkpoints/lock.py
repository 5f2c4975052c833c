"""The store lock: an OS lock (filelock) held for short critical sections only.

Who holds it (pid, host, command, since) is written beside the lock so ``status`` can
show it; transfers and compression never run under it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from gaia_core import owner
from gaia_core.atomic import write_json
from gaia_core.errors import CheckpointError

LOCK_NAME = ".store.lock"
HOLDER_NAME = ".store.lock.holder.json"
DEFAULT_TIMEOUT = 120.0


class StoreLock:
    def __init__(self, root: Path, timeout: float = DEFAULT_TIMEOUT):
        self.root = root
        self.timeout = timeout

    @property
    def holder_path(self) -> Path:
        return self.root / HOLDER_NAME

    @contextlib.contextmanager
    def held(self, purpose: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / LOCK_NAME))
        try:
            lock.acquire(timeout=self.timeout)
        except filelock.Timeout:
            holder = self.holder()
            who = describe_holder(holder) if holder else "unknown holder"
            raise CheckpointError(
                f"timed out after {self.timeout:.0f}s waiting for the checkpoint store lock "
                f"{self.root / LOCK_NAME} (held by {who})"
            ) from None
        try:
            write_json(self.holder_path, owner.me(purpose))
            yield
        finally:
            self.holder_path.unlink(missing_ok=True)
            lock.release()

    def holder(self) -> dict[str, Any] | None:
        """The current holder, or None when the lock is free."""
        lock = filelock.FileLock(str(self.root / LOCK_NAME))
        if not (self.root / LOCK_NAME).exists():
            return None
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            try:
                return json.loads(self.holder_path.read_text())
            except (OSError, ValueError):
                return {"pid": None, "host": None, "command": "?", "purpose": "?", "since": None}
        lock.release()
        return None


def describe_holder(holder: dict[str, Any]) -> str:
    return owner.describe(holder)
