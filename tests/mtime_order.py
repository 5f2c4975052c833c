"""Helpers for tests about the order of a tree's mtimes (what make sees)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def mtimes(root: Path, skip: tuple[str, ...] = (".gaia-checkpoint.json", ".gaia-receipt.jsonl.zst")) -> dict[str, int]:
    """Relative path -> lstat mtime (ns) of every entry under ``root``, ``root`` itself as ``.``."""
    found = {".": root.lstat().st_mtime_ns}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if name not in skip:
                found[rel] = path.lstat().st_mtime_ns
    return found


def ranks(times: dict[str, int]) -> dict[str, int]:
    """Each entry's rank among the distinct mtimes: equal when make's view is the same."""
    order = {t: i for i, t in enumerate(sorted(set(times.values())))}
    return {k: order[t] for k, t in times.items()}


def filesystem_now(directory: Path) -> int:
    """The mtime a file created in ``directory`` gets now."""
    with tempfile.NamedTemporaryFile(dir=directory) as probe:
        return os.fstat(probe.fileno()).st_mtime_ns


def touch_all(root: Path, ns: int | None = None) -> None:
    """Every file, link and directory under ``root`` gets mtime ``ns`` (default: now), as a
    fresh clone or checkout would leave them."""
    times = {} if ns is None else {"ns": (ns, ns)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), follow_symlinks=False, **times)
    os.utime(root, **times)
