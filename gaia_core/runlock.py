"""The workspace run lock: one ``gaia run`` per workspace at a time.

Two runs in one workspace write the same out dir, store and logs; without a lock 19 of 32
such runs failed with misleading errors. The second run waits, saying who holds the lock
(pid, host, command, since), or with ``--no-wait`` stops at once with that message. A
lock that cannot be taken at all (a read-only disk) stops the run before it starts.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock

from gaia_core import owner
from gaia_core.atomic import write_json
from gaia_core.errors import ExitCode, GaiaError

LOCK_NAME = ".gaia-run.lock"
#: seconds between two "still waiting" lines
REPORT_EVERY = 30.0


class RunLocked(GaiaError):
    exit_code = ExitCode.FAILED


class RunLockUnavailable(GaiaError):
    exit_code = ExitCode.USAGE_ERROR


def _holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def run_lock(build_dir: Path, *, wait: bool, echo: Callable[[str], Any], poll: float = 0.2) -> Iterator[None]:
    lock_path = build_dir / LOCK_NAME
    holder_path = build_dir / f"{LOCK_NAME}.holder.json"
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(lock_path))
        acquired = _try(lock)
    except OSError as exc:
        raise RunLockUnavailable(f"cannot take the workspace run lock {lock_path}: {exc.strerror or exc}; "
                                 "the run does not start") from None
    if not acquired:
        holder = _holder(holder_path)
        who = owner.describe(holder) if holder else "another gaia run"
        if not wait:
            raise RunLocked(f"the workspace {build_dir} is in use by {who} (lock {lock_path}); not waiting (--no-wait)")
        echo(f"waiting for the workspace run lock {lock_path}, held by {who}")
        last = time.monotonic()
        while not _try(lock, poll):
            if time.monotonic() - last >= REPORT_EVERY:
                last = time.monotonic()
                holder = _holder(holder_path)
                echo(f"still waiting for the workspace run lock, held by {owner.describe(holder) if holder else who}")
    try:
        try:
            write_json(holder_path, owner.me("gaia run"))
        except OSError as exc:
            raise RunLockUnavailable(f"cannot record the workspace run lock's holder in {holder_path}: "
                                     f"{exc.strerror or exc}; the run does not start") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            holder_path.unlink()
        lock.release()


def _try(lock: filelock.FileLock, timeout: float = 0) -> bool:
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        return False
    return True
