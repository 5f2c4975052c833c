"""Objects between the local store and a backend: verified downloads, write-once uploads.

Download: the manifest first (at most 16 MiB), its signature judged before any payload
byte moves, prerequisites and relocation checked, then the payload streamed to disk and
stopped as soon as more bytes arrive than the manifest says, hashed on the way.

Upload: the payload under its sha-derived name, then the manifest, created only if
absent. A manifest already there stays, unless it is bad (its signature does not verify,
its payload is missing, or this run found the payload's hash wrong): then it is deleted
and this run's good one published, still create-only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from gaia_core.backends import MANIFEST, Backend, object_key
from gaia_core.checkpoints.engine import Checkpoints, Log, unavailable
from gaia_core.checkpoints.manifest import MAX_MANIFEST_BYTES, OldFormat, check_shape, payload_file_name
from gaia_core.checkpoints.portability import assess
from gaia_core.checkpoints.signing import Verdict, verify
from gaia_core.checkpoints.units import human_size
from gaia_core.errors import BackendError, CheckpointError, ObjectExists, ObjectNotFound

if TYPE_CHECKING:
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject


class Untrusted(CheckpointError):
    """The remote object is not signed by a trusted key (or its signature is invalid)."""

    def __init__(self, verdict: Verdict):
        self.verdict = verdict
        super().__init__(verdict.reason())


class Unusable(CheckpointError):
    """The object is fine but cannot be used here (a prerequisite is missing, a file can't move)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class TooLarge(CheckpointError):
    pass


class LimitedWriter:
    """Counts, hashes and writes; stops a download the moment it exceeds ``limit`` bytes."""

    def __init__(self, dest: BinaryIO, limit: int, what: str, progress: Progress | None = None):
        self.dest, self.limit, self.what, self.progress = dest, limit, what, progress
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: Any) -> int:
        n = len(data)
        if self.size + n > self.limit:
            raise TooLarge(f"{self.what} is larger than the {self.limit} bytes its manifest allows; "
                           "download stopped")
        self.sha.update(data)
        try:
            self.dest.write(data)
        except OSError as exc:  # a full disk: say which file, and that the download stopped
            name = getattr(self.dest, "name", None)
            where = f" into {name}" if isinstance(name, str) else ""
            raise CheckpointError(
                f"writing {self.what}{where} failed: {exc.strerror or exc}; download stopped") from None
        self.size += n
        if self.progress is not None:
            self.progress(n)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset != 0 or whence != 0:
            raise OSError("only a restart from the beginning is supported")
        self.size, self.sha = 0, hashlib.sha256()
        return self.dest.seek(0)

    def truncate(self, size: int | None = None) -> int:
        return self.dest.truncate(size)

    def flush(self) -> None:
        self.dest.flush()


