"""``buildroot.rpi.validate`` and ``buildroot.rpi.prepare``: Raspberry Pi board files.

They reach the image through the stage root (``/boot/config.txt``, ``/boot/cmdline.txt``,
the overlay tree), which only collect applies: editing them never needs a Buildroot
rebuild, and they are not part of the checkpoint's default fingerprint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot.config import RpiConfig
from gaia_buildroot.fsutil import copy_tree
from gaia_buildroot.layout import buildroot_config, stage_root
from gaia_buildroot.stage import install_into_stage
from gaia_core.atomic import write_json
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext

REPORT = "gaia/modules/buildroot/rpi"


def validate(ctx: TaskContext, cfg: RpiConfig) -> None:
    build = ctx.build
    resolve = build.workspace.resolve
    problems = []
    defconfig = cfg.defconfig or buildroot_config(build).defconfig
    if not defconfig:
        problems.append(
            "no defconfig: set buildroot.rpi.defconfig or buildroot.defconfig"
        )
    checks = {}
    if cfg.overlay is not None:
        path = resolve(cfg.overlay)
        checks["overlay"] = str(path)
        if not path.is_dir():
            problems.append(
                f"buildroot.rpi.overlay '{cfg.overlay}' ({path}) is not a directory"
            )
    for key in ("config_file", "cmdline_file"):
        raw = getattr(cfg, key)
        if raw is None:
            continue
        path = resolve(raw)
        checks[key] = str(path)
        if not path.is_file():
            problems.append(f"buildroot.rpi.{key} '{raw}' ({path}) is not a file")
    if problems:
        raise TaskFailed("invalid Raspberry Pi inputs:\n  " + "\n  ".join(problems))
    write_json(
        build.run_dir / REPORT / "validate.json",
        {
            "arch": cfg.arch,
            "board": cfg.board,
            "defconfig": defconfig,
            "checks": checks,
        },
        sort_keys=True,
    )
    ctx.log(
        f"Raspberry Pi inputs valid: arch={cfg.arch} board={cfg.board or '-'} defconfig={defconfig}"
    )


def prepare(ctx: TaskContext, cfg: RpiConfig) -> None:
    build = ctx.build
    resolve = build.workspace.resolve
    root = stage_root(build)
    root.mkdir(parents=True, exist_ok=True)
    actions = []
    if cfg.overlay is not None:
        copied = copy_tree(resolve(cfg.overlay), root)
        actions.append(
            {"copy_dir": str(resolve(cfg.overlay)), "to": "/", "files": len(copied)}
        )
    for key, dst in (
        ("config_file", "boot/config.txt"),
        ("cmdline_file", "boot/cmdline.txt"),
    ):
        raw = getattr(cfg, key)
        if raw is not None:
            install_into_stage(resolve(raw), root / dst, 0o644)
            actions.append({"copy": str(resolve(raw)), "to": "/" + dst})
    write_json(
        build.run_dir / REPORT / "manifest.json",
        {"stage_root": str(root), "actions": actions},
        sort_keys=True,
    )
    for action in actions:
        ctx.log(f"{action.get('copy') or action.get('copy_dir')} -> {action['to']}")
    ctx.log(f"prepared {len(actions)} Raspberry Pi input(s) in the stage")
