"""Sync the stage root into a target root filesystem, and undo that sync exactly.

The sync record lists the files the stage put into the target and the directories it
created; what a stage file replaced waits in a backup directory beside the record.
Undoing the sync puts the target back as Buildroot built it: ``buildroot.build`` does
that before it builds, so that the checkpoint captured right after holds nothing of any
build file's stage, and ``buildroot.collect`` does it before it syncs, so that a file
dropped from the config disappears from the image, also in a restored tree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from gaia_buildroot.fsutil import resolve_in_root
from gaia_core.atomic import write_json


@dataclasses.dataclass
class SyncRecord:
    """What one sync did: stage paths copied, target directories it had to create."""

    files: list[str] = dataclasses.field(default_factory=list)
    dirs: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def read(cls, path: Path | None) -> SyncRecord:
        if path is None or not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def strings(key: str) -> list[str]:
            found = data.get(key, [])
            return (
                [e for e in found if isinstance(e, str)]
                if isinstance(found, list)
                else []
            )

        return cls(strings("entries"), strings("dirs"))

    def write(self, path: Path) -> None:
        write_json(
            path,
            {"entries": sorted(set(self.files)), "dirs": sorted(set(self.dirs))},
            sort_keys=True,
        )


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts


def _in_target(target: Path, rel: str) -> Path:
    """Where ``rel`` lives in the target: parent dirs resolved inside it, last part not followed."""
    parent, _, name = rel.rpartition("/")
    return resolve_in_root(target, parent, follow_last=True) / name


def _depth(rel: str) -> int:
    return rel.count("/")


def undo_sync(
    target: Path, record_file: Path, backup_dir: Path | None = None
) -> list[str]:
    """Take out what the last sync put into ``target``, put back what it replaced.

    Returns the stage paths removed. The record and the backups are gone afterwards.
    """
    record = SyncRecord.read(record_file)
    removed = []
    for rel in record.files:
        if not _safe_rel(rel):
            continue
        path = _in_target(target, rel)
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed.append(rel)
    for rel in sorted(record.dirs, key=_depth, reverse=True):
        path = _in_target(target, rel) if _safe_rel(rel) else None
        if path is not None and path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:
                pass  # something else was put there since: not ours to remove
    if backup_dir is not None:
        _restore_backups(target, backup_dir)
    record_file.unlink(missing_ok=True)
    return sorted(removed)


def _restore_backups(target: Path, backup_dir: Path) -> None:
    if not backup_dir.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(backup_dir):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            rel = (here / name).relative_to(backup_dir).as_posix()
            dest = _in_target(target, rel)
            if dest.is_dir() and not dest.is_symlink():
                continue  # a directory took its place since: leave both alone
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(here / name, dest)
    shutil.rmtree(backup_dir)


class _Copier:
    """Copies the stage into a target, keeping what it replaces in ``backup_dir``."""

    def __init__(self, target: Path, backup_dir: Path | None):
        self.target = target
        self.backup_dir = backup_dir
        self.record = SyncRecord()
        self.written: set[Path] = set()

    def make_dir(self, rel_dir: str, like: Path) -> Path:
        dest_dir = resolve_in_root(self.target, rel_dir, follow_last=True)
        if dest_dir.is_dir():
            return dest_dir
        if dest_dir.is_symlink() or dest_dir.exists():
            self.set_aside(dest_dir)
        missing = [dest_dir, *[p for p in dest_dir.parents if not p.exists()]]
        dest_dir.mkdir(parents=True)
        shutil.copystat(like, dest_dir)
        for created in missing:
            if created != self.target and self.target in created.parents:
                self.record.dirs.append(created.relative_to(self.target).as_posix())
        return dest_dir

    def set_aside(self, dest: Path) -> None:
        """Move what ``dest`` holds out of the way: into the backups, unless the stage wrote it."""
        if self.backup_dir is None or dest in self.written:
            dest.unlink()
            return
        keep = self.backup_dir / dest.relative_to(self.target)
        keep.parent.mkdir(parents=True, exist_ok=True)
        if keep.is_symlink() or keep.exists():
            keep.unlink()
        shutil.move(dest, keep)

    def copy_file(self, src: Path, dest_dir: Path, rel: str) -> None:
        dest = dest_dir / src.name
        if dest.is_dir() and not dest.is_symlink():
            raise IsADirectoryError(
                f"stage file /{rel} would replace a directory in the target"
            )
        if dest.is_symlink() or dest.exists():
            self.set_aside(dest)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest)
        else:
            shutil.copy2(src, dest)
        self.written.add(dest)
        self.record.files.append(rel)


def copy_stage(
    stage_root: Path, target: Path, backup_dir: Path | None = None
) -> SyncRecord:
    """Copy the stage into the target like ``rsync -a --keep-dirlinks`` (links kept as links)."""
    copier = _Copier(target, backup_dir)
    for dirpath, dirnames, filenames in os.walk(stage_root):
        here = Path(dirpath)
        rel_dir = here.relative_to(stage_root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        dest_dir = copier.make_dir(rel_dir, here)
        links = sorted(d for d in dirnames if (here / d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        for name in sorted(filenames) + links:
            copier.copy_file(
                here / name, dest_dir, f"{rel_dir}/{name}" if rel_dir else name
            )
    copier.record.files.sort()
    return copier.record


def sync_overlay(
    stage_root: Path,
    target: Path,
    record_file: Path | None,
    backup_dir: Path | None = None,
) -> tuple[list[str], list[str]]:
    """Undo the last sync recorded in ``record_file``, copy the stage in, record it.

    Returns (removed, copied) stage paths: removed are those of the last sync that this one
    did not put back (a file synced again is only copied).
    """
    undone = undo_sync(target, record_file, backup_dir) if record_file else []
    record = (
        copy_stage(stage_root, target, backup_dir)
        if stage_root.is_dir()
        else SyncRecord()
    )
    if record_file:
        record.write(record_file)
    return sorted(set(undone) - set(record.files)), record.files
