"""The bodies of the restore, capture and upload tasks (:mod:`.planning` places them).

The engine of a run (:meth:`Checkpoints.of`) is shared with the status preamble, so the
fingerprints, the backends found down and the warnings are the same for all of them.
Under ``auto`` every checkpoint problem (a remote down, an untrusted or unusable object, a
full disk) costs a build, never the run; ``required`` turns a miss into a failure.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from gaia_core.checkpoints.containment import UnsafeTree
from gaia_core.checkpoints.engine import Checkpoints
from gaia_core.checkpoints.entries import EntriesCorrupt, UnsafeEntry
from gaia_core.checkpoints.packs import ChunkCorrupt
from gaia_core.checkpoints.packstore import ChunkMissing
from gaia_core.checkpoints.portability import assess
from gaia_core.checkpoints.records import LOCAL, WORKSPACE
from gaia_core.errors import BackendError, CheckpointError, TaskFailed

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Units
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.fingerprint import Fingerprint
    from gaia_core.checkpoints.portability import Portability
    from gaia_core.checkpoints.store import LocalObject
    from gaia_core.run import TaskContext

_RESTORED = "checkpoints.restored"
#: what makes a local object unusable for good (it is discarded, and fetched or built again)
BAD_OBJECT = (UnsafeEntry, EntriesCorrupt, ChunkCorrupt, ChunkMissing)
_TO_UPLOAD = "checkpoints.to_upload"
#: point id -> (variant key, its manifest's ``variant_of``): what the capture stores the tree
#: built here as, because the object of the fingerprint cannot be used at this path
_VARIANT = "checkpoints.variant"
#: where ``_find`` says a local object came from
LOCAL_STORE = "local store"


class Cancelled(TaskFailed):
    pass


def degrading(step: str):  # type: ignore[no-untyped-def]
    """A store fault (full or read-only disk) costs the checkpoint, not the build, unless required."""

    def wrap(func):  # type: ignore[no-untyped-def]
        @functools.wraps(func)
        def run(ctx: TaskContext, *args: str) -> None:
            try:
                func(ctx, *args)
            except TaskFailed:
                raise
            except (CheckpointError, OSError) as exc:
                cp = Checkpoints.of(ctx.build)
                point = cp.point(args[0]) if args else None
                if point is not None and step == "restore":
                    cp.tally(point.id).decide("miss", f"store_fault:{type(exc).__name__}")
                if point is not None and step == "restore" and point.use_policy == "required":
                    raise TaskFailed(f"required checkpoint '{point.id}': {exc}") from None
                what = f"checkpoint:{point.id}" if point else "checkpoints"
                ctx.log(f"WARN: {what} {step} failed: {exc}; the build goes on")

        return run

    return wrap


def progress_for(ctx: TaskContext, what: str):  # type: ignore[no-untyped-def]
    """A progress callback for a transfer of ``total`` bytes that also ends it on Ctrl-C."""
    from gaia_core.checkpoints.progress import reporter

    def factory(total: int | None):  # type: ignore[no-untyped-def]
        report = reporter(what, total, ctx.log, quiet=ctx.state.quiet)

        def progress(n: int) -> None:
            if ctx.state.cancel.is_set():
                raise Cancelled(f"cancelled during {what}")
            report(n)

        return progress

    return factory


def _active(ctx: TaskContext, point_id: str, step: str) -> tuple[Checkpoints, Point, Anchor] | None:
    """The engine, point and anchor; None (logged) when the anchor says checkpoints don't apply."""
    cp = Checkpoints.of(ctx.build)
    point = cp.point(point_id)
    anchor = cp.anchor(point)
    inactive = anchor.inactive_reason()
    if inactive:
        if step == "restore":
            cp.tally(point.id).decide("inactive", inactive)
        ctx.log(f"checkpoint {step} skipped for {point.anchor_task} ({inactive})")
        return None
    return cp, point, anchor


def _miss(ctx: TaskContext, cp: Checkpoints, point: Point, anchor: Anchor, reason: str, fp: str) -> None:
    from gaia_core.checkpoints.records import explain_against_local

    cp.tally(point.id).decide("miss", reason, why=explain_against_local(cp, point))  # a refusal stands
    if point.use_policy == "required":
        raise TaskFailed(
            f"required checkpoint '{point.id}' for {point.anchor_task} is not available "
            f"(reason: {reason}; fingerprint {fp[:12]}); run once with use_policy = \"auto\" to create it"
        )
    _forget(ctx, cp, anchor, point)
    ctx.log(f"checkpoint:{point.id} restore miss (reason={reason}); {point.anchor_task} will run"
            + (" on the units restored before it" if point.units and point.use_policy != "off" else ""))


