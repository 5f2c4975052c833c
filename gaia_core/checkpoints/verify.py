"""``gaia checkpoints verify``: every object's manifest, signature, entries and chunks, and repair.

Locally every chunk an object needs is read from its pack and checked against its id; in
each tier of a point, every signer's manifest under a fingerprint is judged and every chunk
fetched and checked (nothing is kept). A bad local object is discarded and fetched again
from the first tier that holds a good one; a bad remote object is replaced from a good
local copy (its manifest deleted, then this copy published create-only), as a run that
built a good object does. An untrusted remote object is reported as such, and counts
against the exit status: no consumer that trusts the configured keys will use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gaia_core.backends import object_dir
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.manifest import check_shape, slot_of
from gaia_core.checkpoints.remote import check_remote_chunks, fetch_manifest, upload
from gaia_core.checkpoints.signing import verify
from gaia_core.errors import BackendError, CheckpointError

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
    packs = cp.store.packs
    try:
        with cp.store.hold(obj):
            chunks = 0
            batch: list[tuple[bytes, int]] = []
            for item in _chunks_checked(cp, obj):
                batch.append(item)
                if len(batch) >= 1024:
                    chunks += _read_all(packs, batch)
                    batch = []
            chunks += _read_all(packs, batch)
    except (CheckpointError, OSError) as exc:
        return "bad", str(exc)
    verdict = verify(obj.manifest, cp.settings.trusted_keys)
    if verdict.state == "invalid":
        return "bad", verdict.why
    return "ok", f"{chunks} chunks checked; signer: {verdict.signer}"


def _chunks_checked(cp: Checkpoints, obj: LocalObject):  # type: ignore[no-untyped-def]
    """Every chunk of the object once, its entries checked against the safety rules on the way."""
    seen: set[bytes] = set()
    for chunk, size in tree.parts(obj.manifest):
        seen.add(chunk)
        yield chunk, size
    for entry in tree.entries(cp.store.packs, obj.manifest):
        for chunk, size in entry.chunk_list():
            if chunk not in seen:
                seen.add(chunk)
                yield chunk, size


def _read_all(packs, batch: list[tuple[bytes, int]]) -> int:  # type: ignore[no-untyped-def]
    from gaia_core.checkpoints.packstore import ChunkMissing

    located = packs.locate([c for c, _ in batch])
    for chunk, size in batch:
        if chunk not in located:
            raise ChunkMissing(f"the local store lacks chunk {chunk.hex()[:16]}")
        packs.read(chunk, located[chunk], size)
    return len(batch)


def check_remote(cp: Checkpoints, backend: Any, point: Point, fp: str, name: str) -> tuple[str, str]:
    """(``ok`` | ``untrusted`` | ``bad``, detail) of one signer's object in a backend."""
    where = f"{backend.ref}:{point.id}/{fp[:12]}/{name}"
    try:
        manifest = fetch_manifest(backend, point.id, fp, where, name)
    except CheckpointError as exc:
        return "bad", str(exc)
    if manifest is None:
        return "bad", "manifest vanished"
    problem = cp.manifest_problem(manifest, point, fp)
    if problem:
        return "bad", problem
    verdict = verify(manifest, cp.settings.trusted_keys)
    slot = slot_of(name)
    if verdict.state == "invalid" or (slot and verdict.signer != slot):
        return "bad", verdict.why or f"bad_signature:{slot}"
    try:
        chunks, _moved = check_remote_chunks(cp, backend, manifest)
    except CheckpointError as exc:
        return "bad", str(exc)
    if verdict.state == "untrusted":
        return "untrusted", f"signer: {verdict.signer}; {verdict.why} ({chunks} chunks checked)"
    return "ok", f"signer: {verdict.signer}; {chunks} chunks checked"


