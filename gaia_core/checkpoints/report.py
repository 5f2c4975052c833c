"""The checkpoint status lines ``gaia run`` prints before it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaia_core.build import Build


def run_preamble(build: Build, *, dry_run: bool) -> list[str]:
    """Lines describing each checkpoint point; empty when checkpoints are not configured.

    A dry run does not contact remotes.
    """
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status

    cp = Checkpoints(build)
    if not cp.points:
        return []
    lines = ["checkpoints status:"]
    lines += [point_status(cp, p, probe_remote=not dry_run).line() for p in cp.points]
    holder = cp.store.lock.holder()
    if holder:
        lines.append(f"  store lock held by {describe_holder(holder)}")
    return lines
