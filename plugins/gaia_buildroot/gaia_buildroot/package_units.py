"""Buildroot's packages as checkpoint units (``units = true``, issue 20).

With ``BR2_PER_PACKAGE_DIRECTORIES=y`` a package's build reads only its dependencies'
``per-package/<dep>/{host,target}`` and writes its ``build/<pkg>-<version>/`` (stamps and
sources) and ``per-package/<pkg>/``: those two are the unit. ``make show-info`` gives the
packages, versions, sources, hash files, package dirs and dependencies. A package's key
covers, besides the keys of its dependencies:

- its name, type, version and stamp dir;
- its recipe: every file of its recipe dir (``package/<pkg>/``: ``.mk``, ``.hash``, patches,
  ``Config.in``, config files), the whole first-level dir for nested ones
  (``package/gcc/``, ``toolchain/toolchain-external/``);
- the global patch dirs that apply to it (``<BR2_GLOBAL_PATCH_DIR>/<pkg>``);
- its sources: the hash each hash file gives them, else the downloaded file's sha256;
- its symbols and every other ``BR2_*`` symbol its ``.mk`` files name
  (:mod:`gaia_buildroot.symbols`), and the content of the files those name;
- the override source tree it is built from, if any (``<PKG>_OVERRIDE_SRCDIR``).

Every package's key also covers the target-wide symbols (and the files they name), the
package infrastructure of the Buildroot tree (``Makefile``, ``package/Makefile.in``,
``package/*.mk``, ``support/``, ``toolchain/`` files, ``arch/``, ``system/``), each external
tree's ``external.mk`` and ``external.desc``, and the override file. A package whose key
cannot be computed (an unknown package type, a show-info gap, a source without hash, one
that installs into ``images/``, which per-package directories do not separate) is built.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gaia_buildroot.anchor import TARGET_NAME
from gaia_buildroot.dotconfig import unquote
from gaia_buildroot.layout import SYNC_BACKUP_DIR, SYNC_MANIFEST_FILE, BuildrootLayout
from gaia_buildroot.named_files import named_files
from gaia_buildroot.package_overrides import digest_overrides, external_names, make_path
from gaia_buildroot.post_image import RECORD_FILE
from gaia_buildroot.showinfo import show_info
from gaia_buildroot.symbols import (
    package_symbols,
    read_config,
    symbols_read,
    target_wide,
)
from gaia_core.anchors import Unit, Units
from gaia_core.errors import ConfigError
from gaia_core.fingerprints import InputPending, digest_files, digest_paths
from gaia_core.treedigest import input_files

if TYPE_CHECKING:
    from gaia_core.build import Build

PER_PACKAGE = "BR2_PER_PACKAGE_DIRECTORIES"
PER_PACKAGE_PROBLEM = (
    "units = true needs Buildroot's per-package directories: set BR2_PER_PACKAGE_DIRECTORIES=y "
    "(buildroot.symbols.PER_PACKAGE_DIRECTORIES = true, or in the defconfig)"
)
#: what Buildroot assembles anew from the per-package dirs on every build
ASSEMBLED = ("target", "host", "staging", "images", "build/packages-file-list.txt",
             "build/packages-file-list-host.txt", "build/packages-file-list-staging.txt",
             SYNC_MANIFEST_FILE, SYNC_BACKUP_DIR, RECORD_FILE)
#: what ``make clean`` removes (Buildroot's Makefile), and gaia's records of what it wrote there
CLEAN = ("build", "per-package", "target", "host", "staging", "images", "legal-info", "graphs",
         SYNC_MANIFEST_FILE, SYNC_BACKUP_DIR, RECORD_FILE)
#: the package infrastructure of a Buildroot tree (relative paths, as globs on the listing)
_INFRA = re.compile(r"^(Makefile|package/Makefile\.in|package/[^/]+\.mk|support/(?!testing/).*|toolchain/[^/]+"
                    r"|arch/.*|system/.*)$")
_HASH_LINE = re.compile(r"^\s*(sha1|sha224|sha256|sha384|sha512|md5)\s+([0-9a-fA-F]+)\s+(\S+)\s*$")


@dataclasses.dataclass
class Tree:
    """A tree packages come from: Buildroot's own, or an external one, with its file listing."""

    label: str  # "buildroot" or "BR2_EXTERNAL_<NAME>_PATH"
    root: Path
    files: list[str]  # sorted, relative

    def under(self, prefix: str) -> list[str]:
        """The files at or below ``prefix`` (sorted: ``a/b-c`` lies between ``a/b`` and ``a/b/x``)."""
        found = []
        for rel in self.files[bisect.bisect_left(self.files, prefix):]:
            if not rel.startswith(prefix):
                break
            if rel == prefix or rel.startswith(prefix + "/"):
                found.append(rel)
        return found

    def digest(self, prefix: str) -> Any:
        return digest_paths(self.root, self.under(prefix))


