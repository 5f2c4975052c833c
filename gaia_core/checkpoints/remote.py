"""Objects between the local store and a backend: verified downloads, write-once uploads.

Every signer has its own manifest under a fingerprint (``manifest.key.<name>.json``, or
``manifest.json`` unsigned), so an object someone else put there never stands in the way:
a reader looks in the slots of the keys it trusts, in the order they are configured, and a
producer publishes in its own slot beside whatever else is there.

Download: the manifest first (at most 16 MiB), its signature judged before any chunk
moves, prerequisites and relocation checked (a point's tiers are asked at once, and each
answer judged so, by :mod:`.tiers`), then only the chunks the local store lacks
(:mod:`.transfer`), each checked against its id. Upload: the chunks the backend lacks, then
the manifest, created only if absent. A manifest already in the slot stays, unless it is
bad (its signature does not verify, its chunks are gone): then it is deleted and this
run's good one published, still create-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from gaia_core.backends import Backend, legacy_object_key, object_dir, object_key
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.engine import Checkpoints, Log, NotUsedOffline, unavailable
from gaia_core.checkpoints.entries import EntriesCorrupt, UnsafeEntry
from gaia_core.checkpoints.manifest import (
    MAX_MANIFEST_BYTES,
    UNSIGNED_MANIFEST,
    OldFormat,
    check_shape,
    manifest_name,
    signer_of,
    slot_of,
)
from gaia_core.checkpoints.packs import ChunkCorrupt
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.signing import Verdict, verify
from gaia_core.checkpoints.transfer import RemoteIncomplete, Transfers
from gaia_core.checkpoints.treeimport import import_from_tree
from gaia_core.checkpoints.units import human_size
from gaia_core.errors import BackendError, CheckpointError, ObjectExists, ObjectNotFound

if TYPE_CHECKING:
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject

#: the old layout's manifest (store format 3), looked for only to say ``format_changed``
_LEGACY_MANIFEST = "manifest.json"


class Unusable(CheckpointError):
    """The object is fine but cannot be used here (a prerequisite is missing, a file can't move)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class TooLarge(CheckpointError):
    pass


class LimitedWriter:
    """Counts, hashes and writes; stops a download the moment it exceeds ``limit`` bytes."""

    def __init__(self, dest: BinaryIO, limit: int, what: str, progress: Progress | None = None):
        self.dest, self.limit, self.what, self.progress = dest, limit, what, progress
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: Any) -> int:
        n = len(data)
        if self.size + n > self.limit:
            raise TooLarge(f"{self.what} is larger than the {self.limit} bytes allowed; download stopped")
        self.sha.update(data)
        try:
            self.dest.write(data)
        except OSError as exc:  # a full disk: say which file, and that the download stopped
            name = getattr(self.dest, "name", None)
            where = f" into {name}" if isinstance(name, str) else ""
            raise CheckpointError(
                f"writing {self.what}{where} failed: {exc.strerror or exc}; download stopped") from None
        self.size += n
        if self.progress is not None:
            self.progress(n)
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset != 0 or whence != 0:
            raise OSError("only a restart from the beginning is supported")
        self.size, self.sha = 0, hashlib.sha256()
        return self.dest.seek(0)

    def truncate(self, size: int | None = None) -> int:
        return self.dest.truncate(size)

    def flush(self) -> None:
        self.dest.flush()


@dataclasses.dataclass
class Found:
    """A manifest a backend holds under a fingerprint, and what this reader makes of it."""

    manifest: dict[str, Any]
    file: str
    verdict: Verdict


