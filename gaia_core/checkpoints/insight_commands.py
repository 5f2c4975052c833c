"""``gaia checkpoints stats`` and ``gaia checkpoints report``: what the cache did, from the records.

Both read the store's journal and the shared records already cached; ``--remote`` first
fetches what the tiers share that is not cached yet (and caches it: the only thing these
commands write) and measures the bytes each tier holds now. A tier that cannot be used
is named and the command exits 5 after saying what it could.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from gaia_core.checkpoints.commands import age, check_backends, checkpoints, echo_json, engine_for, selected_points
from gaia_core.cli.common import App, build_file_options, pass_app


def _window(since: str) -> float:
    from gaia_core.checkpoints.units import parse_duration

    try:
        return time.time() - parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _collect(app: App, build_file: Path, overrides: tuple[str, ...], point_id: str | None, since: str,
             remote: bool) -> tuple[Any, float, Any, dict[str, Any], dict[str, int | None]]:
    from gaia_core.checkpoints import stats
    from gaia_core.checkpoints.history import gather, store_sizes, tiers_of
    from gaia_core.hostinfo import host_name

    start = _window(since)
    cp = engine_for(app, build_file, overrides)
    points = selected_points(cp, build_file, point_id)
    # an eviction looks back before the period: the object may be older than it
    history = gather(cp, points, since=start - stats.LOOKBACK, remote=remote)
    sizes = store_sizes(cp, tiers_of(points), remote=remote)
    result = stats.compute(history.records, since=start, point_ids=[p.id for p in points], tier_sizes=sizes,
                           local_host=host_name())
    result["ignored"] = history.ignored
    return cp, start, history, result, sizes


@checkpoints.command()
@build_file_options
@click.option("--since", default="14d", show_default=True, metavar="AGE", help="The period: 14d, 12h, 2w.")
@click.option("--remote", is_flag=True, help="Fetch the records the tiers share (only new ones) and measure each tier.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def stats(app: App, build_file: Path, overrides: tuple[str, ...], since: str, remote: bool, point_id: str | None,
          as_json: bool) -> None:
    """Hit rates per point, host and reason, time saved, misses caused by eviction, store growth
    per tier and the slowest restores, from the run records."""
    cp, _start, _history, result, _sizes = _collect(app, build_file, overrides, point_id, since, remote)
    if as_json:
        echo_json(result)
    else:
        for line in render_text(result, since):
            click.echo(line)
    check_backends(cp)


def render_text(result: dict[str, Any], since: str) -> list[str]:
    from gaia_core.checkpoints.units import human_duration, human_size

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.0f}%"

    lines = [f"checkpoints stats (last {since}): {result['runs']} runs on {result['hosts_seen']} host(s), "
             f"hit rate {rate(result['hit_rate'])}, about {human_duration(result['saved_seconds'])} of build time "
             f"saved"]
    for pid, p in result["points"].items():
        lines.append(f"- point {pid}: {p['runs']} runs, {p['hits']} hits ({rate(p['hit_rate'])}; "
                     f"{p['remote_hits']} from a remote), {p['misses']} misses, {p['refused']} refused, "
                     f"saved {human_duration(p['saved_seconds'])}")
        for reason, n in p["misses_by_reason"].items():
            lines.append(f"    miss {reason}: {n}")
        for reason, n in p["refused_by_reason"].items():
            lines.append(f"    refused {reason}: {n}")
        if p["evicted_misses"]:
            lines.append(f"    {p['evicted_misses']} miss(es) of a fingerprint whose object was there before "
                         "(evicted: raise the retention, or see `gc --dry-run`)")
    if result["hosts"]:
        lines.append("hosts:")
        width = max(len(h) for h in result["hosts"])
        for name, h in result["hosts"].items():
            lines.append(f"  {name:<{width}}  {h['system']}  {h['runs']} runs  {rate(h['hit_rate'])} hits  "
                         f"last run {age(h['last_seen'] or '')}")
    lines.append("stored:")
    for tier, t in result["tiers"].items():
        now = human_size(t["bytes"]) if t["bytes"] is not None else "unknown (--remote measures it)"
        growth = "" if t["growth"] is None else f" ({'+' if t['growth'] >= 0 else '-'}{human_size(abs(t['growth']))} " \
                                                f"over the period)"
        lines.append(f"  {tier}: {now}{growth}")
    if result["slowest_restores"]:
        lines.append("slowest restores:")
        for r in result["slowest_restores"]:
            lines.append(f"  {r['seconds']:.1f}s  {r['point']}  {r['host']}  {r['tier']}  {age(r['at'])}")
    if result["ignored"]:
        lines.append(f"{result['ignored']} record(s) were malformed and ignored")
    return lines


@checkpoints.command()
@build_file_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="PATH",
              help="Where to write the page (one self-contained HTML file).")
@click.option("--since", default="30d", show_default=True, metavar="AGE", help="The period: 30d, 2w.")
@click.option("--remote", is_flag=True, help="Fetch the records the tiers share (only new ones) and measure each tier.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@pass_app
def report(app: App, build_file: Path, overrides: tuple[str, ...], output: Path, since: str, remote: bool,
           point_id: str | None) -> None:
    """Write one self-contained HTML page (no network when opened) of the hit rate over time,
    time saved, store size per tier, recent misses with their explanation, and the hosts."""
    from gaia_core import atomic
    from gaia_core.checkpoints.htmlreport import render
    from gaia_core.hostinfo import host_name

    cp, start, history, result, sizes = _collect(app, build_file, overrides, point_id, since, remote)
    page = render(result, [r for r in history.records if r["t"] >= start],
                  title=f"gaia checkpoints: {build_file.name}", since=start, tier_sizes=sizes, local_host=host_name())
    try:
        atomic.write_bytes(output, page.encode())
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output} ({result['runs']} runs on {result['hosts_seen']} host(s) since "
               f"{time.strftime('%Y-%m-%d', time.gmtime(start))})")
    check_backends(cp)


__all__ = ["render_text", "report", "stats"]