def fetch_manifest(backend: Backend, point_id: str, fp: str, where: str) -> dict[str, Any] | None:
    """The remote manifest, shape-checked; None when the backend has none. A small read
    under the probe budget: a silent server costs ``probe_timeout``, not a transfer's."""
    try:
        data = backend.read_small(object_key(point_id, fp, MANIFEST), MAX_MANIFEST_BYTES)
    except ObjectNotFound:
        return None
    if len(data) > MAX_MANIFEST_BYTES:
        raise TooLarge(f"remote manifest {where} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise CheckpointError(f"remote manifest {where} is not JSON: {exc}") from None
    check_shape(manifest, where)
    return manifest


def judge(cp: Checkpoints, point: Point, manifest: dict[str, Any]) -> Verdict:
    if point.trust_mode == "permissive":
        return Verdict("unsigned", "not checked (trust_mode = permissive)")
    verdict = verify(manifest, cp.settings.trusted_keys)
    if verdict.state == "unsigned" and not cp.settings.trusted_keys:
        cp.warn_once("unsigned", "checkpoints from backends are accepted unsigned: no trusted_public_keys are "
                     "configured; sign captures (gaia checkpoints keygen) and set [checkpoints] "
                     "trusted_public_keys so that nobody with write access to the remote can poison them")
    return verdict


def download(cp: Checkpoints, point: Point, fp: str, log: Log,
             progress_factory: Callable[[int], Progress | None] | None = None) -> LocalObject | None:
    """Fetch, verify and publish into the local store; None when the backend has no object."""
    assert point.backend
    ref = point.backend
    where = f"{ref}:{point.id}/{fp[:12]}"
    staging = cp.store.new_staging(point.id, fp)
    try:
        with cp.session(ref) as backend:
            try:
                manifest = fetch_manifest(backend, point.id, fp, where)
            except OldFormat:
                raise Unusable("format_changed") from None
            if manifest is None:
                return None
            problem = cp.manifest_problem(manifest, point, fp)
            if problem:
                cp.bad_remote[(ref, point.id, fp)] = problem
                raise CheckpointError(f"remote checkpoint {where} refused: {problem}")
            verdict = judge(cp, point, manifest)
            if verdict.state == "invalid":
                cp.bad_remote[(ref, point.id, fp)] = verdict.why
            if point.trust_mode == "verify" and not verdict.usable:
                raise Untrusted(verdict)
            portability = assess(manifest, cp.anchor(point))
            if not portability.usable:
                raise Unusable(str(portability.problem))
            payload = manifest["payload"]
            if point.trust_mode == "verify" and payload["file"] != payload_file_name(payload["sha256"],
                                                                                    payload["compression"]):
                cp.bad_remote[(ref, point.id, fp)] = "payload_name"
                raise CheckpointError(f"remote checkpoint {where} names a payload not derived from its sha256")
            from gaia_core.checkpoints.restore import check_free_space

            check_free_space(cp.store.root, payload["size"], f"downloading {where}")
            started = time.monotonic()
            path = staging / payload["file"]
            progress = progress_factory(payload["size"]) if progress_factory else None
            with open(path, "wb") as f:
                writer = LimitedWriter(f, payload["size"], f"remote payload {where}", progress)
                try:
                    backend.download(object_key(point.id, fp, payload["file"]), writer)
                except ObjectNotFound:
                    cp.bad_remote[(ref, point.id, fp)] = "payload_missing"
                    raise CheckpointError(f"remote checkpoint {where} has a manifest but no {payload['file']}") from None
        if writer.size != payload["size"]:
            cp.bad_remote[(ref, point.id, fp)] = "payload_size"
            raise CheckpointError(f"downloaded payload has {writer.size} bytes, the manifest says {payload['size']}")
        if point.trust_mode == "verify" and writer.sha.hexdigest() != payload["sha256"]:
            cp.bad_remote[(ref, point.id, fp)] = "payload_sha256"
            raise CheckpointError("downloaded payload does not match the manifest's sha256")
        obj = cp.store.publish(staging, point.id, fp, manifest)
        log(f"checkpoint:{point.id} downloaded {fp[:12]} via {ref} ({human_size(writer.size)} in "
            f"{time.monotonic() - started:.1f}s, signer: {verdict.signer})")
        return obj
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remote_state(cp: Checkpoints, backend: Backend, point: Point, obj: LocalObject) -> str:
    """``absent``, ``same``, ``other`` (a good object of another producer) or ``bad:<why>``."""
    ref, fp = backend.ref, obj.fingerprint
    if not backend.exists(object_key(point.id, fp, MANIFEST)):
        return "absent"
    where = f"{ref}:{point.id}/{fp[:12]}"
    try:
        manifest = fetch_manifest(backend, point.id, fp, where)
    except ObjectNotFound:
        return "absent"
    except CheckpointError as exc:
        return f"bad:{exc}"
    if manifest is None:
        return "absent"
    known_bad = cp.bad_remote.get((ref, point.id, fp))
    if known_bad:
        return f"bad:{known_bad}"
    if manifest["payload"]["sha256"] == obj.manifest["payload"]["sha256"] and \
            manifest.get("signature") == obj.manifest.get("signature"):
        return "same"
    if cp.manifest_problem(manifest, point, fp):
        return f"bad:{cp.manifest_problem(manifest, point, fp)}"
    if verify(manifest, cp.settings.trusted_keys).state == "invalid":
        return "bad:bad_signature"
    if not backend.exists(object_key(point.id, fp, manifest["payload"]["file"])):
        return "bad:payload_missing"
    return "other"


def upload(cp: Checkpoints, point_id: str, fp: str, ref: str, anchor_task: str, log: Log,
           progress_factory: Callable[[int], Progress | None] | None = None) -> bool:
    """Upload payload then manifest (create-only); record the outcome in the durable queue."""
    if cp.read_only:
        log(f"checkpoint:{point_id} not uploaded: read-only ({cp.settings.read_only_source})")
        return False
    cp.store.update_queue(point_id, fp, ref, anchor_task, state="pending")
    try:
        point = cp.point(point_id)
        obj = cp.store.get(point_id, fp)
        if obj is None:
            raise CheckpointError(f"local checkpoint {point_id}/{fp[:12]} is missing; nothing to upload")
        with cp.store.hold(obj), cp.session(ref) as backend:
            state = remote_state(cp, backend, point, obj)
            if state in ("same", "other"):
                by = "" if state == "same" else " (from another producer; kept)"
                log(f"checkpoint:{point_id} {fp[:12]} is already in {ref}{by}")
            else:
                _send(cp, backend, point, obj, state, log, progress_factory)
    except (BackendError, CheckpointError, OSError) as exc:
        message = cp.redact(ref, str(exc))
        reason = unavailable(ref, cp.unavailable[ref]) if ref in cp.unavailable else message
        cp.store.update_queue(point_id, fp, ref, anchor_task, state="failed", attempted=True,
                              last_error=reason[:500])
        what = f"not uploaded: {message}" if isinstance(exc, BackendError) else f"upload via {ref} failed: {message}"
        log(f"WARN: checkpoint:{point_id} {what} (queued for retry)")
        return False
    try:
        cp.store.update_queue(point_id, fp, ref, anchor_task, state="uploaded", attempted=True, last_error=None)
    except CheckpointError as exc:
        log(f"WARN: checkpoint:{point_id} {fp[:12]} is uploaded to {ref}, but the upload queue could not record it: "
            f"{exc}; `gaia checkpoints retry` will find it there")
    return True


def _send(cp: Checkpoints, backend: Backend, point: Point, obj: LocalObject, state: str, log: Log,
          progress_factory: Callable[[int], Progress | None] | None) -> None:
    started = time.monotonic()
    payload_key = object_key(point.id, obj.fingerprint, obj.payload_path.name)
    manifest_key = object_key(point.id, obj.fingerprint, MANIFEST)
    progress = progress_factory(obj.size) if progress_factory else None
    backend.upload(payload_key, obj.payload_path, progress=progress)
    if state.startswith("bad:"):
        log(f"WARN: checkpoint:{point.id} {obj.fingerprint[:12]} in {backend.ref} is bad ({state[4:]}); "
            "replacing it with this run's verified object")
        backend.delete(manifest_key)
    try:
        backend.publish(manifest_key, obj.path / MANIFEST)
    except ObjectExists:
        log(f"checkpoint:{point.id} {obj.fingerprint[:12]} was published to {backend.ref} by another writer "
            "first; keeping theirs")
        return
    log(f"checkpoint:{point.id} uploaded {obj.fingerprint[:12]} via {backend.ref} "
        f"({human_size(obj.size)} in {time.monotonic() - started:.1f}s)")


class _Discard:
    """A destination that keeps nothing: the bytes are only counted and hashed on the way."""

    def write(self, data: Any) -> int:
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0

    def flush(self) -> None:
        pass


def hash_remote_payload(backend: Backend, point_id: str, manifest: dict[str, Any]) -> tuple[int, str]:
    """Size and sha256 of the remote payload, streamed without touching the disk."""
    payload = manifest["payload"]
    sink = LimitedWriter(_Discard(), payload["size"], f"remote payload {point_id}/{manifest['fingerprint'][:12]}")  # type: ignore[arg-type]
    backend.download(object_key(point_id, manifest["fingerprint"], payload["file"]), sink)  # type: ignore[arg-type]
    return sink.size, sink.sha.hexdigest()


__all__ = ["LimitedWriter", "TooLarge", "Untrusted", "Unusable", "download", "fetch_manifest", "upload"]
