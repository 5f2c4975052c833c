"""What each point will do on the next run, and why; never a guess.

``hit`` means the restore will succeed: the manifest is read and its signer,
prerequisites and relocation are checked (not the payload bytes). Before the tasks that
a fingerprint needs ran (``buildroot.fetch``), the fingerprint is ``unknown`` with what
it waits for, and the ``will_*`` fields are unknown too. Status reads only: it writes,
moves and discards nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gaia_core.checkpoints.config import Point
from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.checkpoints.manifest import OldFormat
from gaia_core.checkpoints.portability import assess
from gaia_core.errors import BackendError, CheckpointError


@dataclasses.dataclass
class PointStatus:
    id: str
    anchor: str
    use_policy: str
    upload_policy: str
    trust_mode: str
    backend: str | None
    fingerprint: str
    #: what the fingerprint waits for (``needs buildroot.fetch``); None when it is known
    pending: str | None
    exists: bool | None
    materialized: bool | None
    remote_exists: bool | None
    will_use: bool | None
    will_download: bool | None
    will_rebuild: bool | None
    will_upload: bool | None
    #: why a rebuild's capture would not be uploaded although the point uploads
    #: (``read_only: ...``, ``unsigned: ...``); None otherwise
    will_upload_reason: str | None
    will_fail: bool | None
    pending_upload: bool
    upload_queue: dict[str, Any]
    reason: str
    local_reason: str
    remote_error: str | None
    inactive: str | None
    #: who signed the object the reason is about (the local one, else the remote one), used or
    #: refused: a key name, ``unsigned``, or ``-`` when there is none
    signer: str
    #: who signed the backend's object, when the backend was asked (``-`` otherwise)
    remote_signer: str
    read_only: bool
    #: ``units = true``, on a miss: what would happen to the units (:mod:`.unitstatus`)
    units: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        def b(v: bool | None) -> str:
            return "unknown" if v is None else str(v).lower()

        parts = [
            f"id={self.id}", f"anchor={self.anchor}", f"use_policy={self.use_policy}",
            f"upload_policy={self.upload_policy}", f"backend={self.backend or '-'}", f"exists={b(self.exists)}",
            f"remote_exists={b(self.remote_exists)}", f"will_use={b(self.will_use)}",
            f"will_download={b(self.will_download)}", f"will_rebuild={b(self.will_rebuild)}",
            f"will_upload={b(self.will_upload)}", f"pending_upload={b(self.pending_upload)}",
            f"reason={self.reason}", f"signer={self.signer}", f"remote_signer={self.remote_signer}",
            f"remote_error={self.remote_error or '-'}",
            f"fingerprint={self.fingerprint}",
        ]
        if self.units is not None:
            parts.append("units=" + (f"keep:{self.units['keep']},restore:{self.units['restore']},"
                                     f"build:{self.units['build']}" if self.units["state"] == "known" else "unknown"))
        line = "- " + " ".join(parts)
        if self.pending:
            line += f" ({self.pending})"
        return line


def _queue(cp: Checkpoints, point: Point, fp: str | None) -> dict[str, Any]:
    entries = [e for e in cp.store.read_queue() if e.get("id") == point.id]
    queue: dict[str, Any] = {state: sum(1 for e in entries if e.get("state") == state)
                             for state in ("pending", "failed", "uploaded")}
    current = [e for e in entries if fp is not None and e.get("fingerprint") == fp]
    if current:
        queue["current"] = {k: current[-1].get(k) for k in ("state", "attempts", "last_error", "backend_ref")}
    return queue


def _signer(manifest: dict[str, Any]) -> str:
    signature = manifest.get("signature")
    return str(signature.get("key")) if isinstance(signature, dict) else "unsigned"


def point_status(cp: Checkpoints, point: Point, *, probe_remote: bool = True) -> PointStatus:
    anchor = cp.anchor(point)
    fp = cp.fingerprint(point)
    inactive = anchor.inactive_reason()
    queue = _queue(cp, point, fp.value)
    base = dict(
        id=point.id, anchor=point.anchor_task, use_policy=point.use_policy, upload_policy=point.upload_policy,
        trust_mode=point.trust_mode, backend=point.backend, pending_upload=queue["pending"] + queue["failed"] > 0,
        upload_queue=queue, inactive=inactive, read_only=cp.read_only,
    )
    if not fp.known:
        assert fp.pending is not None
        unknown = dict.fromkeys(("exists", "materialized", "remote_exists", "will_use", "will_download",
                                 "will_rebuild", "will_upload", "will_upload_reason", "will_fail"))
        reason = f"inactive:{inactive}" if inactive else "unknown"
        return PointStatus(**base, **unknown, fingerprint="unknown", pending=str(fp.pending), reason=reason,
                           local_reason=reason, remote_error=None, signer="-", remote_signer="-")
    value = fp.value
    assert value is not None
    targets = anchor.targets()
    obj = cp.local_object(point, value, discard=False)
    materialized = cp.materialized(targets, value)
    signer = "-"
    local_reason = "hit"
    usable = False
    if obj is not None:
        problem = assess(obj.manifest, anchor).problem
        usable = problem is None
        local_reason = problem or "hit"
        signer = _signer(obj.manifest)
    else:
        local_reason = cp.miss_reason(point, fp)
    reason = local_reason

    remote_exists: bool | None = None
    remote_usable = False
    remote_error = None
    remote_signer = "-"
    if not usable and not materialized and point.use_policy != "off" and point.backend and not inactive:
        if not probe_remote:
            remote_error = "not probed (dry run)"
        else:
            remote_exists, remote_usable, remote_reason, remote_error, remote_signer = _probe(cp, point, value)
            if obj is None or remote_usable:
                signer = remote_signer
            if remote_usable:
                reason = "remote_hit"
            elif remote_reason:
                reason = remote_reason
            elif remote_error:
                reason = "remote_probe_error"
            elif reason == "missing":
                reason = "remote_missing"

    available = usable or materialized or remote_usable
    will_use = will_rebuild = will_fail = False
    if inactive:
        reason = f"inactive:{inactive}"
    elif point.use_policy == "off":
        will_rebuild, reason = True, "policy_off"
    elif available:
        will_use = True
        if materialized and not usable:
            reason = "materialized"
    elif point.use_policy == "required":
        will_fail, reason = True, f"required_missing:{reason}"
    else:
        will_rebuild = True
    units = None
    if point.units and will_rebuild and not inactive and point.use_policy != "off":
        from gaia_core.checkpoints.unitstatus import units_status

        units = units_status(cp, point, probe_remote=probe_remote)
    upload_blocked = None
    if will_rebuild and point.upload_policy != "off" and point.backend:
        upload_blocked = f"read_only: {cp.settings.read_only_source}" if cp.read_only else cp.upload_blocked(point)
    return PointStatus(
        **base, fingerprint=value, pending=None, exists=obj is not None, materialized=materialized,
        remote_exists=remote_exists, will_use=will_use,
        will_download=will_use and not usable and not materialized and remote_usable,
        will_rebuild=will_rebuild,
        will_upload=will_rebuild and point.upload_policy != "off" and bool(point.backend) and not upload_blocked,
        will_upload_reason=upload_blocked, will_fail=will_fail, reason=reason, local_reason=local_reason,
        remote_error=remote_error, signer=signer, remote_signer=remote_signer, units=units,
    )


def _probe(cp: Checkpoints, point: Point, fp: str) -> tuple[bool | None, bool, str | None, str | None, str]:
    """(exists, usable, why not usable, error, signer) of the backend's object, from its manifests."""
    from gaia_core.checkpoints.remote import find

    assert point.backend
    try:
        with cp.session(point.backend) as backend:
            found, seen = find(cp, backend, point, fp)
    except OldFormat:
        return True, False, "format_changed", None, "-"
    except BackendError as exc:
        return None, False, None, cp.redact(point.backend, str(exc)), "-"
    except CheckpointError as exc:
        return True, False, "remote_invalid", str(exc), "-"
    if found is None:
        if seen:
            return True, False, seen[0].verdict.reason(), None, seen[0].verdict.signer
        return False, False, None, None, "-"
    if point.trust_mode == "verify" and not found.verdict.usable:
        return True, False, found.verdict.reason(), None, found.verdict.signer
    portability = assess(found.manifest, cp.anchor(point))
    if not portability.usable:
        return True, False, portability.problem, None, found.verdict.signer
    return True, True, None, None, found.verdict.signer


