"""Restore: a local object into the anchor's targets, checked, relocated and swapped in.

Extraction goes into a staging directory beside the first target (same filesystem), is
relocated there when the workspace moved, and each target is then exchanged with its
staged tree in one step (:mod:`.swap`). The staging directory records its owner, so the
next run removes what a killed restore left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.checkpoints import archive, containment, swap
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.freshness import place_restored
from gaia_core.checkpoints.relocate import apply_relocation
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
            portability: Portability, log: Log, progress: Progress | None = None) -> None:
    payload = obj.manifest["payload"]
    parent = targets[0].path.parent
    tidy(targets, log)
    check_free_space(parent, payload["unpacked_size"], f"restoring {point.id}/{obj.fingerprint[:12]}")
    staging = Path(tempfile.mkdtemp(prefix=f".{targets[0].path.name}{swap.STAGING_INFIX}", dir=parent))
    try:
        write_owner(staging, f"restore {point.id}/{obj.fingerprint[:12]}")
        tree = staging / "tree"
        tree.mkdir()
        with cp.store.hold(obj), open(obj.payload_path, "rb") as f:
            info = archive.extract(
                f, tree, targets, compression=payload["compression"],
                expected_sha256=payload["sha256"] if point.trust_mode == "verify" else None,
                expected_size=payload["size"], max_unpacked=payload["unpacked_size"],
                max_entries=payload["entries"], progress=progress,
            )
        for t in targets:
            if not (tree / t.name).is_dir():
                raise CheckpointError(f"checkpoint payload has no target '{t.name}'")
        if info.stripped_setid:
            shown = ", ".join(info.stripped_setid[:10]) + (" ..." if len(info.stripped_setid) > 10 else "")
            log(f"WARN: checkpoint:{point.id} restored {len(info.stripped_setid)} file(s) without their "
                f"setuid/setgid bits: {shown}")
        _relocate(tree, portability, anchor, point, log)
        containment.check_targets(tree, targets)  # UnsafeTree: later steps would write outside
        # hook (issue 16): the last step on the staged tree; its result goes into the marker
        mtimes = place_restored([tree / t.name for t in targets], staging, cp.fingerprint(point), point, log)
        for t in targets:
            t.path.parent.mkdir(parents=True, exist_ok=True)
            swap.swap_in(tree / t.name, t.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cp.write_markers(targets, point, obj.fingerprint, "restored", extra=mtimes)


def _relocate(tree: Path, portability: Portability, anchor: Anchor, point: Point, log: Log) -> None:
    plan = portability.plan
    if plan.empty:
        return
    result = apply_relocation(tree, plan)
    for member, why in result.failed:
        if anchor.relocation_required(member):
            raise CheckpointError(f"not_relocatable:{member} ({why})")
        log(f"WARN: checkpoint:{point.id} left {member} as captured: {why}")
    if portability.kept:  # nothing for the user to do: no WARN
        shown = ", ".join(portability.kept[:10]) + (" ..." if len(portability.kept) > 10 else "")
        log(f"checkpoint:{point.id} kept {len(portability.kept)} file(s) as captured, naming the old path "
            f"(the anchor says only a rebuild reads them): {shown}")
    log(f"checkpoint:{point.id} relocated {len(result.rewritten)} file(s) and link(s) to this workspace's paths")
