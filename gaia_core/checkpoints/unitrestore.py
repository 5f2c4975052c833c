"""Restore of units: on a miss of the whole tree, every unit whose key is stored is put in
place, and the anchor's build makes the rest.

Per unit, in dependency order (a unit is reused only when every unit it depends on is):

- **keep**: the tree holds it already, by the units marker, with this key and these paths;
- **restore**: its object is in the local store or in one of the point's backends;
- **build**: no key (the anchor could not read an input), a dependency is built, or no
  object of its key is stored. Its paths are removed, so the build makes it from scratch.

Whatever the tree held that is not kept goes (units of earlier keys, of names gone from the
build), and so do the anchor's *assembled* paths (Buildroot's ``target`` and ``host``),
which its build makes anew from all units. Restored units are written into a staging
directory beside the tree (hard links across units as the captured tree had them, where
both files are restored), relocated there, checked like a whole restore, and moved in.
Then the mtimes of every kept and restored unit are placed as after a whole restore (their
order kept, ending now, after the newest input), so make takes them as built; what the
build writes afterwards is newer, which is what make expects of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints import containment, swap, tree
from gaia_core.checkpoints.engine import Checkpoints, Log
from gaia_core.checkpoints.entries import Entry, sort_key
from gaia_core.checkpoints.mtimes import place_mtimes
from gaia_core.checkpoints.portability import assess
from gaia_core.checkpoints.relocate import apply_relocation
from gaia_core.checkpoints.unitkeys import UnitKey, unit_keys
from gaia_core.checkpoints.units import human_size
from gaia_core.checkpoints.unitstore import Held, local_unit, read_held, write_held
from gaia_core.errors import CheckpointError
from gaia_core.owner import write_owner
from gaia_core.safefs import Root

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target, Units
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.store import LocalObject

KEEP, RESTORE, BUILD = "keep", "restore", "build"


@dataclasses.dataclass(frozen=True)
class Decision:
    name: str
    key: str | None
    action: str  # keep | restore | build
    #: restore: where from; build: why; keep: "in the tree"
    why: str
    label: str = ""


@dataclasses.dataclass
class UnitsPlan:
    spec: Units
    keys: dict[str, UnitKey]
    decisions: dict[str, Decision]
    #: the newest mtime among the inputs the units were read from (placement waits past it)
    newest_input_ns: int | None = None

    def count(self, action: str) -> int:
        return sum(1 for d in self.decisions.values() if d.action == action)

    def summary(self) -> str:
        return f"{self.count(KEEP)} kept, {self.count(RESTORE)} restored, {self.count(BUILD)} to build"


def read_units(anchor: Anchor) -> tuple[Units, dict[str, UnitKey], int | None]:
    """The anchor's units and their keys, and the newest mtime of what they were read from."""
    from gaia_core.fingerprints import _collect_input_times

    with _collect_input_times() as times:
        spec = anchor.units()
        if spec is None:
            raise CheckpointError(f"anchor '{anchor.task}' declares no units")
        keys = unit_keys(spec, anchor)
    return spec, keys, times.newest_ns


def in_tree(held: Held, keys: Mapping[str, UnitKey], targets: list[Target]) -> set[str]:
    """The units the tree holds with their key (by the marker), all of their paths there."""
    tops = {t.name: t.path for t in targets}
    found = set()
    for name, k in keys.items():
        if k.key is not None and held.get(name) == (k.key, tuple(k.unit.paths)) and all(
                os.path.lexists(tops[p.split("/", 1)[0]] / p.split("/", 1)[1]) for p in k.unit.paths):
            found.add(name)
    return found


def decide(keys: Mapping[str, UnitKey], holding: set[str], available: Mapping[str, str],
           missing_why: Mapping[str, str] | None = None) -> dict[str, Decision]:
    """Keep, restore or build, in dependency order: a unit is reused only when every unit it
    depends on is. ``available``: name -> where its object is; ``holding``: names the tree
    holds with their key; ``missing_why``: why a unit with a key is not available."""
    decisions: dict[str, Decision] = {}
    for name, k in keys.items():
        label = k.unit.label
        if k.key is None:
            decisions[name] = Decision(name, None, BUILD, f"no key: {k.why}", label)
            continue
        blocked = next((d for d in sorted(k.unit.deps) if decisions.get(d) and decisions[d].action == BUILD), None)
        if blocked is not None:
            decisions[name] = Decision(name, k.key, BUILD, f"its dependency '{blocked}' is built", label)
        elif name in holding:
            decisions[name] = Decision(name, k.key, KEEP, "in the tree", label)
        elif name in available:
            decisions[name] = Decision(name, k.key, RESTORE, available[name], label)
        else:
            why = (missing_why or {}).get(name) or "not stored"
            decisions[name] = Decision(name, k.key, BUILD, f"{why} (key {k.key[:12]})", label)
    return decisions


