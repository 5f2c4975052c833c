"""The package override file and the source trees it names, digested by content.

Buildroot builds a package from a local tree when its package override file
(``BR2_PACKAGE_OVERRIDE_FILE``, by default ``$(CONFIG_DIR)/local.mk`` beside ``.config``)
has a line ``<PKG>_OVERRIDE_SRCDIR = <dir>``. The trees lie outside the out dir and
outside the config gaia hashes by value: without their contents in the fingerprint, an
edit to one would restore a checkpoint built from the old source.

The digest keeps no absolute path of the workspace: each source dir counts by its
content, and the file's other lines with every relocation root replaced by its name.
A file inside the out dir belongs to the captured tree, so only the trees it names count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_buildroot.dotconfig import DotConfig, requested_symbols, symbol_name, unquote
from gaia_buildroot.layout import BuildrootLayout, buildroot_config, defconfig_name
from gaia_buildroot.source_tree import find_defconfig, require_source_tree
from gaia_core.atomic import write_json
from gaia_core.fingerprints import digest_files

if TYPE_CHECKING:
    from gaia_core.build import Build

SYMBOL = "BR2_PACKAGE_OVERRIDE_FILE"
#: Buildroot's Kconfig default
DEFAULT = "$(CONFIG_DIR)/local.mk"
#: what Buildroot's rsync of an override dir leaves out (RSYNC_VCS_EXCLUSIONS)
VCS_DIRS = frozenset({".svn", ".git", ".hg", ".bzr", "CVS"})

_SRCDIR_LINE = re.compile(
    r"^\s*(?:override\s+)?([A-Za-z0-9_]+)_OVERRIDE_SRCDIR\s*(?:::=|:=|\?=|\+=|=)\s*(.*?)\s*$"
)
_MAKE_VARIABLE = re.compile(r"\$[({]([A-Za-z0-9_]+)[)}]")


def override_file_setting(build: Build) -> str:
    """BR2_PACKAGE_OVERRIDE_FILE as ``.config`` will hold it: ``buildroot.symbols`` win
    over the defconfig, which wins over Kconfig's default ("" means none)."""
    cfg = buildroot_config(build)
    wanted = requested_symbols({}, {}, cfg.symbols)
    if isinstance(wanted.get(SYMBOL), str):
        return str(wanted[SYMBOL])
    if wanted.get(SYMBOL) is False:
        return ""
    name = defconfig_name(build, cfg)
    found = find_defconfig(build, name) if name else None
    if found is not None:
        raw = DotConfig.read(found).get(SYMBOL)
        if raw is not None:
            return "" if raw == "n" else unquote(raw)
    return DEFAULT


def external_names(layout: BuildrootLayout) -> dict[str, Path]:
    """``BR2_EXTERNAL_<NAME>_PATH`` of each external tree, from its ``external.desc``."""
    found = {}
    for tree in layout.externals:
        try:
            lines = (tree / "external.desc").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() == "name" and value.strip():
                found[f"BR2_EXTERNAL_{value.strip()}_PATH"] = tree
    return found


def make_path(raw: str, layout: BuildrootLayout) -> Path:
    """A path as Buildroot's make sees it: variables expanded (unknown ones from the
    environment, else empty, as make does), relative to the source dir (``make -C``)."""
    known = {
        "CONFIG_DIR": str(layout.out_dir),
        "BASE_DIR": str(layout.out_dir),
        "O": str(layout.out_dir),
        "TOPDIR": str(layout.src_dir),
        "CURDIR": str(layout.src_dir),
        **{k: str(v) for k, v in external_names(layout).items()},
    }
    expanded = _MAKE_VARIABLE.sub(
        lambda m: known.get(m.group(1), os.environ.get(m.group(1), "")), raw.strip()
    )
    return Path(os.path.normpath(layout.src_dir / expanded))


def hash_source_tree(root: Path, exclude: tuple[str, ...] = ()) -> Any:
    """Per file, every file but the VCS dirs, as Buildroot's rsync copies them (ignored files
    too: a build product in the tree is copied and may be used)."""
    if not root.is_dir():
        return "missing"
    return digest_files(root, exclude=exclude, git_aware=False, skip_dirs=VCS_DIRS)


def _without_roots(line: str, roots: list[tuple[str, str]]) -> str:
    for name, root in roots:
        line = line.replace(root, f"<{name}>")
    return line


def digest_overrides(build: Build, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """``{"file": ..., "srcdirs": {PKG: digest}}``; None when no override file exists."""
    from gaia_buildroot.anchor import BuildrootAnchor

    layout = BuildrootLayout.of(build)
    setting = override_file_setting(build)
    if not setting:
        return None
    path = make_path(setting, layout)
    if layout.src_dir in path.parents:
        require_source_tree(build, layout)
    if not path.is_file():
        return None
    roots = sorted(
        (
            (name, str(p))
            for name, p in BuildrootAnchor(build).relocation_roots().items()
        ),
        key=lambda item: len(item[1]),
        reverse=True,
    )
    srcdirs: dict[str, Any] = {}
    lines = []
    for line in path.read_text(errors="surrogateescape").splitlines():
        match = _SRCDIR_LINE.match(line)
        if match:
            package, value = match.groups()
            srcdirs[package] = hash_source_tree(make_path(value, layout), exclude)
            lines.append(f"{package}_OVERRIDE_SRCDIR = <{package}>")
        else:
            lines.append(_without_roots(line, roots))
    inside_out_dir = layout.out_dir in path.parents
    text = "\n".join(lines).encode(errors="surrogateescape")
    return {
        "file": "in the out dir"
        if inside_out_dir
        else "sha256:" + hashlib.sha256(text).hexdigest(),
        "srcdirs": srcdirs,
    }


#: in the out dir: the override trees' digests its packages were last built from
BUILT_FROM_FILE = ".gaia-package-overrides.json"


def stale_override_builds(out_dir: Path, srcdirs: dict[str, str]) -> list[str]:
    """Packages built from an override tree that has changed (or stopped being one) since.

    Buildroot syncs an override tree once and never again by itself (its answer is
    ``make <pkg>-rebuild``), so without a dirclean the out dir would keep the old build
    under a fingerprint that names the new source. Returns package names, from the
    ``build/<name>-custom`` dirs that exist.
    """
    try:
        before = json.loads((out_dir / BUILT_FROM_FILE).read_text()).get("srcdirs", {})
    except (OSError, ValueError, AttributeError):
        before = {}
    changed = {p for p in {*before, *srcdirs} if before.get(p) != srcdirs.get(p)}
    built = out_dir / "build"
    names = (
        [d.name.removesuffix("-custom") for d in built.glob("*-custom")]
        if built.is_dir()
        else []
    )
    return sorted(n for n in names if symbol_name(n) in changed)


def record_built_from(out_dir: Path, srcdirs: dict[str, str]) -> None:
    write_json(out_dir / BUILT_FROM_FILE, {"srcdirs": srcdirs}, sort_keys=True)