def trees(layout: BuildrootLayout) -> list[Tree]:
    found = [Tree("buildroot", layout.src_dir, list(input_files(layout.src_dir)))]
    for label, root in external_names(layout).items():
        found.append(Tree(label, root, list(input_files(root))))
    return found


def check_configured(build: Build, layout: BuildrootLayout) -> bytes:
    """The ``.config`` bytes, once ``buildroot.configure`` made it for this build's inputs."""
    import json

    from gaia_buildroot.configure import CONFIGURED_FILE, configured_inputs

    path = layout.out_dir / ".config"
    if not path.is_file():
        raise InputPending("buildroot.configure", f"{path} is made by buildroot.configure")
    try:
        recorded = json.loads((layout.out_dir / CONFIGURED_FILE).read_text()).get("inputs")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded != configured_inputs(build):
        raise InputPending("buildroot.configure", f"{path} was made from other inputs than this build's")
    return path.read_bytes()


def buildroot_units(build: Build) -> Units:
    layout = BuildrootLayout.of(build)
    raw = check_configured(build, layout)
    config = read_config(raw.decode(errors="surrogateescape"))
    if config.get(PER_PACKAGE) != "y":
        raise ConfigError(f"{build.origin('checkpoints')}: checkpoints.points: {PER_PACKAGE_PROBLEM}")
    info = show_info(build, layout, raw)
    known = trees(layout)
    packages = {name: item for name, item in sorted(info.items()) if item.get("type") != "rootfs"}
    recipes = {name: _recipe(item, known, layout) for name, item in packages.items()}
    reads = {name: symbols_read(r[0].root / f for f in r[0].under(r[1]) if f.endswith(".mk")) if r else set()
             for name, r in recipes.items()}
    infra = known[0]
    infra_files = [f for f in infra.files if _INFRA.match(f)]
    # the top Makefile is infrastructure too, but what it reads is mostly for the steps after
    # the packages (overlays, scripts, images): its symbols are not target-wide for that
    infra_reads = symbols_read(infra.root / f for f in infra_files if f.endswith((".mk", "Makefile.in")))
    every_read = set().union(*reads.values()) if reads else set()
    wide = target_wide(config, infra_reads, every_read)
    overrides = digest_overrides(build) or {}
    shared = {
        "symbols": wide,
        "files": named_files(wide, layout),
        "infra": digest_paths(infra.root, infra_files),
        "externals": {t.label: digest_paths(t.root, [f for f in ("external.mk", "external.desc") if f in t.files])
                      for t in known[1:]},
        "override_file": overrides.get("file"),
    }
    units = []
    for name, item in packages.items():
        inputs, why = _inputs(name, item, recipes[name], reads[name], config, overrides.get("srcdirs", {}), layout)
        stamp_dir = item.get("stamp_dir")
        paths = ((f"{TARGET_NAME}/{stamp_dir}", f"{TARGET_NAME}/per-package/{name}")
                 if isinstance(stamp_dir, str) and _plain_build_dir(stamp_dir) else ())
        deps = tuple(d for d in item.get("dependencies") or () if isinstance(d, str))
        units.append(Unit(name, inputs if why is None else None, deps, paths, unknown=why,
                          label=str(item.get("version") or "")))
    return Units(tuple(units), shared=shared, assembled=tuple(f"{TARGET_NAME}/{p}" for p in ASSEMBLED))


def _plain_build_dir(stamp_dir: str) -> bool:
    parts = PurePosixPath(stamp_dir).parts
    return len(parts) == 2 and parts[0] == "build" and parts[1] not in (".", "..")