def local_available(cp: Checkpoints, point: Point, anchor: Anchor, keys: Mapping[str, UnitKey], *,
                    discard: bool) -> tuple[dict[str, LocalObject], dict[str, str]]:
    """The units whose object the local store holds and can be used here, and why the others cannot."""
    found: dict[str, LocalObject] = {}
    why: dict[str, str] = {}
    for name, k in keys.items():
        if k.key is None:
            continue
        obj = local_unit(cp, point, k.key, anchor, name, discard=discard)
        if obj is None:
            continue
        problem = assess(obj.manifest, anchor).problem
        if problem:
            why[name] = f"local store: {problem}"
        else:
            found[name] = obj
    return found, why


#: what :func:`read_units` returns
Read = tuple["Units", dict[str, UnitKey], "int | None"]


def plan_restore(cp: Checkpoints, point: Point, anchor: Anchor, log: Log, *,
                 reuse: bool = True, read: Read | None = None) -> tuple[UnitsPlan, dict[str, LocalObject]]:
    """Read the units (unless ``read`` has them), fetch what the backends have of what is
    needed, decide (``reuse`` off: no store is asked, what the tree holds is kept or removed)."""
    spec, keys, newest = read if read is not None else read_units(anchor)
    targets = anchor.targets()
    held = in_tree(read_held(targets, point), keys, targets)
    if not reuse:
        return UnitsPlan(spec, keys, decide(keys, held, {}, dict.fromkeys(keys, "use_policy=off")), newest), {}
    local, why = local_available(cp, point, anchor, keys, discard=True)
    available = {n: "local store" for n in local}
    if point.backends:
        # what would be restored if the backends had everything: fetch only that
        hoped = decide(keys, held, {**available, **{n: "?" for n, k in keys.items() if k.key is not None}})
        wanted = {n: str(d.key) for n, d in hoped.items() if d.action == RESTORE and n not in local}
        if wanted:
            from gaia_core.checkpoints.unitremote import download_units

            got, remote_why = download_units(cp, point, anchor, wanted, log)
            for name, (obj, where) in got.items():
                local[name] = obj
                available[name] = where
            why.update(remote_why)
    decisions = decide(keys, held, available, why)
    return UnitsPlan(spec, keys, decisions, newest), local


