"""Hook specifications of gaia. Implement them with :data:`gaia_core.hookimpl`.

Registration hooks take no arguments and return a class or a list of classes; the core
keys them by ``table`` (modules), ``task`` (anchors) or ``kind`` (fingerprint sources,
backends) and refuses a key claimed twice, naming both providers. Implementations may
accept any subset of a hook's parameters; call hooks with keyword arguments only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from gaia_core.anchors import Anchor
    from gaia_core.backends import Backend
    from gaia_core.build import Build
    from gaia_core.fingerprints import FingerprintSource
    from gaia_core.outcomes import Outcome
    from gaia_core.run import RunResult, RunState
    from gaia_core.tasks import Module, Task

_spec = pluggy.HookspecMarker("gaia")

# ----- Registration ----------------------------------------------------------------------


@_spec
def gaia_register_modules() -> type[Module] | Sequence[type[Module]]:
    """Return :class:`gaia_core.tasks.Module` classes.

    A module is active when its ``table`` exists in the build file; it validates that
    table with its ``config_model`` and returns the tasks it adds to the plan.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_anchors() -> type[Anchor] | Sequence[type[Anchor]]:
    """Return :class:`gaia_core.anchors.Anchor` classes.

    An anchor names a task (``task``), the directories it produces (``targets()``), its
    default fingerprint paths and the tasks a restore lets skip. Checkpoint points whose
    ``anchor_task`` equals ``task`` get restore and capture tasks around it.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_fingerprint_sources() -> type[FingerprintSource] | Sequence[type[FingerprintSource]]:
    """Return :class:`gaia_core.fingerprints.FingerprintSource` classes.

    Each handles the config ``paths`` it lists and turns the value there into a digest
    of what it names (a file, a tree), so that editing the file changes the fingerprint.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_backends() -> type[Backend] | Sequence[type[Backend]]:
    """Return :class:`gaia_core.backends.Backend` classes.

    ``kind`` is the key under ``[checkpoints.backends.<kind>.<name>]``; ``config_model``
    validates one such table.

    .. versionadded:: 0.1
    """


# ----- Features ----------------------------------------------------------------------------
#
# A feature that spans modules (gaia's own checkpoints are one) owns a top-level table,
# validates it, adds tasks around the planned ones and reports before a run. The core
# knows such a feature only through these hooks.


@_spec
def gaia_register_config_tables() -> str | Sequence[str]:
    """Return the top-level table names this plugin owns outside any module (``"checkpoints"``).

    The loader accepts such a table instead of reporting it as unknown and leaves its
    validation to :func:`gaia_validate_config`. A name claimed twice, or one that is
    also a module's table, is an error naming both plugins.

    .. versionadded:: 0.2
    """


@_spec
def gaia_validate_config(build: Build) -> Sequence[str] | None:
    """Return every problem in the tables this plugin owns, or nothing when they are valid.

    Called once per load, after the workspace and the module tables were validated
    (``build.settings`` holds the module settings). Each problem is one line in the form
    ``<file>: <dotted.key>: <what is wrong and what is allowed>``
    (:func:`gaia_core.config.loader.render_validation_error` renders pydantic errors so);
    the loader reports the problems of every plugin together. Never put an input value
    in a problem: it may be a secret. A plugin may cache what it validated in
    ``build.settings[<its table>]``.

    .. versionadded:: 0.2
    """


@_spec
def gaia_extend_plan(build: Build, tasks: list[Task]) -> Sequence[Task] | None:
    """Return tasks to add around the planned ones.

    :param build: the loaded build; ``build.registry.anchors`` holds the registered
        anchors.
    :param tasks: every task planned so far (the modules' tasks and the core's); the
        hook may append dependencies to their ``after`` lists so that they wait for the
        tasks it adds. It must not remove tasks or dependencies.

    Called once per plan, after every module planned.

    .. versionadded:: 0.2
    """


@_spec
def gaia_run_preamble(build: Build, dry_run: bool) -> Sequence[str] | None:
    """Return lines ``gaia run`` prints before the first task starts.

    :param dry_run: the run will execute nothing; do not contact remote services.

    .. versionadded:: 0.2
    """


@_spec
def gaia_run_finished(build: Build, state: RunState, result: RunResult) -> Sequence[Outcome] | None:
    """Return what this plugin's feature decided in the run that just ended, one
    :class:`gaia_core.outcomes.Outcome` per unit (the checkpoints plugin: one per point).

    Called once after the last task of a real run (not a dry run), whether it succeeded,
    failed or was interrupted, still under the workspace run lock. ``state`` is the run's
    :class:`gaia_core.run.RunState` (``state.task_seconds`` says how long each task ran);
    ``result`` its :class:`gaia_core.run.RunResult`. The outcomes go into
    ``result.outcomes``, from which ``gaia run --summary-file`` and ``--metrics-file``
    are written. The checkpoints plugin appends its run records to the store's journal
    here (and publishes them when ``share_records`` is on). An exception is reported as
    a warning and costs the run nothing.

    Finish here, within a bound you document, what your plugin left running in the
    background: the checkpoints plugin first waits for its backfills (copies of restored
    objects into faster tiers, at most ``[checkpoints] backfill_timeout``, nothing when
    ``result.interrupted``) and prints what they did.

    .. versionadded:: 0.2
    """


@_spec
def gaia_secret_env_vars(build: Build) -> Sequence[str] | None:
    """Return the names of environment variables that hold this plugin's secrets.

    ``gaia run`` removes them from the environment of every command a task runs
    (``TaskContext.run_cmd``, ``TaskContext.command_env``), so that a build script cannot
    read them; a task that passes one in ``env`` explicitly still hands it on. The
    checkpoint feature returns the variables its backends' credential fields name, the
    standard variables of their libraries and ``signing_key_file_env``'s variable, minus
    ``[checkpoints] pass_env``.

    .. versionadded:: 0.2
    """


# ----- CLI -------------------------------------------------------------------------------


@_spec
def gaia_register_commands(cli: click.Group) -> None:
    """Attach extra commands or groups to the ``gaia`` command group.

    :param cli: the root click group.

    .. versionadded:: 0.1
    """
