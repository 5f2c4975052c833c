"""Swap a restored tree in for the current one so that at every instant the path holds the
old tree or the new one, never nothing.

Linux's ``renameat2(RENAME_EXCHANGE)`` swaps two paths in one step. Where the filesystem
does not support it, two renames are journaled beside the target first, and the next run
completes (or rolls back) what a killed one left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from pathlib import Path

from gaia_core import atomic
from gaia_core.owner import OWNER_FILE, is_gone, read_owner

RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
#: names beside a target: the restore's staging dir (it also receives the old tree) and the journal
STAGING_INFIX = ".gaia-restore-"
JOURNAL_SUFFIX = ".gaia-swap.json"


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False when the kernel or filesystem can't."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def journal_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{JOURNAL_SUFFIX}")


def swap_in(staged: Path, final: Path) -> None:
    """Put the tree at ``staged`` at ``final``; the old tree ends up at ``staged``."""
    if not os.path.lexists(final):
        os.rename(staged, final)
        return
    if exchange(staged, final):
        return
    old = staged.with_name(staged.name + ".old")
    journal = journal_path(final)
    atomic.write_json(journal, {"final": str(final), "staged": str(staged), "old": str(old)})
    os.rename(final, old)
    os.rename(staged, final)
    os.rename(old, staged)
    journal.unlink()


def recover(final: Path) -> str | None:
    """Finish a journaled swap a killed run left at ``final``; say what was done, if anything."""
    journal = journal_path(final)
    try:
        data = json.loads(journal.read_bytes())
        staged, old = Path(data["staged"]), Path(data["old"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        journal.unlink(missing_ok=True)
        return f"dropped an unreadable swap journal {journal}"
    if not os.path.lexists(final):
        if os.path.lexists(staged):
            os.rename(staged, final)  # the new tree was complete: finish the swap
            done = f"completed an interrupted swap into {final}"
        elif os.path.lexists(old):
            os.rename(old, final)
            done = f"rolled back an interrupted swap of {final}"
        else:
            done = f"found neither tree of an interrupted swap of {final}"
    else:
        done = f"cleaned up after an interrupted swap into {final}"
    if os.path.lexists(old):
        shutil.rmtree(old, ignore_errors=True)
    journal.unlink(missing_ok=True)
    return done


def leftovers(final: Path) -> list[Path]:
    """Staging dirs beside ``final`` whose restore was killed (their owner is gone)."""
    found = []
    parent = final.parent
    if not parent.is_dir():
        return found
    prefix = f".{final.name}{STAGING_INFIX}"
    for child in parent.iterdir():
        if child.name.startswith(prefix) and child.is_dir() and not child.is_symlink():
            owner = read_owner(child)
            if owner is None or is_gone(owner):
                found.append(child)
    return found


__all__ = ["OWNER_FILE", "exchange", "leftovers", "recover", "swap_in"]
