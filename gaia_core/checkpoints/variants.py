"""Variant objects: a checkpoint unusable at some path never becomes a permanent miss there.

The store keeps one object per fingerprint. When the object of a fingerprint cannot be
used here for a reason bound to this host or path (``not_relocatable:<file>``: a binary
holds the captured path and the path here is longer; ``missing_prerequisite:<path>``: a
file outside the tree it needs is not here), the run builds, and captures what it built as
a *variant*: an object beside the first, under a key derived from the fingerprint, the
reason and (for a relocation) the target paths here. Later runs here follow the same chain
(at most :data:`MAX_DEPTH` steps) and hit the variant; every other host still uses the
first object. A variant is published write-once and signed like any object, its manifest
names what it is a variant of (``variant_of``), and as its chunks are mostly those of the
first object, it costs the store little more than the files that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaia_core.anchors import Target
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.engine import Checkpoints

#: reasons that hold here but not where the object was built: they lead to a variant
PATH_BOUND = ("not_relocatable:", "missing_prerequisite:")
#: how many variants a run follows from a fingerprint
MAX_DEPTH = 3


def path_bound(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(PATH_BOUND)


def variant_key(key: str, reason: str, targets: Sequence[Target]) -> str:
    """The key of the variant of ``key`` for ``reason`` here: a relocation is bound to the
    target paths (a variant built at one path is the one for that path), a missing
    prerequisite only to the reason (every host without it shares one variant)."""
    parts = ["gaia-variant", key, reason]
    if reason.startswith("not_relocatable:"):
        parts += [f"{t.name}={t.path}" for t in sorted(targets, key=lambda t: t.name)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def variant_field(root: str, parent: str, reason: str) -> dict[str, Any]:
    """The manifest's ``variant_of``: the point's fingerprint, the object this one stands in
    for, and why that one could not be used where this one was built."""
    return {"fingerprint": root, "parent": parent, "reason": reason}


def root_fingerprint(manifest: dict[str, Any]) -> str | None:
    """The fingerprint an object serves: its own, or for a variant the one it stands in for."""
    variant = manifest.get("variant_of")
    if isinstance(variant, dict) and isinstance(variant.get("fingerprint"), str):
        return str(variant["fingerprint"])
    fingerprint = manifest.get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def variant_in_place(cp: Checkpoints, point: Point, targets: Sequence[Target], fp: str) -> str | None:
    """The key of a variant of ``fp`` the targets hold (by their marker) while the local
    store holds its object: known without asking any store about the object of ``fp``
    (which a tier may no longer have); None otherwise."""
    from gaia_core.checkpoints.engine import read_marker

    key = read_marker(targets[0]).get("fingerprint") if targets else None
    if not isinstance(key, str) or key == fp or not cp.materialized(list(targets), key):
        return None
    obj = cp.local_object(point, key, discard=False)
    return key if obj is not None and root_fingerprint(obj.manifest) == fp else None


__all__ = ["MAX_DEPTH", "PATH_BOUND", "path_bound", "root_fingerprint", "variant_field", "variant_in_place",
           "variant_key"]
