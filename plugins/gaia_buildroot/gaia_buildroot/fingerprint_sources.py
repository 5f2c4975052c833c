"""Fingerprint sources: what the buildroot config values name, hashed by content.

``defconfig = "x_defconfig"`` or ``external = ["br2-external"]`` say nothing about the
files behind them; these sources make an edit to those files change the fingerprint of
the ``buildroot.build`` checkpoint. A file that is not there (yet) gives a stable marker
("unavailable", "missing") instead of an error, so ``status`` works before ``fetch``.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_buildroot.fetch import git_output, is_git_checkout, resolve_version
from gaia_buildroot.layout import BuildrootLayout
from gaia_core.fingerprints import FingerprintSource, hash_file, hash_tree

if TYPE_CHECKING:
    from gaia_core.build import Build

UNAVAILABLE = "unavailable"


def find_defconfig(layout: BuildrootLayout, name: str) -> Path | None:
    """The file Buildroot would use: the last external tree that has it, else the source tree."""
    for tree in [*reversed(layout.externals), layout.src_dir]:
        candidate = tree / "configs" / name
        if candidate.is_file():
            return candidate
    return None


class DefconfigSource(FingerprintSource):
    kind = "buildroot.defconfig"
    paths = ("buildroot.defconfig", "buildroot.rpi.defconfig")

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, str):
            return None
        layout = BuildrootLayout.of(build)
        if not layout.src_dir.is_dir():
            return UNAVAILABLE
        found = find_defconfig(layout, value)
        return hash_file(found) if found else "missing"


class ExternalTreesSource(FingerprintSource):
    kind = "buildroot.external"
    paths = ("buildroot.external",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, list):
            return None
        return [
            hash_tree(build.workspace.resolve(entry))
            for entry in value
            if isinstance(entry, str)
        ]


class RpiOverlaySource(FingerprintSource):
    kind = "buildroot.rpi.overlay"
    paths = ("buildroot.rpi.overlay",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        return (
            hash_tree(build.workspace.resolve(value))
            if isinstance(value, str)
            else None
        )


class RpiFilesSource(FingerprintSource):
    kind = "buildroot.rpi.files"
    paths = ("buildroot.rpi.config_file", "buildroot.rpi.cmdline_file")

    def digest(self, build: Build, path: str, value: Any) -> Any:
        return (
            hash_file(build.workspace.resolve(value))
            if isinstance(value, str)
            else None
        )


class VersionSource(FingerprintSource):
    """The commit ``version`` names now, so a moved branch or tag changes the fingerprint."""

    kind = "buildroot.version"
    paths = ("buildroot.version",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        src = BuildrootLayout.of(build).src_dir
        if not is_git_checkout(src):
            return None if src.is_dir() else UNAVAILABLE
        if isinstance(value, str):
            return resolve_version(src, value) or "missing"
        return git_output(src, "rev-parse", "HEAD")


class SourceTreeSource(FingerprintSource):
    """``source_dir`` is used as is: its commit plus local edits, or its whole content."""

    kind = "buildroot.source_dir"
    paths = ("buildroot.source_dir",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, str):
            return None
        src = build.workspace.resolve(value)
        if not src.is_dir():
            return "missing"
        if not is_git_checkout(src):
            return hash_tree(src)
        return {
            "head": git_output(src, "rev-parse", "HEAD"),
            "changes": _worktree_changes(src),
        }


def _worktree_changes(src: Path) -> str:
    """sha256 of the uncommitted changes (tracked diff and untracked file contents)."""
    h = hashlib.sha256()
    with subprocess.Popen(
        ["git", "-C", str(src), "diff", "HEAD", "--binary"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
            h.update(chunk)
    untracked = (
        git_output(src, "ls-files", "--others", "--exclude-standard", "-z") or ""
    )
    for name in sorted(n for n in untracked.split("\0") if n):
        h.update(name.encode() + b"\0" + hash_file(src / name).encode() + b"\0")
    return "sha256:" + h.hexdigest()


SOURCES = [
    DefconfigSource,
    ExternalTreesSource,
    RpiOverlaySource,
    RpiFilesSource,
    VersionSource,
    SourceTreeSource,
]