def verify_points(cp: Checkpoints, points: list[Point], *, remote: bool, repair: bool, log: Log) -> dict[str, Any]:
    objects: list[dict[str, Any]] = []
    for point in points:
        local_good: set[str] = set()
        for obj in cp.store.objects(point.id):
            state, detail = check_local(cp, point, obj)
            item = {"where": "local", "id": point.id, "fingerprint": obj.fingerprint, "state": state,
                    "detail": detail, "signer": _signer(obj.manifest)}
            if state == "ok":
                local_good.add(obj.fingerprint)
            elif state == "bad" and repair:
                cp.store.discard(point.id, obj.fingerprint, detail)
                item["repaired"] = _refetch(cp, point, obj.fingerprint, log)
            objects.append(item)
        if remote:
            for ref in point.backends:
                objects += _verify_backend(cp, point, ref, local_good, repair, log)
    bad = [o for o in objects if o["state"] == "bad"]
    untrusted = [o for o in objects if o["state"] == "untrusted"]
    return {"objects": objects, "ok": sum(o["state"] == "ok" for o in objects), "bad": len(bad),
            "untrusted": len(untrusted), "repaired": sum(bool(o.get("repaired")) for o in bad + untrusted),
            "unavailable": dict(cp.unavailable)}


def _signer(manifest: dict[str, Any]) -> str:
    signature = manifest.get("signature")
    return str(signature.get("key")) if isinstance(signature, dict) else "unsigned"


def _refetch(cp: Checkpoints, point: Point, fp: str, log: Log) -> str | None:
    """A bad local object fetched again from the first tier that holds a good one."""
    from gaia_core.checkpoints.tiers import fetch

    if not point.backends:
        return None
    fetched = fetch(cp, point, fp, log, fresh=True)
    if fetched.obj is not None:
        return f"fetched again from {fetched.ref}"
    why = [message for _, message in fetched.failures]
    why += [str(a.error) for a in fetched.answers if a is not None and a.error]
    log(f"WARN: checkpoint:{point.id} {fp[:12]} could not be fetched again: "
        f"{why[0] if why else 'no tier holds a usable copy'}")
    return None


def _verify_backend(cp: Checkpoints, point: Point, ref: str, local_good: set[str], repair: bool,
                    log: Log) -> list[dict[str, Any]]:
    """The objects of one tier of the point, one per signer's manifest, checked."""
    from gaia_core.checkpoints.engine import NotUsedOffline

    items: list[dict[str, Any]] = []
    try:
        with cp.session(ref) as backend:
            for fp in backend.list_fingerprints(point.id):
                for entry in backend.list_files(object_dir(point.id, fp)):
                    name = entry.file_name or ""
                    if entry.temporary or slot_of(name) is None:
                        continue
                    state, detail = check_remote(cp, backend, point, fp, name)
                    items.append({"where": "remote", "tier": ref, "id": point.id, "fingerprint": fp, "state": state,
                                  "detail": detail, "signer": slot_of(name) or "unsigned", "file": name})
    except (BackendError, NotUsedOffline):
        return items  # an unavailable backend holds no bad object: the command says why and exits 5
    writable = ref in cp.writable_tiers(point)
    for item in items:
        mine = item["file"] == _own_slot(cp, item["fingerprint"], point)
        if item["state"] == "bad" and repair and mine and writable and item["fingerprint"] in local_good:
            cp.bad_remote[(ref, point.id, item["fingerprint"], item["file"])] = item["detail"]
            if upload(cp, point.id, item["fingerprint"], ref, point.anchor_task, log):
                item["repaired"] = "replaced from the local store"
    return items


def _own_slot(cp: Checkpoints, fp: str, point: Point) -> str | None:
    """The slot this store's local object of ``fp`` is published in (what repair can replace)."""
    from gaia_core.checkpoints.manifest import manifest_name, signer_of

    obj = cp.store.get(point.id, fp, quiet=True)
    return manifest_name(signer_of(obj.manifest)) if obj is not None else None