def restore_units(cp: Checkpoints, point: Point, anchor: Anchor, newest_input_ns: int | None,
                  log: Log, *, reuse: bool = True, read: Read | None = None) -> UnitsPlan:
    """Bring the tree to its kept and restored units (see the module docstring). ``reuse``
    off (``use_policy = "off"``): nothing is restored, but what the tree holds of other keys
    still goes, so the build never leaves a package stale that Buildroot would not rebuild.
    The caller has finished or removed what an interrupted restore left (:func:`.restore.tidy`)."""
    targets = anchor.targets()
    plan, objects = plan_restore(cp, point, anchor, log, reuse=reuse, read=read)
    held = read_held(targets, point)
    kept = {n: (str(d.key), tuple(plan.keys[n].unit.paths)) for n, d in plan.decisions.items() if d.action == KEEP}
    restoring = {n: objects[n] for n, d in plan.decisions.items() if d.action == RESTORE}
    stale = {n: paths for n, (key, paths) in held.items() if n not in kept}
    rebuilt = [k.unit.paths for n, k in plan.keys.items() if n not in kept]
    write_held(targets, point, kept)  # from here on the marker claims only what stays
    started = time.monotonic()
    removed = _remove(targets, [*stale.values(), *rebuilt, plan.spec.assembled])
    moved: list[str] = []
    try:
        if restoring:
            moved = _write(cp, point, anchor, targets, plan, restoring, log)
        placed = [*kept, *restoring]
        roots = [_abs(targets, p) for n in placed for p in plan.keys[n].unit.paths]
        newest = max((t for t in (newest_input_ns, plan.newest_input_ns) if t is not None), default=None)
        placement = place_mtimes([r for r in roots if os.path.lexists(r)], clock_dir=targets[0].path.parent,
                                 not_before_ns=newest)
    except BaseException:
        _remove(targets, [plan.keys[n].unit.paths for n in restoring])
        raise
    write_held(targets, point, {**kept, **{n: (str(plan.keys[n].key), tuple(plan.keys[n].unit.paths))
                                           for n in restoring}})
    sources: dict[str, int] = {}
    for n in restoring:
        sources[plan.decisions[n].why] = sources.get(plan.decisions[n].why, 0) + 1
    where = ", ".join(f"{count} from {source}" for source, count in sorted(sources.items()))
    log(f"checkpoint:{point.id} units: {plan.summary()}" + (f" ({where})" if where else "")
        + f"; {removed} path(s) removed, {len(moved)} moved in, mtimes of {placement.entries} entries placed "
        f"in {time.monotonic() - started:.1f}s")
    from gaia_core.checkpoints.unitstatus import why_line
    from gaia_core.checkpoints.unitstore import unit_objects

    stored = unit_objects(cp, point.id)
    for d in plan.decisions.values():
        if d.action == BUILD:
            changed = why_line(cp, point, plan.keys[d.name], stored) if d.why.startswith("not ") else ""
            log(f"checkpoint:{point.id} unit {d.name} {d.label}".rstrip() + f" will be built: {d.why}"
                + (f"; {changed}" if changed else ""))
    return plan


def clear_units(point: Point, anchor: Anchor, spec: Units | None) -> int:
    """Leave the targets as a clean build finds them, after a restore of units failed part
    way: the units marker first (a clear cut short claims nothing), then the paths of every
    unit the marker named or ``spec`` declares and the assembled ones; when the units could
    not be read (``spec`` None), what the anchor's :meth:`~gaia_core.anchors.Anchor.clean_paths`
    names. How many paths were there."""
    from gaia_core.checkpoints.unitstore import clear_held

    targets = anchor.targets()
    held = read_held(targets, point)
    clear_held(targets)
    groups: list[Iterable[str]] = [paths for _key, paths in held.values()]
    if spec is None:
        groups.append(anchor.clean_paths())
    else:
        groups.extend([*(unit.paths for unit in spec.units), spec.assembled])
    return _remove(targets, groups)


def _abs(targets: list[Target], path: str) -> Path:
    top, _, rest = path.partition("/")
    return next(t.path for t in targets if t.name == top) / rest


def _remove(targets: list[Target], groups: Iterable[Iterable[str]]) -> int:
    """Remove these ``<target>/<path>`` entries, nothing followed; how many were there."""
    by_target = {t.name: t for t in targets}
    count = 0
    for paths in groups:
        for path in paths:
            top, _, rest = path.partition("/")
            target = by_target.get(top)
            if target is None or not rest or not target.path.is_dir():
                continue
            with Root(target.path) as root:
                if root.lstat(rest) is not None:
                    root.rmtree(rest)
                    count += 1
    return count


