"""Sync the stage root into a target root filesystem, undoing the previous sync first.

The sync manifest lists what the stage put into the target last time, so a file dropped
from the config disappears from the image even when the target tree comes from a
checkpoint made by another run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from gaia_buildroot.fsutil import resolve_in_root
from gaia_core.atomic import write_json


def stage_files(stage_root: Path) -> list[str]:
    """Relative paths of every file and symlink under the stage root (empty when missing)."""
    if not stage_root.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stage_root):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            found.append((here / name).relative_to(stage_root).as_posix())
    return sorted(found)


def read_manifest(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text()).get("entries", [])
    except (ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, str)]


def write_manifest(path: Path, entries: Iterable[str]) -> None:
    write_json(path, {"entries": sorted(set(entries))}, sort_keys=True)


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts


def _in_target(target: Path, rel: str) -> Path:
    """Where ``rel`` lives in the target: parent dirs resolved inside it, last part not followed."""
    parent, _, name = rel.rpartition("/")
    return resolve_in_root(target, parent, follow_last=True) / name


def remove_previous(target: Path, entries: Iterable[str]) -> list[str]:
    removed = []
    for rel in entries:
        if not _safe_rel(rel):
            continue
        path = _in_target(target, rel)
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed.append(rel)
    return removed


def copy_stage(stage_root: Path, target: Path) -> list[str]:
    """Copy the stage into the target like ``rsync -a --keep-dirlinks`` (links kept as links)."""
    copied: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stage_root):
        here = Path(dirpath)
        rel_dir = here.relative_to(stage_root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        dest_dir = resolve_in_root(target, rel_dir, follow_last=True)
        if not dest_dir.is_dir():
            if dest_dir.is_symlink() or dest_dir.exists():
                dest_dir.unlink()
            dest_dir.mkdir(parents=True)
            shutil.copystat(here, dest_dir)
        links = sorted(d for d in dirnames if (here / d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for name in sorted(filenames) + links:
            src = here / name
            dest = dest_dir / name
            if dest.is_dir() and not dest.is_symlink():
                raise IsADirectoryError(
                    f"stage file /{rel_dir}/{name} would replace a directory in the target"
                )
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            if src.is_symlink():
                os.symlink(os.readlink(src), dest)
            else:
                shutil.copy2(src, dest)
            copied.append(f"{rel_dir}/{name}" if rel_dir else name)
    return sorted(copied)


def sync_overlay(
    stage_root: Path, target: Path, manifest: Path | None
) -> tuple[list[str], list[str]]:
    """Remove what the last sync put into ``target``, copy the stage in, record it.

    Returns (removed, copied) relative paths.
    """
    removed = remove_previous(target, read_manifest(manifest)) if manifest else []
    copied = copy_stage(stage_root, target) if stage_root.is_dir() else []
    if manifest:
        write_manifest(manifest, copied)
    return removed, copied
