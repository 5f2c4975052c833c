"""What collect's ``make target-post-image`` added to ``<out>/images``, so build can take it out.

Root filesystem images and what post-image scripts make of them (``sdcard.img``) hold
the stage of the build file that collected them. They stay in the out dir after the run,
and ``buildroot.build`` removes them before it builds, so the checkpoint it captures does
not carry one build file's image. Only files that ``target-post-image`` created are
recorded: what packages installed there (a kernel, firmware) is Buildroot's, even when a
post-image script edits it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gaia_core.atomic import write_json

#: in the out dir, beside images/
RECORD_FILE = ".gaia-post-image-outputs.json"


def image_files(images: Path) -> set[str]:
    """Relative paths of the files and links under ``images`` (empty when missing)."""
    if not images.is_dir():
        return set()
    found = set()
    for dirpath, dirnames, filenames in os.walk(images):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            found.add((here / name).relative_to(images).as_posix())
    return found


def _recorded(out_dir: Path) -> set[str]:
    try:
        entries = json.loads((out_dir / RECORD_FILE).read_text()).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {e for e in entries if isinstance(e, str) and _safe(e)}


def _safe(rel: str) -> bool:
    return bool(rel) and not rel.startswith("/") and ".." not in rel.split("/")


def record_outputs(out_dir: Path, before: set[str]) -> None:
    """After ``target-post-image``: what it created, plus what it made on earlier runs."""
    now = image_files(out_dir / "images")
    entries = (now - before) | (_recorded(out_dir) & now)
    write_json(out_dir / RECORD_FILE, {"entries": sorted(entries)}, sort_keys=True)


def remove_outputs(out_dir: Path) -> list[str]:
    """Remove what earlier collects' ``target-post-image`` made; returns those paths."""
    images = out_dir / "images"
    removed = []
    for rel in sorted(_recorded(out_dir)):
        path = images / rel
        if _through_a_link(images, rel) or not (path.is_symlink() or path.is_file()):
            continue
        path.unlink()
        removed.append(rel)
    (out_dir / RECORD_FILE).unlink(missing_ok=True)
    return removed


def _through_a_link(root: Path, rel: str) -> bool:
    """Whether a directory on the way from ``root`` to ``rel`` is a symlink (never followed)."""
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        if here.is_symlink():
            return True
    return False