def _write(cp: Checkpoints, point: Point, anchor: Anchor, targets: list[Target], plan: UnitsPlan,
           objects: Mapping[str, LocalObject], log: Log) -> list[str]:
    """Write the restored units beside the tree, relocate and check them, move them in."""
    from gaia_core.checkpoints.restore import check_free_space
    from gaia_core.checkpoints.treewrite import write_tree

    parent = targets[0].path.parent
    check_free_space(parent, sum(o.unpacked_size for o in objects.values()), f"restoring units of {point.id}")
    staging = Path(tempfile.mkdtemp(prefix=f".{targets[0].path.name}{swap.STAGING_INFIX}", dir=parent))
    try:
        write_owner(staging, f"restore units of {point.id}")
        tree_dir = staging / "tree"
        tree_dir.mkdir()
        with contextlib.ExitStack() as held:
            for obj in objects.values():
                held.enter_context(cp.store.hold(obj))
            links = _links(cp, objects)
            info = write_tree(_linked(_merged(cp, objects), links), tree_dir, cp.store.packs,
                              files=sum(obj.manifest["tree"]["files"] for obj in objects.values()))
        if info.stripped_setid:
            log(f"WARN: checkpoint:{point.id} restored {len(info.stripped_setid)} file(s) of units without their "
                f"setuid/setgid bits: {', '.join(info.stripped_setid[:10])}")
        for name, obj in objects.items():
            portability = assess(obj.manifest, anchor)
            if portability.plan.empty:
                continue
            result = apply_relocation(tree_dir, portability.plan)
            for member, why in result.failed:
                if anchor.relocation_required(member):
                    raise CheckpointError(f"unit {name}: not_relocatable:{member} ({why})")
                log(f"WARN: checkpoint:{point.id} unit {name} left {member} as captured: {why}")
        containment.check_targets(tree_dir, [t for t in targets if (tree_dir / t.name).is_dir()])
        moved = []
        for name in objects:
            for path in plan.keys[name].unit.paths:
                source = tree_dir / path
                if not os.path.lexists(source):
                    continue
                top, _, rest = path.partition("/")
                target = next(t for t in targets if t.name == top)
                with Root(target.path) as root:
                    head, _, _ = rest.rpartition("/")
                    if head:
                        root.makedirs(head)
                    root.rmtree(rest)
                    root.move_in(source, rest)
                moved.append(path)
        log(f"checkpoint:{point.id} wrote {info.files_written} file(s) of {len(objects)} unit(s) "
            f"({human_size(info.written)}; {len(links)} hard link(s) across units kept)")
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _merged(cp: Checkpoints, objects: Mapping[str, LocalObject]) -> Iterator[Entry]:
    """The checked entries of every object in one canonical stream; the directories above
    the units' paths, listed by several, once."""
    streams = [tree.entries(cp.store.packs, obj.manifest) for obj in objects.values()]
    last: Entry | None = None
    for entry in heapq.merge(*streams, key=lambda e: sort_key(e.path)):
        if last is not None and entry.path == last.path:
            if entry.type == "d" and last.type == "d":
                continue
            raise CheckpointError(f"two units list {entry.path[:200]!r}")
        last = entry
        yield entry


def _links(cp: Checkpoints, objects: Mapping[str, LocalObject]) -> dict[str, str]:
    """path -> the path it is written as a hard link to: files the captured tree linked across
    units (twins) that are both restored here with the same content, mode and time. Files
    that embed a root are copies (each is relocated by its own unit)."""
    embedded = {item["path"] for obj in objects.values() for item in obj.manifest.get("embedded", [])}
    meta: dict[str, tuple[Any, ...]] = {}
    pairs: list[tuple[str, str]] = []
    for entry in _merged(cp, objects):
        if entry.type == "f" and (entry.head or entry.twin) and entry.path not in embedded:
            meta[entry.path] = (entry.digest, entry.size, entry.mode, entry.mtime_ns)
            if entry.twin is not None:
                pairs.append((entry.path, entry.twin))
    parent: dict[str, str] = {}

    def find(path: str) -> str:
        while parent.get(path, path) != path:
            parent[path] = parent.get(parent[path], parent[path])
            path = parent[path]
        return path

    for a, b in pairs:
        if b in meta and meta[a] == meta[b]:
            ra, rb = find(a), find(b)
            if ra != rb:
                first, second = sorted((ra, rb), key=sort_key)
                parent[second] = first
    return {path: find(path) for path in parent if find(path) != path}


def _linked(entries: Iterator[Entry], links: Mapping[str, str]) -> Iterator[Entry]:
    """``entries`` with the files of ``links`` written as hard links to their first name."""
    for entry in entries:
        if entry.type == "f" and entry.path in links:
            yield Entry(entry.path, "h", entry.mode, entry.mtime_ns, link=links[entry.path])
        elif entry.type == "h" and entry.link in links:
            yield dataclasses.replace(entry, link=links[entry.link])
        else:
            yield entry


__all__ = ["BUILD", "KEEP", "RESTORE", "Decision", "Read", "UnitsPlan", "clear_units", "decide", "in_tree",
           "local_available", "plan_restore", "read_units", "restore_units"]
