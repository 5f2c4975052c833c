"""Whether ``buildroot.collect`` may skip its ``make target-post-image``: nothing it reads
changed since the last collect of this build file, and what that collect left is as it was.

On real Buildroot that make call costs 6-15 s of makefile parsing and finalize steps even
when nothing changed. The record (``<run dir>/.gaia-collect.json``, beside the build's
``manifest.json``) holds two digests, compared at the start of the next collect:

- **inputs**, taken before the collect touches anything: the out dir's checkpoint marker
  (the fingerprint in place, and when it was restored or captured), its ``.config``, the
  stage's content with modes and links, the make command line and environment, gaia-
  buildroot's version, and the content of every file or directory the ``.config`` names for
  ``target-post-image`` (overlays, post-build and post-image scripts and their arguments,
  device and users tables) that gaia can resolve;
- **outputs**, taken after the collect: ``lstat`` of every entry (type, mode, size, mtime,
  inode, link target) of ``<out>/target``, ``<out>/images``, the delivered
  ``<run dir>/images`` and the manifest.

Equal twice: the image already is what a collect would make, and the run keeps it. Any
difference (a stage file, a program's output, a restore, a rebuild, an image removed or
touched) runs collect as before. The record is removed before a full collect starts, so a
collect cut short is never taken for done. A file that a post-image script reads without
any ``.config`` symbol naming it (a path written inside the script) is not seen: remove
the record to force a collect (``rm <run dir>/.gaia-collect.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_buildroot import __version__
from gaia_buildroot.dotconfig import DotConfig, unquote
from gaia_core.atomic import write_json
from gaia_core.fingerprints import hash_tree

if TYPE_CHECKING:
    from gaia_buildroot.layout import BuildrootLayout
    from gaia_core.build import Build

RECORD_FILE = ".gaia-collect.json"
FORMAT = 1
#: the checkpoint marker gaia-core writes into the out dir
CHECKPOINT_MARKER = ".gaia-checkpoint.json"
#: .config symbols whose values name what ``target-post-image`` reads
PATH_SYMBOLS = (
    "BR2_ROOTFS_OVERLAY",
    "BR2_ROOTFS_POST_BUILD_SCRIPT",
    "BR2_ROOTFS_POST_FAKEROOT_SCRIPT",
    "BR2_ROOTFS_POST_IMAGE_SCRIPT",
    "BR2_ROOTFS_POST_SCRIPT_ARGS",
    "BR2_ROOTFS_POST_BUILD_SCRIPT_ARGS",
    "BR2_ROOTFS_POST_IMAGE_SCRIPT_ARGS",
    "BR2_ROOTFS_DEVICE_TABLE",
    "BR2_ROOTFS_STATIC_DEVICE_TABLE",
    "BR2_ROOTFS_USERS_TABLES",
)


def record_path(build: Build) -> Path:
    return build.run_dir / RECORD_FILE


def inputs_digest(layout: BuildrootLayout, make_argv: list[str], make_env: dict[str, str]) -> str:
    """What the next ``target-post-image`` would read, before collect touches anything."""
    out = layout.out_dir
    config = DotConfig.read(out / ".config")
    named = {}
    for symbol in PATH_SYMBOLS:
        value = config.get(symbol)
        if value in (None, "n"):
            continue
        for word in unquote(value).split():
            path = _resolve(word, layout.src_dir)
            if path is not None:
                named[f"{symbol}:{word}"] = hash_tree(path)
    return _digest({
        "format": FORMAT,
        "gaia_buildroot": __version__,
        "checkpoint": _read(out / CHECKPOINT_MARKER),
        "config": _read(out / ".config"),
        "stage": hash_tree(layout.stage_root),
        "make": make_argv,
        "env": make_env,
        "named": named,
    })


def outputs_digest(build: Build, layout: BuildrootLayout) -> str:
    """What the last collect left: the target tree, the images, the delivered copy."""
    return _digest({
        "target": _tree_state(layout.target_dir),
        "images": _tree_state(layout.out_dir / "images"),
        "delivered": _tree_state(build.run_dir / "images"),
        "manifest": _entry_state(build.run_dir / "manifest.json"),
    })


def unchanged(build: Build, layout: BuildrootLayout, inputs: str) -> bool:
    """Whether the last collect of this build file recorded these inputs and what is there now."""
    try:
        record = json.loads(record_path(build).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("inputs") != inputs:
        return False
    return record.get("outputs") == outputs_digest(build, layout)


def forget(build: Build) -> None:
    record_path(build).unlink(missing_ok=True)


def save(build: Build, layout: BuildrootLayout, inputs: str) -> None:
    write_json(record_path(build), {"format": FORMAT, "inputs": inputs, "outputs": outputs_digest(build, layout)},
               sort_keys=True)


def _resolve(word: str, src_dir: Path) -> Path | None:
    """A word of a .config value that names an existing path (relative: to the Buildroot
    tree, where make runs); None for options and what make would still expand (``$(...)``:
    external trees, whose content the checkpoint's fingerprint already holds)."""
    if word.startswith("-"):
        word = word.partition("=")[2]
    if not word or "$" in word:
        return None
    path = Path(word) if os.path.isabs(word) else src_dir / word
    return path if os.path.lexists(path) else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _entry_state(path: Path) -> list[Any] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, link]


def _tree_state(root: Path) -> str | None:
    """sha256 over every entry's path and ``lstat`` (links never followed)."""
    if not root.is_dir() or root.is_symlink():
        return None
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            h.update(json.dumps([path.relative_to(root).as_posix(), _entry_state(path)]).encode())
    return h.hexdigest()


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
