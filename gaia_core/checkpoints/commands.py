"""``gaia checkpoints ...``: status, list, retry, keygen, verify, gc, push and pull.

The work is done in :mod:`.status`, :mod:`.verify`, :mod:`.lifecycle` and :mod:`.remote`;
this module parses options and renders. Queries (status, list) read only; commands that
write say so in their help.
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


class PullFailed(GaiaError):
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
        from gaia_core.checkpoints.explain import explain_miss, explain_units

        explanations = {s.id: explain_miss(cp, cp.point(s.id), probe_remote=not no_remote) for s in statuses}
        for s in statuses:
            if s.units is not None:
                explanations[s.id]["units"] = explain_units(cp, cp.point(s.id), probe_remote=not no_remote)
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
        if s.will_upload_reason:
            click.echo(f"  no upload after a rebuild: {s.will_upload_reason}")
        current = s.upload_queue.get("current")
        if current and current.get("state") != "uploaded":
            click.echo(f"  upload {current['state']} to {current['backend_ref']} after {current['attempts']} "
                       f"attempt(s): {current.get('last_error') or 'waiting'}")
        for line in (explanations.get(s.id) or {}).get("lines", []):
            click.echo(f"  {line}")
        for line in ((explanations.get(s.id) or {}).get("units") or {}).get("lines", []):
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
    from gaia_core.checkpoints.status import remote_objects
    from gaia_core.checkpoints.units import human_size
    from gaia_core.checkpoints.unitstatus import local_unit_rows, remote_unit_rows

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
                "fingerprint": obj.fingerprint, "size": (obj.manifest.get("tree") or {}).get("packed"),
                "created_at": obj.created_at, "age": age(obj.created_at), "current": obj.fingerprint == current,
                "format": obj.manifest.get("format"),
                "signer": signature.get("key") if isinstance(signature, dict) else "unsigned",
                "units": len(obj.manifest.get("units") or {}),
            })
        row: dict[str, Any] = {
            "id": p.id, "anchor": p.anchor_task, "backend": p.backend, "current_fingerprint": current or "unknown",
            "local_latest": (index["points"].get(p.id) or {}).get("latest_fingerprint"), "local": local,
            "local_units": local_unit_rows(cp, p),
        }
        if remote:
            row["remote"], row["remote_error"] = None, None
            if p.backend:
                try:
                    with cp.session(p.backend) as backend:
                        row["remote"] = [{**o, "age": age(o["created_at"] or ""),
                                          "current": o["fingerprint"] == current}
                                         for o in remote_objects(cp, backend, p)]
                        row["remote_units"] = [{**u, "age": age(u["created_at"] or "")}
                                               for u in remote_unit_rows(cp, backend, p)]
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
                units = f"  units={item['units']}" if item["units"] else ""
                click.echo(f"    local  {item['fingerprint']}  {human_size(item['size'])}  {item['age']}  "
                           f"signer={item['signer']}{units}{mark}")
            for unit in row["local_units"]:
                listed = ",".join(fp[:12] for fp in unit["listed_by"]) or "no checkpoint (gc removes it)"
                click.echo(f"    unit   {unit['name']} {unit['label']}".rstrip() + f"  {unit['key'][:12]}  "
                           f"{human_size(unit['size'])}  {age(unit['created_at'])}  signer={unit['signer']}  "
                           f"in {listed}")
            if remote:
                if row["remote_error"]:
                    click.echo(f"    remote error: {row['remote_error']}")
                elif row["remote"] is None:
                    click.echo("    remote -  (no backend)")
                else:
                    for item in row["remote"]:
                        mark = " (current)" if item["current"] else ""
                        trust = item["trust"] + (f": {item['why']}" if item.get("why") else "")
                        click.echo(f"    remote {item['fingerprint']}  {human_size(item['size'])}  {item['age']}  "
                                   f"signer={item['signer']} ({trust}){mark}")
                    for unit in row.get("remote_units") or []:
                        trust = unit["trust"] + (f": {unit['why']}" if unit.get("why") else "")
                        click.echo(f"    remote unit {unit['name']} {unit['label']}".rstrip() + f"  {unit['key'][:12]}"
                                   f"  {human_size(unit['size'])}  {unit['age']}  signer={unit['signer']} ({trust})")
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
    """Check every object's signature, entries and chunks; exits non-zero when one is bad or untrusted."""
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
        click.echo(f"checkpoint verify: ok={report['ok']} bad={report['bad']} untrusted={report['untrusted']} "
                   f"repaired={report['repaired']}")
    problems = []
    if report["bad"] > report["repaired"]:
        problems.append(f"{report['bad'] - report['repaired']} checkpoint object(s) are bad")
    if report["untrusted"]:
        problems.append(f"{report['untrusted']} remote object(s) are not signed by a trusted key: no run here "
                        "uses them (add their signer to trusted_public_keys, or delete them from the backend)")
    problems += [f"could not be checked: {error}" for error in report.get("errors", [])]
    if problems:
        raise VerifyFailed("; ".join(problems))


