"""Can a checkpoint be used here? Its prerequisites outside the tree, and its relocation.

Both are decided from the manifest alone (no payload byte is read), so that ``status``
says ``hit`` only for an object that restore will really use, and a remote object that
cannot be used here is not even downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.relocate import plan_relocation

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor
    from gaia_core.checkpoints.relocate import RelocationPlan


@dataclasses.dataclass
class Portability:
    #: ``missing_prerequisite:<path>`` or ``not_relocatable:<member>``; None when usable
    problem: str | None
    plan: RelocationPlan
    #: files left as they are (the anchor said they may stay), for a warning
    kept: list[str]

    @property
    def usable(self) -> bool:
        return self.problem is None


#: suffix of a root's resolved form, recorded when a symlink makes it differ (Buildroot
#: embeds ``realpath $(O)``, gaia passes the path as configured)
REAL = ":real"


def current_roots(anchor: Anchor, *, capture: bool = False) -> dict[str, str]:
    """The anchor's roots here, each also in its resolved form: at capture only where the two
    differ, at restore always (so an old resolved form maps whatever this machine looks like)."""
    roots = {}
    for name, path in anchor.relocation_roots().items():
        given = os.path.abspath(path)
        roots[name] = given
        real = os.path.realpath(given)
        if real != given or not capture:
            roots[name + REAL] = real
    return roots


def map_path(path: str, old_roots: dict[str, str], new_roots: dict[str, str]) -> str:
    """``path`` as it is named here: the longest old root it lies in, replaced by its new path."""
    best = None
    for name, old in old_roots.items():
        if (path == old or path.startswith(old.rstrip("/") + "/")) and name in new_roots:
            if best is None or len(old) > len(old_roots[best]):
                best = name
    if best is None:
        return path
    return new_roots[best] + path[len(old_roots[best]):]


def assess(manifest: dict[str, Any], anchor: Anchor) -> Portability:
    old_roots: dict[str, str] = manifest.get("roots") or {}
    new_roots = {name: path for name, path in current_roots(anchor).items() if name in old_roots}
    plan = plan_relocation(manifest.get("embedded") or [], old_roots, new_roots)
    for prerequisite in manifest.get("prerequisites") or []:
        here = map_path(prerequisite, old_roots, new_roots)
        if not os.path.isdir(here):
            return Portability(f"missing_prerequisite:{here}", plan, [])
    kept = []
    for member, _why in plan.unrewritable:
        if anchor.relocation_required(member):
            return Portability(f"not_relocatable:{member}", plan, [])
        kept.append(member)
    return Portability(None, plan, kept)
