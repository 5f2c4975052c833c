"""The checkpoint feature as a builtin plugin: it owns ``[checkpoints]``, validates it, plans
restore and capture around each anchor, reports before a run and adds ``gaia checkpoints``.

It uses only the documented hooks, as a third-party feature would (pytest's own capture
and junitxml plugins are its model); the core imports nothing from this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_core import hookimpl

if TYPE_CHECKING:
    import click

    from gaia_core.build import Build
    from gaia_core.outcomes import Outcome
    from gaia_core.run import RunResult, RunState
    from gaia_core.tasks import Task

TABLE = "checkpoints"


@hookimpl
def gaia_register_config_tables() -> str:
    return TABLE


@hookimpl
def gaia_validate_config(build: Build) -> list[str]:
    from gaia_core.checkpoints import config

    return config.validate_checkpoints(build)


@hookimpl
def gaia_extend_plan(build: Build, tasks: list[Task]) -> list[Task]:
    from gaia_core.checkpoints import planning

    return planning.plan_checkpoints(build, tasks)


@hookimpl
def gaia_run_preamble(build: Build, dry_run: bool) -> list[str]:
    from gaia_core.checkpoints.report import run_preamble

    return run_preamble(build, dry_run=dry_run)


@hookimpl
def gaia_run_finished(build: Build, state: RunState, result: RunResult) -> list[Outcome]:
    import click

    from gaia_core.checkpoints.recording import finish_run
    from gaia_core.checkpoints.report import run_finished

    if not build.has(TABLE):
        return []
    run_finished(build, result, click.echo)  # the backfills end first: the records say what they did
    return finish_run(build, state, result, lambda message: click.echo(message, err=True))


@hookimpl
def gaia_secret_env_vars(build: Build) -> list[str]:
    from gaia_core.checkpoints import config

    if not build.has(TABLE):
        return []
    return sorted(config.secret_variables(config.checkpoint_settings(build)))


@hookimpl
def gaia_register_commands(cli: click.Group) -> None:
    from gaia_core.checkpoints import insight_commands  # noqa: F401 -- adds stats and report to the group
    from gaia_core.checkpoints.commands import checkpoints

    cli.add_command(checkpoints)
