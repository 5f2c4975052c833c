"""The stage's modes in the image, exactly: a post-build script that gaia appends last.

Buildroot copies every overlay with ``rsync -a --chmod=u=rwX,go=rX`` (system/system.mk), so
the stage, which collect hands to ``make target-post-image`` as the last overlay, arrives
with a 0600 file at 0644 and a 0700 one at 0755 (set-id bits pass). After the overlays,
Buildroot runs the post-build scripts and then builds the images from ``target/``; collect
appends this module's script to ``BR2_ROOTFS_POST_BUILD_SCRIPT`` (on the command line, like
the stage overlay), so that it runs last and puts back:

- every regular file of the stage: its mode in the stage (what the build file gave, or its
  source file's);
- every directory of the stage whose mode is not 0755 (a ``mode`` on a directory entry, or
  a directory of a ``src`` tree): that mode;
- every directory the stage merely passes through (0755, e.g. ``/root`` for
  ``/root/.ssh/authorized_keys``) that the target already had: the mode the target had
  before the overlay copy (Buildroot's 0700 ``/root``, its 1777 ``/tmp``).

The script runs gaia's Python on a JSON list of ``[path, mode]``: paths are resolved inside
the target as if it were ``/`` (an absolute link in the target never leads out of it), a
link is never chmod-ed, and a mode the filesystem did not keep (a set-group-id bit for a
group the builder is not in) fails the build with the path.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path

from gaia_buildroot.fsutil import resolve_in_root

#: what an overlay copy leaves a directory at, and what the stage's own parents are made with
PASS_THROUGH_DIR_MODE = 0o755
MODES_FILE = "stage-modes.json"
SCRIPT_FILE = "stage-modes-post-build.sh"


def modes_to_apply(stage_root: Path, target: Path) -> list[tuple[str, int]]:
    """``(path in the image, mode)`` for what the overlay copy changes and the stage decides."""
    found: list[tuple[str, int]] = []
    for dirpath, dirnames, filenames in os.walk(stage_root):
        here = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            path = here / name
            st = path.lstat()
            rel = path.relative_to(stage_root).as_posix()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                found.append((rel, mode))
            elif stat.S_ISDIR(st.st_mode):
                if mode != PASS_THROUGH_DIR_MODE:
                    found.append((rel, mode))
                else:
                    existing = _lstat_in(target, rel)
                    if existing is not None and stat.S_ISDIR(existing.st_mode):
                        found.append((rel, stat.S_IMODE(existing.st_mode)))
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    return found


def write_post_build_script(directory: Path, modes: list[tuple[str, int]]) -> Path:
    """The modes file and the script that applies them (``$1`` is the target dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    modes_file = directory / MODES_FILE
    modes_file.write_text(json.dumps([[rel, mode] for rel, mode in modes]) + "\n")
    script = directory / SCRIPT_FILE
    command = [sys.executable, "-m", "gaia_buildroot.stage_modes", str(modes_file)]
    script.write_text(
        "#!/bin/sh\n"
        "# Written by gaia's buildroot.collect: the stage's modes back into the target dir,\n"
        "# after Buildroot's overlay copy normalised them (u=rwX,go=rX).\n"
        f'exec {" ".join(shlex.quote(part) for part in command)} "$1"\n'
    )
    script.chmod(0o755)
    return script


def apply_modes(target: Path, modes: list[tuple[str, int]]) -> list[str]:
    """Set each mode in ``target``; returns the problems (empty when every mode holds).

    Deepest first, so a directory made 0500 is not yet closed while its files are done."""
    problems = []
    for rel, mode in sorted(modes, key=lambda entry: entry[0].count("/"), reverse=True):
        parent, _, name = rel.rpartition("/")
        path = resolve_in_root(target, parent, follow_last=True) / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # a post-build script of the user's removed it: nothing to give a mode to
        if stat.S_ISLNK(st.st_mode):
            problems.append(f"/{rel}: a symlink in the target, the stage has a file there")
            continue
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
        kept = stat.S_IMODE(path.lstat().st_mode)
        if kept != mode:
            problems.append(f"/{rel}: mode {mode:04o} was set but the filesystem keeps {kept:04o}")
    return problems


def _lstat_in(target: Path, rel: str) -> os.stat_result | None:
    parent, _, name = rel.rpartition("/")
    try:
        return (resolve_in_root(target, parent, follow_last=True) / name).lstat()
    except OSError:
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m gaia_buildroot.stage_modes <modes.json> <target dir>", file=sys.stderr)
        return 2
    modes = [(str(rel), int(mode)) for rel, mode in json.loads(Path(argv[0]).read_text())]
    problems = apply_modes(Path(argv[1]), modes)
    for problem in problems:
        print(f"gaia: stage mode not honoured: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
