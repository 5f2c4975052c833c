"""The ``buildroot.build`` anchor: checkpoints of the Buildroot out dir."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from gaia_buildroot.layout import BuildrootLayout, buildroot_config
from gaia_core.anchors import Anchor, Target

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
    "buildroot.rpi.overlay",
    "buildroot.rpi.config_file",
    "buildroot.rpi.cmdline_file",
)


class BuildrootAnchor(Anchor):
    """A restore hit skips configure and build; collect still applies the current stage."""

    task = "buildroot.build"
    default_fingerprint_paths = DEFAULT_FINGERPRINT_PATHS
    skips = ("buildroot.configure",)
    restore_after = ("buildroot.fetch", "buildroot:target-prepared?")

    def targets(self) -> list[Target]:
        out_dir = BuildrootLayout.of(self.build).out_dir
        return [
            Target(
                "buildroot_out_dir",
                out_dir,
                rootfs_dirs=("target", "per-package/*/target"),
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
        # Buildroot bakes these absolute paths into the out dir and its .config.
        layout = BuildrootLayout.of(self.build)
        # The out dir's Makefile names the source tree, so that path matters as well.
        return {
            "buildroot.out_dir": str(layout.out_dir),
            "buildroot.stage_root": str(layout.stage_root),
            "buildroot.src_dir": str(layout.src_dir),
            # host/ holds tools built for this machine (Yocto keys native objects the same way)
            "host.system": host_system(),
        }


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