def _forget(ctx: TaskContext, cp: Checkpoints, anchor: Anchor, point: Point) -> None:
    """The targets no longer claim a fingerprint (the anchor runs on what is there: incremental).

    With ``units = true`` the units marker stays: the units task reads it to keep what the
    tree holds; without, the build changes units unseen, so the marker goes."""
    try:
        cp.clear_markers(anchor.targets())
        if not point.units:
            from gaia_core.checkpoints.unitstore import clear_held

            clear_held(anchor.targets())
    except CheckpointError as exc:
        ctx.log(f"WARN: {exc}")


@degrading("restore")
def run_restore(ctx: TaskContext, point_id: str) -> None:
    active = _active(ctx, point_id, "restore")
    if active is None:
        return
    cp, point, anchor = active
    fingerprint = cp.fingerprint(point, fresh=True)
    if not fingerprint.known:
        raise TaskFailed(f"checkpoint '{point.id}': the fingerprint still {fingerprint.pending} after the tasks "
                         "before the restore ran")
    fp = fingerprint.value
    assert fp is not None
    tally = cp.tally(point.id)
    tally.begin(fp, fingerprint.inputs)
    targets = anchor.targets()
    tag = f"checkpoint:{point.id}"
    if point.use_policy == "off":
        tally.decide("miss", "policy_off")
        _forget(ctx, cp, anchor, point)
        ctx.log(f"{tag} restore skipped (use_policy=off); {point.anchor_task} will run and be captured")
        return
    try:
        for removed in cp.store.reclaim_tmp():
            ctx.log(f"removed {removed} left in the store by an interrupted run")
        cp.store.read_queue(repair=True)  # a corrupt queue is set aside by runs, never by queries
    except OSError as exc:
        ctx.log(f"WARN: could not tidy the checkpoint store: {exc}")
    chosen = _choose(ctx, cp, point, anchor, fingerprint)
    if chosen is None:
        return
    obj, source, portability = chosen
    fp = obj.fingerprint
    tier = LOCAL if source == LOCAL_STORE else source
    try:
        from gaia_core.checkpoints.restore import restore

        how = restore(cp, obj, point, anchor, targets, portability, ctx.log,
                      progress_for(ctx, f"restore {point.id}")(obj.unpacked_size))
    except Cancelled:
        raise
    except UnsafeTree as exc:
        tally.decide("refused", exc.reason, tier=tier)
        ctx.log(f"WARN: {tag} {exc}")
        cp.store.discard(point.id, fp, str(exc))
        _miss(ctx, cp, point, anchor, exc.reason, fp)
        return
    except (CheckpointError, OSError) as exc:
        if isinstance(exc, BAD_OBJECT):
            tally.decide("refused", f"corrupt:{type(exc).__name__}", tier=tier)
            cp.store.discard(point.id, fp, str(exc))
        tally.decide("miss", f"restore_failed:{type(exc).__name__}", tier=tier)
        if point.use_policy == "required":
            raise TaskFailed(f"required checkpoint '{point.id}' could not be restored: {exc}") from None
        _forget(ctx, cp, anchor, point)
        ctx.log(f"WARN: {tag} could not be restored: {exc}; building instead")
        return
    decision = "hit" if tier == LOCAL else "remote_hit"
    tally.decide(decision, decision, tier=tier, manifest=obj.manifest)
    ctx.log(f"{tag} restored {fp[:12]} from {source} ({how})")
    _hold_units_of(ctx, cp, point, targets, obj.manifest)
    _mark_restored(ctx, point, anchor.skipped_tasks(), fp, f"restored from {source}")
    if source == LOCAL_STORE:
        _upload_local_hit(ctx, cp, point, fp)


