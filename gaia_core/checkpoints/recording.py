"""The end of a run: each point's tally becomes a record, kept in the journal and shared.

Called from ``gaia_run_finished``. A point whose restore task never decided anything
(the run failed before it) has no record. A store that cannot take the journal's lines (a
full disk) costs a warning; a tier that cannot take the shared records, too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.checkpoints.journal import Journal
from gaia_core.checkpoints.records import LOCAL, make_record, new_id, outcome_of
from gaia_core.hostinfo import host_name, host_system

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.outcomes import Outcome
    from gaia_core.run import RunResult, RunState


def finish_run(build: Build, state: RunState, result: RunResult, log) -> list[Outcome]:  # type: ignore[no-untyped-def]
    from gaia_core import __version__

    cp = Checkpoints.of(build)
    decided = [(p, cp.tallies[p.id]) for p in cp.points if p.id in cp.tallies and cp.tallies[p.id].decision]
    if not decided:
        return []
    status = "interrupted" if result.interrupted else ("ok" if result.ok else "failed")
    run_id = new_id()
    host = {"name": host_name()[:253], "system": host_system()[:100]}
    local_bytes = sum(cp.store.packs.local_packs().values())
    records = []
    for point, tally in decided:
        tally.stored.setdefault(LOCAL, local_bytes)
        ran = result.statuses.get(point.anchor_task) in ("ok", "failed", "interrupted")
        build_seconds = state.task_seconds.get(point.anchor_task) if ran else None
        records.append(make_record(tally, point, run_id=run_id, host=host, result=status,
                                   build_seconds=build_seconds, gaia_version=__version__))
    try:
        Journal(cp.store.root).append(records)
    except OSError as exc:
        log(f"WARN: the run's records were not kept: {exc.strerror or exc} ({exc.filename or cp.store.root})")
    if cp.settings.share_records:
        from gaia_core.checkpoints.shared import publish

        publish(cp, records, run_id, log)
    return [outcome_of(r) for r in records]


__all__ = ["finish_run"]
