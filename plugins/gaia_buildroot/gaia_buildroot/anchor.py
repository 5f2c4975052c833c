"""The ``buildroot.build`` anchor: checkpoints of the Buildroot out dir."""

from __future__ import annotations

import os
import platform
from pathlib import Path, PurePosixPath
from typing import Any

from gaia_buildroot.layout import BuildrootLayout, buildroot_config
from gaia_core.anchors import Anchor, Target

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


def host_system() -> str:
    """``<os id>-<version id>-<machine>``, e.g. ``debian-12-x86_64``."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    except OSError:
        pass
    return f"{fields.get('ID', platform.system().lower())}-{fields.get('VERSION_ID', '?')}-{platform.machine()}"