def _choose(ctx: TaskContext, cp: Checkpoints, point: Point, anchor: Anchor,
            fingerprint: Fingerprint) -> tuple[LocalObject, str, Portability] | None:
    """The object to restore, where it came from and how it moves here; None when there is
    nothing to restore (the tree is in place, or a miss: both logged and tallied).

    An object that cannot be used here for a reason bound to this path or host leads to its
    variant (:mod:`.variants`); on a miss at the end of that chain the capture stores the
    tree built here as that variant, so the next run here hits."""
    from gaia_core.checkpoints.variants import MAX_DEPTH, path_bound, variant_field, variant_in_place, variant_key

    fp = fingerprint.value
    assert fp is not None
    targets = anchor.targets()
    held = variant_in_place(cp, point, targets, fp)
    if held is not None:  # known without asking a store whether the object of fp is usable here
        _in_place(ctx, cp, point, anchor, dataclasses.replace(fingerprint, value=held))
        return None
    key, bound = fp, None
    for depth in range(MAX_DEPTH + 1):
        if cp.materialized(targets, key):
            _in_place(ctx, cp, point, anchor, dataclasses.replace(fingerprint, value=key))
            return None
        obj, source, reason = _find(ctx, cp, point, key)
        if obj is not None:
            portability = assess(obj.manifest, anchor)
            if portability.usable:
                return obj, source, portability
            reason = str(portability.problem)
            if not path_bound(reason):
                cp.tally(point.id).decide("refused", reason, tier=LOCAL if source == LOCAL_STORE else source)
        if not path_bound(reason) or depth == MAX_DEPTH:
            if bound is not None and not path_bound(reason):  # no usable variant (yet): the capture makes it
                ctx.state.data.setdefault(_VARIANT, {})[point.id] = (key, variant_field(fp, bound[0], bound[2]))
                reason = reason or bound[2]
            _miss(ctx, cp, point, anchor, reason or cp.miss_reason(point, fingerprint), fp)
            return None
        assert reason is not None
        following = variant_key(key, reason, targets)
        ctx.log(f"checkpoint:{point.id} {key[:12]} in {source} cannot be used at this path ({reason}); "
                f"looking for the variant built for it, {following[:12]}")
        bound = (key, following, reason)
        key = following
    raise AssertionError("unreachable: the loop returns")


def _in_place(ctx: TaskContext, cp: Checkpoints, point: Point, anchor: Anchor, fingerprint: Fingerprint) -> None:
    """The targets already hold the object of ``fingerprint`` (the point's or its variant's)."""
    from gaia_core.checkpoints.freshness import keep_up_to_date

    fp = fingerprint.value
    assert fp is not None
    targets = anchor.targets()
    keep_up_to_date(cp, point, targets, fingerprint, ctx.log)  # inputs checked out again: placed past them
    in_store = cp.store.get(point.id, fp, quiet=True)
    cp.tally(point.id).decide("hit", "hit", tier=WORKSPACE, manifest=in_store.manifest if in_store else None)
    ctx.log(f"checkpoint:{point.id} {', '.join(str(t.path) for t in targets)} already holds {fp[:12]}; "
            "nothing to restore")
    _mark_restored(ctx, point, anchor.skipped_tasks(), fp, "already in place")
    _upload_local_hit(ctx, cp, point, fp)


def _find(ctx: TaskContext, cp: Checkpoints, point: Point, fp: str) -> tuple[LocalObject | None, str, str | None]:
    """The object to restore, where it came from, and why there is none (None: ask miss_reason).

    The point's tiers are asked at once and the first hit in their order is downloaded
    (:mod:`.tiers`); the writable tiers before it that answered get a copy in the background."""
    from gaia_core.checkpoints.tiers import DOWN, ERROR, INVALID, MISSING, UNTRUSTED, UNUSABLE, fetch
    from gaia_core.checkpoints.variants import path_bound

    obj = cp.local_object(point, fp)
    if obj is not None or not point.backends:
        return obj, LOCAL_STORE, None
    tag = f"checkpoint:{point.id}"

    def check() -> None:
        if ctx.state.cancel.is_set():
            raise Cancelled(f"cancelled while looking up {fp[:12]}")

    fetched = fetch(cp, point, fp, ctx.log, progress_for(ctx, f"download {point.id}"), check)
    found = fetched.obj is not None
    if len(point.backends) > 1:
        asked = [f"{a.ref} {a.state} ({a.seconds:.1f}s)" for a in fetched.answers if a is not None]
        ctx.log(f"{tag} tiers: {', '.join(asked)}")
    reason = None
    for answer in fetched.answers:
        if answer is None or answer.ref == fetched.ref:
            break
        if answer.state == UNTRUSTED:
            ctx.log(f"WARN: {tag} the object in {answer.ref} is not used: {answer.reason}")
        elif answer.state == UNUSABLE:
            ctx.log(f"{tag} the object in {answer.ref} cannot be used here: {answer.reason}")
        elif answer.state in (DOWN, ERROR, INVALID):
            ctx.log(f"WARN: {tag} {answer.error}" + ("" if found else "; building instead"))
        if reason is None and answer.state in (UNTRUSTED, UNUSABLE):
            reason = str(answer.reason)
            if not found and not path_bound(reason):  # the first refusal in the user's order: the record's
                refused = answer.state == UNTRUSTED or reason != "format_changed"
                cp.tally(point.id).decide("refused" if refused else "miss", reason, tier=answer.ref)
        elif reason is None and answer.state in (DOWN, ERROR, INVALID):
            reason = f"remote_error:{answer.ref}"
    for ref, message in fetched.failures:
        ctx.log(f"WARN: {tag} {message}; " + (f"{fp[:12]} came from {fetched.ref} instead" if found
                                               else "building instead"))
        if reason is None:
            reason = f"remote_error:{ref}"
    if fetched.obj is not None:
        assert fetched.ref is not None
        if fetched.backfill:
            cp.backfills.start(point, fp, fetched.backfill)
            ctx.log(f"{tag} copying {fp[:12]} into {', '.join(fetched.backfill)} (backfill) while the build goes on")
        return fetched.obj, fetched.ref, None
    failed = [a.error for a in fetched.answers if a is not None and a.state in (DOWN, ERROR, INVALID)]
    failed += [message for _, message in fetched.failures]
    if failed and point.use_policy == "required":
        cp.tally(point.id).decide("miss", reason or "remote_error")  # no tier answered
        raise TaskFailed(f"required checkpoint '{point.id}': {failed[0]}")
    missing = [a.ref for a in fetched.answers if a is not None and a.state == MISSING]
    if missing:
        ctx.log(f"{tag} {fp[:12]} is not in {', '.join(missing)} either")
    return None, ", ".join(point.backends), reason


