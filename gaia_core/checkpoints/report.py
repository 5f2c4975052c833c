"""The checkpoint lines ``gaia run`` prints before it starts and after its last task."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from gaia_core.build import Build
    from gaia_core.run import RunResult


def run_preamble(build: Build, *, dry_run: bool) -> list[str]:
    """Lines describing each checkpoint point; empty when checkpoints are not configured.

    A dry run does not contact remotes. The engine is the run's own, so a backend found
    down here is skipped by the tasks too.
    """
    from gaia_core.checkpoints.engine import Checkpoints, offline_notice, unavailable
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status

    cp = Checkpoints.of(build)
    if not cp.points:
        return []
    lines = ["checkpoints status:"]
    for p in cp.points:
        status = point_status(cp, p, probe_remote=not dry_run)
        lines += [status.line(), *status.tier_lines()]
    lines += [f"  {unavailable(ref, reason)}" for ref, reason in list(cp.unavailable.items())]
    if cp.offline:
        lines.append(offline_notice(cp))
    if cp.read_only:
        lines.append(f"  read-only: nothing is uploaded or signed ({cp.settings.read_only_source})")
    holder = cp.store.lock.holder()
    if holder:
        lines.append(f"  store lock held by {describe_holder(holder)}")
    return lines


def run_finished(build: Build, result: RunResult, echo: Callable[[str], object]) -> None:
    """The backfills of the run finished (at most ``backfill_timeout``, nothing when the run
    was interrupted: they stay queued), and what they did. The wait is said before it
    starts: a user looking at a quiet run learns what it waits for and for how long."""
    from gaia_core.checkpoints.engine import Checkpoints

    cp = Checkpoints.of(build)
    if not cp.points or not cp.backfills.started:
        return
    timeout = cp.settings.backfill_timeout
    if cp.backfills.pending and not result.interrupted:
        echo(f"checkpoints: waiting for the backfills into faster tiers (at most {timeout:.0f}s, "
             "[checkpoints] backfill_timeout)")
    for line in cp.backfills.wait(timeout, interrupted=result.interrupted):
        echo(line)
