"""Run records: what each point decided in a run, as one small JSON object.

The tasks note what happens to a point during a run in its :class:`Tally` (the decision
and its reason, the tier, the object, bytes and seconds); when the run ends
(``gaia_run_finished``) each tally becomes a record, which goes into the store's journal
(:mod:`.journal`) and, with ``share_records``, to the point's writable tiers
(:mod:`.shared`). ``stats``, the report page, ``status --explain --against`` and gc's
retention by last use read them.

A record names keys and files, never values of the build's inputs (``explain`` says
``counter.value changed``, not what it changed to): inputs may be anything a build file
holds. Records from a store are untrusted input, whoever wrote them: :func:`check_record`
keeps a record only when every field has the type and the bounded size this module
writes, and rebuilds it from those fields alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.fingerprint import canonical_json
from gaia_core.checkpoints.inputdiff import ABSENT, Change
from gaia_core.errors import CheckpointError
from gaia_core.outcomes import HITS, Outcome

if TYPE_CHECKING:
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.engine import Checkpoints

#: the record format; a reader keeps records of this format only
FORMAT = 1
DECISIONS = ("hit", "remote_hit", "miss", "refused", "inactive")
RESULTS = ("ok", "failed", "interrupted")
#: steps whose seconds a record holds
STEPS = ("restore", "download", "capture", "upload")
#: where a hit came from when it was no store at all: the tree was already in place
WORKSPACE = "workspace"
LOCAL = "local"

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
#: a point id, as ``[checkpoints.points]`` allows them
_POINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: the longest text of each field (a longer one makes the record invalid)
_TEXT = {"reason": 300, "explain": 1000, "tier": 200, "anchor": 200, "gaia": 40, "at": 40,
         "host.name": 253, "host.system": 100, "signer": 128, "created_at": 40, "key": 300}
_MAX_BYTES = 1 << 50
_MAX_SECONDS = 1e7
_MAX_TIERS = 16
_MAX_INPUTS = 256


def new_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def epoch(at: str | None) -> float | None:
    """Seconds since the epoch of an ISO time, None when it is not one."""
    try:
        moment = datetime.fromisoformat(str(at))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclasses.dataclass
class Tally:
    """What the tasks of one run noted about one point."""

    decision: str | None = None
    reason: str = ""
    tier: str | None = None
    fingerprint: str | None = None
    #: the object used (a hit) or made (a capture): fingerprint, signer, created_at, build_seconds
    object: dict[str, Any] | None = None
    explain: str = ""
    #: input key -> digest of its value (what ``--against HOST`` compares when no object is left)
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    at: str | None = None
    downloaded: int = 0
    uploaded: int = 0
    captured: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    #: tier -> bytes of packs it held when this run last listed it
    stored: dict[str, int] = dataclasses.field(default_factory=dict)
    #: when the restore task began (monotonic clock)
    started: float | None = None

    def begin(self, fingerprint: str, inputs: dict[str, Any]) -> None:
        self.started = time.monotonic()
        self.fingerprint, self.inputs = fingerprint, input_digests(inputs)

    def decide(self, decision: str, reason: str, *, tier: str | None = None,
               manifest: dict[str, Any] | None = None, why: str = "") -> None:
        """The point's decision; the first one stands (a refusal is not undone by the miss it
        causes). The restore's seconds run until now."""
        if self.decision is not None:
            return
        self.decision, self.reason, self.tier, self.at, self.explain = decision, reason, tier, now_iso(), why
        if manifest is not None:
            self.object = object_fields(manifest)
        if self.started is not None:
            self.spent("restore", time.monotonic() - self.started)

    def spent(self, step: str, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + max(0.0, seconds)


def object_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a record says of an object, from its manifest (a remote one is untrusted: each
    value is checked)."""
    signature = manifest.get("signature")
    signer = signature.get("key") if isinstance(signature, dict) else None
    return {"fingerprint": manifest.get("fingerprint"), "signer": signer if isinstance(signer, str) else None,
            "created_at": manifest.get("created_at"), "build_seconds": build_seconds_of(manifest)}


def build_seconds_of(manifest: dict[str, Any]) -> float | None:
    """How long the anchor ran when the object was captured (signed with it); None when
    the manifest does not say, or says something no build took."""
    return _seconds(manifest.get("build_seconds"))


def input_digests(inputs: dict[str, Any]) -> dict[str, str]:
    """Each input's value as a short digest: enough to say which inputs differ from another
    host's, nothing of what they hold."""
    return {key: hashlib.sha256(canonical_json(value)).hexdigest()[:16] for key, value in list(inputs.items())
            [:_MAX_INPUTS] if len(key) <= _TEXT["key"]}


def explain(changes: list[Change], limit: int = 1000) -> str:
    """What differs, naming keys and files (a value only for an anchor's own salt such as
    ``buildroot.build:host.system``, never for the build's inputs)."""
    parts = []
    for change in changes:
        if change.files is not None:
            named = [f"{kind} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                     for kind, names in (("changed", change.files.changed), ("added", change.files.added),
                                         ("removed", change.files.removed)) if names]
            parts.append(f"{change.key}: {'; '.join(named) or 'the tree changed'}")
        elif change.is_tree:
            parts.append(f"{change.key}: the tree changed")
        elif ":" in change.key.split(".")[0] and isinstance(change.old, str) and isinstance(change.new, str):
            parts.append(f"{change.key}: {change.old[:60]} -> {change.new[:60]}")
        elif change.old == ABSENT:
            parts.append(f"{change.key} added")
        elif change.new == ABSENT:
            parts.append(f"{change.key} removed")
        else:
            parts.append(f"{change.key} changed")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def explain_against_local(cp: Checkpoints, point: Point) -> str:
    """What differs from the nearest object of the point in the local store (keys and files)."""
    from gaia_core.checkpoints.inputdiff import input_changes
    from gaia_core.checkpoints.manifest import FORMAT_VERSION

    fp = cp.fingerprint(point)
    try:  # an explanation, never a reason for the restore task to fail
        manifests = [o.manifest for o in cp.store.objects(point.id)
                     if o.fingerprint != fp.value and o.manifest.get("format") == FORMAT_VERSION]
        nearest = cp.nearest(point, fp, manifests)
        if nearest is None:
            return ""
        return explain(input_changes(nearest["fingerprint_inputs"], fp.inputs))
    except (CheckpointError, OSError, ValueError, TypeError, AttributeError):
        return ""


