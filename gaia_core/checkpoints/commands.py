"""``gaia checkpoints ...``: status, list, retry, keygen, verify, gc, push and pull.

The work is done in :mod:`.status`, :mod:`.verify`, :mod:`.lifecycle` and :mod:`.remote`;
this module parses options and renders. Queries (status, list) read only; commands that
write say so in their help.

One contract for a backend that cannot be used, in every command that needs one: the
command does what it can, says why once, and exits 5 (:class:`BackendsUnavailable`).
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


class BackendsUnavailable(GaiaError):
    """A backend the command needed could not be used (exit 5), whatever else failed too."""

    exit_code = ExitCode.BACKEND_UNAVAILABLE


def check_backends(cp, *, reasons_shown: bool = False, also: str = "") -> None:  # type: ignore[no-untyped-def]
    """Exit 5 when a backend could not be used: each one named once, with its reason
    unless the command's output above gave it (``reasons_shown``); ``also`` says what
    else went wrong."""
    from gaia_core.checkpoints.engine import unavailable

    if not cp.unavailable:
        return
    lines = [f"backend {ref} is unavailable (see above)" if reasons_shown else unavailable(ref, reason)
             for ref, reason in list(cp.unavailable.items())]
    raise BackendsUnavailable("\n".join(lines + ([also] if also else [])))


class VerifyFailed(GaiaError):
    exit_code = ExitCode.FAILED


class PullFailed(GaiaError):
    exit_code = ExitCode.FAILED


@click.group()
def checkpoints() -> None:
    """Inspect, verify and move checkpoints; replay failed uploads."""


def engine_for(app: App, build_file: Path, overrides: tuple[str, ...], *,  # type: ignore[no-untyped-def]
               contact_down: bool = True):
    """The engine of a command. ``contact_down``: the command exists to talk to the stores
    (list, retry, verify, gc, push, pull), so it contacts tiers a run found down too (and
    the memory follows what they answer); ``status`` says what the next run will do, and a
    run skips them."""
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.plan import build_plan

    build = app.load_build(build_file, overrides)
    build_plan(build)  # the same validation `gaia run` does (anchors planned, deps resolve)
    cp = Checkpoints(build)
    if contact_down:
        cp.contact_down_tiers()
    return cp


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
@click.option("--against", default=None, metavar="HOST|FINGERPRINT",
              help="Explain against what another host last had (from the run records) or a given object "
                   "(a fingerprint or a unique prefix of one); implies --explain.")
@click.option("--recheck", is_flag=True,
              help="Contact tiers an earlier run found down too (and forget it when they answer).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def status(app: App, build_file: Path, overrides: tuple[str, ...], no_remote: bool, explain: bool,
           against: str | None, recheck: bool, as_json: bool) -> None:
    """What each checkpoint point will do on the next run, and why (reads the store only).

    Every tier of a point is asked, and waited for (at most its probe budget)."""
    from gaia_core.checkpoints.lock import describe_holder
    from gaia_core.checkpoints.status import point_status, store_status

    cp = engine_for(app, build_file, overrides, contact_down=recheck)
    statuses = [point_status(cp, p, probe_remote=not no_remote, every_tier=True) for p in cp.points]
    explanations = {}
    explain = explain or against is not None
    if against is not None:
        from gaia_core.checkpoints.against import explain_against

        explanations = {s.id: explain_against(cp, cp.point(s.id), against, remote=not no_remote) for s in statuses}
    elif explain:
        from gaia_core.checkpoints.explain import explain_miss, explain_units

        explanations = {s.id: explain_miss(cp, cp.point(s.id), probe_remote=not no_remote) for s in statuses}
        for s in statuses:
            if s.units is not None:
                explanations[s.id]["units"] = explain_units(cp, cp.point(s.id), probe_remote=not no_remote)
    store = store_status(cp)
    if as_json:
        rows = [{**s.to_dict(), **({"explain": explanations[s.id]} if explain else {})} for s in statuses]
        echo_json({**store, "points": rows})
        check_backends(cp)
        return
    if not statuses:
        click.echo("checkpoints: none configured")
        return
    click.echo("checkpoints status:")
    for s in statuses:
        click.echo(s.line())
        for line in s.tier_lines():
            click.echo(line)
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
    if cp.offline:
        from gaia_core.checkpoints.engine import offline_notice

        click.echo(offline_notice(cp).strip())
    if store["lock_holder"]:
        click.echo(f"store lock held by {describe_holder(store['lock_holder'])}")
    check_backends(cp)


@checkpoints.command(name="list")
@build_file_options
@click.option("--remote", is_flag=True, help="Also list the fingerprints in each tier of each point.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_(app: App, build_file: Path, overrides: tuple[str, ...], remote: bool, point_id: str | None,
          as_json: bool) -> None:
    """Fingerprints stored locally (and in each tier) for each point, with size, age and signer.

    Exits non-zero when a backend could not be listed."""
    from gaia_core.checkpoints.engine import NotUsedOffline
    from gaia_core.checkpoints.status import remote_objects
    from gaia_core.checkpoints.units import human_size
    from gaia_core.checkpoints.unitstatus import local_unit_rows, remote_unit_rows
    from gaia_core.checkpoints.variants import root_fingerprint

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
                "created_at": obj.created_at, "age": age(obj.created_at),
                "current": current is not None and root_fingerprint(obj.manifest) == current,
                "variant_of": (obj.manifest.get("variant_of") or {}).get("fingerprint"),
                "format": obj.manifest.get("format"),
                "signer": signature.get("key") if isinstance(signature, dict) else "unsigned",
                "units": len(obj.manifest.get("units") or {}),
            })
        row: dict[str, Any] = {
            "id": p.id, "anchor": p.anchor_task, "backend": p.backends[0] if p.backends else None,
            "backends": list(p.backends), "current_fingerprint": current or "unknown",
            "local_latest": (index["points"].get(p.id) or {}).get("latest_fingerprint"), "local": local,
            "local_units": local_unit_rows(cp, p),
        }
        if remote:
            row["remote"], row["remote_error"], row["remote_errors"] = None, None, {}
            if p.backends:
                row["remote"] = []
                for ref in p.backends:
                    try:
                        with cp.session(ref) as backend:
                            row["remote"] += [{**o, "tier": ref, "age": age(o["created_at"] or ""),
                                               "current": o["fingerprint"] == current}
                                              for o in remote_objects(cp, backend, p)]
                            row.setdefault("remote_units", []).extend(
                                {**u, "tier": ref, "age": age(u["created_at"] or "")}
                                for u in remote_unit_rows(cp, backend, p))
                    except NotUsedOffline as exc:
                        row.setdefault("remote_offline", []).append(ref)
                        row["remote_errors"][ref] = str(exc)
                    except BackendError as exc:
                        row["remote_errors"][ref] = cp.redact(ref, str(exc))
                row["remote_error"] = "; ".join(row["remote_errors"].values()) or None
        rows.append(row)
    if as_json:
        echo_json({"store": str(cp.store.root), "points": rows})
    elif not rows:
        click.echo("checkpoints: none configured")
    else:
        click.echo("checkpoints list:")
        for row in rows:
            click.echo(f"- id={row['id']} anchor={row['anchor']} backends={','.join(row['backends']) or '-'} "
                       f"current_fingerprint={row['current_fingerprint']} local_count={len(row['local'])}")
            for item in row["local"]:
                mark = (f" (variant of {item['variant_of'][:12]})" if item["variant_of"] else "") + \
                    (" (current)" if item["current"] else "")
                units = f"  units={item['units']}" if item["units"] else ""
                click.echo(f"    local  {item['fingerprint']}  {human_size(item['size'])}  {item['age']}  "
                           f"signer={item['signer']}{units}{mark}")
            for unit in row["local_units"]:
                listed = ",".join(fp[:12] for fp in unit["listed_by"]) or "no checkpoint (gc removes it)"
                click.echo(f"    unit   {unit['name']} {unit['label']}".rstrip() + f"  {unit['key'][:12]}  "
                           f"{human_size(unit['size'])}  {age(unit['created_at'])}  signer={unit['signer']}  "
                           f"in {listed}")
            if remote:
                for ref in row.get("remote_errors") or {}:
                    why = "not used offline" if ref in row.get("remote_offline", []) else "unavailable"
                    click.echo(f"    remote -  (backend {ref} {why})")
                if row["remote"] is None:
                    click.echo("    remote -  (no backend)")
                for item in row["remote"] or []:
                    mark = " (current)" if item["current"] else ""
                    trust = item["trust"] + (f": {item['why']}" if item.get("why") else "")
                    tier = f"  tier={item['tier']}" if len(row["backends"]) > 1 else ""
                    click.echo(f"    remote {item['fingerprint']}  {human_size(item['size'])}  {item['age']}  "
                               f"signer={item['signer']} ({trust}){mark}{tier}")
                for unit in row.get("remote_units") or []:
                    trust = unit["trust"] + (f": {unit['why']}" if unit.get("why") else "")
                    tier = f"  tier={unit['tier']}" if len(row["backends"]) > 1 else ""
                    click.echo(f"    remote unit {unit['name']} {unit['label']}".rstrip() + f"  {unit['key'][:12]}"
                               f"  {human_size(unit['size'])}  {unit['age']}  signer={unit['signer']} ({trust}){tier}")
    check_backends(cp)


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
    left_offline = [e for e in todo if cp.offline and _needs_network(cp, e["backend_ref"])]
    todo = [e for e in todo if e not in left_offline]
    if left_offline:
        click.echo(f"offline ({cp.offline_source}): {len(left_offline)} upload(s) to tiers that need the network "
                   "stay queued", err=as_json)
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
    still = f"{failed} checkpoint upload(s) still failing; see `gaia checkpoints status`"
    check_backends(cp, reasons_shown=True, also=still if failed else "")
    if failed:
        raise UploadsFailed(still)


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
    check_backends(cp, also="; ".join(problems))
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
@click.option("--remote", is_flag=True, help="Also collect in every tier of each point, tier by tier.")
@click.option("--tier", "tier_names", multiple=True, metavar="NAME",
              help="Collect only in this tier (kind:name, a unique name, or 'local'); repeatable.")
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--keep-last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the N most recently used objects of each point (the current one among them).")
@click.option("--max-age", default=None, metavar="AGE",
              help="Remove objects no run used for AGE (30d, 12h); created, where no use is recorded.")
@click.option("--max-size", default=None, metavar="SIZE",
              help="Remove the least recently used until the rest fit (50GiB).")
@click.option("--grace", default="1h", show_default=True, metavar="AGE",
              help="Never remove a remote object younger than this (readers may be downloading it).")
@click.option("--dry-run", is_flag=True, help="List what would go and the bytes it frees; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def gc(app: App, build_file: Path, overrides: tuple[str, ...], remote: bool, tier_names: tuple[str, ...],
       point_id: str | None, keep_last: int | None, max_age: str | None, max_size: str | None, grace: str,
       dry_run: bool, as_json: bool) -> None:
    """Remove the least recently used objects of this build's points, and the litter of killed
    transfers (writes).

    The local store, and with --remote every tier of the points, one after the other
    (--tier picks some); --dry-run says what each would free. Last use comes from the run
    records (the store's and, with --remote, what the tiers share); creation time where none
    is known. Never the current fingerprint of a point, a local object a concurrent run
    holds, a remote object younger than --grace, or anything in a read-only tier. Without
    rules, the [checkpoints] retention applies."""
    from gaia_core.checkpoints.lifecycle import gc_local, gc_remote
    from gaia_core.checkpoints.units import human_size, parse_duration

    cp = engine_for(app, build_file, overrides)
    points = selected_points(cp, build_file, point_id)
    local, tiers = _gc_tiers(cp, points, tier_names, remote)
    if tiers and cp.read_only:
        raise ConfigError(f"gc --remote deletes from backends, and checkpoints are read-only here "
                          f"({cp.settings.read_only_source})")
    try:
        grace_s = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    rules = _retention(cp, keep_last, max_age, max_size)
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    report: dict[str, Any] = {"dry_run": dry_run, "tiers": {}}
    if local:
        report["local"] = gc_local(cp, points, rules, dry_run=dry_run, log=log, grace=grace_s)
        report["tiers"]["local"] = {key: report["local"][key] for key in ("objects", "freed", "litter", "packs")}
    if tiers:
        report["remote"] = gc_remote(cp, points, rules, grace=grace_s, dry_run=dry_run, log=log, tiers=tiers)
        report["tiers"].update(report["remote"].pop("tiers"))
    if as_json:
        echo_json(report)
    else:
        verb = "would remove" if dry_run else "removed"
        for where, part in report["tiers"].items():
            for obj in part["objects"]:
                state = f"kept ({obj['kept']})" if obj["kept"] else verb
                used = f"used {_ago(obj['last_used'])}" if obj["last_used"] else "no recorded use"
                click.echo(f"{obj['where']:<12} {obj['point']}/{obj['fingerprint'][:12]}  "
                           f"{human_size(obj['size'])}  {used}  {state}")
            for item in (part.get("packs") or {}).get("units_removed", []):
                click.echo(f"{'unit':<12} {item}  {verb} (no checkpoint kept lists it)")
            for item in part["litter"]:
                click.echo(f"{'litter':<12} {item}  {verb}")
            if part.get("skipped"):
                click.echo(f"checkpoint gc ({where}): skipped, {part['skipped']}")
            elif part.get("error"):
                said = where in cp.unavailable  # check_backends says why, once
                click.echo(f"checkpoint gc ({where}): not collected" + ("" if said else f", {part['error']}"))
            else:
                click.echo(f"checkpoint gc ({where}): {verb} {sum(not o['kept'] for o in part['objects'])} "
                           f"object(s), {'would free' if dry_run else 'freed'} {human_size(part['freed'])}; "
                           f"{len(part['litter'])} litter item(s)")
    check_backends(cp)


def _gc_tiers(cp, points, names: tuple[str, ...],  # type: ignore[no-untyped-def]
              remote: bool) -> tuple[bool, list[str]]:
    """Whether gc collects the local store, and which tiers (in the points' order)."""
    from gaia_core.checkpoints.config import resolve_backend_ref

    chain = list(dict.fromkeys(ref for p in points for ref in p.backends))
    if not names:
        return True, chain if remote else []
    configured: dict[str, dict[str, Any]] = {}
    for ref in chain:
        kind, _, name = ref.partition(":")
        configured.setdefault(kind, {})[name] = {}
    local, picked = False, []
    for name in names:
        if name.strip() == "local":
            local = True
            continue
        ref, problem = resolve_backend_ref(name, configured)
        if problem:
            raise click.BadParameter(f"{problem.replace('is not configured', 'is no tier of these points')} "
                                     "('local' is the local store)", param_hint="--tier")
        picked.append(ref)
    return local, [ref for ref in chain if ref in picked]


@checkpoints.command()
@build_file_options
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--all", "everything", is_flag=True, help="Every local object of the points, not only the current.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def push(app: App, build_file: Path, overrides: tuple[str, ...], point_id: str | None, everything: bool,
         quiet: bool, as_json: bool) -> None:
    """Upload local objects to every writable tier that lacks them (the current fingerprint by default) (writes)."""
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
            click.echo(f"{row['id']}/{(row['fingerprint'] or 'unknown')[:12]}  {row['tier'] or '-'}  {state}")
    failed = f"{report['failed']} push(es) failed; they are queued for `gaia checkpoints retry`"
    check_backends(cp, reasons_shown=True, also=failed if report["failed"] else "")
    if report["failed"]:
        raise UploadsFailed(failed)


@checkpoints.command()
@build_file_options
@click.option("--id", "point_id", default=None, help="Only this checkpoint point.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def pull(app: App, build_file: Path, overrides: tuple[str, ...], point_id: str | None, quiet: bool,
         as_json: bool) -> None:
    """Download the current fingerprint of each point into the local store, without building.

    From the first tier that has it; the writable tiers before that one get a copy too."""
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
    failed = f"{report['failed']} point(s) could not be pulled"
    check_backends(cp, reasons_shown=True, also=failed if report["failed"] else "")
    if report["failed"]:
        raise PullFailed(failed)


def _ago(moment: float) -> str:
    seconds = time.time() - moment
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


def _needs_network(cp, ref: str) -> bool:  # type: ignore[no-untyped-def]
    return ref in cp.settings.backend_configs and cp.backend(ref).needs_network


def age(created_at: str) -> str:
    from datetime import datetime

    try:
        return _ago(datetime.fromisoformat(created_at).timestamp())
    except ValueError:
        return "?"
