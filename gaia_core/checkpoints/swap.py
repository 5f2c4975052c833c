"""Swap a restored tree in for the current one so that at every instant the path holds the
old tree or the new one, never nothing.

Linux's ``renameat2(RENAME_EXCHANGE)`` swaps two paths in one step. Where the filesystem
does not support it, two renames are journaled beside the target first, and the next run
completes (or rolls back) what a killed one left.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
from pathlib import Path

from gaia_core import atomic
from gaia_core.owner import OWNER_FILE, is_gone, read_owner
from gaia_core.safefs import Root, UnsafePath, read_regular

RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
#: names beside a target: the restore's staging dir (it also receives the old tree) and the journal
STAGING_INFIX = ".gaia-restore-"
JOURNAL_SUFFIX = ".gaia-swap.json"
#: a journal holds three paths; anything larger is not one
MAX_JOURNAL_BYTES = 64 << 10


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
    """Finish a journaled swap a killed run left at ``final``; say what was done, if anything.

    The journal is hostile input (anyone who can write the workspace can write one): its
    paths must lie in a restore staging directory beside ``final``, reached without a
    link, or it is dropped and nothing it names is touched.
    """
    journal = journal_path(final)
    try:
        data = json.loads(read_regular(journal, MAX_JOURNAL_BYTES))
        staged, old = _entry(final, data["staged"]), _entry(final, data["old"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        _drop(journal)
        return f"dropped an unreadable swap journal {journal}"
    if staged is None or old is None:
        _drop(journal)
        return f"dropped a swap journal {journal} that names paths outside the restore staging directories beside {final}"
    try:
        with Root(final.parent) as beside:
            done = _finish(beside, final, staged, old)
    except UnsafePath as exc:
        _drop(journal)
        return f"dropped a swap journal {journal}: {exc.filename} {exc.strerror}"
    journal.unlink(missing_ok=True)
    return done


def _finish(beside: Root, final: Path, staged: str, old: str) -> str:
    new_tree, old_tree = beside.lstat(staged), beside.lstat(old)  # a link on the way: UnsafePath
    if beside.lstat(final.name) is None:
        if new_tree is not None:
            beside.replace(staged, final.name)  # the new tree was complete: finish the swap
            done = f"completed an interrupted swap into {final}"
        elif old_tree is not None:
            beside.replace(old, final.name)
            done = f"rolled back an interrupted swap of {final}"
        else:
            done = f"found neither tree of an interrupted swap of {final}"
    else:
        done = f"cleaned up after an interrupted swap into {final}"
    with contextlib.suppress(OSError):
        beside.rmtree(old)
    return done


def _entry(final: Path, value: object) -> str | None:
    """``value`` relative to ``final``'s directory when it names ``<staging>/tree/<name>`` of a
    restore staging directory beside ``final`` (what :func:`swap_in` journals); else None."""
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        return None
    parts = value.split("/")
    base = str(final.parent).rstrip("/").split("/")
    rel = parts[len(base):]
    if parts[: len(base)] != base or len(rel) != 3 or rel[1] != "tree":
        return None
    if not rel[0].startswith(f".{final.name}{STAGING_INFIX}") or any(p in ("", ".", "..") for p in rel):
        return None
    return "/".join(rel)


def _drop(journal: Path) -> None:
    with contextlib.suppress(OSError):
        journal.unlink()


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
