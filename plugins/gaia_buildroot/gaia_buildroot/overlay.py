"""Sync the stage root into a target root filesystem, and undo that sync exactly.

The sync record lists the files the stage put into the target and the directories it
created; what a stage file replaced waits in a backup directory beside the record.
Undoing the sync puts the target back as Buildroot built it: ``buildroot.build`` does
that before it builds, so that the checkpoint captured right after holds nothing of any
build file's stage, and ``buildroot.collect`` does it before it syncs, so that a file
dropped from the config disappears from the image, also in a restored tree.

The out dir may come from a checkpoint, so the record and the backup directory are data:
the record is read without following a link or waiting on a FIFO, the backup directory
must be a real directory in the out dir (a link in its place is removed, never followed,
so no host file is moved into the target and nothing is written outside the out dir), and
the target tree is never synced through a link.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from gaia_buildroot.fsutil import resolve_in_root
from gaia_core.atomic import write_json
from gaia_core.safefs import Root, read_regular

#: a record lists the stage's files; anything larger is not one
MAX_RECORD_BYTES = 64 << 20


@dataclasses.dataclass
class SyncRecord:
    """What one sync did: stage paths copied, target directories it had to create."""

    files: list[str] = dataclasses.field(default_factory=list)
    dirs: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def read(cls, path: Path | None) -> SyncRecord:
        if path is None:
            return cls()
        try:
            data = json.loads(read_regular(path, MAX_RECORD_BYTES))
        except (OSError, ValueError):
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
    if target.is_symlink():
        return []  # not a tree the stage was ever synced into
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


def _backups(backup_dir: Path, *, create: bool) -> Root | None:
    """The backup directory, reached without a link; whatever else has its name (a link to
    a host directory) is removed first. None when there is none and ``create`` is False."""
    try:
        mode: int | None = os.lstat(backup_dir).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        backup_dir.unlink()
        mode = None
    if mode is None and not create:
        return None
    with Root(backup_dir.parent) as beside:
        return beside.subdir(backup_dir.name, create=True)


def _restore_backups(target: Path, backup_dir: Path) -> None:
    backups = _backups(backup_dir, create=False)
    if backups is None:
        return
    with backups:
        for rel in _kept(backups, ""):
            dest = _in_target(target, rel)
            if dest.is_dir() and not dest.is_symlink():
                continue  # a directory took its place since: leave both alone
            if dest.is_symlink() or dest.exists():
                dest.unlink()
            dest.parent.mkdir(parents=True, exist_ok=True)
            backups.move_out(rel, dest)
    with Root(backup_dir.parent) as beside:
        beside.rmtree(backup_dir.name)


def _kept(backups: Root, rel: str) -> Iterator[str]:
    """Every entry below ``rel`` that is not a directory (files, links), real directories
    entered, links never followed."""
    for item in backups.entries(rel):
        path = f"{rel}/{item.name}" if rel else item.name
        if item.kind == "directory":
            yield from _kept(backups, path)
        else:
            yield path


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
        keep = dest.relative_to(self.target).as_posix()
        backups = _backups(self.backup_dir, create=True)
        assert backups is not None
        with backups:
            folder = keep.rpartition("/")[0]
            if folder:
                backups.makedirs(folder)
            backups.rmtree(keep)
            backups.move_in(dest, keep)

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
    if target.is_symlink():
        raise OSError(errno.ELOOP, "is a symbolic link; the stage is never synced through one", str(target))
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
