"""The checkpoint status lines ``gaia run`` prints before it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaia_core.build import Build


def run_preamble(build: Build, *, dry_run: bool) -> list[str]:
    """Lines describing each checkpoint point; empty when checkpoints are not configured."""
    return []  # filled in by the checkpoint engine
