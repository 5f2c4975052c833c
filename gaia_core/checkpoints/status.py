"""What each point will do on the next run, and why."""

from __future__ import annotations

import dataclasses
from typing import Any

from gaia_core.backends import MANIFEST, object_key
from gaia_core.checkpoints.config import Point
from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.errors import BackendError


@dataclasses.dataclass
class PointStatus:
    id: str
    anchor: str
    use_policy: str
    upload_policy: str
    trust_mode: str
    backend: str | None
    fingerprint: str
    exists: bool
    materialized: bool
    remote_exists: bool | None
    will_use: bool
    will_download: bool
    will_rebuild: bool
    will_upload: bool
    will_fail: bool
    pending_upload: bool
    upload_queue: dict[str, Any]
    reason: str
    local_reason: str
    remote_error: str | None
    inactive: str | None

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
            f"reason={self.reason}", f"remote_error={self.remote_error or '-'}", f"fingerprint={self.fingerprint}",
        ]
        return "- " + " ".join(parts)


def point_status(cp: Checkpoints, point: Point, *, probe_remote: bool = True) -> PointStatus:
    anchor = cp.anchor(point)
    fp = cp.fingerprint(point)
    inactive = anchor.inactive_reason()
    targets = anchor.targets()
    obj = cp.store.get(point.id, fp.value)
    problem = cp.manifest_problem(obj.manifest, point, fp.value) if obj else None
    exists = obj is not None and problem is None  # restore discards a mismatching object in both modes
    materialized = cp.materialized(targets, fp.value)
    local_reason = "hit" if exists else ("lineage_mismatch" if problem else cp.miss_reason(point, fp))
    reason = local_reason

    remote_exists: bool | None = None
    remote_error = None
    if not exists and not materialized and point.use_policy != "off" and point.backend and not inactive:
        if probe_remote:
            backend = None
            try:
                backend = cp.backend(point.backend)
                with backend:
                    remote_exists = backend.exists(object_key(point.id, fp.value, MANIFEST))
            except BackendError as exc:
                remote_error = backend.redact(str(exc)) if backend else str(exc)
            if remote_exists:
                reason = "remote_hit"
            elif remote_error:
                reason = "remote_probe_error"
            elif reason == "missing":
                reason = "remote_missing"
        else:
            remote_error = "not probed (dry run)"

    available = exists or materialized or bool(remote_exists)
    will_use = will_rebuild = will_fail = False
    if inactive:
        reason = f"inactive:{inactive}"
    elif point.use_policy == "off":
        will_rebuild, reason = True, "policy_off"
    elif available:
        will_use = True
        if materialized and not exists:
            reason = "materialized"
    elif point.use_policy == "required":
        will_fail, reason = True, f"required_missing:{reason}"
    else:
        will_rebuild = True

    entries = [e for e in cp.store.read_queue() if e.get("id") == point.id]
    queue = {state: sum(1 for e in entries if e.get("state") == state) for state in ("pending", "failed", "uploaded")}
    current = [e for e in entries if e.get("fingerprint") == fp.value]
    if current:
        queue["current"] = {k: current[-1].get(k) for k in ("state", "attempts", "last_error", "backend_ref")}
    return PointStatus(
        id=point.id, anchor=point.anchor_task, use_policy=point.use_policy, upload_policy=point.upload_policy,
        trust_mode=point.trust_mode, backend=point.backend, fingerprint=fp.value, exists=exists,
        materialized=materialized, remote_exists=remote_exists, will_use=will_use,
        will_download=will_use and not exists and not materialized and bool(remote_exists),
        will_rebuild=will_rebuild,
        will_upload=will_rebuild and point.upload_policy != "off" and bool(point.backend),
        will_fail=will_fail, pending_upload=queue["pending"] + queue["failed"] > 0, upload_queue=queue,
        reason=reason, local_reason=local_reason, remote_error=remote_error, inactive=inactive,
    )


def store_status(cp: Checkpoints) -> dict[str, Any]:
    return {"store": str(cp.store.root), "queue_file": str(cp.store.queue_path), "lock_holder": cp.store.lock.holder()}