def _mark_restored(ctx: TaskContext, point: Point, skipped: tuple[str, ...], fp: str, how: str) -> None:
    ctx.state.data.setdefault(_RESTORED, {})[point.id] = how
    for task_id in skipped:
        ctx.state.skipped[task_id] = f"checkpoint {point.id}@{fp[:12]} {how}"


@degrading("capture")
def run_capture(ctx: TaskContext, point_id: str) -> None:
    active = _active(ctx, point_id, "capture")
    if active is None:
        return
    cp, point, anchor = active
    how = ctx.state.data.get(_RESTORED, {}).get(point.id)
    if how is not None:
        ctx.log(f"checkpoint:{point.id} nothing to capture: the tree was {how}")
        return
    fp = cp.fingerprint(point)
    changed = _inputs_changed_meanwhile(ctx, cp, point, anchor, fp)
    if changed:
        _forget(ctx, cp, anchor, point)
        ctx.log(f"WARN: checkpoint:{point.id} not captured: its inputs changed while {point.anchor_task} ran "
                f"({changed}), so no run would find this tree under the fingerprint it was built from. Keep the "
                f"build out of its inputs (build in a copy or another directory), or leave what it writes out of "
                f"the fingerprint (.gitignore, fingerprint_exclude)")
        return
    keys = _unit_keys_for_capture(ctx, point, anchor) if point.units else None
    variant = ctx.state.data.get(_VARIANT, {}).get(point.id)
    try:
        from gaia_core.checkpoints.capture import capture
        from gaia_core.checkpoints.unitstore import units_field

        obj = capture(cp, point, dataclasses.replace(fp, value=variant[0]) if variant else fp, anchor,
                      anchor.targets(), ctx.log, progress_for(ctx, f"capture {point.id}")(None),
                      units=units_field(keys) if keys is not None else None,
                      build_seconds=ctx.state.task_seconds.get(point.anchor_task),
                      variant_of=variant[1] if variant else None)
    except Cancelled:
        raise
    except (CheckpointError, OSError) as exc:
        ctx.log(f"WARN: checkpoint:{point.id} capture failed: {exc}; the build goes on without a checkpoint")
        return
    if keys is not None:
        _capture_units(ctx, cp, point, anchor, obj, keys)
    if variant:
        ctx.log(f"checkpoint:{point.id} stored as {obj.fingerprint[:12]}, the variant of {fp.short()} for this "
                f"path ({variant[1]['reason']}): runs here use it from now on")
    from gaia_core.checkpoints.freshness import captured_fields

    # hook (issue 16): the marker says which inputs the built tree is up to date for
    cp.write_markers(anchor.targets(), point, obj.fingerprint, "captured", extra=captured_fields(fp))
    from gaia_core.checkpoints.lifecycle import apply_retention

    apply_retention(cp, point, ctx.log)
    if not point.backends or point.upload_policy == "off":
        ctx.log(f"checkpoint:{point.id} kept locally (upload_policy={point.upload_policy}, "
                f"backends={','.join(point.backends) or 'none'})")
    elif cp.read_only:
        ctx.log(f"checkpoint:{point.id} kept locally: read-only ({cp.settings.read_only_source})")
    elif blocked := cp.upload_blocked(point, obj.manifest):
        ctx.log(f"WARN: checkpoint:{point.id} kept locally, not uploaded: {blocked}; set "
                f"{cp.settings.signing_key_file_env or 'signing_key_file_env'} to a trusted signing key")
    else:
        _schedule_upload(ctx, cp, point, obj.fingerprint)


