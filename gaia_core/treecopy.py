"""A copy of an input tree that holds exactly the files its fingerprint covers.

A build that runs in such a copy can write into it (``autoreconf``, in-tree builds) without
touching its inputs, reads nothing the fingerprint left out (files git ignores), and keeps
everything it needs inside its output directory, so a restored tree does not depend on
where, or how recently, the sources were checked out.

The copy is updated in place, so an incremental build rebuilds what changed: a file whose
content is unchanged keeps its mtime; a changed file is written with the time of the copy
(newer than anything built from its old content, whatever its mtime in the source); a new
file keeps its source mtime (a release tarball's generated files stay newer than their
sources); a file the previous copy brought and the source no longer has is removed. Files
the build made in the copy are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

from gaia_core import atomic
from gaia_core.treedigest import entry_digest, input_files

#: the list of files the last copy brought, kept in the copy
STATE_FILE = ".gaia-inputs.json"


def sync_inputs(source: Path, dest: Path, *, git_aware: bool = True) -> dict[str, int]:
    """Bring ``dest`` to the input files of ``source``; returns counts of what it did."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [rel for rel in input_files(source, git_aware=git_aware) if rel != STATE_FILE]
    previous = _previous(dest)
    done = {"copied": 0, "updated": 0, "removed": 0, "kept": 0}
    for rel in sorted(set(previous) - set(wanted)):
        target = dest / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
            done["removed"] += 1
    for rel in wanted:
        done[_bring(source / rel, dest / rel)] += 1
    atomic.write_json(dest / STATE_FILE, sorted(wanted))
    return done


def _previous(dest: Path) -> list[str]:
    try:
        names = json.loads((dest / STATE_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str) and ".." not in n.split("/") and not n.startswith("/")]


def _bring(src: Path, dst: Path) -> str:
    """Copy one entry unless ``dst`` already holds the same; ``copied``, ``updated`` or ``kept``."""
    existed = dst.is_symlink() or dst.exists()
    if existed and _same(src, dst):
        return "kept"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if existed and dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    tmp = dst.with_name(f".{dst.name}.gaia-tmp")
    tmp.unlink(missing_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), tmp)
    else:
        shutil.copy2(src, tmp)
        if existed:  # newer than whatever was built from the old content
            now = time.time_ns()
            os.utime(tmp, ns=(now, max(now, os.stat(tmp).st_mtime_ns)))
    os.replace(tmp, dst)
    return "updated" if existed else "copied"


def _same(src: Path, dst: Path) -> bool:
    s, d = os.lstat(src), os.lstat(dst)
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode) or (s.st_mode & 0o7777) != (d.st_mode & 0o7777):
        return False
    if stat.S_ISLNK(s.st_mode):
        return os.readlink(src) == os.readlink(dst)
    if s.st_size != d.st_size:
        return False
    if s.st_mtime_ns == d.st_mtime_ns:  # rsync's quick check: copied before and not touched since
        return True
    return entry_digest(src) == entry_digest(dst)
