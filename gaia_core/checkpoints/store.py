"""The local store: manifests under ``points/<id>/<fingerprint>/``, packs, index and queue.

An object is its manifest (``points/<id>/<fp>/manifest.json``) and the chunks it lists,
which live in the store's packs (:mod:`.packstore`), shared by every object. Publishing
moves an object's new packs in first and writes the manifest last, under the store lock,
so a reader sees no object or a complete one: the manifest is the commit marker. Packs
are built in ``tmp/`` inside the store; each temporary directory records its owner
(host, pid, start time), so the next run reclaims what a killed one left at once. Queries
(``status``, ``list``) read only: a corrupt queue is reported and left for ``run`` or
``retry`` to repair.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gaia_core import atomic
from gaia_core.checkpoints.lock import StoreLock
from gaia_core.checkpoints.manifest import OldFormat, now, read_manifest
from gaia_core.checkpoints.packs import FinishedPack
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.errors import CheckpointError
from gaia_core.owner import is_gone, read_owner, write_owner
from gaia_core.safefs import Root, kind_of

MANIFEST = "manifest.json"
INDEX = "index.json"
#: where a store keeps the objects of whole trees, and those of units (:mod:`.unitstore`)
POINTS = "points"
UNITS = "units"
QUEUE = "upload-queue.json"
#: a temporary without an owner record (killed before it was written) is litter after this
UNOWNED_GRACE = 3600.0


def warn(message: str) -> None:
    print(f"WARN: {message}", file=sys.stderr)


@contextlib.contextmanager
def store_faults(what: str) -> Iterator[None]:
    """Turn an OSError of the store's own files into a CheckpointError that names the file."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}:" if exc.filename else ""
        raise CheckpointError(f"{what} failed:{where} {exc.strerror or exc}") from None


@dataclasses.dataclass
class LocalObject:
    point_id: str
    fingerprint: str
    path: Path
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        """Compressed bytes of the chunks the object needs (what a full download moves)."""
        return int(self.manifest["tree"]["packed"])

    @property
    def unpacked_size(self) -> int:
        return int(self.manifest["tree"]["size"])

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))


