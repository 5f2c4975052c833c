"""``gaia plan``, ``gaia run`` and ``gaia resolve``: the commands that take a build file."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from gaia_core.cli.common import App, build_file_options, pass_app


@click.command("plan")
@build_file_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--dot", "as_dot", is_flag=True, help="Print the task graph for GraphViz (dot -Tsvg).")
@pass_app
def plan_cmd(app: App, build_file: Path, overrides: tuple[str, ...], as_json: bool, as_dot: bool) -> None:
    """Show the tasks a run would execute, in order."""
    from gaia_core.plan import build_plan

    if as_json and as_dot:
        raise click.UsageError("--json and --dot are mutually exclusive")
    plan = build_plan(app.load_build(build_file, overrides))
    if as_json:
        click.echo(plan.to_json())
    elif as_dot:
        click.echo(plan.to_dot(), nl=False)
    else:
        id_width = max((len(t.id) for t in plan.order), default=0)
        module_width = max((len(t.module) for t in plan.order), default=0)
        phase_width = max((len(t.phase) for t in plan.order), default=0)
        index_width = len(str(len(plan.order)))
        for i, t in enumerate(plan.order, 1):
            columns = f"{t.id:<{id_width}}  {t.module:<{module_width}}  {t.phase:<{phase_width}}"
            click.echo(f"{i:>{index_width}}. {columns}  {t.label}".rstrip())


@click.command("run")
@build_file_options
@click.option("--dry-run", is_flag=True, help="Print the tasks in order; run nothing and write nothing.")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    metavar="N",
    help="Run up to N independent tasks at once (0 = number of CPUs).",
)
@click.option("--no-wait", is_flag=True, help="Stop at once when another run holds the workspace.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines.")
@click.option("--summary-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="Append a Markdown table of each checkpoint's decision to PATH (\"$GITHUB_STEP_SUMMARY\").")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="Write the run's checkpoint metrics to PATH as OpenMetrics text (replaced at once; for a "
                   "node-exporter textfile collector, name it *.prom).")
@click.option("--offline", is_flag=True,
              help="Use no network: checkpoints come from the local store and mounted dir tiers only, and "
                   "uploads are queued (GAIA_OFFLINE=1 does the same).")
@pass_app
@click.pass_context
def run_cmd(
    ctx: click.Context, app: App, build_file: Path, overrides: tuple[str, ...], dry_run: bool, max_parallel: int,
    no_wait: bool, quiet: bool, offline: bool, summary_file: Path | None, metrics_file: Path | None,
) -> None:
    """Run every task of the build (one run per workspace at a time)."""
    from gaia_core import __version__
    from gaia_core.plan import build_plan
    from gaia_core.run import RunState, execute
    from gaia_core.runlock import run_lock

    click.echo(f"gaia {__version__}")
    build = app.load_build(build_file, overrides)
    build.offline = offline
    plan = build_plan(build)
    lock = contextlib.nullcontext() if dry_run else run_lock(build.workspace.build_dir, wait=not no_wait,
                                                             echo=click.echo)
    with lock:
        for lines in build.registry.pm.hook.gaia_run_preamble(build=build, dry_run=dry_run):
            for line in lines or ():
                click.echo(line)
        result = execute(plan, build, dry_run=dry_run, max_parallel=max_parallel, echo=click.echo,
                         state=RunState(quiet=quiet))
    if not dry_run:
        _write_ci_files(result, build, summary_file, metrics_file)
    if result.interrupted:
        click.echo("error: interrupted; running commands were stopped", err=True)
    elif not result.ok:
        first = next(iter(result.errors))
        click.echo(f"error: task '{first}' failed: {result.errors[first]}", err=True)
    ctx.exit(int(result.exit_code))


def _write_ci_files(result, build, summary_file: Path | None, metrics_file: Path | None) -> None:  # type: ignore[no-untyped-def]
    """The CI step summary and the metrics of the run; a file that cannot be written is a
    warning (the run's own outcome stands)."""
    from gaia_core.outcomes import append_summary, markdown_table, openmetrics, write_metrics

    status = "interrupted" if result.interrupted else ("ok" if result.ok else "failed")
    writes = []
    if summary_file is not None:
        writes.append((summary_file, lambda: append_summary(summary_file, markdown_table(
            result.outcomes, title=f"gaia run {build.path.name}", status=status, elapsed=result.elapsed))))
    if metrics_file is not None:
        writes.append((metrics_file, lambda: write_metrics(metrics_file, openmetrics(
            result.outcomes, ok=result.ok, elapsed=result.elapsed))))
    for path, write in writes:
        try:
            write()
        except OSError as exc:
            click.echo(f"WARN: could not write {path}: {exc.strerror or exc}", err=True)


@click.command("resolve")
@build_file_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.option("--no-validate", is_flag=True, help="Print the merged document even if it does not validate.")
@pass_app
def resolve_cmd(app: App, build_file: Path, overrides: tuple[str, ...], as_json: bool, no_validate: bool) -> None:
    """Print the merged build file (imports and --set applied)."""
    import tomli_w

    from gaia_core.config.loader import merge_build_file

    if no_validate:
        doc, _ = merge_build_file(build_file, overrides)
    else:
        doc = app.load_build(build_file, overrides).doc
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        click.echo(tomli_w.dumps(doc), nl=False)
