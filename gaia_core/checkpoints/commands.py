"""``gaia checkpoints status|list|retry``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from gaia_core.cli.common import App, build_file_options, pass_app
from gaia_core.errors import BackendError, ConfigError, ExitCode, GaiaError


class UploadsFailed(GaiaError):
    exit_code = ExitCode.FAILED


@click.group()
def checkpoints() -> None:
    """Inspect the checkpoint store and replay failed uploads."""


def _engine(app: App, build_file: Path, overrides: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.plan import build_plan

    build = app.load_build(build_file, overrides)
    build_plan(build)  # the same validation `gaia run` does (anchors planned, deps resolve)
    return Checkpoints(build)


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@checkpoints.command()
@build_file_options
@click.option("--no-remote", is_flag=True, help="Do not probe remote backends.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: App, build_file: Path, overrides: tuple[str, ...], no_remote: bool, as_json: bool) -> None:
    """What each checkpoint point will do on the next run, and why."""
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status, store_status

    cp = _engine(app, build_file, overrides)
    statuses = [point_status(cp, p, probe_remote=not no_remote) for p in cp.points]
    store = store_status(cp)
    if as_json:
        _echo_json({**store, "points": [s.to_dict() for s in statuses]})
        return
    if not statuses:
        click.echo("checkpoints: none configured")
        return
    click.echo("checkpoints status:")
    for s in statuses:
        click.echo(s.line())
        current = s.upload_queue.get("current")
        if current and current.get("state") != "uploaded":
            click.echo(f"  upload {current['state']} to {current['backend_ref']} after {current['attempts']} "
                       f"attempt(s): {current.get('last_error') or 'waiting'}")
    if store["lock_holder"]:
        click.echo(f"store lock held by {describe_holder(store['lock_holder'])}")


@checkpoints.command(name="list")
@build_file_options
@click.option("--remote", is_flag=True, help="Also list the fingerprints in each point's backend.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_(app: App, build_file: Path, overrides: tuple[str, ...], remote: bool, point_id: str | None,
          as_json: bool) -> None:
    """Fingerprints stored locally (and remotely) for each point, with size and age."""
    from gaia_core.checkpoints.engine import human_size

    cp = _engine(app, build_file, overrides)
    points = cp.points
    if point_id is not None and point_id.strip():
        points = [p for p in points if p.id == point_id.strip()]
        if not points:
            known = ", ".join(p.id for p in cp.points) or "none"
            raise ConfigError(f"no checkpoint point '{point_id}' in {build_file} (configured: {known})")
    index = cp.store.read_index()
    rows = []
    for p in points:
        current = cp.fingerprint(p).value
        local = []
        for obj in cp.store.objects(p.id):
            created = str(obj.manifest.get("created_at", ""))
            local.append({
                "fingerprint": obj.fingerprint, "size": (obj.manifest.get("payload") or {}).get("size"),
                "created_at": created, "age": _age(created), "current": obj.fingerprint == current,
            })
        row = {
            "id": p.id, "anchor": p.anchor_task, "backend": p.backend, "current_fingerprint": current,
            "local_latest": (index["points"].get(p.id) or {}).get("latest_fingerprint"), "local": local,
        }
        if remote:
            row["remote"], row["remote_error"] = None, None
            if p.backend:
                backend = None
                try:
                    backend = cp.backend(p.backend)
                    with backend:
                        row["remote"] = backend.list_fingerprints(p.id)
                except BackendError as exc:
                    row["remote_error"] = backend.redact(str(exc)) if backend else str(exc)
        rows.append(row)
    if as_json:
        _echo_json({"store": str(cp.store.root), "points": rows})
        return
    if not rows:
        click.echo("checkpoints: none configured")
        return
    click.echo("checkpoints list:")
    for row in rows:
        click.echo(f"- id={row['id']} anchor={row['anchor']} backend={row['backend'] or '-'} "
                   f"current_fingerprint={row['current_fingerprint']} local_count={len(row['local'])}")
        for item in row["local"]:
            mark = " (current)" if item["current"] else ""
            click.echo(f"    local  {item['fingerprint']}  {human_size(item['size'])}  {item['age']}{mark}")
        if remote:
            if row["remote_error"]:
                click.echo(f"    remote error: {row['remote_error']}")
            elif row["remote"] is None:
                click.echo("    remote -  (no backend)")
            else:
                for fp in row["remote"]:
                    mark = " (current)" if fp == row["current_fingerprint"] else ""
                    click.echo(f"    remote {fp}{mark}")


@checkpoints.command()
@build_file_options
@click.option("--max", "max_", type=click.IntRange(min=0), default=None, help="Attempt at most N uploads.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def retry(app: App, build_file: Path, overrides: tuple[str, ...], max_: int | None, as_json: bool) -> None:
    """Replay queued uploads; exits non-zero when one still fails."""
    cp = _engine(app, build_file, overrides)
    todo = cp.store.pending_uploads()
    if max_ is not None:
        todo = todo[:max_]
    uploaded = failed = 0
    results = []
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    for entry in todo:
        ok = cp.upload(entry["id"], entry["fingerprint"], entry["backend_ref"], entry.get("anchor_task", ""), log)
        uploaded += ok
        failed += not ok
        results.append({"id": entry["id"], "fingerprint": entry["fingerprint"], "backend": entry["backend_ref"],
                        "uploaded": ok})
    summary = {"attempted": len(todo), "uploaded": uploaded, "failed": failed, "entries": results}
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"checkpoint retry: attempted={len(todo)} uploaded={uploaded} failed={failed}")
    if failed:
        raise UploadsFailed(f"{failed} checkpoint upload(s) still failing; see `gaia checkpoints status`")


def _age(created_at: str) -> str:
    from datetime import datetime

    try:
        seconds = time.time() - datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
