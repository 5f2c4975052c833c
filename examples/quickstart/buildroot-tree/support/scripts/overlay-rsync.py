"""Copy a root filesystem overlay into the target dir as Buildroot does (system/system.mk):

    rsync -a --ignore-times $(RSYNC_VCS_EXCLUSIONS) --chmod=u=rwX,go=rX \\
          --exclude .empty --exclude '*~' <overlay>/ <target>/

Files are always copied (a new inode, as rsync's temporary file and rename), links are
copied as links, mtimes are kept, and every permission is normalised: the owner gets rw,
group and others r, and x for all three when the entry is a directory or had any x bit.
The set-user-id, set-group-id and sticky bits pass through (rsync's --chmod keeps them), so
a 0600 file arrives as 0644 and a 0700 one as 0755. Only python3 is needed (no rsync).

Usage: python3 overlay-rsync.py <overlay dir> <target dir>
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import sys

EXCLUDED = (".svn", ".git", ".hg", ".bzr", "CVS", ".empty", "*~")


def normalised(mode: int) -> int:
    """``--chmod=u=rwX,go=rX`` applied to ``mode``."""
    execute = stat.S_ISDIR(mode) or mode & 0o111
    return (mode & 0o7000) | 0o644 | (0o111 if execute else 0)


def excluded(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in EXCLUDED)


def replace_with(dest: str, make) -> None:  # type: ignore[no-untyped-def]
    """Put what ``make(path)`` creates at ``dest``, replacing a file or link there."""
    tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.overlay-rsync")
    make(tmp)
    if os.path.isdir(dest) and not os.path.islink(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def sync(src: str, dest: str) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not excluded(d))
        rel = os.path.relpath(dirpath, src)
        here = dest if rel == "." else os.path.join(dest, rel)
        if os.path.islink(here) or (os.path.exists(here) and not os.path.isdir(here)):
            os.unlink(here)  # rsync without --keep-dirlinks replaces a link with the directory
        os.makedirs(here, exist_ok=True)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if excluded(name):
                continue
            source = os.path.join(dirpath, name)
            st = os.lstat(source)
            target = os.path.join(here, name)
            if stat.S_ISLNK(st.st_mode):
                replace_with(target, lambda tmp, s=source: os.symlink(os.readlink(s), tmp))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                replace_with(target, lambda tmp, s=source: shutil.copyfile(s, tmp))
                os.chmod(target, normalised(st.st_mode))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    for dirpath, _dirnames, _filenames in os.walk(src, topdown=False):
        rel = os.path.relpath(dirpath, src)
        if any(excluded(part) for part in rel.split(os.sep)):
            continue
        here = dest if rel == "." else os.path.join(dest, rel)
        st = os.lstat(dirpath)
        os.chmod(here, normalised(st.st_mode))
        os.utime(here, ns=(st.st_atime_ns, st.st_mtime_ns))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sync(sys.argv[1].rstrip("/") or "/", sys.argv[2])
