"""Unit objects between the local store and a point's backends.

The rules of whole trees hold for each unit object (:mod:`.remote`): each signer has its
own slot (``units/<point id>/<unit key>/manifest.key.<name>.json``), a reader takes the
first slot of a key it trusts and judges the signature before a chunk moves, checks what
the object needs here (prerequisites, relocation), then fetches the chunks the local store
lacks, each checked against its id. An upload sends the chunks the backend lacks, then the
manifest, created only if absent. Units are uploaded with the whole tree that lists them,
so whatever uploads a checkpoint (a capture, ``retry``, ``push``) uploads its units too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints import tree
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.manifest import UNSIGNED_MANIFEST, OldFormat, manifest_name, signer_of, slot_of
from gaia_core.checkpoints.portability import assess
from gaia_core.checkpoints.signing import Verdict, verify
from gaia_core.checkpoints.store import UNITS, LocalObject
from gaia_core.checkpoints.transfer import RemoteIncomplete
from gaia_core.checkpoints.unitstore import local_unit, unit_problem
from gaia_core.checkpoints.units import human_size
from gaia_core.errors import BackendError, CheckpointError, ObjectExists

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.backends import Backend
    from gaia_core.checkpoints.config import Point


def unit_dir(point_id: str, key: str) -> str:
    return f"{UNITS}/{point_id}/{key}"


@dataclasses.dataclass
class FoundUnit:
    name: str
    key: str
    manifest: dict[str, Any]
    file: str
    verdict: Verdict


def find_unit(cp: Checkpoints, backend: Backend, point: Point, anchor: Anchor, name: str,
              key: str) -> tuple[FoundUnit | None, str | None]:
    """The unit object of ``key`` this reader may use, or why the one there is refused
    (``(None, None)``: there is none)."""
    from gaia_core.checkpoints.remote import Unusable, check_expansion, fetch_manifest, judge, slots_to_read

    names = slots_to_read(cp, point)
    if names is None:
        listed = [e.file_name for e in backend.list_files(unit_dir(point.id, key)) if not e.temporary]
        names = sorted((n for n in listed if n and slot_of(n) is not None), key=lambda n: n != UNSIGNED_MANIFEST)
    refused: str | None = None
    for file in names:
        where = f"{backend.ref}:{unit_dir(point.id, key[:12])}/{file}"
        try:
            manifest = fetch_manifest(backend, point.id, key, where, file, key=f"{unit_dir(point.id, key)}/{file}")
        except OldFormat:
            continue
        except CheckpointError as exc:
            refused = str(exc)
            continue
        if manifest is None:
            continue
        problem = unit_problem(cp, manifest, point, key, anchor, name)
        if problem:
            refused = problem
            continue
        verdict = judge(cp, point, manifest)
        slot = slot_of(file)
        if slot and signer_of(manifest) != slot:
            verdict = Verdict("invalid", signer_of(manifest) or "unsigned", f"bad_signature:{slot}")
        if point.trust_mode == "verify" and not verdict.usable:
            refused = verdict.reason()
            continue
        portability = assess(manifest, anchor)
        if not portability.usable:
            refused = str(portability.problem)
            continue
        if verdict.state != "trusted":
            try:
                check_expansion(cp, manifest, where)
            except Unusable as exc:
                refused = exc.reason
                continue
        return FoundUnit(name, key, manifest, file, verdict), None
    return None, refused


def remote_keys(cp: Checkpoints, backend: Backend, point: Point) -> set[str]:
    """The unit keys a backend holds an object directory for (one listing)."""
    return set(backend.list_dirs(f"{UNITS}/{point.id}"))


def download_units(cp: Checkpoints, point: Point, anchor: Anchor, wanted: Mapping[str, str],
                   log: Log) -> tuple[dict[str, tuple[LocalObject, str]], dict[str, str]]:
    """Fetch the unit objects of ``wanted`` (name -> key) from the point's backends, in their
    order, into the local store: (name -> (local object, where from)), (name -> why not)."""
    from gaia_core.checkpoints.remote import _transfers

    got: dict[str, tuple[LocalObject, str]] = {}
    why: dict[str, str] = {}
    for ref in point.backends:
        remaining = {n: k for n, k in wanted.items() if n not in got}
        if not remaining:
            break
        started = time.monotonic()
        try:
            with cp.session(ref) as backend:
                present = remote_keys(cp, backend, point)
                found: list[FoundUnit] = []
                for name, key in remaining.items():
                    if key not in present:
                        why.setdefault(name, f"not in {ref}")
                        continue
                    unit, refused = find_unit(cp, backend, point, anchor, name, key)
                    if unit is None:
                        why[name] = f"{ref}: {refused}" if refused else f"not in {ref}"
                    else:
                        found.append(unit)
                if not found:
                    continue
                transfers = _transfers(cp, backend, point)
                try:
                    transfers.sync_index()
                    packs = cp.store.packs
                    parts = {c: n for u in found for c, n in packs.absent(tree.parts(u.manifest))}
                    moved = transfers.fetch(parts)
                    chunks: dict[bytes, int] = {}
                    for u in found:
                        chunks.update(packs.absent(tree.chunks(packs, u.manifest)))
                    moved += transfers.fetch(chunks)
                finally:
                    transfers.close()
                for u in found:
                    got[u.name] = (cp.store.publish(point.id, u.key, u.manifest, [], area=UNITS), ref)
                    why.pop(u.name, None)
                log(f"checkpoint:{point.id} downloaded {len(found)} unit(s) via {ref} ({human_size(moved)} moved "
                    f"in {time.monotonic() - started:.1f}s)")
        except RemoteIncomplete as exc:
            for name in remaining:
                why.setdefault(name, f"{ref}: incomplete ({exc})")
        except (BackendError, CheckpointError, OSError) as exc:
            message = cp.redact(ref, str(exc))
            log(f"WARN: checkpoint:{point.id} units from {ref} failed: {message}")
            for name in remaining:
                if name not in got:
                    why[name] = f"{ref}: {message}"
    return got, why


def send_units(cp: Checkpoints, backend: Backend, point: Point, whole: LocalObject, log: Log) -> None:
    """Upload the units the whole tree ``whole`` lists that the backend lacks in their slot."""
    from gaia_core.checkpoints.remote import _transfers, fetch_manifest

    units = whole.manifest.get("units") or {}
    if not units:
        return
    anchor = cp.anchor(point)
    objects = [(name, obj) for name, item in sorted(units.items())
               if (obj := local_unit(cp, point, item["key"], anchor, name, discard=False)) is not None]
    if not objects:
        return
    started = time.monotonic()
    transfers = _transfers(cp, backend, point)
    sent = published = 0
    try:
        transfers.sync_index()
        to_publish: list[tuple[str, LocalObject, str, bool]] = []
        needed: set[bytes] = set()
        for name, obj in objects:
            slot = manifest_name(signer_of(obj.manifest))
            key = f"{unit_dir(point.id, obj.fingerprint)}/{slot}"
            where = f"{backend.ref}:{unit_dir(point.id, obj.fingerprint[:12])}/{slot}"
            try:
                there = fetch_manifest(backend, point.id, obj.fingerprint, where, slot, key=key)
                bad = there is not None and (unit_problem(cp, there, point, obj.fingerprint, anchor, name) is not None
                                             or verify(there, cp.settings.trusted_keys).state == "invalid")
            except CheckpointError:
                there, bad = None, True
            if there is None or bad:
                to_publish.append((name, obj, key, bad))
            needed |= {chunk for chunk, _ in tree.chunks(cp.store.packs, obj.manifest)}
        missing = transfers.missing(needed)
        if missing:
            sent = transfers.send(missing)
            if transfers.still_there(needed):
                raise CheckpointError(f"{backend.ref} lost packs of units while they were uploaded (a concurrent gc?)")
        for _name, obj, key, bad in to_publish:  # the manifests last, each only if absent
            if bad:
                backend.delete(key)
            try:
                backend.publish(key, obj.path / UNSIGNED_MANIFEST)
                published += 1
            except ObjectExists:
                pass
    finally:
        transfers.close()
    if published or sent:
        log(f"checkpoint:{point.id} uploaded {published} unit(s) via {backend.ref} ({human_size(sent)} of chunks "
            f"sent in {time.monotonic() - started:.1f}s)")


__all__ = ["FoundUnit", "download_units", "find_unit", "remote_keys", "send_units", "unit_dir"]
