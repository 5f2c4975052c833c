"""``gaia checkpoints ...``: status, list, retry, keygen and verify (gc, push, pull: :mod:`.lifecycle`).

Queries (status, list) read only; commands that write say so in their help.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from gaia_core.cli.common import App, build_file_options, pass_app
from gaia_core.errors import BackendError, ConfigError, ExitCode, GaiaError


class UploadsFailed(GaiaError):
    exit_code = ExitCode.FAILED


class RemoteUnlisted(GaiaError):
    exit_code = ExitCode.BACKEND_UNAVAILABLE


class VerifyFailed(GaiaError):
    exit_code = ExitCode.FAILED


@click.group()
def checkpoints() -> None:
    """Inspect, verify and move checkpoints; replay failed uploads."""


def engine_for(app: App, build_file: Path, overrides: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.plan import build_plan

    build = app.load_build(build_file, overrides)
    build_plan(build)  # the same validation `gaia run` does (anchors planned, deps resolve)
    return Checkpoints(build)


def selected_points(cp, build_file: Path, point_id: str | None):  # type: ignore[no-untyped-def]
    points = cp.points
    if point_id is not None and point_id.strip():
        points = [p for p in points if p.id == point_id.strip()]
        if not points:
            known = ", ".join(p.id for p in cp.points) or "none"
            raise ConfigError(f"no checkpoint point '{point_id}' in {build_file} (configured: {known})")
    return points


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@checkpoints.command()
@build_file_options
@click.option("--no-remote", is_flag=True, help="Do not probe remote backends.")
@click.option("--explain", is_flag=True, help="Explain a miss input by input, against local and remote objects.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: App, build_file: Path, overrides: tuple[str, ...], no_remote: bool, explain: bool,
           as_json: bool) -> None:
    """What each checkpoint point will do on the next run, and why (reads only)."""
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status, store_status

    cp = engine_for(app, build_file, overrides)
    statuses = [point_status(cp, p, probe_remote=not no_remote) for p in cp.points]
    explanations = {}
    if explain:
        from gaia_core.checkpoints.explain import explain_miss

        explanations = {s.id: explain_miss(cp, cp.point(s.id), probe_remote=not no_remote) for s in statuses}
    store = store_status(cp)
    if as_json:
        rows = [{**s.to_dict(), **({"explain": explanations[s.id]} if explain else {})} for s in statuses]
        echo_json({**store, "points": rows})
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
        for line in (explanations.get(s.id) or {}).get("lines", []):
            click.echo(f"  {line}")
    if store["read_only"]:
        click.echo(f"read-only: nothing is uploaded or signed ({store['read_only']})")
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
    """Fingerprints stored locally (and remotely) for each point, with size, age and signer.

    Exits non-zero when a backend could not be listed."""
    from gaia_core.checkpoints.units import human_size

    cp = engine_for(app, build_file, overrides)
    points = selected_points(cp, build_file, point_id)
    index = cp.store.read_index()
    rows = []
    for p in points:
        current = cp.fingerprint(p).value
        local = []
        for obj in cp.store.objects(p.id):
            signature = obj.manifest.get("signature")
            local.append({
                "fingerprint": obj.fingerprint, "size": (obj.manifest.get("payload") or {}).get("size"),
                "created_at": obj.created_at, "age": age(obj.created_at), "current": obj.fingerprint == current,
                "format": obj.manifest.get("format"),
                "signer": signature.get("key") if isinstance(signature, dict) else "unsigned",
            })
        row: dict[str, Any] = {
            "id": p.id, "anchor": p.anchor_task, "backend": p.backend, "current_fingerprint": current or "unknown",
            "local_latest": (index["points"].get(p.id) or {}).get("latest_fingerprint"), "local": local,
        }
        if remote:
            row["remote"], row["remote_error"] = None, None
            if p.backend:
                try:
                    with cp.session(p.backend) as backend:
                        row["remote"] = backend.list_fingerprints(p.id)
                except BackendError as exc:
                    row["remote_error"] = cp.redact(p.backend, str(exc))
        rows.append(row)
    failed = [row for row in rows if row.get("remote_error")]
    if as_json:
        echo_json({"store": str(cp.store.root), "points": rows})
    elif not rows:
        click.echo("checkpoints: none configured")
    else:
        click.echo("checkpoints list:")
        for row in rows:
            click.echo(f"- id={row['id']} anchor={row['anchor']} backend={row['backend'] or '-'} "
                       f"current_fingerprint={row['current_fingerprint']} local_count={len(row['local'])}")
            for item in row["local"]:
                mark = " (current)" if item["current"] else ""
                click.echo(f"    local  {item['fingerprint']}  {human_size(item['size'])}  {item['age']}  "
                           f"signer={item['signer']}{mark}")
            if remote:
                if row["remote_error"]:
                    click.echo(f"    remote error: {row['remote_error']}")
                elif row["remote"] is None:
                    click.echo("    remote -  (no backend)")
                else:
                    for fp in row["remote"]:
                        mark = " (current)" if fp == row["current_fingerprint"] else ""
                        click.echo(f"    remote {fp}{mark}")
    if failed:
        raise RemoteUnlisted(f"{len(failed)} backend(s) could not be listed: "
                             + "; ".join(f"{r['backend']}: {r['remote_error']}" for r in failed))


@checkpoints.command()
@build_file_options
@click.option("--max", "max_", type=click.IntRange(min=0), default=None, help="Attempt at most N uploads.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def retry(app: App, build_file: Path, overrides: tuple[str, ...], max_: int | None, as_json: bool) -> None:
    """Replay queued uploads (writes the queue); exits non-zero when one still fails."""
    from gaia_core.checkpoints.remote import upload

    cp = engine_for(app, build_file, overrides)
    if cp.read_only:
        raise ConfigError(f"checkpoints are read-only here ({cp.settings.read_only_source}); nothing is uploaded")
    todo = cp.store.pending_uploads()
    if max_ is not None:
        todo = todo[:max_]
    uploaded = failed = 0
    results = []
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    for entry in todo:
        ok = upload(cp, entry["id"], entry["fingerprint"], entry["backend_ref"], entry.get("anchor_task", ""), log)
        uploaded += ok
        failed += not ok
        results.append({"id": entry["id"], "fingerprint": entry["fingerprint"], "backend": entry["backend_ref"],
                        "uploaded": ok})
    summary = {"attempted": len(todo), "uploaded": uploaded, "failed": failed, "entries": results}
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"checkpoint retry: attempted={len(todo)} uploaded={uploaded} failed={failed}")
    if failed:
        raise UploadsFailed(f"{failed} checkpoint upload(s) still failing; see `gaia checkpoints status`")


@checkpoints.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write NAME.secret and NAME.public.")
def keygen(name: str, directory: Path) -> None:
    """Write an ed25519 key pair for signing checkpoints (NAME.secret, mode 0600, and NAME.public)."""
    from gaia_core.checkpoints.signing import generate, write_key_pair

    key = generate(name)
    secret, public = write_key_pair(key, directory)
    click.echo(f"secret key: {secret} (mode 0600; point signing_key_file_env's variable at it)")
    click.echo(f"public key: {public}")
    click.echo("add to [checkpoints] of every build that should trust it:")
    click.echo(f'  trusted_public_keys = ["{key.public_line()}"]')


@checkpoints.command()
@build_file_options
@click.option("--remote", is_flag=True, help="Also check every object in each point's backend.")
@click.option("--repair", is_flag=True, help="Replace bad objects from a good copy (writes).")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def verify(app: App, build_file: Path, overrides: tuple[str, ...], remote: bool, repair: bool,
           point_id: str | None, as_json: bool) -> None:
    """Check every object's signature, size and sha256; exits non-zero when one is bad."""
    from gaia_core.checkpoints.verify import verify_points

    cp = engine_for(app, build_file, overrides)
    if repair and remote and cp.read_only:
        raise ConfigError(f"--repair of remote objects writes to the backend, and checkpoints are read-only here "
                          f"({cp.settings.read_only_source})")
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = verify_points(cp, selected_points(cp, build_file, point_id), remote=remote, repair=repair, log=log)
    if as_json:
        echo_json(report)
    else:
        for item in report["objects"]:
            click.echo(f"{item['where']:<6} {item['id']}/{item['fingerprint'][:12]}  {item['state']}"
                       + (f"  ({item['detail']})" if item.get("detail") else "")
                       + (f"  -> {item['repaired']}" if item.get("repaired") else ""))
        click.echo(f"checkpoint verify: ok={report['ok']} bad={report['bad']} repaired={report['repaired']}")
    if report["bad"] > report["repaired"]:
        raise VerifyFailed(f"{report['bad'] - report['repaired']} checkpoint object(s) are bad")


def age(created_at: str) -> str:
    from datetime import datetime

    try:
        seconds = time.time() - datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