def _recipe(item: dict[str, Any], known: list[Tree], layout: BuildrootLayout) -> tuple[Tree, str] | None:
    """The tree and the recipe dir (its first level: ``package/gcc`` for ``package/gcc/gcc-final``)."""
    package_dir = item.get("package_dir")
    if not isinstance(package_dir, str) or not package_dir.strip("/"):
        return None
    path = Path(os.path.normpath(layout.src_dir / package_dir.rstrip("/")))
    for tree in sorted(known, key=lambda t: len(str(t.root)), reverse=True):
        try:
            rel = path.relative_to(tree.root).as_posix()
        except ValueError:
            continue
        parts = rel.split("/")
        return tree, "/".join(parts[:2])
    return None


def _inputs(name: str, item: dict[str, Any], recipe: tuple[Tree, str] | None, reads: set[str],
            config: dict[str, str], srcdirs: dict[str, Any],
            layout: BuildrootLayout) -> tuple[dict[str, Any] | None, str | None]:
    kind = item.get("type")
    if kind not in ("target", "host"):
        return None, f"unknown package type {kind!r}"
    stamp_dir = item.get("stamp_dir")
    if not isinstance(stamp_dir, str) or not _plain_build_dir(stamp_dir):
        return None, f"make show-info gives no stamp dir under build/ ({stamp_dir!r})"
    if recipe is None:
        return None, f"its package dir {item.get('package_dir')!r} is in no Buildroot or external tree"
    if item.get("install_images"):
        return None, "it installs into images/, which per-package directories do not separate"
    tree, recipe_dir = recipe
    raw = name.removeprefix("host-") if kind == "host" else name
    upper = re.sub(r"[^A-Za-z0-9]", "_", raw).upper()
    override = srcdirs.get(f"HOST_{upper}") if kind == "host" and f"HOST_{upper}" in srcdirs else srcdirs.get(upper)
    sources, why = _sources(item, layout, override is not None)
    if why is not None:
        return None, why
    symbols = package_symbols(name, kind, config, reads)
    return {
        "name": name, "type": kind, "version": item.get("version"), "virtual": bool(item.get("virtual")),
        "stamp_dir": stamp_dir,
        "recipe": {"tree": tree.label, "dir": recipe_dir, "files": tree.digest(recipe_dir)},
        "patches": _global_patches(raw, config, layout),
        "sources": sources,
        "symbols": symbols,
        "files": named_files({s: v for s, v in symbols.items() if v is not None}, layout),
        "override": override,
    }, None


def _sources(item: dict[str, Any], layout: BuildrootLayout, overridden: bool) -> tuple[dict[str, str], str | None]:
    """Each source's hash from the package's hash files, else the downloaded file's sha256."""
    if overridden:
        return {}, None  # built from the override tree, which its key covers instead
    hashes: dict[str, str] = {}
    for hash_file in item.get("hashes") or ():
        try:
            lines = (layout.src_dir / str(hash_file)).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            match = _HASH_LINE.match(line)
            if match:
                hashes.setdefault(match.group(3), f"{match.group(1)}:{match.group(2).lower()}")
    found: dict[str, str] = {}
    for download in item.get("downloads") or ():
        source = download.get("source") if isinstance(download, dict) else None
        if not isinstance(source, str) or not source:
            continue
        if source in hashes:
            found[source] = hashes[source]
            continue
        path = layout.download_dir / str(item.get("dl_dir") or "") / source
        if not path.is_file():
            return {}, (f"no hash of {source} in its hash files, and it is not in the download dir "
                        "(download it, or add its hash)")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        found[source] = f"sha256:{digest.hexdigest()}"
    return found, None


def _global_patches(raw: str, config: dict[str, str], layout: BuildrootLayout) -> dict[str, Any]:
    """``<dir>/<pkg>`` of each BR2_GLOBAL_PATCH_DIR entry that has one, by position."""
    found = {}
    for index, entry in enumerate(unquote(config.get("BR2_GLOBAL_PATCH_DIR", '""')).split()):
        directory = make_path(entry, layout) / raw
        if directory.is_dir():
            found[str(index)] = digest_files(directory)
    return found


__all__ = ["ASSEMBLED", "CLEAN", "PER_PACKAGE", "PER_PACKAGE_PROBLEM", "buildroot_units"]
