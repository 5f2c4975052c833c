"""Capture, restore, download and upload of checkpoint objects for one build."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.backends import MANIFEST, Backend, object_key
from gaia_core import atomic
from gaia_core.checkpoints import archive
from gaia_core.checkpoints.config import CheckpointSettings, Point, checkpoint_settings
from gaia_core.checkpoints.fingerprint import (
    Fingerprint,
    changed_inputs,
    compute,
    lineage,
    miss_reason,
)
from gaia_core.checkpoints.manifest import (
    PAYLOAD_NAMES,
    build_manifest,
    check_shape,
    now,
)
from gaia_core.checkpoints.store import LocalObject, Store
from gaia_core.errors import BackendError, CheckpointError, ObjectNotFound
from gaia_core.fingerprints import sha256_file

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.build import Build

#: written into each target after a capture or restore; left out of payloads
MARKER = ".gaia-checkpoint.json"
COMPRESSION = "zstd"

Log = Callable[[str], None]


class Checkpoints:
    """The checkpoint machinery of one build: settings, store, anchors and backends."""

    def __init__(self, build: Build):
        self.build = build
        self.settings: CheckpointSettings = checkpoint_settings(build)
        queue = build.workspace.resolve(self.settings.queue_file) if self.settings.queue_file else None
        self.store = Store(build.workspace.checkpoints_dir, queue)
        self._fingerprints: dict[str, Fingerprint] = {}

    @property
    def points(self) -> list[Point]:
        return self.settings.points

    def point(self, point_id: str) -> Point:
        for p in self.points:
            if p.id == point_id:
                return p
        raise CheckpointError(f"no checkpoint point '{point_id}'")

    def anchor(self, point: Point) -> Anchor:
        return self.build.registry.anchors[point.anchor_task].cls(self.build)

    def fingerprint(self, point: Point) -> Fingerprint:
        if point.id not in self._fingerprints:
            self._fingerprints[point.id] = compute(self.build, point, self.anchor(point))
        return self._fingerprints[point.id]

    def backend(self, ref: str) -> Backend:
        if ref not in self.settings.backend_configs:
            raise BackendError(f"backend '{ref}' is not configured any more")
        return self.settings.backend(ref)

    # -- local state ----------------------------------------------------------------------

    def local_object(self, point: Point, fp: str) -> LocalObject | None:
        obj = self.store.get(point.id, fp)
        if obj is None:
            return None
        problem = self.manifest_problem(obj.manifest, point, fp)
        if problem:
            self.store.discard(point.id, fp, problem)
            return None
        return obj

    def manifest_problem(self, manifest: dict[str, Any], point: Point, fp: str) -> str | None:
        """Why a manifest does not belong to this point and fingerprint (None when it does)."""
        if manifest.get("id") != point.id or manifest.get("anchor_task") != point.anchor_task:
            return "manifest names another point or anchor"
        if manifest.get("fingerprint") != fp:
            return "manifest names another fingerprint"
        if manifest.get("lineage") != lineage(point.anchor_task, fp):
            return "lineage mismatch"
        anchor_targets = {t.name for t in self.anchor(point).targets()}
        names = {t["name"] for t in manifest.get("targets", [])}
        if names != anchor_targets:
            return f"targets {sorted(names)} differ from the anchor's {sorted(anchor_targets)}"
        return None

    def miss_reason(self, point: Point, fp: Fingerprint) -> str:
        """``missing``, ``fingerprint_changed`` or ``inputs_changed:<keys>`` against the newest object."""
        for obj in self.store.objects(point.id):
            if obj.fingerprint == fp.value:
                continue
            old_inputs = obj.manifest.get("fingerprint_inputs")
            if not isinstance(old_inputs, dict):
                return "fingerprint_changed"
            return miss_reason(changed_inputs(old_inputs, fp.inputs))
        return "missing"

    @staticmethod
    def materialized(targets: list[Target], fp: str) -> bool:
        """Whether every target already holds the output of this fingerprint."""
        for t in targets:
            try:
                marker = json.loads((t.path / MARKER).read_bytes())
            except (OSError, ValueError):
                return False
            if not isinstance(marker, dict) or marker.get("fingerprint") != fp:
                return False
        return bool(targets)

    @staticmethod
    def write_markers(targets: list[Target], point: Point, fp: str, how: str) -> None:
        for t in targets:
            atomic.write_json(t.path / MARKER, {
                "point": point.id, "anchor_task": point.anchor_task, "fingerprint": fp, "how": how, "at": now(),
            })

    @staticmethod
    def clear_markers(targets: list[Target]) -> None:
        for t in targets:
            (t.path / MARKER).unlink(missing_ok=True)

    # -- capture and restore --------------------------------------------------------------

    def capture(self, point: Point, fp: Fingerprint, targets: list[Target], log: Log) -> LocalObject:
        existing = self.local_object(point, fp.value)
        if existing is not None:
            log(f"checkpoint:{point.id} {fp.value[:12]} is already in the store")
            self.write_markers(targets, point, fp.value, "captured")
            return existing
        for t in targets:
            if not t.path.is_dir():
                raise CheckpointError(f"checkpoint target '{t.name}' is missing: {t.path}")
        staging = self.store.new_staging(point.id, fp.value)
        started = time.monotonic()
        try:
            with open(staging / PAYLOAD_NAMES[COMPRESSION], "wb") as f:
                info = archive.capture(targets, f, compression=COMPRESSION, exclude=(MARKER,))
            manifest = build_manifest(
                point_id=point.id, anchor_task=point.anchor_task, fingerprint=fp.value,
                lineage=lineage(point.anchor_task, fp.value), trust_mode=point.trust_mode, inputs=fp.inputs,
                targets=[t.name for t in targets], compression=COMPRESSION, size=info.size, sha256=info.sha256,
            )
            obj = self.store.publish(staging, point.id, fp.value, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.write_markers(targets, point, fp.value, "captured")
        log(f"checkpoint:{point.id} captured {fp.value[:12]} ({human_size(info.size)} in {time.monotonic() - started:.1f}s)")
        return obj

    def restore(self, obj: LocalObject, point: Point, targets: list[Target]) -> None:
        """Extract into a staging dir beside the first target, then swap every target in."""
        verify = point.trust_mode == "verify"
        parent = targets[0].path.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{targets[0].path.name}.gaia-restore-", dir=parent))
        try:
            payload = obj.manifest["payload"]
            with open(obj.payload_path, "rb") as f:
                archive.extract(
                    f, staging, targets, compression=payload["compression"],
                    expected_sha256=payload["sha256"] if verify else None,
                    expected_size=payload["size"],
                )
            for t in targets:
                if not (staging / t.name).is_dir():
                    raise CheckpointError(f"checkpoint payload has no target '{t.name}'")
            for t in targets:
                _swap_in(staging / t.name, t.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.write_markers(targets, point, obj.fingerprint, "restored")

    # -- remote ---------------------------------------------------------------------------

    def download(self, point: Point, fp: str, log: Log) -> LocalObject | None:
        """Fetch manifest then payload into a staging dir, verify, publish. None on a remote miss."""
        assert point.backend
        staging = self.store.new_staging(point.id, fp)
        try:
            with self.backend(point.backend) as backend:
                try:
                    with open(staging / MANIFEST, "wb") as f:
                        backend.download(object_key(point.id, fp, MANIFEST), f)
                except ObjectNotFound:
                    return None
                if (staging / MANIFEST).stat().st_size > 16 << 20:
                    raise CheckpointError("remote manifest is larger than 16 MiB; refusing it")
                try:
                    manifest = json.loads((staging / MANIFEST).read_bytes())
                except ValueError as exc:
                    raise CheckpointError(f"remote manifest is not JSON: {exc}") from None
                check_shape(manifest, f"{point.backend}:{point.id}/{fp[:12]}")
                problem = self.manifest_problem(manifest, point, fp)
                if problem:
                    raise CheckpointError(f"remote checkpoint {point.id}/{fp[:12]} refused: {problem}")
                payload = manifest["payload"]
                started = time.monotonic()
                try:
                    with open(staging / payload["file"], "wb") as f:
                        backend.download(object_key(point.id, fp, payload["file"]), f)
                except ObjectNotFound:
                    raise CheckpointError(
                        f"remote checkpoint {point.id}/{fp[:12]} has a manifest but no {payload['file']}"
                    ) from None
            size = (staging / payload["file"]).stat().st_size
            if size != payload["size"]:
                raise CheckpointError(f"downloaded payload has {size} bytes, the manifest says {payload['size']}")
            if point.trust_mode == "verify" and sha256_file(staging / payload["file"]) != payload["sha256"]:
                raise CheckpointError("downloaded payload does not match the manifest's sha256")
            os.unlink(staging / MANIFEST)  # publish() writes it again, last
            obj = self.store.publish(staging, point.id, fp, manifest)
            log(f"checkpoint:{point.id} downloaded {fp[:12]} via {point.backend} "
                f"({human_size(size)} in {time.monotonic() - started:.1f}s)")
            return obj
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def upload(self, point_id: str, fp: str, backend_ref: str, anchor_task: str, log: Log) -> bool:
        """Upload payload then manifest; record the outcome in the durable queue."""
        self.store.update_queue(point_id, fp, backend_ref, anchor_task, state="pending")
        obj = self.store.get(point_id, fp)
        backend: Backend | None = None
        try:
            if obj is None:
                raise CheckpointError(f"local checkpoint {point_id}/{fp[:12]} is missing; nothing to upload")
            backend = self.backend(backend_ref)
            with backend:
                if backend.exists(object_key(point_id, fp, MANIFEST)):
                    log(f"checkpoint:{point_id} {fp[:12]} is already in {backend_ref}")
                else:
                    started = time.monotonic()
                    backend.upload(object_key(point_id, fp, obj.payload_path.name), obj.payload_path)
                    backend.upload(object_key(point_id, fp, MANIFEST), obj.path / MANIFEST)
                    log(f"checkpoint:{point_id} uploaded {fp[:12]} via {backend_ref} "
                        f"({human_size(obj.size)} in {time.monotonic() - started:.1f}s)")
        except (BackendError, CheckpointError, OSError) as exc:
            message = backend.redact(str(exc)) if backend else str(exc)
            self.store.update_queue(point_id, fp, backend_ref, anchor_task, state="failed", attempted=True,
                                    last_error=message[:500])
            log(f"WARN: checkpoint:{point_id} upload via {backend_ref} failed: {message} (queued for retry)")
            return False
        self.store.update_queue(point_id, fp, backend_ref, anchor_task, state="uploaded", attempted=True,
                                last_error=None)
        return True


def _swap_in(staged: Path, final: Path) -> None:
    if final.is_symlink():
        final.unlink()
    if final.exists():
        old = final.with_name(f".{final.name}.gaia-old-{os.getpid()}-{int(time.time() * 1000)}")
        os.rename(final, old)
        try:
            os.rename(staged, final)
        except OSError:
            os.rename(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)


def human_size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
