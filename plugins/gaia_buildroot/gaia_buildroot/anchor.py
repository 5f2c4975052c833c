"""The ``buildroot.build`` anchor: checkpoints of the Buildroot out dir."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gaia_buildroot.layout import (
    SYNC_BACKUP_DIR,
    SYNC_MANIFEST_FILE,
    BuildrootLayout,
    buildroot_config,
)
from gaia_buildroot.post_image import RECORD_FILE
from gaia_core.anchors import Anchor, Target, Units
from gaia_core.errors import TaskFailed
from gaia_core.hostinfo import host_system

if TYPE_CHECKING:
    from gaia_core.build import Build

TARGET_NAME = "buildroot_out_dir"

#: What the Buildroot build reads. ``buildroot.rpi.overlay``, ``config_file`` and
#: ``cmdline_file`` are not here: they reach the image through the stage, which only
#: collect applies, so build files that differ in them share one checkpoint.
DEFAULT_FINGERPRINT_PATHS = (
    "buildroot.version",
    "buildroot.source_dir",
    "buildroot.defconfig",
    "buildroot.packages",
    "buildroot.package_versions",
    "buildroot.symbols",
    "buildroot.external",
    "buildroot.starting_point",
    "buildroot.rpi.arch",
    "buildroot.rpi.board",
    "buildroot.rpi.defconfig",
)


#: What target-finalize writes or cleans in the target tree, and the directories packages
#: install into. Buildroot's Makefile: usr/lib/os-release and the etc/os-release link, the
#: rm -rf and find of usr/include, usr/share, usr/lib, lib, usr/libexec, `touch usr`;
#: skeleton-init-common: hostname, hosts, issue, shadow, shells, passwd, the bin/sh link;
#: busybox and skeleton-init-sysv: inittab.
FINALIZE_WRITES = (
    "bin",
    "bin/sh",
    "etc",
    "etc/hostname",
    "etc/hosts",
    "etc/inittab",
    "etc/issue",
    "etc/os-release",
    "etc/passwd",
    "etc/shadow",
    "etc/shells",
    "lib",
    "sbin",
    "usr",
    "usr/bin",
    "usr/include",
    "usr/lib",
    "usr/lib/os-release",
    "usr/libexec",
    "usr/sbin",
    "usr/share",
)

#: What later steps write into, relative to the out dir: make (the next build, collect's
#: target-post-image, a package rebuild), gaia's stage sync and its backups. A restored
#: out dir in which one of these, or a directory above it, links outside is refused.
WRITE_PATHS = (
    "*",  # also .config, Makefile, .br2-external.*: make writes them
    "target",
    "images",
    "images/*",
    "build",
    "build/*",
    "host",
    "host/*",
    "staging",
    "per-package",
    "per-package/*",
    "per-package/*/host",
    "per-package/*/target",
    SYNC_BACKUP_DIR,
    SYNC_MANIFEST_FILE,
    RECORD_FILE,
    *(f"target/{path}" for path in FINALIZE_WRITES),
)


class BuildrootAnchor(Anchor):
    """A restore hit skips configure and build; collect still applies the current stage."""

    task = "buildroot.build"
    default_fingerprint_paths = DEFAULT_FINGERPRINT_PATHS
    skips = ("buildroot.configure",)
    restore_after = ("buildroot.fetch", "buildroot:target-prepared?")

    def targets(self) -> list[Target]:
        layout = BuildrootLayout.of(self.build)
        link = next((link for link, padded in layout.links if padded == layout.out_dir), None)
        return [
            Target(
                TARGET_NAME,
                layout.out_dir,
                rootfs_dirs=("target", "per-package/*/target"),
                writes=WRITE_PATHS,
                link=link,
            )
        ]

    def inactive_reason(self) -> str | None:
        cfg = buildroot_config(self.build)
        if not cfg.enabled:
            return "buildroot.enabled=false"
        if cfg.starting_point.enabled:
            return "buildroot.starting_point.enabled=true"
        return None

    def fingerprint_salt(self) -> dict[str, Any]:
        # host/ holds tools built for this machine (Yocto keys native objects the same way).
        # The absolute paths Buildroot bakes into the tree are relocation roots instead.
        return {"host.system": host_system()}

    def relocation_roots(self) -> dict[str, Path]:
        """Every configured directory the out dir can name: the staging link, config.status
        and .pc files name the out dir; its Makefile the source tree; .config the download
        dir and, through BR2_EXTERNAL, the external trees.

        Buildroot writes canonical paths (it runs in ``realpath`` of its dir and of O=);
        the core records each root's resolved form too, so a symlink on the way is covered.
        """
        layout = BuildrootLayout.of(self.build)
        configured = {
            "workspace": self.build.workspace.root,
            "buildroot.out_dir": layout.out_dir,
            "buildroot.src_dir": layout.src_dir,
            "buildroot.download_dir": layout.download_dir,
            **{
                f"buildroot.external.{i}": tree
                for i, tree in enumerate(layout.externals)
            },
        }
        return {name: Path(os.path.normpath(path)) for name, path in configured.items()}

    def relocation_required(self, member: str) -> bool:
        return relocation_required(member)

    def units(self) -> Units:
        """Its packages, with per-package directories (:mod:`gaia_buildroot.package_units`)."""
        from gaia_buildroot.package_units import buildroot_units

        return buildroot_units(self.build)

    def clean_paths(self) -> tuple[str, ...]:
        """What ``make clean`` removes: ``.config`` (``buildroot.configure`` made it) stays."""
        from gaia_buildroot.package_units import CLEAN

        return tuple(f"{TARGET_NAME}/{path}" for path in CLEAN)

    def units_problem(self) -> str | None:
        """Per-package directories off in the build file or the defconfig (None when that
        cannot be told before the fetch: the units then say it from ``.config``)."""
        from gaia_buildroot.dotconfig import DotConfig, requested_symbols
        from gaia_buildroot.layout import defconfig_name
        from gaia_buildroot.package_units import PER_PACKAGE, PER_PACKAGE_PROBLEM
        from gaia_buildroot.source_tree import find_defconfig

        cfg = buildroot_config(self.build)
        if not cfg.enabled or cfg.starting_point.enabled:
            return None
        wanted = requested_symbols(cfg.packages, cfg.package_versions, cfg.symbols)
        if PER_PACKAGE in wanted:
            return None if wanted[PER_PACKAGE] is True else PER_PACKAGE_PROBLEM
        name = defconfig_name(self.build, cfg)
        found = find_defconfig(self.build, name) if name else None
        if found is None:
            return None
        return None if DotConfig.read(found).get(PER_PACKAGE) == "y" else PER_PACKAGE_PROBLEM


def refuse_escaping_target_tree(build: Build, layout: BuildrootLayout) -> None:
    """Fail before ``make`` runs when a link in ``target/`` would take finalize's writes
    outside the out dir. Checked at restore for the whole out dir; here again for
    ``target/`` because undoing a stage sync moves backed-up links back into it."""
    target = BuildrootAnchor(build).targets()[0]
    own = tuple(p for p in target.writes if p == "target" or p.startswith("target/"))
    problems = dataclasses.replace(target, writes=own).unsafe_writes()
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise TaskFailed(f"{layout.target_dir} holds links that would make Buildroot write outside "
                         f"{layout.out_dir}: {shown}; remove the out dir and build again")


def relocation_required(member: str) -> bool:
    """Files in a package's build dir (``build/<pkg>/...``) may keep an old path.

    They are intermediate objects (configure results, compiled objects) that only a
    rebuild of that package reads, and a rebuild regenerates them; real Buildroot has a
    compiled object there that embeds the out dir. Everything else (host/, staging,
    target/, per-package/, .config, the out dir's Makefile, build/*.txt) is used as is
    by later steps and must point at the tree's new place.
    """
    parts = PurePosixPath(member).parts
    if len(parts) < 2 or parts[0] != TARGET_NAME:
        return True
    rel = parts[1:]
    return not (len(rel) >= 3 and rel[0] == "build")


