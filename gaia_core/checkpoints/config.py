"""``[checkpoints]`` validation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaia_core.build import Build


def validate_checkpoints(build: Build) -> list[str]:
    """Every problem in ``[checkpoints]``, each naming file and key; empty when valid."""
    return []  # filled in by the checkpoint engine