def make_record(tally: Tally, point: Point, *, run_id: str, host: dict[str, str], result: str,
                build_seconds: float | None, gaia_version: str) -> dict[str, Any]:
    """The record of one point's run, in the shape :func:`check_record` accepts."""
    assert tally.decision is not None
    obj = tally.object
    saved = None
    if tally.decision in HITS and tally.tier != WORKSPACE and obj and obj.get("build_seconds") is not None:
        saved = max(0.0, obj["build_seconds"] - tally.seconds.get("restore", 0.0))
    record = {
        "v": FORMAT, "id": new_id(), "run": run_id, "at": tally.at or now_iso(), "host": host,
        "point": point.id, "anchor": point.anchor_task, "fingerprint": tally.fingerprint,
        "decision": tally.decision, "reason": tally.reason, "explain": tally.explain, "tier": tally.tier,
        "object": obj,
        "bytes": {"downloaded": tally.downloaded, "uploaded": tally.uploaded, "captured": tally.captured},
        "seconds": {step: round(tally.seconds[step], 3) for step in STEPS if step in tally.seconds},
        "build_seconds": None if build_seconds is None else round(build_seconds, 3),
        "saved_seconds": None if saved is None else round(saved, 3),
        "stored": dict(tally.stored), "inputs": tally.inputs, "result": result, "gaia": gaia_version,
    }
    checked = check_record(record)
    if checked is None:  # our own record: a value out of bounds (a reason too long) is cut, never lost
        record["reason"], record["explain"] = record["reason"][:_TEXT["reason"]], record["explain"][:_TEXT["explain"]]
        record["tier"] = None if record["tier"] is None else record["tier"][:_TEXT["tier"]]
        checked = check_record(record)
    assert checked is not None, record
    return checked


def outcome_of(record: dict[str, Any]) -> Outcome:
    seconds = dict(record["seconds"])
    if record["build_seconds"] is not None:
        seconds["build"] = record["build_seconds"]
    return Outcome(point=record["point"], decision=record["decision"], reason=record["reason"], tier=record["tier"],
                   fingerprint=record["fingerprint"], downloaded=record["bytes"]["downloaded"],
                   uploaded=record["bytes"]["uploaded"], captured=record["bytes"]["captured"], seconds=seconds,
                   saved_seconds=record["saved_seconds"])


