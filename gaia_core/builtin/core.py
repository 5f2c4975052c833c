"""The ``core`` tasks every plan has: ``core.init`` and the stage barrier.

They are not behind a config table, so :func:`gaia_core.plan.build_plan` adds them
directly instead of through ``gaia_register_modules``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_core.tasks import Task

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext

INIT_TASK = "core.init"
INITIALIZED = "core:initialized"
STAGE_BARRIER_TASK = "core.barrier.stage"
STAGE_PREFIX = "stage:"
STAGE_DONE = "stage:done"


def init_task() -> Task:
    """Creates the workspace directories; other tasks order after it with ``core.init``."""
    return Task(
        id=INIT_TASK,
        run=_init,
        label="Init workspace",
        module="core",
        phase="init",
        provides=[INITIALIZED],
    )


def stage_barrier(tasks: list[Task]) -> Task:
    """Runs after every task that provides a ``stage:*`` token; consumers use ``stage:done?``."""
    producers = sorted(t.id for t in tasks if any(p.startswith(STAGE_PREFIX) for p in t.provides))
    return Task(
        id=STAGE_BARRIER_TASK,
        run=None,
        label="Stage barrier",
        module="core",
        phase="barrier",
        after=producers,
        provides=[STAGE_DONE],
    )


def _init(ctx: TaskContext) -> None:
    build: Build = ctx.build
    ws = build.workspace
    for label, path in (
        ("root", ws.root),
        ("build_dir", ws.build_dir),
        ("out_dir", ws.out_dir),
        ("run_dir", build.run_dir),
    ):
        path.mkdir(parents=True, exist_ok=True)
        ctx.log(f"workspace.{label} = {path}")
