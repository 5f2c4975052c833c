"""Restore and capture tasks around every anchor a checkpoint point names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.tasks import Task


def plan_checkpoints(build: Build, tasks: list[Task]) -> list[Task]:
    """Return the checkpoint tasks to add; may add dependencies to ``tasks`` in place."""
    return []  # filled in by the checkpoint engine
