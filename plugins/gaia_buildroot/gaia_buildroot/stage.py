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
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext


def image_path(root: Path, dst: str) -> Path:
    """``dst`` (absolute in the image, validated without ``..``) under ``root``."""
    return root / dst.lstrip("/")


def install_into_stage(src: Path, dest: Path, mode: int | None) -> None:
    """Copy a file, link or directory to ``dest``, replacing what is there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
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
    clear_dir(root)
    for i, entry in enumerate(cfg.files):
        dest = image_path(root, entry.dst)
        if entry.content is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(entry.content)
            dest.chmod(entry.mode if entry.mode is not None else 0o644)
        else:
            install_into_stage(sources[i], dest, entry.mode)
        mode = f" mode {entry.mode:o}" if entry.mode is not None else ""
        ctx.log(f"{entry.dst}{mode}")
    ctx.log(f"rendered {len(cfg.files)} stage file(s) into {root}")
