"""Fingerprint sources: what the buildroot config values name, hashed by content.

``defconfig = "x_defconfig"`` or ``external = ["br2-external"]`` say nothing about the
files behind them; these sources make an edit to those files change the fingerprint of
the ``buildroot.build`` checkpoint. Trees are digested per file (``--explain`` names the
file), as git sees them in a work tree: a file ``.gitignore`` names is no input, an
untracked patch is (Buildroot applies it), and the point's ``fingerprint_exclude`` applies. What lives in gaia's clone of Buildroot is read only
once it is the tree the build will use: before ``buildroot.fetch`` brought it there, the
sources raise :class:`InputPending` (see :mod:`gaia_buildroot.source_tree`) instead of
guessing. A file that is simply not there gives the stable value ``"missing"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_buildroot.gitrepo import git_output, is_git_checkout, resolve_version
from gaia_buildroot.package_overrides import digest_overrides
from gaia_buildroot.source_tree import find_defconfig, require_source_tree
from gaia_core.fingerprints import FingerprintSource, digest_files, digest_paths, hash_file, note_inputs_meanwhile
from gaia_core.treedigest import exclude_matcher

if TYPE_CHECKING:
    from gaia_core.build import Build


class DefconfigSource(FingerprintSource):
    kind = "buildroot.defconfig"
    paths = ("buildroot.defconfig", "buildroot.rpi.defconfig")

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, str):
            return None
        found = find_defconfig(build, value)
        return hash_file(found) if found else "missing"


class ExternalTreesSource(FingerprintSource):
    kind = "buildroot.external"
    paths = ("buildroot.external",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, list):
            return None
        return [
            digest_files(build.workspace.resolve(entry), exclude=self.exclude)
            for entry in value
            if isinstance(entry, str)
        ]


class RpiOverlaySource(FingerprintSource):
    kind = "buildroot.rpi.overlay"
    paths = ("buildroot.rpi.overlay",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        return (
            digest_files(build.workspace.resolve(value), exclude=self.exclude)
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
        src = require_source_tree(build)
        if not src.is_dir():
            return "missing"
        if not is_git_checkout(src):
            return None  # a source_dir that is no checkout: SourceTreeSource hashes it
        note_checkout(src)
        if isinstance(value, str):
            return resolve_version(src, value) or "missing"
        return git_output(src, "rev-parse", "HEAD")


class PackageOverrideSource(FingerprintSource):
    """BR2_PACKAGE_OVERRIDE_FILE (a symbol, or the defconfig's) and the trees its
    ``<PKG>_OVERRIDE_SRCDIR`` lines name: edit a file there and the checkpoint misses."""

    kind = "buildroot.package_override"
    paths = ("buildroot.symbols",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        return digest_overrides(build, exclude=self.exclude)


class SymbolFilesSource(FingerprintSource):
    """What the string symbols of the defconfig and the build file name, by content
    (:mod:`gaia_buildroot.named_files`): a busybox fragment, an overlay, a patch dir next to
    the build file change the fingerprint, not only those inside a tree it hashes."""

    kind = "buildroot.symbol_files"
    paths = ("buildroot.symbols",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        from gaia_buildroot.dotconfig import DotConfig, render_value, requested_symbols
        from gaia_buildroot.layout import BuildrootLayout, buildroot_config, defconfig_name
        from gaia_buildroot.named_files import named_files
        from gaia_buildroot.symbols import read_config

        cfg = buildroot_config(build)
        layout = BuildrootLayout.of(build, cfg)
        name = defconfig_name(build, cfg)
        found = find_defconfig(build, name, layout) if name else None
        symbols: dict[str, str | None] = dict(read_config(DotConfig.read(found).text())) if found else {}
        for key, wanted in requested_symbols(cfg.packages, cfg.package_versions, cfg.symbols).items():
            symbols[key] = render_value(wanted)
        return named_files(symbols, layout, exclude=self.exclude) or None


class SourceTreeSource(FingerprintSource):
    """``source_dir`` is used as is: its commit plus the files that differ from it, or its
    whole content."""

    kind = "buildroot.source_dir"
    paths = ("buildroot.source_dir",)

    def digest(self, build: Build, path: str, value: Any) -> Any:
        if not isinstance(value, str):
            return None
        src = build.workspace.resolve(value)
        if not src.is_dir():
            return "missing"
        if not is_git_checkout(src):
            return digest_files(src, exclude=self.exclude)
        note_checkout(src)
        return {
            "head": git_output(src, "rev-parse", "HEAD"),
            "changes": _worktree_changes(src, self.exclude),
        }


def note_checkout(src: Path) -> None:
    """A checkout known by its commit: its directories' mtimes stand for its files'.

    git writes every file of a checkout anew (unlink, create), which sets its directory's
    mtime, so a checkout made again with the same content shows in its newest directory.
    (The index would show it too, but ``git status`` rewrites it on its own.) The walk
    (Buildroot's ~5,000 directories, 65-85 ms) runs beside the fingerprint and what follows
    it: its commit is the fingerprint's, the mtime only a restore's placement needs.
    """
    note_inputs_meanwhile(lambda: newest_directory_mtime(os.fspath(src)))


def newest_directory_mtime(top: str) -> int | None:
    """The newest mtime of ``top`` and the directories under it, ``.git`` and links left out
    (None: ``top`` is gone)."""
    try:
        newest = os.lstat(top).st_mtime_ns
    except OSError:
        return None
    stack = [top]
    while stack:  # no Path, no os.walk lists
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.name != ".git" and entry.is_dir(follow_symlinks=False):
                        try:
                            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
                        except OSError:
                            continue
                        stack.append(entry.path)
        except OSError:
            continue
    return newest


def _worktree_changes(src: Path, exclude: tuple[str, ...]) -> Any:
    """The per-file digest of what differs from HEAD: edited, deleted and untracked files
    (not the ignored ones)."""
    edited = git_output(src, "diff", "HEAD", "--name-only", "-z") or ""
    untracked = git_output(src, "ls-files", "--others", "--exclude-standard", "-z") or ""
    excluded = exclude_matcher(exclude)
    names = {n for n in (edited + "\0" + untracked).split("\0") if n and not excluded(n)}
    return digest_paths(src, names)


SOURCES = [
    DefconfigSource,
    ExternalTreesSource,
    RpiOverlaySource,
    RpiFilesSource,
    VersionSource,
    SourceTreeSource,
    PackageOverrideSource,
    SymbolFilesSource,
]
