"""Nothing a tree holds may make later steps write outside it.

An anchor declares, per target, the paths its later steps write into
(:attr:`Target.writes <gaia_core.anchors.Target>`: Buildroot's ``target``, ``images``,
``target/etc/hostname``). A tree in which one of them, or a directory above it, is a
symbolic link that resolves outside the tree would turn those writes into writes on the
host (``images -> /etc``), so restore refuses such a tree before it is swapped in, and
capture before it is published, whoever signed it.

Links are resolved as the host kernel will when ``make`` writes through them, not as the
target system reads them: a link inside a root filesystem (``target/etc/resolv.conf ->
../run/resolv.conf``) is fine as long as it stays in the tree, while an absolute one
(``target/etc/hostname -> /etc/hostname``) leads out of it. An absolute link into the
tree's own final path (Buildroot's ``staging``) stays inside. Nothing is read but link
targets and directory listings; a path that does not exist yet is judged by its name.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.errors import CheckpointError

if TYPE_CHECKING:
    from gaia_core.anchors import Target

#: as the kernel's limit on links followed in one lookup
MAX_LINKS = 40
_MAGIC = set("*?[")


class UnsafeTree(CheckpointError):
    """A declared write path of a target leads outside it through a link."""

    def __init__(self, target: str, problems: list[str]):
        self.problems = problems
        #: ``unsafe_tree:<target>/<path>``: the miss reason
        self.reason = f"unsafe_tree:{target}/{problems[0].split(':', 1)[0]}"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"unsafe tree: in {target}, {problems[0]}{more}; later steps would write outside it")


class _Outside(Exception):
    def __init__(self, how: str):
        self.how = how


def homes(target: Target) -> list[Path]:
    """The absolute paths that name the target's tree once it is in place."""
    final = Path(os.path.abspath(target.path))
    return sorted({final, Path(os.path.realpath(final.parent)) / final.name})


def escaping_writes(tree: Path, patterns: Iterable[str], names: Sequence[Path] = ()) -> list[str]:
    """``<path>: <link> -> <where it points> leads outside`` for each declared path under
    ``tree`` that a link takes outside it. ``names`` are other absolute paths of ``tree``
    (where it will live): an absolute link into one of them stays inside."""
    problems: dict[str, str] = {}
    for pattern in patterns:
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"a write path must be relative and below the target: {pattern!r}")
        for shown, how in _walk_pattern(tree, parts, [str(n).rstrip("/") for n in names]):
            problems.setdefault(shown, f"{shown}: {how}")
    return [problems[k] for k in sorted(problems)]


def check_targets(tree: Path, targets: Sequence[Target]) -> None:
    """Raise :class:`UnsafeTree` when a target staged at ``tree/<name>`` fails its declared
    write paths (restore, before the swap)."""
    for t in targets:
        problems = escaping_writes(tree / t.name, t.writes, homes(t))
        if problems:
            raise UnsafeTree(t.name, problems)


def check_in_place(targets: Sequence[Target]) -> None:
    """The same for targets in place (capture, before anything is published)."""
    for t in targets:
        problems = t.unsafe_writes()
        if problems:
            raise UnsafeTree(t.name, problems)


def _walk_pattern(tree: Path, parts: list[str], names: list[str]) -> Iterable[tuple[str, str]]:
    """(shown path, how it leaves) for every match of ``parts`` that leaves the tree."""
    frontier: list[tuple[list[str], list[str]]] = [([], [])]  # (path as declared, resolved in tree)
    for part in parts:
        following = []
        for shown, resolved in frontier:
            for name in _matches(tree, resolved, part):
                try:
                    following.append(([*shown, name], _resolve(tree, resolved, [name], names)))
                except _Outside as out:
                    yield "/".join([*shown, name]), out.how
        frontier = following


def _matches(tree: Path, resolved: list[str], part: str) -> list[str]:
    if not _MAGIC & set(part):
        return [part]
    try:
        return sorted(fnmatch.filter(os.listdir(tree.joinpath(*resolved)), part))
    except OSError:
        return []  # not there (yet): nothing matches


def _resolve(tree: Path, resolved: list[str], pending: list[str], names: list[str]) -> list[str]:
    """``resolved`` (link-free, inside ``tree``) joined with ``pending``, links followed as the
    host kernel follows them; raises _Outside when that leaves the tree."""
    resolved, pending = list(resolved), list(pending)
    followed: list[str] = []  # "link -> target", for the message
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _Outside(f"{followed[-1]} leads outside the tree")
            resolved.pop()
            continue
        here = tree.joinpath(*resolved, part)
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            mode = 0  # missing: a later step creates it as named
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        target = os.readlink(here)
        followed.append(f"{'/'.join([*resolved, part])} -> {target}")
        if len(followed) > MAX_LINKS:
            raise _Outside(f"{followed[0]}: too many levels of links")
        if target.startswith("/"):
            inside = _inside_names(target, names)
            if inside is None:
                raise _Outside(f"{followed[-1]} leads outside the tree")
            resolved, pending = [], inside + pending
        else:
            pending = target.split("/") + pending
    return resolved


def _inside_names(target: str, names: list[str]) -> list[str] | None:
    """The components of ``target`` below one of the tree's absolute names, or None."""
    for name in names:
        if target == name or target.startswith(name + "/"):
            return target[len(name):].split("/")
    return None