def _hold_units_of(ctx: TaskContext, cp: Checkpoints, point: Point, targets: list, manifest: dict) -> None:
    """After a restore of the whole tree: the units marker says the units its manifest lists."""
    from gaia_core.checkpoints.unitstore import clear_held, held_of_manifest, write_held

    try:
        if point.units:
            write_held(targets, point, held_of_manifest(manifest))
        else:
            clear_held(targets)
    except CheckpointError as exc:
        ctx.log(f"WARN: {exc}")


def _unit_keys_for_capture(ctx: TaskContext, point: Point, anchor: Anchor):  # type: ignore[no-untyped-def]
    """The unit keys of the tree just built; None (logged) when the anchor cannot tell them."""
    from gaia_core.checkpoints.unitrestore import read_units
    from gaia_core.errors import GaiaError
    from gaia_core.fingerprints import InputPending

    try:
        return read_units(anchor)[1]
    except (GaiaError, InputPending) as exc:
        ctx.log(f"WARN: checkpoint:{point.id} units not captured: {exc}")
        return None


def _capture_units(ctx: TaskContext, cp: Checkpoints, point: Point, anchor: Anchor, obj: LocalObject,
                   keys: dict) -> None:
    """Each unit of the captured tree as its own object; the marker says the tree holds them."""
    from gaia_core.checkpoints.unitcapture import capture_units
    from gaia_core.checkpoints.unitstore import write_held

    try:
        capture_units(cp, point, anchor, obj, keys, ctx.log)
        write_held(anchor.targets(), point, {n: (k.key, tuple(k.unit.paths)) for n, k in keys.items()
                                             if k.key is not None})
    except Cancelled:
        raise
    except (CheckpointError, OSError) as exc:
        ctx.log(f"WARN: checkpoint:{point.id} units not captured: {exc}")


@degrading("units")
def run_units(ctx: TaskContext, point_id: str) -> None:
    """Before the anchor runs after a miss of the whole tree: restore the stored units
    (:mod:`.unitrestore`); the anchor builds the rest."""
    active = _active(ctx, point_id, "units restore")
    if active is None:
        return
    cp, point, anchor = active
    how = ctx.state.data.get(_RESTORED, {}).get(point.id)
    if how is not None:
        ctx.log(f"checkpoint:{point.id} units: nothing to restore, the whole tree was {how}")
        return
    from gaia_core.checkpoints.restore import tidy
    from gaia_core.checkpoints.unitrestore import read_units, restore_units
    from gaia_core.errors import ConfigError
    from gaia_core.fingerprints import InputPending

    spec = None
    try:
        tidy(anchor.targets(), ctx.log)  # before the units are read from the tree (Buildroot's .config)
        read = read_units(anchor)
        spec = read[0]
        restore_units(cp, point, anchor, cp.fingerprint(point).newest_input_ns, ctx.log,
                      reuse=point.use_policy != "off", read=read)
    except (Cancelled, ConfigError):
        raise
    except (CheckpointError, OSError, InputPending) as exc:
        _clear_units(ctx, point, anchor, spec, exc)


def _clear_units(ctx: TaskContext, point: Point, anchor: Anchor, spec: Units | None, failure: Exception) -> None:
    """After a failed restore of units the tree may hold units built with other inputs,
    which the anchor's build (make) would take as made: it is left as a clean build finds
    it, or the run stops (correct, or not used)."""
    from gaia_core.checkpoints.unitrestore import clear_units

    what = "every unit and what the build assembles" if spec is not None else "what a clean build does not find"
    try:
        removed = clear_units(point, anchor, spec)
    except (CheckpointError, OSError) as exc:
        where = ", ".join(str(t.path) for t in anchor.targets())
        raise TaskFailed(f"checkpoint:{point.id} units could not be restored ({failure}), and the tree could not "
                         f"be cleared for a full build: {exc}; remove {where} and run again") from None
    ctx.log(f"WARN: checkpoint:{point.id} units could not be restored: {failure}; removed {what} ({removed} "
            f"path(s)) and the units marker: {point.anchor_task} builds every unit")


