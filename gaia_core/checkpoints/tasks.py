"""The bodies of the restore, capture and upload tasks (:mod:`.planning` places them).

The engine of a run is created by the first checkpoint task and shared through
``ctx.state.data``, so every task of the run sees the same fingerprints and store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_core.errors import BackendError, CheckpointError, TaskFailed

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.run import TaskContext

_ENGINE = "checkpoints.engine"
_RESTORED = "checkpoints.restored"
_TO_UPLOAD = "checkpoints.to_upload"


def _engine(ctx: TaskContext) -> Checkpoints:
    from gaia_core.checkpoints.engine import Checkpoints

    engine = ctx.state.data.get(_ENGINE)
    if engine is None:
        engine = ctx.state.data[_ENGINE] = Checkpoints(ctx.build)
    return engine


def _active(ctx: TaskContext, point_id: str, step: str) -> tuple[Checkpoints, Point, Anchor] | None:
    """The engine, point and anchor; None (logged) when the anchor says checkpoints don't apply."""
    cp = _engine(ctx)
    point = cp.point(point_id)
    anchor = cp.anchor(point)
    inactive = anchor.inactive_reason()
    if inactive:
        ctx.log(f"checkpoint {step} skipped for {point.anchor_task} ({inactive})")
        return None
    return cp, point, anchor


def run_restore(ctx: TaskContext, point_id: str) -> None:
    active = _active(ctx, point_id, "restore")
    if active is None:
        return
    cp, point, anchor = active
    fp = cp.fingerprint(point).value
    targets = anchor.targets()
    tag = f"checkpoint:{point.id}"
    if point.use_policy == "off":
        cp.clear_markers([t for t in targets if t.path.is_dir()])
        ctx.log(f"{tag} restore skipped (use_policy=off); {point.anchor_task} will run and be captured")
        return
    cp.store.clean_tmp()
    if cp.materialized(targets, fp):
        ctx.log(f"{tag} {', '.join(str(t.path) for t in targets)} already holds {fp[:12]}; nothing to restore")
        _mark_restored(ctx, point, anchor.skipped_tasks(), fp, "already in place")
        _upload_local_hit(ctx, cp, point, fp)
        return
    obj = cp.local_object(point, fp)
    source = "local store"
    if obj is None and point.backend:
        try:
            obj = cp.download(point, fp, ctx.log)
            source = point.backend
            if obj is None:
                ctx.log(f"{tag} {fp[:12]} is not in {point.backend} either")
        except (BackendError, CheckpointError, OSError) as exc:
            message = _redacted(cp, point, exc)
            if point.use_policy == "required":
                raise TaskFailed(f"required checkpoint '{point.id}' download via {point.backend} failed: {message}") from None
            ctx.log(f"WARN: {tag} remote fetch via {point.backend} failed: {message}; building instead")
    if obj is None:
        reason = cp.miss_reason(point, cp.fingerprint(point))
        if point.use_policy == "required":
            raise TaskFailed(
                f"required checkpoint '{point.id}' for {point.anchor_task} is not available "
                f"(reason: {reason}; fingerprint {fp[:12]}); run once with use_policy = \"auto\" to create it"
            )
        cp.clear_markers([t for t in targets if t.path.is_dir()])
        ctx.log(f"{tag} restore miss (reason={reason}); {point.anchor_task} will run")
        return
    try:
        cp.restore(obj, point, targets)
    except CheckpointError as exc:
        cp.store.discard(point.id, fp, str(exc))
        if point.use_policy == "required":
            raise TaskFailed(f"required checkpoint '{point.id}' could not be restored: {exc}") from None
        cp.clear_markers([t for t in targets if t.path.is_dir()])
        ctx.log(f"WARN: {tag} could not be restored: {exc}; building instead")
        return
    ctx.log(f"{tag} restored {fp[:12]} from {source}")
    _mark_restored(ctx, point, anchor.skipped_tasks(), fp, f"restored from {source}")
    if source == "local store":
        _upload_local_hit(ctx, cp, point, fp)


def _mark_restored(ctx: TaskContext, point: Point, skipped: tuple[str, ...], fp: str, how: str) -> None:
    ctx.state.data.setdefault(_RESTORED, {})[point.id] = fp
    for task_id in skipped:
        ctx.state.skipped[task_id] = f"checkpoint {point.id}@{fp[:12]} {how}"


def run_capture(ctx: TaskContext, point_id: str) -> None:
    active = _active(ctx, point_id, "capture")
    if active is None:
        return
    cp, point, anchor = active
    if point.id in ctx.state.data.get(_RESTORED, {}):
        ctx.log(f"checkpoint:{point.id} capture skipped (the restored checkpoint was used)")
        return
    fp = cp.fingerprint(point)
    try:
        obj = cp.capture(point, fp, anchor.targets(), ctx.log)
    except CheckpointError as exc:
        ctx.log(f"WARN: checkpoint:{point.id} capture failed: {exc}; the build goes on without a checkpoint")
        return
    if not point.backend or point.upload_policy == "off":
        ctx.log(f"checkpoint:{point.id} kept locally (upload_policy={point.upload_policy}, "
                f"backend={point.backend or 'none'})")
    else:
        _schedule_upload(ctx, cp, point, obj.fingerprint)


def _schedule_upload(ctx: TaskContext, cp: Checkpoints, point: Point, fp: str) -> None:
    """``always``: upload now; ``on_success``: leave it to ``checkpoints.upload``."""
    assert point.backend
    if point.upload_policy == "always":
        cp.upload(point.id, fp, point.backend, point.anchor_task, ctx.log)
    else:
        ctx.state.data.setdefault(_TO_UPLOAD, []).append(point.id)
        ctx.log(f"checkpoint:{point.id} will be uploaded to {point.backend} once the run succeeds")


def _upload_local_hit(ctx: TaskContext, cp: Checkpoints, point: Point, fp: str) -> None:
    """A checkpoint used from the local store reaches the backend too, unless it already did."""
    if not point.backend or point.upload_policy == "off" or cp.store.get(point.id, fp) is None:
        return
    done = any(e.get("state") == "uploaded" and (e.get("fingerprint"), e.get("backend_ref")) == (fp, point.backend)
               for e in cp.store.read_queue())
    if not done:
        _schedule_upload(ctx, cp, point, fp)


def run_uploads(ctx: TaskContext) -> None:
    cp = _engine(ctx)
    for point_id in ctx.state.data.get(_TO_UPLOAD, []):
        point = cp.point(point_id)
        assert point.backend
        cp.upload(point.id, cp.fingerprint(point).value, point.backend, point.anchor_task, ctx.log)


def _redacted(cp: Checkpoints, point: Point, exc: BaseException) -> str:
    message = str(exc)
    if point.backend and point.backend in cp.settings.backend_configs:
        message = cp.backend(point.backend).redact(message)
    return message
