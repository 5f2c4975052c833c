"""Capture: the anchor's targets into a signed object in the local store, in one pass.

Only chunks no local pack holds yet are compressed and stored (:mod:`.treecapture`);
files whose ``lstat`` matches the tree's receipt are not even read. The manifest, signed
when a key is set, is published after the packs; the new receipt goes beside the marker.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints import containment
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.fingerprint import Fingerprint, lineage
from gaia_core.checkpoints.manifest import build_manifest
from gaia_core.checkpoints.portability import current_roots
from gaia_core.checkpoints.receipt import RECEIPT, install
from gaia_core.checkpoints.signing import sign
from gaia_core.checkpoints.treecapture import capture_tree
from gaia_core.checkpoints.units import human_size

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject


def capture(cp: Checkpoints, point: Point, fp: Fingerprint, anchor: Anchor, targets: list[Target], log: Log,
            progress: Progress | None = None, units: dict | None = None, *,
            build_seconds: float | None = None, variant_of: dict[str, Any] | None = None) -> LocalObject:
    """``units``: the manifest's list of the units the tree holds (:func:`.unitstore.units_field`);
    ``build_seconds``: how long the anchor ran, signed into the manifest (what a hit saves);
    ``variant_of``: what this object is a variant of (:mod:`.variants`), ``fp`` its key."""
    from gaia_core.checkpoints.records import object_fields

    assert fp.value is not None
    existing = cp.local_object(point, fp.value)
    if existing is not None:
        cp.tally(point.id).object = object_fields(existing.manifest)
        log(f"checkpoint:{point.id} {fp.short()} is already in the store")
        _mark(cp, targets, point, fp, log)
        return existing
    containment.check_in_place(targets)  # UnsafeTree: no consumer could use it
    roots = current_roots(anchor, capture=True)
    staging = cp.store.new_staging(point.id, fp.value)
    started = time.monotonic()
    try:
        info = capture_tree(
            targets, cp.store.packs, staging, roots={name: Path(path) for name, path in roots.items()},
            exclude=cp.excluded, receipts=cp.receipts(targets, anchor),
            receipt_header=cp.receipt_header(point, fp.value, "captured", anchor),
            pack_limit=cp.pack_limit(point.backends), level=cp.settings.compression_level, progress=progress,
        )
        manifest = build_manifest(
            point_id=point.id, anchor_task=point.anchor_task, fingerprint=fp.value,
            lineage=lineage(point.anchor_task, fp.value), trust_mode=point.trust_mode, inputs=fp.inputs,
            targets=[t.name for t in targets], tree=info.tree(), roots=roots, embedded=info.embedded,
            prerequisites=info.external_links, build_seconds=build_seconds, units=units,
        )
        if variant_of is not None:
            manifest["variant_of"] = variant_of
        key = cp.signing_key(log)
        if key is not None:
            manifest = sign(manifest, key)
        obj = cp.store.publish(point.id, fp.value, manifest, info.packs)
        for target in targets:  # the receipt describes the tree, whatever its marker says
            install(info.receipts[target.name], target.path / RECEIPT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tally = cp.tally(point.id)  # hook (issue 22): what the run's record says of the capture
    tally.object, tally.captured = object_fields(obj.manifest), tally.captured + info.new_bytes
    tally.spent("capture", time.monotonic() - started)
    signed = f"signed by {key.name}" if key is not None else "unsigned"
    log(f"checkpoint:{point.id} captured {fp.short()} ({info.entries} entries, {human_size(info.size)}; "
        f"{human_size(info.new_bytes)} new in {len(info.packs)} pack(s) of {human_size(info.packed)}, "
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
