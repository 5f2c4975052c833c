"""File-system helpers for trees that are somebody's root filesystem.

A root filesystem is full of absolute symlinks (``/lib -> usr/lib``, ``/etc/localtime ->
/usr/share/...``) that point into the *host* when followed naively; these helpers never
follow a link outside the tree they work on, and never read device nodes or FIFOs.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

_MAX_LINK_HOPS = 40


def resolve_in_root(root: Path, rel: str, *, follow_last: bool = True) -> Path:
    """``root/rel`` with symlinks resolved as if ``root`` were ``/`` (chroot semantics)."""
    pending = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise OSError(
                    errno.ELOOP, "too many levels of symbolic links", str(root / rel)
                )
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            pending = [p for p in link.split("/") if p not in ("", ".")] + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def copy_tree(
    src: Path, dst: Path, on_skip: Callable[[Path], None] | None = None
) -> list[str]:
    """Copy ``src`` into ``dst`` (created), keeping modes, mtimes and symlinks as symlinks.

    Returns the relative (POSIX) paths of the files and links copied. Device nodes, FIFOs
    and sockets are skipped (reported to ``on_skip``): reading ``/dev/zero`` never ends.
    """
    copied: list[str] = []
    dst.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel_dir = here.relative_to(src)
        out_dir = dst / rel_dir
        for name in sorted(dirnames):
            s = here / name
            if s.is_symlink():
                _replace_with_link(s, out_dir / name)
                copied.append((rel_dir / name).as_posix())
            else:
                (out_dir / name).mkdir(exist_ok=True)
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for name in sorted(filenames):
            s = here / name
            mode = os.lstat(s).st_mode
            if stat.S_ISLNK(mode):
                _replace_with_link(s, out_dir / name)
            elif stat.S_ISREG(mode):
                target = out_dir / name
                if target.is_symlink() or target.exists():
                    target.unlink()
                shutil.copy2(s, target, follow_symlinks=False)
            else:
                if on_skip:
                    on_skip(s)
                continue
            copied.append((rel_dir / name).as_posix())
    for dirpath, dirnames, _ in os.walk(src, topdown=False):
        for name in dirnames:
            s = Path(dirpath) / name
            if not s.is_symlink():
                shutil.copystat(s, dst / s.relative_to(src), follow_symlinks=False)
    shutil.copystat(src, dst, follow_symlinks=False)
    return sorted(copied)


def _replace_with_link(src_link: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    os.symlink(os.readlink(src_link), dst)


def clear_dir(path: Path) -> None:
    """An empty directory at ``path`` (a symlink there is removed, never followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
