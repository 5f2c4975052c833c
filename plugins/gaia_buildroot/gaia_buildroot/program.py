"""``program.<name>.build`` and ``program.<name>.install``: your own software into the image.

The build runs before or beside Buildroot; the install copies its artifacts into the
stage root, which reaches the image at collect time without touching the Buildroot
checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot.config import ProgramConfig
from gaia_buildroot.layout import stage_root
from gaia_buildroot.stage import image_path, install_into_stage, mode_problem
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext


def build_program(ctx: TaskContext, name: str, cfg: ProgramConfig) -> None:
    src_dir = ctx.build.workspace.resolve(cfg.src_dir)
    if not src_dir.is_dir():
        raise TaskFailed(
            f"program.{name}.src_dir '{cfg.src_dir}' ({src_dir}) is not a directory"
        )
    if cfg.build_command is None:
        ctx.log("no build_command: installing prebuilt artifacts")
        return
    argv = (
        ["/bin/sh", "-c", cfg.build_command]
        if isinstance(cfg.build_command, str)
        else list(cfg.build_command)
    )
    ctx.run_cmd(argv, cwd=src_dir, env=cfg.env)


def install_program(ctx: TaskContext, name: str, cfg: ProgramConfig) -> None:
    workspace = ctx.build.workspace
    src_dir = workspace.resolve(cfg.src_dir)
    root = stage_root(ctx.build)
    plan = []
    missing = []
    for item in cfg.install:
        src = (
            workspace.resolve(item.src)
            if item.src.startswith("@")
            else src_dir / item.src
        )
        if not src.exists():
            missing.append(f"{item.src} ({src})")
        dst = item.dst + src.name if item.dst.endswith("/") else item.dst
        plan.append((src, dst, item.mode))
    if missing:
        raise TaskFailed(
            f"program.{name}: install sources not found (did the build produce them?): {', '.join(missing)}"
        )
    modes = [problem for src, dst, mode in plan if (problem := mode_problem(src, dst, mode))]
    if modes:
        raise TaskFailed(f"program.{name}: install modes that cannot reach the image: {'; '.join(modes)}")
    for src, dst, mode in plan:
        install_into_stage(src, image_path(root, dst), mode)
        ctx.log(f"{src} -> {dst}" + (f" mode {mode:o}" if mode is not None else ""))