def store_status(cp: Checkpoints) -> dict[str, Any]:
    return {"store": str(cp.store.root), "queue_file": str(cp.store.queue_path), "lock_holder": cp.store.lock.holder(),
            "read_only": cp.settings.read_only_source or None}


def remote_objects(cp: Checkpoints, backend: Any, point: Point) -> list[dict[str, Any]]:
    """The backend's objects of ``point``, one per signer's manifest, each with its signer and
    what this build makes of it (``trusted``, ``unsigned``, ``untrusted``, ``invalid``, or
    ``bad`` with why), read from its manifest alone."""
    from gaia_core.checkpoints.manifest import slot_of
    from gaia_core.checkpoints.remote import fetch_manifest
    from gaia_core.checkpoints.signing import verify

    rows = []
    listed = [e for e in backend.list_entries(point.id) if e.is_manifest and e.fingerprint]
    for entry in sorted(listed, key=lambda e: (e.fingerprint, e.file_name)):
        fp, name = entry.fingerprint or "", entry.file_name or ""
        row: dict[str, Any] = {"fingerprint": fp, "file": name, "size": None, "created_at": None,
                               "signer": slot_of(name) or "unsigned"}
        try:
            manifest = fetch_manifest(backend, point.id, fp, f"{backend.ref}:{point.id}/{fp[:12]}/{name}", name)
        except CheckpointError as exc:  # OldFormat included: not usable by this gaia
            rows.append({**row, "trust": "bad", "why": str(exc)})
            continue
        if manifest is None:
            rows.append({**row, "trust": "bad", "why": "manifest vanished"})
            continue
        verdict = verify(manifest, cp.settings.trusted_keys)
        row.update(size=(manifest.get("tree") or {}).get("packed"), created_at=manifest.get("created_at"),
                   signer=_signer(manifest), trust=verdict.state, why=verdict.why)
        problem = cp.manifest_problem(manifest, point, fp)
        if problem:
            row.update(trust="bad", why=problem)
        elif slot_of(name) and slot_of(name) != _signer(manifest):
            row.update(trust="invalid", why=f"bad_signature:{slot_of(name)}")
        rows.append(row)
    return rows
