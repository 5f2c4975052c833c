"""Capture: the anchor's targets into a signed object in the local store, in one pass."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.checkpoints import archive
from gaia_core.checkpoints.engine import COMPRESSION, MARKER, Checkpoints, Log
from gaia_core.checkpoints.fingerprint import Fingerprint, lineage
from gaia_core.checkpoints.manifest import build_manifest
from gaia_core.checkpoints.portability import current_roots
from gaia_core.checkpoints.signing import sign
from gaia_core.checkpoints.units import human_size

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject


def capture(cp: Checkpoints, point: Point, fp: Fingerprint, anchor: Anchor, targets: list[Target], log: Log,
            progress: Progress | None = None) -> LocalObject:
    assert fp.value is not None
    existing = cp.local_object(point, fp.value)
    if existing is not None:
        log(f"checkpoint:{point.id} {fp.short()} is already in the store")
        _mark(cp, targets, point, fp, log)
        return existing
    roots = current_roots(anchor, capture=True)
    staging = cp.store.new_staging(point.id, fp.value)
    started = time.monotonic()
    try:
        partial = staging / "payload.partial"
        with open(partial, "wb") as f:
            info = archive.capture(targets, f, compression=COMPRESSION, exclude=(MARKER,),
                                   roots={name: Path(path) for name, path in roots.items()},
                                   progress=progress)
        manifest = build_manifest(
            point_id=point.id, anchor_task=point.anchor_task, fingerprint=fp.value,
            lineage=lineage(point.anchor_task, fp.value), trust_mode=point.trust_mode, inputs=fp.inputs,
            targets=[t.name for t in targets], compression=COMPRESSION, size=info.size, sha256=info.sha256,
            unpacked_size=info.unpacked_size, entries=info.entries, roots=roots, embedded=list(info.embedded),
            prerequisites=list(info.external_links),
        )
        os.rename(partial, staging / manifest["payload"]["file"])
        key = cp.signing_key(log)
        if key is not None:
            manifest = sign(manifest, key)
        obj = cp.store.publish(staging, point.id, fp.value, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    signed = f"signed by {key.name}" if key is not None else "unsigned"
    log(f"checkpoint:{point.id} captured {fp.short()} ({human_size(info.size)}, {info.entries} entries, "
        f"{signed}) in {time.monotonic() - started:.1f}s")
    _mark(cp, targets, point, fp, log)
    return obj


def _mark(cp: Checkpoints, targets: list[Target], point: Point, fp: Fingerprint, log: Log) -> None:
    """The markers of a stored object; one that cannot be written (a full disk) costs only
    the next run's shortcut: it restores the object over the tree instead."""
    from gaia_core.errors import CheckpointError

    assert fp.value is not None
    try:
        cp.write_markers(targets, point, fp.value, "captured")
    except CheckpointError as exc:
        log(f"WARN: checkpoint:{point.id} {fp.short()} is stored, but {exc}; the next run restores it over the tree")