# -- reading untrusted records ---------------------------------------------------------


class _Bad(ValueError):
    pass


def _text(value: Any, field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > _TEXT[field] or _CONTROL.search(value):
        raise _Bad(field)
    return value


def _match(value: Any, pattern: re.Pattern[str], field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise _Bad(field)
    return value


def _count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_BYTES:
        raise _Bad(field)
    return value


def _seconds(value: Any) -> float | None:
    """A duration a build can have taken, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        return None
    return float(value)


def _duration(value: Any, field: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    seconds = _seconds(value)
    if seconds is None:
        raise _Bad(field)
    return seconds


def _time(value: Any, field: str, *, optional: bool = False) -> str | None:
    text = _text(value, field if field in _TEXT else "at", optional=optional)
    if text is not None and epoch(text) is None:
        raise _Bad(field)
    return text


def _dict(value: Any, field: str, limit: int) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > limit:
        raise _Bad(field)
    return value


def _object(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _dict(value, "object", 8)
    return {"fingerprint": _match(obj.get("fingerprint"), _HEX64, "object.fingerprint"),
            "signer": _text(obj.get("signer"), "signer", optional=True),
            "created_at": _time(obj.get("created_at"), "created_at", optional=True),
            "build_seconds": _duration(obj.get("build_seconds"), "object.build_seconds")}


def check_record(raw: Any) -> dict[str, Any] | None:
    """The record rebuilt from the fields this module writes, each checked for type and
    size; None when any is wrong (the whole record is then ignored)."""
    try:
        record = _dict(raw, "record", 64)
        if record.get("v") != FORMAT:
            raise _Bad("v")
        host = _dict(record.get("host"), "host", 4)
        decision = record.get("decision")
        result = record.get("result")
        if decision not in DECISIONS or result not in RESULTS:
            raise _Bad("decision")
        moved = _dict(record.get("bytes"), "bytes", 8)
        seconds = _dict(record.get("seconds"), "seconds", len(STEPS))
        if not set(seconds) <= set(STEPS):
            raise _Bad("seconds")
        stored = _dict(record.get("stored") or {}, "stored", _MAX_TIERS)
        inputs = _dict(record.get("inputs") or {}, "inputs", _MAX_INPUTS)
        return {
            "v": FORMAT,
            "id": _match(record.get("id"), _HEX32, "id"),
            "run": _match(record.get("run"), _HEX32, "run"),
            "at": _time(record.get("at"), "at"),
            "host": {"name": _text(host.get("name"), "host.name"), "system": _text(host.get("system"), "host.system")},
            "point": _match(record.get("point"), _POINT, "point"),
            "anchor": _text(record.get("anchor"), "anchor"),
            "fingerprint": _match(record.get("fingerprint"), _HEX64, "fingerprint", optional=True),
            "decision": decision,
            "reason": _text(record.get("reason"), "reason"),
            "explain": _text(record.get("explain", ""), "explain"),
            "tier": _text(record.get("tier"), "tier", optional=True),
            "object": _object(record.get("object")),
            "bytes": {k: _count(moved.get(k, 0), f"bytes.{k}") for k in ("downloaded", "uploaded", "captured")},
            "seconds": {k: _duration(v, f"seconds.{k}", optional=False) for k, v in seconds.items()},
            "build_seconds": _duration(record.get("build_seconds"), "build_seconds"),
            "saved_seconds": _duration(record.get("saved_seconds"), "saved_seconds"),
            "stored": {_text(k, "tier"): _count(v, "stored") for k, v in stored.items()},
            "inputs": {_text(k, "key"): _match(v, _HEX16, "inputs") for k, v in inputs.items()},
            "result": result,
            "gaia": _text(record.get("gaia", ""), "gaia"),
        }
    except _Bad:
        return None


__all__ = ["DECISIONS", "FORMAT", "LOCAL", "STEPS", "WORKSPACE", "Tally", "build_seconds_of", "check_record",
           "epoch", "explain", "explain_against_local", "input_digests", "make_record", "new_id", "now_iso", "object_fields", "outcome_of"]
