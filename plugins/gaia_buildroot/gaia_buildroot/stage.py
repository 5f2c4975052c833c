"""``stage.render``: materialize ``[[stage.files]]`` into the stage root.

The stage root is rebuilt from nothing on every run, so what is in it is exactly what
the config says now; program installs and board files are added after it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_buildroot.config import StageConfig
from gaia_buildroot.fsutil import clear_dir, copy_tree
from gaia_buildroot.layout import stage_root
from gaia_buildroot.stage_modes import PASS_THROUGH_DIR_MODE
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext


def image_path(root: Path, dst: str) -> Path:
    """``dst`` (absolute in the image, validated without ``..``) under ``root``."""
    return root / dst.lstrip("/")


def make_parents(dest: Path) -> None:
    """``dest``'s missing parents, each 0755 whatever the umask: a directory the stage only
    passes through keeps the target's mode in the image (see :mod:`.stage_modes`)."""
    missing = []
    parent = dest.parent
    while not parent.is_dir():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir()
        directory.chmod(PASS_THROUGH_DIR_MODE)


def mode_problem(src: Path, dst: str, mode: int | None) -> str | None:
    """Why ``mode`` cannot be what ``src`` has in the image (None when it can)."""
    if mode is None:
        return None
    if src.is_symlink():
        return f"{dst}: mode 0o{mode:o} is given but its src {src} is a symlink, which has no mode of its own"
    if src.is_dir() and mode & 0o700 != 0o700:
        return (f"{dst}: mode 0o{mode:o} on a directory leaves its owner unable to write into it while "
                "the stage is copied; give the directory u+rwx (0o7xx)")
    return None


def mode_problems(build: Build) -> list[str]:
    """Config problems: ``[[stage.files]]`` whose ``mode`` their existing ``src`` cannot have
    in the image (a missing ``src`` is reported by ``stage.render``)."""
    cfg = build.settings.get("stage")
    if not isinstance(cfg, StageConfig):
        return []
    problems = []
    for i, entry in enumerate(cfg.files):
        if entry.src is None:
            continue
        problem = mode_problem(build.workspace.resolve(entry.src), entry.dst, entry.mode)
        if problem:
            problems.append(f"{build.origin('stage.files')}: stage.files.{i}.mode: {problem}")
    return problems


def install_into_stage(src: Path, dest: Path, mode: int | None) -> None:
    """Copy a file, link or directory to ``dest``, replacing what is there."""
    make_parents(dest)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    if src.is_symlink():
        os.symlink(os.readlink(src), dest)
        return
    if src.is_dir():
        copy_tree(src, dest)
    else:
        shutil.copy2(src, dest)
    if mode is not None:
        dest.chmod(mode)


def render(ctx: TaskContext, cfg: StageConfig) -> None:
    build = ctx.build
    root = stage_root(build)
    sources = {
        i: build.workspace.resolve(f.src)
        for i, f in enumerate(cfg.files)
        if f.src is not None
    }
    missing = [
        f"{cfg.files[i].dst}: src '{cfg.files[i].src}' ({path}) does not exist"
        for i, path in sources.items()
        if not os.path.lexists(path)
    ]
    if missing:
        raise TaskFailed(
            "stage files with a missing source:\n  " + "\n  ".join(missing)
        )
    modes = [problem for i, path in sources.items()
             if (problem := mode_problem(path, cfg.files[i].dst, cfg.files[i].mode))]
    if modes:
        raise TaskFailed("stage files whose mode cannot reach the image:\n  " + "\n  ".join(modes))
    clear_dir(root)
    for i, entry in enumerate(cfg.files):
        dest = image_path(root, entry.dst)
        if entry.content is not None:
            make_parents(dest)
            dest.write_text(entry.content)
            dest.chmod(entry.mode if entry.mode is not None else 0o644)
        else:
            install_into_stage(sources[i], dest, entry.mode)
        mode = f" mode {entry.mode:o}" if entry.mode is not None else ""
        ctx.log(f"{entry.dst}{mode}")
    ctx.log(f"rendered {len(cfg.files)} stage file(s) into {root}")