def _inputs_changed_meanwhile(ctx: TaskContext, cp: Checkpoints, point: Point, anchor: Anchor,
                              before: Fingerprint) -> str | None:
    """What differs between the inputs before the anchor ran and now (None when nothing does):
    a build that writes into its inputs (automake regenerating ``configure``) or an edit made
    during the build would file the tree under a fingerprint no run computes."""
    from gaia_core.checkpoints.fingerprint import compute
    from gaia_core.checkpoints.inputdiff import input_changes, summary

    if not before.known:
        return None
    after = compute(ctx.build, point, anchor)
    if not after.known or after.value == before.value:
        return None
    return summary(input_changes(before.inputs, after.inputs)) or "the fingerprint differs"


def _schedule_upload(ctx: TaskContext, cp: Checkpoints, point: Point, fp: str,
                     tiers: list[str] | None = None) -> None:
    """Upload to every writable tier (``tiers``: these of them), each its own queue entry:
    ``always`` now, ``on_success`` in ``checkpoints.upload``. Offline, the tiers that need
    the network are queued for ``gaia checkpoints retry`` instead."""
    from gaia_core.checkpoints.remote import upload

    tiers = cp.writable_tiers(point) if tiers is None else tiers
    if cp.offline:
        queued = [ref for ref in tiers if cp.backend(ref).needs_network]
        for ref in queued:
            cp.store.update_queue(point.id, fp, ref, point.anchor_task, state="pending",
                                  last_error=f"not attempted offline ({cp.offline_source})")
        if queued:
            ctx.log(f"checkpoint:{point.id} queued for {', '.join(queued)} (offline): `gaia checkpoints retry` "
                    "uploads it")
        tiers = [ref for ref in tiers if ref not in queued]
    if not tiers:
        return
    if point.upload_policy == "always":
        for ref in tiers:
            upload(cp, point.id, fp, ref, point.anchor_task, ctx.log, progress_for(ctx, f"upload {point.id}"))
    else:
        ctx.state.data.setdefault(_TO_UPLOAD, []).append((point.id, tiers))
        ctx.log(f"checkpoint:{point.id} will be uploaded to {', '.join(tiers)} once the run succeeds")


def _upload_local_hit(ctx: TaskContext, cp: Checkpoints, point: Point, fp: str) -> None:
    """A checkpoint used from the local store reaches every writable tier too, unless it already has it."""
    tiers = cp.writable_tiers(point)
    if not tiers or point.upload_policy == "off":
        return
    obj = cp.store.get(point.id, fp)
    if obj is None or cp.upload_blocked(point, obj.manifest):
        return
    done = {e.get("backend_ref") for e in cp.store.read_queue()
            if e.get("state") == "uploaded" and e.get("fingerprint") == fp and e.get("id") == point.id}
    from gaia_core.backends import object_key
    from gaia_core.checkpoints.engine import NotUsedOffline
    from gaia_core.checkpoints.manifest import manifest_name, signer_of

    todo = []
    for ref in tiers:
        if ref in done:
            continue
        try:
            with cp.session(ref) as backend:
                there = backend.exists(object_key(point.id, fp, manifest_name(signer_of(obj.manifest))))
        except NotUsedOffline:
            there = False
        except BackendError as exc:
            there = False
            ctx.log(f"WARN: checkpoint:{point.id} could not ask whether {fp[:12]} is there: {cp.redact(ref, str(exc))}")
        if there:
            ctx.log(f"checkpoint:{point.id} {fp[:12]} is already in {ref}")
            cp.store.update_queue(point.id, fp, ref, point.anchor_task, state="uploaded", last_error=None)
        else:
            todo.append(ref)
    if todo:
        _schedule_upload(ctx, cp, point, fp, todo)


@degrading("upload")
def run_uploads(ctx: TaskContext) -> None:
    from gaia_core.checkpoints.remote import upload

    cp = Checkpoints.of(ctx.build)
    for point_id, tiers in ctx.state.data.get(_TO_UPLOAD, []):
        point = cp.point(point_id)
        fp = cp.fingerprint(point).value
        assert fp is not None
        for ref in tiers:
            upload(cp, point.id, fp, ref, point.anchor_task, ctx.log, progress_for(ctx, f"upload {point.id}"))
