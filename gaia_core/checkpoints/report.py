"""The checkpoint status lines ``gaia run`` prints before it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaia_core.build import Build


def run_preamble(build: Build, *, dry_run: bool) -> list[str]:
    """Lines describing each checkpoint point; empty when checkpoints are not configured.

    A dry run does not contact remotes. The engine is the run's own, so a backend found
    down here is skipped by the tasks too.
    """
    from gaia_core.checkpoints.engine import Checkpoints, unavailable
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status

    cp = Checkpoints.of(build)
    if not cp.points:
        return []
    lines = ["checkpoints status:"]
    lines += [point_status(cp, p, probe_remote=not dry_run).line() for p in cp.points]
    lines += [f"  {unavailable(ref, reason)}" for ref, reason in cp.unavailable.items()]
    if cp.read_only:
        lines.append(f"  read-only: nothing is uploaded or signed ({cp.settings.read_only_source})")
    holder = cp.store.lock.holder()
    if holder:
        lines.append(f"  store lock held by {describe_holder(holder)}")
    return lines
