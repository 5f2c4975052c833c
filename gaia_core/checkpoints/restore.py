"""Restore: a local object into the anchor's targets, checked, relocated and swapped in.

The tree is written into a staging directory beside the first target (same filesystem),
relocated there when the workspace moved, and each target is then exchanged with its
staged tree in one step (:mod:`.swap`). The staging directory records its owner, so the
next run removes what a killed restore left. Afterwards each target gets its marker and a
receipt of what was written (:mod:`.receipt`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.checkpoints import containment, swap, tree
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.entries import Entry
from gaia_core.checkpoints.freshness import place_restored
from gaia_core.checkpoints.mtimes import Placement, plan_placement
from gaia_core.checkpoints.packstore import ChunkMissing
from gaia_core.checkpoints.receipt import Record, read_header
from gaia_core.checkpoints.receipt import remove as receipt_remove
from gaia_core.checkpoints.relocate import apply_relocation
from gaia_core.checkpoints.treewrite import receipts_of_restored, update_tree, write_tree
from gaia_core.checkpoints.units import human_size
from gaia_core.errors import CheckpointError
from gaia_core.owner import write_owner

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.portability import Portability
    from gaia_core.checkpoints.store import LocalObject

#: free space kept beyond the unpacked size, for the filesystem's own overhead
FREE_SPACE_MARGIN = 64 << 20


def tidy(targets: list[Target], log: Log) -> None:
    """Finish an interrupted swap and remove staging dirs of killed restores."""
    for t in targets:
        done = swap.recover(t.path)
        if done:
            log(f"WARN: {done}")
        for leftover in swap.leftovers(t.path):
            shutil.rmtree(leftover, ignore_errors=True)
            log(f"removed {leftover} left by an interrupted restore")


def check_free_space(directory: Path, needed: int, what: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < needed + FREE_SPACE_MARGIN:
        raise CheckpointError(f"{what} needs {human_size(needed)} in {directory}, which has {human_size(free)} free")


def restore(cp: Checkpoints, obj: LocalObject, point: Point, anchor: Anchor, targets: list[Target],
            portability: Portability, log: Log, progress: Progress | None = None) -> str:
    """Restore ``obj`` into ``targets``: in place when they hold an earlier tree with a receipt
    (only what differs is written), else into a staging tree swapped in. Returns how."""
    tidy(targets, log)
    receipts = cp.receipts(targets, anchor)
    key = tree.list_key(obj.manifest)
    held = cp.fetched.get(key)
    if key in cp.fetched:
        cp.fetched[key] = None  # used once: not held past this restore
    if all(receipts.values()) and all(t.path.is_dir() and not t.path.is_symlink() for t in targets):
        return _update(cp, obj, point, anchor, targets, portability, log, progress,
                       {name: path for name, path in receipts.items() if path is not None}, held)
    parent = targets[0].path.parent
    check_free_space(parent, obj.unpacked_size, f"restoring {point.id}/{obj.fingerprint[:12]}")
    staging = Path(tempfile.mkdtemp(prefix=f".{targets[0].path.name}{swap.STAGING_INFIX}", dir=parent))
    try:
        write_owner(staging, f"restore {point.id}/{obj.fingerprint[:12]}")
        tree_dir = staging / "tree"
        tree_dir.mkdir()
        fingerprint = cp.fingerprint(point)
        with cp.store.hold(obj):
            entries: Iterable[Entry] | None = held
            if held is None:  # read as the helpers start, kept for the receipt
                entries, held = tree.entries_held(cp.store.packs, obj.manifest)

            def place(listed: list[Entry]) -> Placement:  # every mtime is written placed: no walk after
                return plan_placement((e.mtime_ns for e in listed), clock_dir=staging,
                                      not_before_ns=fingerprint.newest_input_ns)

            info = write_tree(entries, tree_dir, cp.store.packs, progress=progress,
                              files=obj.manifest["tree"]["files"], place=None if held is None else place)
        _warn_setid(info.stripped_setid, point, log)
        relocated = _relocate(tree_dir, portability, anchor, point, log)  # mtimes kept
        containment.check_targets(tree_dir, targets)  # UnsafeTree: later steps would write outside
        # make sees the tree up to date whatever its inputs' mtimes (a list too long to hold
        # is streamed into the writer, and placed by a walk now)
        placed = info.placement
        mtimes = place_restored([tree_dir / t.name for t in targets], staging, fingerprint, point, log,
                                place=None if placed is None else lambda _clock_dir, _not_before: placed)
        for t in targets:
            t.path.parent.mkdir(parents=True, exist_ok=True)
            swap.swap_in(tree_dir / t.name, t.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cp.write_markers(targets, point, obj.fingerprint, "restored", extra=mtimes)
    write_receipts(cp, obj, point, anchor, targets, relocated, held)
    return f"{info.files_written} files written"


def _update(cp: Checkpoints, obj: LocalObject, point: Point, anchor: Anchor, targets: list[Target],
            portability: Portability, log: Log, progress: Progress | None, receipts: dict[str, Path],
            held: list[Entry] | None) -> str:
    """The tree holds an earlier checkpoint: write only the entries that differ, in place.

    Every chunk must be in the local store before the tree is touched; the marker goes
    first, so an update cut short leaves a tree that claims nothing, and one that fails
    leaves no tree at all (the anchor then builds from scratch, never on a mix). ``held``:
    the checked entries a download of this run read already."""
    packs = cp.store.packs
    with cp.store.hold(obj):
        just_fetched = tree.list_key(obj.manifest) in cp.fetched  # by this run: all there
        if not just_fetched:
            held = tree.entry_list(packs, obj.manifest)  # read once for the lookup and the update
        missing = None if just_fetched else next(iter(packs.absent(tree.needed_chunks(packs, obj.manifest, held))),
                                                 None)
        if missing is not None:
            raise ChunkMissing(f"the local store lacks chunk {missing[0].hex()[:16]} of {point.id}/"
                               f"{obj.fingerprint[:12]}")
        previous = {name: read_header(path) or {} for name, path in receipts.items()}
        relocating = {item.path for item in portability.plan.rewrite}
        roots = obj.manifest.get("roots")

        def unchanged(entry: Entry, record: Record) -> bool:
            if entry.path not in relocating:
                return not record.relocated
            return record.relocated and previous[entry.path.split("/", 1)[0]].get("manifest_roots") == roots

        cp.clear_markers(targets)
        try:
            update = update_tree(tree.entries(packs, obj.manifest) if held is None else held, targets, packs,
                                 receipts=receipts, unchanged=unchanged, exclude=cp.excluded, progress=progress,
                                 again=lambda: tree.raw_entries(packs, obj.manifest) if held is None else held,
                                 embedded=obj.manifest.get("embedded", []), relocating=relocating)
            info, written = update.info, update.written
            _warn_setid(info.stripped_setid, point, log)
            relocated = _relocate(targets[0].path.parent, portability, anchor, point, log,
                                  tops={t.name: t.path for t in targets}, only=written)
            containment.check_in_place(targets)  # UnsafeTree: later steps would write outside
            # entries left alone keep their placed mtimes; the rest are placed around them
            mtimes = place_restored([t.path for t in targets], targets[0].path.parent, cp.fingerprint(point),
                                    point, log, place=update.place)
            kept = {e for e in relocating if e not in written}
            update.commit_receipts({**cp.receipt_header(point, obj.fingerprint, "restored", anchor),
                                    "manifest_roots": roots}, relocated | kept)
        except BaseException:
            for t in targets:
                receipt_remove(t.path)
                shutil.rmtree(t.path, ignore_errors=True)
            raise
    cp.write_markers(targets, point, obj.fingerprint, "restored", extra=mtimes)
    return f"{info.files_written} files written, {info.kept} kept, {info.removed} removed (in place)"


def _warn_setid(stripped: list[str], point: Point, log: Log) -> None:
    if stripped:
        shown = ", ".join(stripped[:10]) + (" ..." if len(stripped) > 10 else "")
        log(f"WARN: checkpoint:{point.id} restored {len(stripped)} file(s) without their setuid/setgid bits: "
            f"{shown}")


def write_receipts(cp: Checkpoints, obj: LocalObject, point: Point, anchor: Anchor, targets: list[Target],
                   relocated: set[str], held: list[Entry] | None = None) -> None:
    """The receipt of each restored target: the tree as it is on disk now, with the content
    the manifest gives each entry (files rewritten for this workspace's paths marked)."""
    header = {**cp.receipt_header(point, obj.fingerprint, "restored", anchor),
              "manifest_roots": obj.manifest.get("roots")}
    receipts_of_restored(targets, tree.raw_entries(cp.store.packs, obj.manifest) if held is None else held, header,
                         cp.excluded, relocated, obj.manifest.get("embedded", []))


def _relocate(tree_dir: Path, portability: Portability, anchor: Anchor, point: Point, log: Log, *,
              tops: dict[str, Path] | None = None, only: set[str] | None = None) -> set[str]:
    """Rewrite the staged tree (or, with ``tops``, the trees in place; ``only`` these
    members) for this workspace's paths; the members rewritten."""
    plan = portability.plan
    if plan.empty:
        return set()
    result = apply_relocation(tree_dir, plan, tops=tops, only=only)
    for member, why in result.failed:
        if anchor.relocation_required(member):
            raise CheckpointError(f"not_relocatable:{member} ({why})")
        log(f"WARN: checkpoint:{point.id} left {member} as captured: {why}")
    if portability.kept:  # nothing for the user to do: no WARN
        shown = ", ".join(portability.kept[:10]) + (" ..." if len(portability.kept) > 10 else "")
        log(f"checkpoint:{point.id} kept {len(portability.kept)} file(s) as captured, naming the old path "
            f"(the anchor says only a rebuild reads them): {shown}")
    log(f"checkpoint:{point.id} relocated {len(result.rewritten)} file(s) and link(s) to this workspace's paths")
    return set(result.rewritten)
