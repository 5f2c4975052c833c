"""What each point will do on the next run, and why; never a guess.

``hit`` means the restore will succeed: the manifest is read and its signer,
prerequisites and relocation are checked (not the payload bytes). Before the tasks that
a fingerprint needs ran (``buildroot.fetch``), the fingerprint is ``unknown`` with what
it waits for, and the ``will_*`` fields are unknown too. Status reads only: it writes,
moves and discards nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.config import Point
from gaia_core.checkpoints.engine import Checkpoints, clock
from gaia_core.checkpoints.portability import assess
from gaia_core.checkpoints.variants import MAX_DEPTH, path_bound, variant_in_place, variant_key
from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_core.checkpoints.fingerprint import Fingerprint


@dataclasses.dataclass
class PointStatus:
    id: str
    anchor: str
    use_policy: str
    upload_policy: str
    trust_mode: str
    #: the first tier (what ``backend`` named before there were tiers), None without one
    backend: str | None
    #: the point's tiers, fastest first
    backends: list[str]
    #: per tier: ``ref``, ``read_only`` (its table), ``writable`` (by this run), ``state``
    #: (what it answered: hit, missing, untrusted, unusable, invalid, down, error, offline;
    #: None when it was not asked or not waited for), ``reason``, ``error``, ``signer``,
    #: ``seconds`` (how long it took to answer) and ``down_until`` (ISO 8601 time until which
    #: runs on this host skip it; None when it is up)
    tiers: list[dict[str, Any]]
    #: where the next run takes the object from: ``local`` (the store or the tree in place),
    #: a tier's ref, or None when it builds
    tier: str | None
    fingerprint: str
    #: what the fingerprint waits for (``needs buildroot.fetch``); None when it is known
    pending: str | None
    exists: bool | None
    materialized: bool | None
    remote_exists: bool | None
    will_use: bool | None
    will_download: bool | None
    will_rebuild: bool | None
    will_upload: bool | None
    #: why a rebuild's capture would not be uploaded although the point uploads
    #: (``read_only: ...``, ``unsigned: ...``); None otherwise
    will_upload_reason: str | None
    will_fail: bool | None
    pending_upload: bool
    upload_queue: dict[str, Any]
    reason: str
    local_reason: str
    remote_error: str | None
    #: the backend could not be used (``remote_error`` says why; the command exits 5)
    remote_unavailable: bool
    inactive: str | None
    #: who signed the object the reason is about (the local one, else the remote one), used or
    #: refused: a key name, ``unsigned``, or ``-`` when there is none
    signer: str
    #: who signed the backend's object, when the backend was asked (``-`` otherwise)
    remote_signer: str
    read_only: bool
    #: ``units = true``, on a miss: what would happen to the units (:mod:`.unitstatus`)
    units: dict[str, Any] | None = None
    #: the key of the variant for this path the run uses or stores, when the object of the
    #: fingerprint cannot be used here (:mod:`.variants`); None otherwise
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        def b(v: bool | None) -> str:
            return "unknown" if v is None else str(v).lower()

        parts = [
            f"id={self.id}", f"anchor={self.anchor}", f"use_policy={self.use_policy}",
            f"upload_policy={self.upload_policy}", f"backends={','.join(self.backends) or '-'}",
            f"tier={self.tier or '-'}", f"exists={b(self.exists)}",
            f"remote_exists={b(self.remote_exists)}", f"will_use={b(self.will_use)}",
            f"will_download={b(self.will_download)}", f"will_rebuild={b(self.will_rebuild)}",
            f"will_upload={b(self.will_upload)}", f"pending_upload={b(self.pending_upload)}",
            f"reason={self.reason}", f"signer={self.signer}", f"remote_signer={self.remote_signer}",
            f"remote_error={'unavailable' if self.remote_unavailable else self.remote_error or '-'}",
            f"fingerprint={self.fingerprint}",
        ]
        if self.variant is not None:
            parts.append(f"variant={self.variant[:12]}")
        if self.units is not None:
            parts.append("units=" + (f"keep:{self.units['keep']},restore:{self.units['restore']},"
                                     f"build:{self.units['build']}" if self.units["state"] == "known" else "unknown"))
        line = "- " + " ".join(parts)
        if self.pending:
            line += f" ({self.pending})"
        return line

    def tier_lines(self) -> list[str]:
        """One line per tier when a tier is down or read-only, or when tiers of a chain were asked."""
        notable = any(t["down_until"] or t["read_only"] for t in self.tiers)
        if not notable and (len(self.tiers) < 2 or not any(t["state"] for t in self.tiers)):
            return []
        lines = []
        for t in self.tiers:
            what = t["state"] or "not asked"
            if t["down_until"]:
                what = f"down, not contacted until {clock(datetime.fromisoformat(t['down_until']).timestamp())}"
            elif t["state"] == "offline":
                what = "offline: not asked"
            detail = t["reason"] or t["error"]
            if detail and not t["down_until"]:
                what += f" ({detail})"
            flags = [] if t["writable"] else ["read-only"]
            lines.append(f"  tier {t['ref']}: {what}" + (f" [{', '.join(flags)}]" if flags else ""))
        return lines


def _queue(cp: Checkpoints, point: Point, fp: str | None) -> dict[str, Any]:
    entries = [e for e in cp.store.read_queue() if e.get("id") == point.id]
    queue: dict[str, Any] = {state: sum(1 for e in entries if e.get("state") == state)
                             for state in ("pending", "failed", "uploaded")}
    current = [e for e in entries if fp is not None and e.get("fingerprint") == fp]
    if current:
        queue["current"] = {k: current[-1].get(k) for k in ("state", "attempts", "last_error", "backend_ref")}
    return queue


def _signer(manifest: dict[str, Any]) -> str:
    signature = manifest.get("signature")
    return str(signature.get("key")) if isinstance(signature, dict) else "unsigned"


def _tier_rows(cp: Checkpoints, point: Point) -> list[dict[str, Any]]:
    writable = cp.writable_tiers(point)
    rows = []
    for ref in point.backends:
        rows.append({"ref": ref, "read_only": cp.settings.tier_read_only(ref), "writable": ref in writable,
                     "state": None, "reason": None, "error": None, "signer": "-", "seconds": None,
                     "down_until": _iso(cp.down_until(ref))})
    return rows


def point_status(cp: Checkpoints, point: Point, *, probe_remote: bool = True, every_tier: bool = False) -> PointStatus:
    """``every_tier``: wait for the answer of every tier (the ``status`` command), not only
    for those up to the first hit (a run's preamble, which must not wait for a slow tier
    whose answer changes nothing)."""
    anchor = cp.anchor(point)
    fp = cp.fingerprint(point)
    inactive = anchor.inactive_reason()
    queue = _queue(cp, point, fp.value)
    base = dict(
        id=point.id, anchor=point.anchor_task, use_policy=point.use_policy, upload_policy=point.upload_policy,
        trust_mode=point.trust_mode, backend=point.backends[0] if point.backends else None,
        backends=list(point.backends), pending_upload=queue["pending"] + queue["failed"] > 0,
        upload_queue=queue, inactive=inactive, read_only=cp.read_only,
    )
    if not fp.known:
        assert fp.pending is not None
        unknown = dict.fromkeys(("exists", "materialized", "remote_exists", "will_use", "will_download",
                                 "will_rebuild", "will_upload", "will_upload_reason", "will_fail", "tier"))
        reason = f"inactive:{inactive}" if inactive else "unknown"
        return PointStatus(**base, **unknown, fingerprint="unknown", pending=str(fp.pending), reason=reason,
                           local_reason=reason, remote_error=None, remote_unavailable=False, signer="-",
                           remote_signer="-", tiers=_tier_rows(cp, point))
    value = fp.value
    assert value is not None
    targets = anchor.targets()
    variant = variant_in_place(cp, point, targets, value)
    look = _look(cp, point, anchor, fp, variant or value, probe_remote=probe_remote, every_tier=every_tier,
                 inactive=inactive)
    for _ in range(MAX_DEPTH):  # an object unusable at this path: its variant for this path (.variants)
        bound = look.bound_reason()
        if bound is None:
            break
        variant = variant_key(look.key, bound, targets)
        following = _look(cp, point, anchor, fp, variant, probe_remote=probe_remote, every_tier=every_tier,
                          inactive=inactive)
        if not following.available() and following.bound_reason() is None:
            break  # no variant here yet: the object's own answer stands, and the capture stores the variant
        look = following
    obj, materialized, usable, remote = look.obj, look.materialized, look.usable, look.remote
    signer, local_reason, reason = look.signer, look.local_reason, look.reason
    tiers = _tier_rows(cp, point)
    for row, answer in zip(tiers, remote.answers):
        if answer is not None:
            row.update(state=answer.state, reason=answer.reason, error=answer.error, signer=answer.signer,
                       seconds=round(answer.seconds, 3))
        row["down_until"] = row["down_until"] or _iso(cp.down_until(row["ref"]))

    available = usable or materialized or remote.usable
    will_use = will_rebuild = will_fail = False
    if inactive:
        reason = f"inactive:{inactive}"
    elif point.use_policy == "off":
        will_rebuild, reason = True, "policy_off"
    elif available:
        will_use = True
        if materialized and not usable:
            reason = "materialized"
    elif point.use_policy == "required":
        will_fail, reason = True, f"required_missing:{reason}"
    else:
        will_rebuild = True
    will_download = will_use and not usable and not materialized and remote.usable
    writable = cp.writable_tiers(point)
    units = None
    if point.units and will_rebuild and not inactive and point.use_policy != "off":
        from gaia_core.checkpoints.unitstatus import units_status

        units = units_status(cp, point, probe_remote=probe_remote)
    upload_blocked = None
    if will_rebuild and point.upload_policy != "off" and point.backends:
        if cp.read_only:
            upload_blocked = f"read_only: {cp.settings.read_only_source}"
        elif not writable:
            upload_blocked = "read_only: every tier of the point is read_only"
        elif cp.offline and all(cp.backend(ref).needs_network for ref in writable):
            upload_blocked = f"offline ({cp.offline_source}): queued for `gaia checkpoints retry`"
        else:
            upload_blocked = cp.upload_blocked(point)
    return PointStatus(
        **base, fingerprint=value, pending=None, exists=obj is not None, materialized=materialized,
        remote_exists=remote.exists, will_use=will_use, will_download=will_download,
        will_rebuild=will_rebuild,
        will_upload=will_rebuild and point.upload_policy != "off" and bool(point.backends) and not upload_blocked,
        will_upload_reason=upload_blocked, will_fail=will_fail, reason=reason, local_reason=local_reason,
        remote_error=remote.error, remote_unavailable=any(ref in cp.unavailable for ref in point.backends),
        signer=signer, remote_signer=remote.signer, tiers=tiers,
        tier=(remote.tier if will_download else "local" if will_use else None), units=units, variant=variant,
    )


@dataclasses.dataclass
class _Look:
    """What the store and the tiers say about one key (the fingerprint or a variant's)."""

    key: str
    obj: Any
    materialized: bool
    usable: bool
    signer: str
    local_reason: str
    reason: str
    remote: _Remote

    def available(self) -> bool:
        return self.usable or self.materialized or self.remote.usable

    def bound_reason(self) -> str | None:
        """The reason bound to this path that makes the object of this key unusable here."""
        if self.available():
            return None
        for why in (self.local_reason, self.remote.reason):
            if path_bound(why):
                return why
        return None


def _look(cp: Checkpoints, point: Point, anchor: Any, fp: Fingerprint, key: str, *, probe_remote: bool,
          every_tier: bool, inactive: str | None) -> _Look:
    obj = cp.local_object(point, key, discard=False)
    materialized = cp.materialized(anchor.targets(), key)
    signer = "-"
    usable = False
    if obj is not None:
        problem = assess(obj.manifest, anchor).problem
        usable = problem is None
        local_reason = problem or "hit"
        signer = _signer(obj.manifest)
    else:
        local_reason = cp.miss_reason(point, fp) if key == fp.value else "missing"
    reason = local_reason
    remote = _Remote()
    if not usable and not materialized and point.use_policy != "off" and point.backends and not inactive:
        if not probe_remote:
            remote.error = "not probed (dry run)"
        else:
            remote = _probe(cp, point, key, every_tier)
            if obj is None or remote.usable:
                signer = remote.signer
            if remote.usable:
                reason = "remote_hit"
            elif remote.reason:
                reason = remote.reason
            elif remote.error:
                reason = "remote_probe_error"
            elif reason == "missing":
                reason = "remote_missing"
    return _Look(key, obj, materialized, usable, signer, local_reason, reason, remote)


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


@dataclasses.dataclass
class _Remote:
    """What the tiers say about a fingerprint, summed up the way a single backend's answer was."""

    exists: bool | None = None
    usable: bool = False
    #: why the object the first tier holds is not used
    reason: str | None = None
    #: the first failure (a tier down, failing, or holding a malformed object)
    error: str | None = None
    signer: str = "-"
    #: the tier a restore takes it from
    tier: str | None = None
    answers: list[Any] = dataclasses.field(default_factory=list)


def _probe(cp: Checkpoints, point: Point, fp: str, every_tier: bool) -> _Remote:
    """The tiers' answers (:meth:`Checkpoints.lookup`: the run's restore reads the same ones)."""
    from gaia_core.checkpoints.tiers import DOWN, ERROR, INVALID, MISSING, winner

    lookup = cp.lookup(point, fp)
    answers: list[Any] = list(lookup.in_order()) if every_tier else lookup.decided()
    found = winner(answers)
    asked = [a for a in answers if a is not None and a.state != "offline"]
    remote = _Remote(answers=answers)
    if found is not None:
        remote.exists, remote.usable, remote.signer, remote.tier = True, True, found.signer, found.ref
        return remote
    if any(a.holds for a in asked):
        remote.exists = True
    elif asked and len(asked) == len(answers) and all(a.state == MISSING for a in asked):
        remote.exists = False
    refused = next((a for a in asked if a.reason), None)
    if refused is not None:
        remote.reason, remote.signer = refused.reason, refused.signer
    failed = next((a for a in asked if a.state in (DOWN, ERROR, INVALID)), None)
    if failed is not None:
        remote.error = failed.error
    return remote


def store_status(cp: Checkpoints) -> dict[str, Any]:
    return {"store": str(cp.store.root), "queue_file": str(cp.store.queue_path), "lock_holder": cp.store.lock.holder(),
            "read_only": cp.settings.read_only_source or None, "offline": cp.offline_source or None,
            "down_tiers_file": str(cp.down_tiers.path)}


def remote_objects(cp: Checkpoints, backend: Any, point: Point) -> list[dict[str, Any]]:
    """The backend's objects of ``point``, one per signer's manifest, each with its signer and
    what this build makes of it (``trusted``, ``unsigned``, ``untrusted``, ``invalid``, or
    ``bad`` with why), read from its manifest alone."""
    from gaia_core.checkpoints.manifest import slot_of
    from gaia_core.checkpoints.remote import fetch_manifest
    from gaia_core.checkpoints.signing import verify

    rows = []
    listed = [e for e in backend.list_entries(point.id) if e.is_manifest and e.fingerprint]
    for entry in sorted(listed, key=lambda e: (e.fingerprint, e.file_name)):
        fp, name = entry.fingerprint or "", entry.file_name or ""
        row: dict[str, Any] = {"fingerprint": fp, "file": name, "size": None, "created_at": None,
                               "signer": slot_of(name) or "unsigned"}
        try:
            manifest = fetch_manifest(backend, point.id, fp, f"{backend.ref}:{point.id}/{fp[:12]}/{name}", name)
        except CheckpointError as exc:  # OldFormat included: not usable by this gaia
            rows.append({**row, "trust": "bad", "why": str(exc)})
            continue
        if manifest is None:
            rows.append({**row, "trust": "bad", "why": "manifest vanished"})
            continue
        verdict = verify(manifest, cp.settings.trusted_keys)
        row.update(size=(manifest.get("tree") or {}).get("packed"), created_at=manifest.get("created_at"),
                   signer=_signer(manifest), trust=verdict.state, why=verdict.why)
        problem = cp.manifest_problem(manifest, point, fp)
        if problem:
            row.update(trust="bad", why=problem)
        elif slot_of(name) and slot_of(name) != _signer(manifest):
            row.update(trust="invalid", why=f"bad_signature:{slot_of(name)}")
        rows.append(row)
    return rows