def _retention(cp, keep_last: int | None, max_age: str | None, max_size: str | None):  # type: ignore[no-untyped-def]
    """The command line's rules, else the ``[checkpoints]`` defaults."""
    from gaia_core.checkpoints.config import Retention
    from gaia_core.checkpoints.units import parse_duration, parse_size

    if keep_last is None and max_age is None and max_size is None:
        return cp.settings.retention
    try:
        return Retention(keep_last=keep_last, max_age=parse_duration(max_age) if max_age else None,
                         max_size=parse_size(max_size) if max_size else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _progress(what: str, quiet: bool):  # type: ignore[no-untyped-def]
    """Progress of a command's transfers, on stderr (so never inside --json output)."""
    from gaia_core.checkpoints.progress import reporter

    return None if quiet else (lambda total: reporter(what, total))


@checkpoints.command()
@build_file_options
@click.option("--remote", is_flag=True, help="Also collect in each point's backend.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--keep-last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the N newest objects of each point (the current one among them).")
@click.option("--max-age", default=None, metavar="AGE", help="Remove objects created more than AGE ago (30d, 12h).")
@click.option("--max-size", default=None, metavar="SIZE", help="Remove the oldest until the rest fit (50GiB).")
@click.option("--grace", default="1h", show_default=True, metavar="AGE",
              help="Never remove a remote object younger than this (readers may be downloading it).")
@click.option("--dry-run", is_flag=True, help="List what would go and the bytes it frees; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def gc(app: App, build_file: Path, overrides: tuple[str, ...], remote: bool, point_id: str | None,
       keep_last: int | None, max_age: str | None, max_size: str | None, grace: str, dry_run: bool,
       as_json: bool) -> None:
    """Remove old objects of this build's points, and the litter of killed transfers (writes).

    Never the current fingerprint of a point, a local object a concurrent run holds, or a
    remote object younger than --grace. Without rules, the [checkpoints] retention applies."""
    from gaia_core.checkpoints.lifecycle import gc_local, gc_remote
    from gaia_core.checkpoints.units import human_size, parse_duration

    cp = engine_for(app, build_file, overrides)
    if remote and cp.read_only:
        raise ConfigError(f"gc --remote deletes from backends, and checkpoints are read-only here "
                          f"({cp.settings.read_only_source})")
    try:
        grace_s = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    rules = _retention(cp, keep_last, max_age, max_size)
    points = selected_points(cp, build_file, point_id)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = {"dry_run": dry_run, "local": gc_local(cp, points, rules, dry_run=dry_run, log=log, grace=grace_s)}
    if remote:
        report["remote"] = gc_remote(cp, points, rules, grace=grace_s, dry_run=dry_run, log=log)
    if as_json:
        echo_json(report)
    else:
        verb = "would remove" if dry_run else "removed"
        for where, part in report.items():
            if where == "dry_run":
                continue
            for obj in part["objects"]:
                state = f"kept ({obj['kept']})" if obj["kept"] else verb
                click.echo(f"{obj['where']:<12} {obj['point']}/{obj['fingerprint'][:12]}  "
                           f"{human_size(obj['size'])}  {state}")
            for sweep in [part["packs"]] if "packs" in part else list(part.get("backends", {}).values()):
                for item in sweep.get("units_removed", []):
                    click.echo(f"{'unit':<12} {item}  {verb} (no checkpoint kept lists it)")
            for item in part["litter"]:
                click.echo(f"{'litter':<12} {item}  {verb}")
            for error in part.get("errors", []):
                click.echo(f"error: {error}", err=True)
            click.echo(f"checkpoint gc ({where}): {verb} {sum(not o['kept'] for o in part['objects'])} object(s), "
                       f"{human_size(part['freed'])}; {len(part['litter'])} litter item(s)")
    if remote and report["remote"]["errors"]:
        raise RemoteUnlisted("; ".join(report["remote"]["errors"]))


@checkpoints.command()
@build_file_options
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--all", "everything", is_flag=True, help="Every local object of the points, not only the current.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def push(app: App, build_file: Path, overrides: tuple[str, ...], point_id: str | None, everything: bool,
         quiet: bool, as_json: bool) -> None:
    """Upload local objects the backend lacks (the current fingerprint by default) (writes)."""
    from gaia_core.checkpoints.lifecycle import push as push_objects

    cp = engine_for(app, build_file, overrides)
    if cp.read_only:
        raise ConfigError(f"push writes to backends, and checkpoints are read-only here ({cp.settings.read_only_source})")
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = push_objects(cp, selected_points(cp, build_file, point_id), everything=everything, log=log,
                          progress_factory=_progress("push", quiet))
    if as_json:
        echo_json(report)
    else:
        for row in report["results"]:
            state = "pushed" if row["pushed"] else f"not pushed: {row['why']}"
            click.echo(f"{row['id']}/{(row['fingerprint'] or 'unknown')[:12]}  {state}")
    if report["failed"]:
        raise UploadsFailed(f"{report['failed']} push(es) failed; they are queued for `gaia checkpoints retry`")


@checkpoints.command()
@build_file_options
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def pull(app: App, build_file: Path, overrides: tuple[str, ...], point_id: str | None, quiet: bool,
         as_json: bool) -> None:
    """Download the current fingerprint of each point into the local store, without building."""
    from gaia_core.checkpoints.lifecycle import pull as pull_objects

    cp = engine_for(app, build_file, overrides)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report = pull_objects(cp, selected_points(cp, build_file, point_id), log=log,
                          progress_factory=_progress("pull", quiet))
    if as_json:
        echo_json(report)
    else:
        for row in report["results"]:
            state = "pulled" if row["pulled"] and not row.get("why") else (row.get("why") or "pulled")
            click.echo(f"{row['id']}/{row['fingerprint'][:12]}  {state}")
    if report["failed"]:
        raise PullFailed(f"{report['failed']} point(s) could not be pulled")


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
