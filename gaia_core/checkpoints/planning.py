"""Where the restore, capture and upload tasks go in the plan (their bodies: :mod:`.tasks`).

Restore runs before the tasks a hit lets skip (the anchor and ``Anchor.skips``) and tells
the executor to skip them. A point with ``units = true`` also gets
``checkpoints.units.<slug>`` right before the anchor, after everything the anchor waits for:
on a miss it restores the stored units, and the anchor builds the rest. Capture runs right after the anchor, and every other task that
depends on the anchor is made to wait for it, so nothing changes the anchor's targets
while they are captured. ``on_success`` uploads happen in ``checkpoints.upload``, which
depends on every other task and therefore runs only when the whole run succeeded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_core.checkpoints.tasks import run_capture, run_restore, run_units, run_uploads
from gaia_core.errors import PlanError
from gaia_core.tasks import Task

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext

UPLOAD_TASK = "checkpoints.upload"


def plan_checkpoints(build: Build, tasks: list[Task]) -> list[Task]:
    """Return the checkpoint tasks to add; adds dependencies to ``tasks`` in place."""
    from gaia_core.checkpoints.config import checkpoint_settings

    settings = checkpoint_settings(build)
    by_id = {t.id: t for t in tasks}
    added: list[Task] = []
    for point in settings.points:
        anchor_cls = build.registry.anchors[point.anchor_task].cls
        anchor_task = by_id.get(point.anchor_task)
        if anchor_task is None:
            raise PlanError(
                f"checkpoint point '{point.id}': anchor task '{point.anchor_task}' is not in the plan "
                f"(is the module that plans it configured in {build.path.name}?)"
            )
        restore = Task(
            id=f"checkpoints.restore.{point.slug}", run=_bind(run_restore, point.id),
            label=f"Restore checkpoint ({point.anchor_task})", module="checkpoints", phase="restore",
            after=["core.init", *anchor_cls.restore_after], provides=[f"checkpoints:{point.slug}-restored"],
        )
        capture = Task(
            id=f"checkpoints.capture.{point.slug}", run=_bind(run_capture, point.id),
            label=f"Capture checkpoint ({point.anchor_task})", module="checkpoints", phase="capture",
            after=[point.anchor_task],
        )
        for skipped in anchor_cls.skipped_tasks():
            if skipped in by_id:
                by_id[skipped].after.append(restore.id)
        if point.units:  # right before the anchor, once what it depends on has run
            units = Task(
                id=f"checkpoints.units.{point.slug}", run=_bind(run_units, point.id),
                label=f"Restore units ({point.anchor_task})", module="checkpoints", phase="restore",
                after=[restore.id, *anchor_task.after],
            )
            anchor_task.after.append(units.id)
            added.append(units)
        anchor_names = {anchor_task.id, *anchor_task.provides}
        for task in tasks:
            if task is anchor_task:
                continue
            if any(dep.rstrip("?") in anchor_names for dep in task.after):
                task.after.append(capture.id)
        added += [restore, capture]
    if any(p.upload_policy == "on_success" and p.backends for p in settings.points):
        everything = sorted({t.id for t in tasks} | {t.id for t in added})
        added.append(Task(
            id=UPLOAD_TASK, run=run_uploads, label="Upload checkpoints (on_success)", module="checkpoints",
            phase="upload", after=everything,
        ))
    return added


def _bind(func, point_id: str):  # type: ignore[no-untyped-def]
    def run(ctx: TaskContext) -> None:
        func(ctx, point_id)

    run.__name__ = func.__name__
    return run
