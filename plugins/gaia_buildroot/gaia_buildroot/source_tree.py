"""Whether the Buildroot source tree on disk is the one this build will use.

Fingerprint sources read the defconfig and the commit from the source tree. Before
``buildroot.fetch`` ran, gaia's clone may be missing, or at another commit than the one
fetch will check out, or carry local edits fetch will reset: hashing it then would show
a fingerprint the run does not use. Such sources raise :class:`InputPending` instead, and
the restore task, which runs after fetch, computes the real one.

A tree given as ``source_dir`` is used as is: no task will change it, so it is never
pending (a missing one is an error the digest reports).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_buildroot.gitrepo import (
    git_output,
    is_git_checkout,
    is_pinned,
    resolve_commit,
    resolve_version,
)
from gaia_buildroot.layout import BuildrootLayout, buildroot_config
from gaia_core.fingerprints import InputPending

if TYPE_CHECKING:
    from gaia_core.build import Build

FETCH_TASK = "buildroot.fetch"

_lock = threading.Lock()
#: id(build) -> source dirs that buildroot.fetch brought to their commit in that build's run
_fetched: dict[int, set[Path]] = {}


def record_fetched(build: Build, src: Path) -> None:
    """Called by ``buildroot.fetch`` when ``src`` is what this run builds from."""
    key = id(build)
    with _lock:
        if key not in _fetched:
            _fetched[key] = set()
            weakref.finalize(build, _forget, key)
        _fetched[key].add(src)


def _forget(key: int) -> None:
    with _lock:
        _fetched.pop(key, None)


def was_fetched(build: Build, src: Path) -> bool:
    with _lock:
        return src in _fetched.get(id(build), ())


def pending_reason(build: Build, layout: BuildrootLayout | None = None) -> str | None:
    """Why the tree on disk is not (yet) what ``buildroot.fetch`` makes of it; None if it is."""
    layout = layout or BuildrootLayout.of(build)
    src = layout.src_dir
    if not layout.uses_git or was_fetched(build, src):
        return None
    cfg = buildroot_config(build)
    if not cfg.enabled or cfg.starting_point.enabled:
        return None  # fetch will not run: the tree stays as it is
    if not src.exists():
        return f"{src} is cloned by {FETCH_TASK}"
    if not is_git_checkout(src):
        return None  # fetch refuses it; the digests say what is there
    version = cfg.version
    if version is None:
        return None  # fetch leaves the checkout at its HEAD, edits included
    if not is_pinned(src, version):
        return f"buildroot.version '{version}' is not a tag or a full commit id: {FETCH_TASK} may move it"
    wanted = resolve_version(src, version)
    if resolve_commit(src, "HEAD") != wanted:
        return f"{src} is not at '{version}' yet: {FETCH_TASK} checks out {wanted}"
    if git_output(src, "status", "--porcelain", "--untracked-files=no"):
        return f"{src} has local changes that {FETCH_TASK} resets"
    return None


def require_source_tree(build: Build, layout: BuildrootLayout | None = None) -> Path:
    """The source dir, once it is what the build will use; else :class:`InputPending`."""
    layout = layout or BuildrootLayout.of(build)
    reason = pending_reason(build, layout)
    if reason is not None:
        raise InputPending(FETCH_TASK, reason)
    return layout.src_dir


def find_defconfig(
    build: Build, name: str, layout: BuildrootLayout | None = None
) -> Path | None:
    """The file Buildroot would use: the last external tree that has it, else the source tree.

    Raises :class:`InputPending` only when the source tree is needed and not ready.
    """
    layout = layout or BuildrootLayout.of(build)
    for tree in reversed(layout.externals):
        candidate = tree / "configs" / name
        if candidate.is_file():
            return candidate
    candidate = require_source_tree(build, layout) / "configs" / name
    return candidate if candidate.is_file() else None
