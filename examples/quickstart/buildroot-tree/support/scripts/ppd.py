"""Per-package directories as Buildroot makes them (package/pkg-utils.mk), with python3 only.

    ppd.py prepare <per-package dir> <package> <dependency>...
        per-package/<package>/{host,target} from its dependencies' own, file by file as
        ``rsync -a --hard-links --link-dest=<dep>/`` does: directories made, files hard-linked
        (never copied), links copied; a later dependency's file replaces an earlier one's.
    ppd.py merge <per-package dir> <host|target> <dest dir> <package>...
        the final host/ or target/: every package's dir copied (new inodes, modes and mtimes
        kept, links as links) into <dest dir>, in the order given.
"""

from __future__ import annotations

import os
import shutil
import sys


def walk(src: str):  # type: ignore[no-untyped-def]
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links]
        yield rel, dirnames, sorted(filenames + links)


def put(src: str, dst: str, *, link: bool) -> None:
    for rel, dirnames, names in walk(src):
        here = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(here, exist_ok=True)
        shutil.copystat(os.path.join(src, rel), here)
        for name in names:
            source, target = os.path.join(src, rel, name), os.path.join(here, name)
            if os.path.lexists(target):
                os.unlink(target)
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
                os.utime(target, ns=(os.lstat(source).st_mtime_ns,) * 2, follow_symlinks=False)
            elif link:
                os.link(source, target)
            else:
                shutil.copy2(source, target)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "prepare":
        ppd, package, deps = argv[1], argv[2], argv[3:]
        for kind in ("host", "target"):
            os.makedirs(os.path.join(ppd, package, kind), exist_ok=True)
            for dep in deps:
                source = os.path.join(ppd, dep, kind)
                if os.path.isdir(source):
                    put(source, os.path.join(ppd, package, kind), link=True)
        return 0
    if len(argv) >= 4 and argv[0] == "merge":
        ppd, kind, dest, packages = argv[1], argv[2], argv[3], argv[4:]
        os.makedirs(dest, exist_ok=True)
        for package in packages:
            source = os.path.join(ppd, package, kind)
            if os.path.isdir(source):
                put(source, dest, link=False)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
