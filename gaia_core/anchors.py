"""Anchors: expensive tasks whose output directories checkpoints capture and restore."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from gaia_core.build import Build


@dataclasses.dataclass(frozen=True)
class Target:
    """A directory an anchor produces.

    ``name`` names it inside the payload (``[A-Za-z0-9._-]+``). ``rootfs_dirs`` are
    glob patterns, relative to ``path``, of directories that are a target system's root
    filesystem: a link inside one (``/usr/lib/...``) is read inside that rootfs, so it is
    neither a prerequisite outside the tree nor relocated. Links anywhere are stored and
    restored with their targets unchanged (links are data). ``link`` is the path users know
    when ``path`` is a padded directory behind it (:meth:`Workspace.link_padded_dir`): while
    that link is gone the target counts as removed, as the next run will start it over.

    ``writes`` are glob patterns, relative to ``path``, of what later steps write into or
    below: the tasks after a restore, the anchor's own next (incremental) run. A tree in
    which one of them, or a directory above it, is a link that resolves outside ``path``
    (as the host resolves it, also inside a rootfs dir) is refused as unsafe, at restore
    (a miss, ``unsafe_tree:<name>/<path>``, the object discarded) and at capture.
    """

    name: str
    path: Path
    rootfs_dirs: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    link: Path | None = None

    def unsafe_writes(self) -> list[str]:
        """Each path of ``writes`` that a link takes outside the tree at ``path``, as
        ``<path>: <link> -> <where it points> leads outside the tree``; empty when none does.

        The core asks this after a restore (of the staged tree) and before a capture; a
        step of the anchor's plugin that changes links in the tree can ask it again.
        """
        from gaia_core.checkpoints.containment import escaping_writes, homes

        return escaping_writes(self.path, self.writes, homes(self))


#: what a unit's name may be (a Buildroot package name: ``host-gcc-final``, ``libstdc++``)
UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class Unit:
    """A part of an anchor's tree that is reused on its own (Buildroot: a package).

    ``inputs`` are everything the unit's own build reads (JSON values; never an absolute
    path of the workspace). The core keys the unit by them, the anchor's
    :attr:`Units.shared` inputs and fingerprint salt, and the keys of ``deps``: a change
    reaches the unit and every unit that depends on it, nothing else. ``inputs = None``
    means the key cannot be computed (``unknown`` says why): the unit, and all that depend
    on it, are built. ``paths`` are what the unit owns, ``<target name>/<relative path>``:
    captured as the unit's object, removed and restored as a whole. ``label`` is shown
    beside the name (a version).
    """

    name: str
    inputs: Mapping[str, Any] | None
    deps: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    unknown: str | None = None
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Units:
    """An anchor's tree as units: what :meth:`Anchor.units` returns.

    ``shared`` inputs go into every unit's key (Buildroot: the target-wide symbols, the
    toolchain, the package infrastructure). ``assembled`` are paths
    (``<target name>/<relative path>``) that the anchor's build makes anew from all units
    (Buildroot's ``target`` and ``host``): on a miss they are removed before the anchor
    runs, so no file of an earlier build stays in them.
    """

    units: tuple[Unit, ...]
    shared: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    assembled: tuple[str, ...] = ()


class Anchor:
    """A task that checkpoints can attach to.

    Subclass, set the class attributes and implement :meth:`targets`; return the class
    from ``gaia_register_anchors``. The core then plans
    ``checkpoints.restore.<task with . as ->`` before it and
    ``checkpoints.capture.<...>`` right after it for every point whose ``anchor_task``
    is :attr:`task`.
    """

    #: id of the anchor task, e.g. ``"buildroot.build"``
    task: ClassVar[str]
    #: dotted config paths hashed into the fingerprint when a point sets no ``fingerprint_from``
    default_fingerprint_paths: ClassVar[tuple[str, ...]] = ()
    #: tasks a restore hit skips (the anchor itself is always skipped)
    skips: ClassVar[tuple[str, ...]] = ()
    #: dependencies of the restore task (ids or tokens, ``?`` for optional)
    restore_after: ClassVar[tuple[str, ...]] = ()
    #: globs of files in the input trees the task never reads, left out of every tree
    #: digest (with the point's own ``fingerprint_exclude``)
    fingerprint_exclude: ClassVar[tuple[str, ...]] = ()

    def __init__(self, build: Build):
        self.build = build

    def targets(self) -> list[Target]:
        """Directories captured after the anchor ran and restored instead of running it."""
        raise NotImplementedError

    def inactive_reason(self) -> str | None:
        """Why restore and capture are no-ops in this build (None when they are not)."""
        return None

    def fingerprint_salt(self) -> dict[str, Any]:
        """Extra inputs always hashed, e.g. the host system that tools in the tree were built for.

        Keys are stored as ``<task>:<key>`` (``buildroot.build:host.system``), apart from
        config paths. Never return an absolute path of the workspace here: checkpoints are
        relocatable (see :meth:`relocation_roots`), and a path would keep a checkpoint from
        serving a checkout at another path.
        """
        return {}

    def relocation_roots(self) -> dict[str, Path]:
        """Absolute directories the captured tree may embed, by a stable name.

        Capture records which files and links of the tree contain each root; a restore
        where a root has another path rewrites them (text files always, binaries when
        the new path is no longer than the old, links pointing into the old root). Name
        every configured directory the tree can mention: the workspace root and any
        directory outside it (a source checkout, a download cache). Nested roots are fine;
        the longest match wins.
        """
        return {"workspace": self.build.workspace.root}

    def units(self) -> Units | None:
        """The anchor's tree as units, for points with ``units = true``; None (the default)
        when the anchor has none.

        Asked right before the anchor task runs (the tasks it depends on have run) and
        after it, at capture; ``status`` asks too. Raise
        :class:`~gaia_core.fingerprints.InputPending` when what the units are read from
        is not there yet (``status`` then shows them as unknown), and
        :class:`~gaia_core.errors.ConfigError` for a build that cannot be split into units
        after all.
        """
        return None

    def clean_paths(self) -> tuple[str, ...]:
        """What a clean build of the task does not find in its targets: paths
        ``<target name>/<relative path>`` (Buildroot: what ``make clean`` removes).

        Asked when a point's units cannot be read before the task runs (Buildroot's ``make
        show-info`` failing): the core removes these, so the task builds every unit rather
        than take one built with other inputs as made. The default: everything the targets
        hold now; override it when a task before this one writes into them (Buildroot's
        ``.config``).
        """
        found: list[str] = []
        for target in self.targets():
            if target.path.is_dir() and not target.path.is_symlink():
                found.extend(f"{target.name}/{name}" for name in sorted(os.listdir(target.path)))
        return tuple(found)

    def units_problem(self) -> str | None:
        """Why ``units = true`` cannot work in this build, or None when it can.

        Asked when the build file is loaded: a problem is a config error on the point's
        ``units`` key. Say None when it cannot be told yet (a defconfig not cloned yet);
        :meth:`units` then raises the error. The default: a problem unless the anchor
        overrides :meth:`units`.
        """
        if type(self).units is Anchor.units:
            return f"anchor '{self.task}' declares no units"
        return None

    def relocation_required(self, member: str) -> bool:
        """Whether ``member`` (``<target name>/<path>``) must be rewritten to work elsewhere.

        Asked for a file restore cannot rewrite at the new path. ``False`` keeps it as it
        is with a warning (an intermediate object only a rebuild reads); ``True`` makes
        the checkpoint unusable at that path (reason ``not_relocatable:<member>``).
        """
        return True

    @classmethod
    def skipped_tasks(cls) -> tuple[str, ...]:
        return (*cls.skips, cls.task)