def fetch_manifest(backend: Backend, point_id: str, fp: str, where: str,
                   name: str = UNSIGNED_MANIFEST, *, key: str | None = None) -> dict[str, Any] | None:
    """One remote manifest, shape-checked; None when the backend has none under that name. A
    small read under the probe budget: a silent server costs ``probe_timeout``, not a
    transfer's. ``key``: the manifest's key, when it is not a whole tree's (a unit's)."""
    try:
        data = backend.read_small(key or object_key(point_id, fp, name), MAX_MANIFEST_BYTES)
    except ObjectNotFound:
        return None
    if len(data) > MAX_MANIFEST_BYTES:
        raise TooLarge(f"remote manifest {where} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise CheckpointError(f"remote manifest {where} is not JSON: {exc}") from None
    check_shape(manifest, where)
    return manifest


def judge(cp: Checkpoints, point: Point, manifest: dict[str, Any]) -> Verdict:
    if point.trust_mode == "permissive":
        return Verdict("unsigned", signer_of(manifest) or "unsigned", "not checked (trust_mode = permissive)")
    verdict = verify(manifest, cp.settings.trusted_keys)
    if verdict.state == "unsigned" and not cp.settings.trusted_keys:
        cp.warn_once("unsigned", "checkpoints from backends are accepted unsigned: no trusted_public_keys are "
                     "configured; sign captures (gaia checkpoints keygen) and set [checkpoints] "
                     "trusted_public_keys so that nobody with write access to the remote can poison them")
    return verdict


def slots_to_read(cp: Checkpoints, point: Point) -> list[str] | None:
    """The manifest files a reader looks at, in order; None: every slot there is (no keys
    are trusted, so any signer's object is as good as an unsigned one)."""
    if point.trust_mode == "verify" and cp.settings.trusted_keys:
        return [manifest_name(name) for name in cp.settings.trusted_keys]
    return None


def find(cp: Checkpoints, backend: Backend, point: Point, fp: str) -> tuple[Found | None, list[Found]]:
    """The usable object under ``fp`` (the first trusted slot that holds a good one), and
    every manifest looked at (refused ones explain a miss). Raises OldFormat when only an
    object of the old store format is there."""
    ref = backend.ref
    names = slots_to_read(cp, point)
    listed: list[str] | None = None
    if names is None:
        listed = _slots(backend, point, fp)
        names = listed
    seen: list[Found] = []
    for name in names:
        found = _look(cp, backend, point, fp, name)
        if found is None:
            continue
        seen.append(found)
        if point.trust_mode != "verify" or found.verdict.usable:
            return found, seen
    if listed is None:  # nothing trusted is there: what is, explains the miss
        for name in _slots(backend, point, fp):
            if name not in names:
                found = _look(cp, backend, point, fp, name)
                if found is not None:
                    seen.append(found)
    if not seen:
        refused = [why for (r, p, f, _name), why in list(cp.bad_remote.items()) if (r, p, f) == (ref, point.id, fp)]
        if refused:  # only objects nobody can use: say why, rather than that there is none
            raise CheckpointError(f"remote checkpoint {ref}:{point.id}/{fp[:12]} refused: {refused[0]}")
        if backend.exists(legacy_object_key(point.id, fp, _LEGACY_MANIFEST)):
            raise OldFormat(f"{ref} holds {point.id}/{fp[:12]} in an older store format")
    return None, seen


def _slots(backend: Backend, point: Point, fp: str) -> list[str]:
    listed = [e.file_name for e in backend.list_files(object_dir(point.id, fp)) if not e.temporary]
    return sorted((n for n in listed if n and slot_of(n) is not None), key=lambda n: n != UNSIGNED_MANIFEST)


def _look(cp: Checkpoints, backend: Backend, point: Point, fp: str, name: str) -> Found | None:
    ref = backend.ref
    where = f"{ref}:{point.id}/{fp[:12]}/{name}"
    try:
        manifest = fetch_manifest(backend, point.id, fp, where, name)
    except OldFormat:
        return None
    except CheckpointError as exc:
        cp.bad_remote[(ref, point.id, fp, name)] = str(exc)
        return None
    if manifest is None:
        return None
    problem = cp.manifest_problem(manifest, point, fp)
    if problem:
        cp.bad_remote[(ref, point.id, fp, name)] = problem
        return None
    slot = slot_of(name)
    signer = signer_of(manifest)
    verdict = judge(cp, point, manifest)
    if slot and signer != slot:
        verdict = Verdict("invalid", signer or "unsigned", f"bad_signature:{slot}")
    if verdict.state == "invalid":
        cp.bad_remote[(ref, point.id, fp, name)] = verdict.why
    return Found(manifest, name, verdict)


def _transfers(cp: Checkpoints, backend: Backend, point: Point | None = None) -> Transfers:
    ref = backend.ref
    config = cp.settings.backend_configs[ref][1]
    return Transfers(backend, lambda: cp.backend(ref), cp.store.packs, cp.store.tmp_dir(),
                     parallel=getattr(config, "parallel", 4),
                     pack_limit=cp.pack_limit(point.backends) if point is not None else None, bad=cp.bad_packs)


def download_found(cp: Checkpoints, point: Point, fp: str, ref: str, found: Found, log: Log,
                   progress_factory: Callable[[int], Progress | None] | None = None) -> LocalObject:
    """Fetch the chunks of the object ``found`` in tier ``ref`` that the local store lacks,
    each checked against its id, and publish it into the local store. ``found`` was judged
    already (:func:`.tiers.ask`): trusted or accepted, within its expansion, usable here."""
    manifest, verdict = found.manifest, found.verdict
    where = f"{ref}:{point.id}/{fp[:12]}"
    with cp.session(ref) as backend:
        from gaia_core.checkpoints.restore import check_free_space

        check_free_space(cp.store.root, manifest["tree"]["packed"], f"downloading {where}")
        started = time.monotonic()
        transfers = _transfers(cp, backend)
        try:
            transfers.sync_index()
            progress = progress_factory(manifest["tree"]["packed"]) if progress_factory else None
            moved = transfers.fetch(dict(cp.store.packs.absent(tree.parts(manifest))), progress)
            held = tree.entry_list(cp.store.packs, manifest)  # checked before it is published
            wanted = dict(cp.store.packs.absent(tree.needed_chunks(cp.store.packs, manifest, held)))
            if wanted:
                anchor = cp.anchor(point)
                targets = anchor.targets()
                from_tree = import_from_tree(targets, cp.receipts(targets, anchor), cp.store.packs,
                                             cp.store.tmp_dir(), wanted, cp.settings.compression_level)
                if from_tree:
                    log(f"checkpoint:{point.id} took {human_size(from_tree)} of chunks from the tree in place")
            moved += transfers.fetch(wanted, progress)
        except RemoteIncomplete as exc:
            cp.bad_remote[(ref, point.id, fp, found.file)] = "chunks_missing"
            raise CheckpointError(f"remote checkpoint {where} is incomplete: {exc}") from None
        except (ChunkCorrupt, EntriesCorrupt, UnsafeEntry) as exc:
            cp.bad_remote[(ref, point.id, fp, found.file)] = str(exc)
            raise
        finally:
            transfers.close()
    obj = cp.store.publish(point.id, fp, manifest, [])
    cp.fetched = dict.fromkeys(cp.fetched)  # one entry list held at a time
    cp.fetched[tree.list_key(manifest)] = held
    _tally_transfer(cp, point, ref, "download", moved, time.monotonic() - started)
    log(f"checkpoint:{point.id} downloaded {fp[:12]} via {ref} ({human_size(moved)} of "
        f"{human_size(manifest['tree']['packed'])} moved in {time.monotonic() - started:.1f}s, "
        f"signer: {verdict.signer})")
    return obj


def check_expansion(cp: Checkpoints, manifest: dict[str, Any], where: str) -> None:
    """An object nobody trusted signed may not claim to unpack to more than
    ``unsigned_max_expansion`` times what it moves."""
    tree_info = manifest["tree"]
    limit = cp.settings.unsigned_max_expansion * max(tree_info["packed"], 1)
    if tree_info["size"] > limit:
        raise Unusable(f"unsigned_too_large:{where} claims {human_size(tree_info['size'])} from "
                       f"{human_size(tree_info['packed'])} of chunks (more than "
                       f"{cp.settings.unsigned_max_expansion:g} times; [checkpoints] unsigned_max_expansion)")


def remote_state(cp: Checkpoints, backend: Backend, point: Point, obj: LocalObject) -> str:
    """``absent``, ``same``, ``other`` (a good object of another producer in this slot) or
    ``bad:<why>``, for the slot this object is published in."""
    ref, fp = backend.ref, obj.fingerprint
    name = manifest_name(signer_of(obj.manifest))
    where = f"{ref}:{point.id}/{fp[:12]}/{name}"
    try:
        manifest = fetch_manifest(backend, point.id, fp, where, name)
    except ObjectNotFound:
        return "absent"
    except CheckpointError as exc:
        return f"bad:{exc}"
    if manifest is None:
        return "absent"
    known_bad = cp.bad_remote.get((ref, point.id, fp, name))
    if known_bad:
        return f"bad:{known_bad}"
    if cp.manifest_problem(manifest, point, fp):
        return f"bad:{cp.manifest_problem(manifest, point, fp)}"
    if verify(manifest, cp.settings.trusted_keys).state == "invalid" or signer_of(manifest) != signer_of(obj.manifest):
        return "bad:bad_signature"
    if manifest["tree"] == obj.manifest["tree"] and manifest.get("signature") == obj.manifest.get("signature"):
        return "same"
    return "other"


def upload(cp: Checkpoints, point_id: str, fp: str, ref: str, anchor_task: str, log: Log,
           progress_factory: Callable[[int], Progress | None] | None = None) -> bool:
    """Upload the missing chunks then the manifest (create-only); record the outcome in the queue."""
    if cp.read_only:
        log(f"checkpoint:{point_id} not uploaded: read-only ({cp.settings.read_only_source})")
        return False
    if cp.settings.tier_read_only(ref):
        log(f"checkpoint:{point_id} not uploaded to {ref}: its table says read_only = true")
        return False
    cp.store.update_queue(point_id, fp, ref, anchor_task, state="pending")
    try:
        point = cp.point(point_id)
        obj = cp.store.get(point_id, fp)
        if obj is None:
            raise CheckpointError(f"local checkpoint {point_id}/{fp[:12]} is missing; nothing to upload")
        with cp.store.hold(obj), cp.session(ref) as backend:
            _send(cp, backend, point, obj, remote_state(cp, backend, point, obj), log, progress_factory)
            if obj.manifest.get("units"):
                from gaia_core.checkpoints.unitremote import send_units

                send_units(cp, backend, point, obj, log)
    except NotUsedOffline:
        cp.store.update_queue(point_id, fp, ref, anchor_task, state="pending",
                              last_error=f"not attempted offline ({cp.offline_source})")
        return False
    except (BackendError, CheckpointError, OSError) as exc:
        message = cp.redact(ref, str(exc))
        reason = unavailable(ref, cp.unavailable[ref]) if ref in cp.unavailable else message
        cp.store.update_queue(point_id, fp, ref, anchor_task, state="failed", attempted=True,
                              last_error=reason[:500])
        what = f"not uploaded: {message}" if isinstance(exc, BackendError) else f"upload via {ref} failed: {message}"
        log(f"WARN: checkpoint:{point_id} {what} (queued for retry)")
        return False
    try:
        cp.store.update_queue(point_id, fp, ref, anchor_task, state="uploaded", attempted=True, last_error=None)
    except CheckpointError as exc:
        log(f"WARN: checkpoint:{point_id} {fp[:12]} is uploaded to {ref}, but the upload queue could not record it: "
            f"{exc}; `gaia checkpoints retry` will find it there")
    return True


def _send(cp: Checkpoints, backend: Backend, point: Point, obj: LocalObject, state: str, log: Log,
          progress_factory: Callable[[int], Progress | None] | None) -> None:
    started = time.monotonic()
    name = manifest_name(signer_of(obj.manifest))
    manifest_key = object_key(point.id, obj.fingerprint, name)
    transfers = _transfers(cp, backend, point)
    try:
        transfers.sync_index()
        needed = {chunk for chunk, _ in tree.chunks(cp.store.packs, obj.manifest)}
        sent = 0
        for _attempt in range(3):
            missing = transfers.missing(needed)
            if not missing:
                break
            sent += transfers.send(missing, progress_factory(obj.size) if progress_factory else None)
            if not transfers.still_there(needed):
                break
        else:
            raise CheckpointError(f"{backend.ref} lost packs of {point.id}/{obj.fingerprint[:12]} while it was "
                                  "uploaded (a concurrent gc?); try again")
    finally:
        transfers.close()
    _tally_transfer(cp, point, backend.ref, "upload", sent, time.monotonic() - started)
    if state in ("same", "other"):
        by = "" if state == "same" else " (from another producer; kept)"
        extra = f"; sent {human_size(sent)} of chunks it lacked" if sent else ""
        log(f"checkpoint:{point.id} {obj.fingerprint[:12]} is already in {backend.ref}{by}{extra}")
        return
    if state.startswith("bad:"):
        log(f"WARN: checkpoint:{point.id} {obj.fingerprint[:12]} in {backend.ref} is bad ({state[4:]}); "
            "replacing it with this run's verified object")
        backend.delete(manifest_key)
    try:
        backend.publish(manifest_key, obj.path / UNSIGNED_MANIFEST)
    except ObjectExists:
        log(f"checkpoint:{point.id} {obj.fingerprint[:12]} was published to {backend.ref} by another writer "
            "first; keeping theirs")
        return
    log(f"checkpoint:{point.id} uploaded {obj.fingerprint[:12]} via {backend.ref} ({human_size(sent)} of "
        f"{human_size(obj.size)} sent in {time.monotonic() - started:.1f}s)")


def _tally_transfer(cp: Checkpoints, point: Point, ref: str, step: str, moved: int, seconds: float) -> None:
    """Hook (issue 22): bytes and seconds of a transfer, and the tier's size as last listed."""
    tally = cp.tally(point.id)
    tally.spent(step, seconds)
    if step == "download":
        tally.downloaded += moved
    else:
        tally.uploaded += moved
    tally.stored[ref] = sum(size or 0 for size in cp.store.packs.remote_pack_sizes(ref).values())


@contextlib.contextmanager
def scratch_transfers(cp: Checkpoints, backend: Backend) -> Iterator[tuple[Transfers, PackStore]]:
    """Transfers into a throw-away pack store (what is fetched to be checked, not kept)."""
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=cp.store.tmp_dir()) as scratch:
        packs = PackStore(Path(scratch))
        transfers = Transfers(backend, lambda: cp.backend(backend.ref), packs, Path(scratch), bad=cp.bad_packs)
        try:
            yield transfers, packs
        finally:
            transfers.close()
            packs.close()


def check_remote_chunks(cp: Checkpoints, backend: Backend, manifest: dict[str, Any]) -> tuple[int, int]:
    """Fetch and check every chunk of a remote object, keeping none (``verify --remote``):
    (chunks checked, bytes moved). Raises when one is missing or does not match."""
    with scratch_transfers(cp, backend) as (transfers, packs):
        transfers.sync_index()
        parts = dict(tree.parts(manifest))
        moved = transfers.fetch(parts)
        # the entries checked as restore checks them (safety rules, totals): an object no
        # reader can restore is bad, whatever its chunks
        wanted = {c: n for entry in tree.entries(packs, manifest) for c, n in entry.chunk_list() if c not in parts}
        moved += transfers.fetch(wanted, keep=False)
        return len(parts) + len(wanted), moved


__all__ = ["LimitedWriter", "TooLarge", "Unusable", "check_expansion", "check_remote_chunks",
           "download_found", "fetch_manifest", "find", "scratch_transfers", "upload"]
