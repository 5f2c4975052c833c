"""``gaia checkpoints verify``: every object's manifest, signature, size and sha256, and repair.

A bad local object is discarded and fetched again from the backend when the backend holds
a good one; a bad remote object is replaced from a good local copy (its manifest deleted,
then this copy published create-only), as a run that built a good object does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.manifest import check_shape
from gaia_core.checkpoints.remote import download, fetch_manifest, hash_remote_payload, upload
from gaia_core.checkpoints.signing import verify
from gaia_core.errors import BackendError, CheckpointError
from gaia_core.fingerprints import sha256_file

if TYPE_CHECKING:
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject


def check_local(cp: Checkpoints, point: Point, obj: LocalObject) -> tuple[str, str]:
    """(``ok`` | ``bad`` | ``old_format``, detail) of one local object."""
    try:
        check_shape(obj.manifest, str(obj.path))
    except CheckpointError as exc:
        return ("old_format" if "store format" in str(exc) else "bad"), str(exc)
    problem = cp.manifest_problem(obj.manifest, point, obj.fingerprint)
    if problem:
        return "bad", problem
    payload = obj.manifest["payload"]
    try:
        size = obj.payload_path.stat().st_size
        if size != payload["size"]:
            return "bad", f"payload has {size} bytes, the manifest says {payload['size']}"
        if sha256_file(obj.payload_path) != payload["sha256"]:
            return "bad", "payload does not match the manifest's sha256"
    except OSError as exc:
        return "bad", f"payload unreadable: {exc.strerror or exc}"
    verdict = verify(obj.manifest, cp.settings.trusted_keys)
    if verdict.state == "invalid":
        return "bad", verdict.why
    return "ok", f"signer: {verdict.signer}"


def check_remote(cp: Checkpoints, backend: Any, point: Point, fp: str) -> tuple[str, str]:
    """(``ok`` | ``untrusted`` | ``bad``, detail) of one object in a backend."""
    where = f"{backend.ref}:{point.id}/{fp[:12]}"
    try:
        manifest = fetch_manifest(backend, point.id, fp, where)
    except CheckpointError as exc:
        return "bad", str(exc)
    if manifest is None:
        return "bad", "manifest vanished"
    problem = cp.manifest_problem(manifest, point, fp)
    if problem:
        return "bad", problem
    verdict = verify(manifest, cp.settings.trusted_keys)
    if verdict.state == "invalid":
        return "bad", verdict.why
    try:
        size, sha = hash_remote_payload(backend, point.id, manifest)
    except CheckpointError as exc:
        return "bad", str(exc)
    if size != manifest["payload"]["size"]:
        return "bad", f"payload has {size} bytes, the manifest says {manifest['payload']['size']}"
    if sha != manifest["payload"]["sha256"]:
        return "bad", "payload does not match the manifest's sha256"
    if verdict.state == "untrusted":
        return "untrusted", verdict.why
    return "ok", f"signer: {verdict.signer}"


def verify_points(cp: Checkpoints, points: list[Point], *, remote: bool, repair: bool, log: Log) -> dict[str, Any]:
    objects: list[dict[str, Any]] = []
    for point in points:
        local_good: set[str] = set()
        for obj in cp.store.objects(point.id):
            state, detail = check_local(cp, point, obj)
            item = {"where": "local", "id": point.id, "fingerprint": obj.fingerprint, "state": state,
                    "detail": detail}
            if state == "ok":
                local_good.add(obj.fingerprint)
            elif state == "bad" and repair:
                cp.store.discard(point.id, obj.fingerprint, detail)
                item["repaired"] = _refetch(cp, point, obj.fingerprint, log)
            objects.append(item)
        if remote and point.backend:
            objects += _verify_backend(cp, point, local_good, repair, log)
    bad = [o for o in objects if o["state"] == "bad"]
    return {"objects": objects, "ok": sum(o["state"] == "ok" for o in objects), "bad": len(bad),
            "repaired": sum(bool(o.get("repaired")) for o in bad), "unavailable": dict(cp.unavailable)}


def _refetch(cp: Checkpoints, point: Point, fp: str, log: Log) -> str | None:
    if not point.backend:
        return None
    try:
        obj = download(cp, point, fp, log)
    except BackendError:
        log(f"WARN: checkpoint:{point.id} {fp[:12]} could not be fetched again: backend {point.backend} is unavailable")
        return None
    except (CheckpointError, OSError) as exc:
        log(f"WARN: checkpoint:{point.id} {fp[:12]} could not be fetched again: {cp.redact(point.backend, str(exc))}")
        return None
    return f"fetched again from {point.backend}" if obj else None


def _verify_backend(cp: Checkpoints, point: Point, local_good: set[str], repair: bool, log: Log) -> list[dict[str, Any]]:
    assert point.backend
    ref = point.backend
    items: list[dict[str, Any]] = []
    try:
        with cp.session(ref) as backend:
            for fp in backend.list_fingerprints(point.id):
                state, detail = check_remote(cp, backend, point, fp)
                items.append({"where": "remote", "id": point.id, "fingerprint": fp, "state": state, "detail": detail})
    except BackendError:
        return items  # an unavailable backend holds no bad object: the command says why and exits 5
    for item in items:
        if item["state"] == "bad" and repair and item["fingerprint"] in local_good:
            cp.bad_remote[(ref, point.id, item["fingerprint"])] = item["detail"]
            if upload(cp, point.id, item["fingerprint"], ref, point.anchor_task, log):
                item["repaired"] = "replaced from the local store"
    return items