class Store:
    def __init__(self, root: Path, queue_file: Path | None = None):
        self.root = root
        self.queue_path = queue_file or root / QUEUE
        self.lock = StoreLock(root)
        self.packs = PackStore(root)

    # -- objects ----------------------------------------------------------------------

    def object_dir(self, point_id: str, fingerprint: str, area: str = POINTS) -> Path:
        return self.root / area / point_id / fingerprint

    def get(self, point_id: str, fingerprint: str, *, quiet: bool = False, area: str = POINTS) -> LocalObject | None:
        """The complete local object, or None. A broken one is reported (unless quiet) and ignored."""
        path = self.object_dir(point_id, fingerprint, area)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = read_manifest(manifest_path)
        except OldFormat:
            return None
        except CheckpointError as exc:
            if not quiet:
                warn(f"{exc}; ignoring that local checkpoint")
            return None
        obj = LocalObject(point_id, fingerprint, path, manifest)
        if manifest["fingerprint"] != fingerprint or manifest["id"] != point_id:
            if not quiet:
                warn(f"checkpoint manifest {manifest_path} names another object; ignoring it")
            return None
        parts = [bytes.fromhex(p["id"]) for p in manifest["tree"]["parts"]]
        if len(self.packs.locate(parts)) != len(set(parts)):
            if not quiet:
                warn(f"the entry list of checkpoint {point_id}/{fingerprint[:12]} is missing from the local "
                     "packs; ignoring that local checkpoint")
            return None
        return obj

    def objects(self, point_id: str, area: str = POINTS) -> list[LocalObject]:
        """Objects of a point with a readable manifest (any format), newest first."""
        base = self.root / area / point_id
        found = []
        if base.is_dir():
            for child in sorted(base.iterdir()):
                if child.is_dir() and (child / MANIFEST).is_file():
                    try:
                        manifest = json.loads((child / MANIFEST).read_bytes())
                    except (OSError, ValueError):
                        continue
                    if isinstance(manifest, dict):
                        found.append(LocalObject(point_id, child.name, child, manifest))
        found.sort(key=lambda o: o.created_at, reverse=True)
        return found

    def tmp_dir(self) -> Path:
        """``tmp/`` as a real directory of the store. Whatever else has its name (a link to
        a directory elsewhere) is not gaia's: it is removed, never followed or written."""
        tmp = self.root / "tmp"
        try:
            found = os.lstat(tmp).st_mode
        except FileNotFoundError:
            found = None
        if found is not None and not stat.S_ISDIR(found):
            warn(f"checkpoint store {tmp} is a {kind_of(found)}, not a directory; replacing it with one "
                 "(what it points to is left alone)")
            tmp.unlink()
        tmp.mkdir(parents=True, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(tmp).st_mode):
            raise CheckpointError(f"checkpoint store {tmp} is not a directory")
        return tmp

    def new_staging(self, point_id: str, fingerprint: str) -> Path:
        with store_faults("creating a staging directory in the checkpoint store"):
            tmp = self.tmp_dir()
            staging = Path(tempfile.mkdtemp(prefix=f"{point_id}-{fingerprint[:12]}-", dir=tmp))
            write_owner(staging, f"staging {point_id}/{fingerprint[:12]}")
        return staging

    def publish(self, point_id: str, fingerprint: str, manifest: dict[str, Any],
                packs: list[FinishedPack], area: str = POINTS) -> LocalObject:
        """Move the object's new packs in, then write its manifest (the commit point); an
        object already there stays as it is."""
        final = self.object_dir(point_id, fingerprint, area)
        with store_faults(f"publishing checkpoint {point_id}/{fingerprint[:12]}"):
            with self.lock.held(f"publish {point_id}/{fingerprint[:12]}"):
                for pack in packs:
                    self.packs.add(pack)
                if not (final / MANIFEST).is_file():
                    final.mkdir(parents=True, exist_ok=True)
                    atomic.write_json(final / MANIFEST, manifest)
                if area == POINTS:
                    try:
                        self._index_add(point_id, fingerprint, manifest)
                    except OSError as exc:  # the object is in place: only the index is stale
                        self._index_dropped(exc)
        obj = self.get(point_id, fingerprint, area=area)
        if obj is None:
            raise CheckpointError(f"checkpoint {point_id}/{fingerprint} vanished right after publishing")
        return obj

    def discard(self, point_id: str, fingerprint: str, why: str, area: str = POINTS) -> None:
        """Move a bad object out of the way so the next run can fetch or build it again."""
        path = self.object_dir(point_id, fingerprint, area)
        if not path.exists():
            return
        with store_faults(f"discarding checkpoint {point_id}/{fingerprint[:12]}"):
            with self.lock.held(f"discard {point_id}/{fingerprint[:12]}"):
                trash = self.tmp_dir() / f"discarded-{point_id}-{fingerprint[:12]}-{time.time_ns()}"
                os.rename(path, trash)
                if area == POINTS:
                    self._index_remove(point_id, fingerprint)
        shutil.rmtree(trash, ignore_errors=True)
        warn(f"discarded local checkpoint {point_id}/{fingerprint[:12]}: {why}")

    @contextlib.contextmanager
    def hold(self, obj: LocalObject) -> Iterator[None]:
        """Keep gc away from ``obj`` while a run reads it (a shared lock on its manifest)."""
        try:
            fd = os.open(obj.path / MANIFEST, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def remove(self, obj: LocalObject) -> bool:
        """Delete an object (gc) unless a run holds it; the manifest goes first, so no reader
        sees half an object. False when it is in use."""
        with store_faults(f"removing checkpoint {obj.point_id}/{obj.fingerprint[:12]}"), \
                self.lock.held(f"gc {obj.point_id}/{obj.fingerprint[:12]}"):
            try:
                fd = os.open(obj.path / MANIFEST, os.O_RDONLY)
            except FileNotFoundError:
                return True
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                (obj.path / MANIFEST).unlink(missing_ok=True)
                if obj.path.parent.parent.name == POINTS:
                    self._index_remove(obj.point_id, obj.fingerprint)
            finally:
                os.close(fd)
        shutil.rmtree(obj.path, ignore_errors=True)
        return True

    def litter(self) -> list[Path]:
        """Temporary directories whose owner is gone (or that never recorded one, after an hour).

        Only what ``tmp/`` itself holds: a ``tmp`` that is a link is never listed through."""
        tmp = self.root / "tmp"
        try:
            if not stat.S_ISDIR(os.lstat(tmp).st_mode):
                return []
            children = sorted(tmp.iterdir())
        except OSError:
            return []
        found = []
        for child in children:
            try:
                info = child.lstat()
            except OSError:
                continue
            owner = read_owner(child) if stat.S_ISDIR(info.st_mode) else None
            age = time.time() - info.st_mtime
            if owner is not None and is_gone(owner) or owner is None and age > UNOWNED_GRACE or child.name.startswith("discarded-"):
                found.append(child)
        return found

    def reclaim_tmp(self) -> list[Path]:
        """Remove litter; returns what it removed. Nothing is followed: a link in ``tmp/``
        goes, what it points to stays."""
        removed: list[Path] = []
        litter = self.litter()
        if not litter:
            return removed
        with Root(self.root) as root:
            for child in litter:
                with contextlib.suppress(OSError):
                    root.rmtree(f"tmp/{child.name}")
                    removed.append(child)
        return removed

    # -- index ------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def read_index(self) -> dict[str, Any]:
        """The index; a corrupt one is rebuilt from the objects (in memory; writers replace it)."""
        path = self.index_path
        if not path.exists():
            return self._rebuild_index() if (self.root / "points").is_dir() else {"version": 1, "points": {}}
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict) or not isinstance(data.get("points"), dict):
                raise ValueError("unexpected shape")
            return data
        except (OSError, ValueError) as exc:
            warn(f"checkpoint index {path} is corrupt ({exc}); rebuilding it from the store")
            return self._rebuild_index()

    def _rebuild_index(self) -> dict[str, Any]:
        index: dict[str, Any] = {"version": 1, "points": {}}
        points = self.root / "points"
        if points.is_dir():
            for point_dir in sorted(points.iterdir()):
                for obj in reversed(self.objects(point_dir.name)):
                    _index_entry(index, point_dir.name, obj.fingerprint, obj.manifest)
        return index

    def _index_dropped(self, exc: OSError) -> None:
        """The index could not be written (a full disk): remove the stale one, which readers
        then rebuild from the objects, and say so; the object itself is stored."""
        with contextlib.suppress(OSError):
            self.index_path.unlink()
        warn(f"the checkpoint is stored, but the index {exc.filename or self.index_path} could not be updated "
             f"({exc.strerror or exc}); it is rebuilt from the objects when next read")

    def _index_add(self, point_id: str, fingerprint: str, manifest: dict[str, Any]) -> None:
        index = self.read_index()
        _index_entry(index, point_id, fingerprint, manifest)
        atomic.write_json(self.index_path, index)

    def _index_remove(self, point_id: str, fingerprint: str) -> None:
        index = self.read_index()
        entry = index["points"].get(point_id)
        if not entry:
            return
        entry.get("fingerprints", {}).pop(fingerprint, None)
        if entry.get("latest_fingerprint") == fingerprint:
            remaining = sorted(entry["fingerprints"].items(), key=lambda kv: str(kv[1].get("created_at")))
            entry["latest_fingerprint"] = remaining[-1][0] if remaining else None
            entry["latest_manifest_rel"] = (f"points/{point_id}/{remaining[-1][0]}/{MANIFEST}"
                                            if remaining else None)
        atomic.write_json(self.index_path, index)

    # -- queue ------------------------------------------------------------------------

    def read_queue(self, *, repair: bool = False) -> list[dict[str, Any]]:
        """The queue's entries. A corrupt queue reads as empty with a warning; only with
        ``repair`` (run, retry) is it moved aside so that a new one can be written."""
        path = self.queue_path
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_bytes())
            entries = data.get("entries") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise ValueError("unexpected shape")
            return [e for e in entries if isinstance(e, dict)]
        except (OSError, ValueError) as exc:
            if not repair:
                warn(f"checkpoint upload queue {path} is corrupt ({exc}); `gaia run` or "
                     "`gaia checkpoints retry` will set it aside")
                return []
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            try:
                os.replace(path, aside)
                kept = f"; kept it as {aside}"
            except OSError:
                kept = ""
            warn(f"checkpoint upload queue {path} is corrupt ({exc}); starting an empty queue{kept}")
            return []

    def update_queue(self, point_id: str, fingerprint: str, backend_ref: str, anchor_task: str,
                     **changes: Any) -> dict[str, Any]:
        """Create or update the entry for (id, fingerprint, backend) under the lock."""
        with store_faults(f"updating the upload queue {self.queue_path}"):
            with self.lock.held(f"queue {point_id}/{fingerprint[:12]}"):
                entries = self.read_queue(repair=True)
                for entry in entries:
                    if (entry.get("id"), entry.get("fingerprint"), entry.get("backend_ref")) == (
                            point_id, fingerprint, backend_ref):
                        break
                else:
                    entry = {
                        "id": point_id, "anchor_task": anchor_task, "fingerprint": fingerprint,
                        "backend_ref": backend_ref,
                        "object_rel_dir": f"points/{point_id}/{fingerprint}",
                        "state": "pending", "attempts": 0, "last_error": None, "created_at": now(),
                    }
                    entries.append(entry)
                if changes.pop("attempted", False):
                    entry["attempts"] = int(entry.get("attempts", 0)) + 1
                entry.update(changes)
                entry["updated_at"] = now()
                atomic.write_json(self.queue_path, {"version": 1, "entries": entries})
                return dict(entry)

    def pending_uploads(self, point_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.read_queue(repair=True)
                if e.get("state") in ("pending", "failed") and (point_id is None or e.get("id") == point_id)]

    def iter_point_ids(self, area: str = POINTS) -> Iterator[str]:
        points = self.root / area
        if points.is_dir():
            yield from sorted(p.name for p in points.iterdir() if p.is_dir())


def _index_entry(index: dict[str, Any], point_id: str, fingerprint: str, manifest: dict[str, Any]) -> None:
    entry = index["points"].setdefault(point_id, {"id": point_id, "fingerprints": {}})
    entry["anchor_task"] = manifest.get("anchor_task")
    entry["latest_fingerprint"] = fingerprint
    entry["latest_manifest_rel"] = f"points/{point_id}/{fingerprint}/{MANIFEST}"
    entry["updated_at"] = now()
    entry.setdefault("fingerprints", {})[fingerprint] = {
        "created_at": manifest.get("created_at"),
        "size": (manifest.get("tree") or {}).get("packed"),
    }


__all__ = ["MANIFEST", "POINTS", "UNITS", "LocalObject", "Store", "store_faults", "warn"]
