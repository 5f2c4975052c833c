"""``buildroot.configure``: a Buildroot ``.config`` from the defconfig plus the build file.

``make <defconfig>`` and ``olddefconfig`` first, then gaia's settings and the user's
overrides are written into ``.config`` as text, and ``olddefconfig`` resolves
dependencies again; a requested symbol that did not survive is reported.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.dotconfig import DotConfig, requested_symbols, unrealized
from gaia_buildroot.layout import (
    OUT_DIR_SCHEMA,
    OUT_DIR_SCHEMA_FILE,
    BuildrootLayout,
    buildroot_config,
    defconfig_name,
    jlevel,
)
from gaia_core.atomic import write_json
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext

#: in the out dir: the inputs its .config was made from (package_units reads it)
CONFIGURED_FILE = ".gaia-configured.json"


def check_external_trees(layout: BuildrootLayout) -> None:
    problems = []
    for tree in layout.externals:
        missing = [
            name
            for name in ("external.desc", "Config.in", "external.mk")
            if not (tree / name).is_file()
        ]
        if not tree.is_dir():
            problems.append(f"{tree} does not exist")
        elif missing:
            problems.append(
                f"{tree} is not a BR2_EXTERNAL tree (missing {', '.join(missing)})"
            )
    if problems:
        raise TaskFailed("buildroot.external: " + "; ".join(problems))


def prepare_out_dir(ctx: TaskContext, out: Path) -> None:
    """Start over in an out dir written by another gaia schema; never wipe a foreign dir."""
    marker = out / OUT_DIR_SCHEMA_FILE
    if not out.exists() or not any(out.iterdir()):
        return
    if marker.is_file() and marker.read_text().strip() == OUT_DIR_SCHEMA:
        return
    if not (out / ".config").is_file():
        raise TaskFailed(
            f"buildroot.br_output_dir {out} is not empty and is not a Buildroot out dir; "
            f"refusing to delete it (point br_output_dir elsewhere or empty it)"
        )
    found = marker.read_text().strip() if marker.is_file() else "none"
    ctx.log(
        f"out dir {out} has gaia schema '{found}', expected '{OUT_DIR_SCHEMA}': starting from an empty out dir"
    )
    shutil.rmtree(out)


def edit_dotconfig(
    config: DotConfig, cfg: BuildrootConfig, layout: BuildrootLayout
) -> dict:
    """gaia's own settings first, then the user's overrides (which therefore win).

    Nothing of one build file goes in: ``.config`` is part of the checkpoint that every
    build file of the workspace shares. The stage in particular is not BR2_ROOTFS_OVERLAY
    (an overlay of the user's own stays as the defconfig or the symbols set it); collect
    applies it to the built tree.
    """
    config.set("BR2_DL_DIR", f'"{layout.download_dir}"')
    config.set("BR2_JLEVEL", str(jlevel(cfg)))
    wanted = requested_symbols(cfg.packages, cfg.package_versions, cfg.symbols)
    for key, value in wanted.items():
        config.apply(key, value)
    return wanted


#: the build file's values that .config is made from (besides the files kconfig reads)
_CONFIG_PATHS = ("buildroot.defconfig", "buildroot.packages", "buildroot.package_versions", "buildroot.symbols",
                 "buildroot.external", "buildroot.rpi.defconfig", "buildroot.rpi.arch")


def configured_inputs(build: Build) -> str:
    """A digest of what ``.config`` is made from: the build file's values, the defconfig, every
    ``Config.in*`` and ``external.desc`` kconfig reads, the download dir and job count gaia
    writes into it. The units of an out dir are read from its ``.config`` only when it was
    made from this build's (an edit to the build file waits for ``buildroot.configure``)."""
    from gaia_buildroot.package_overrides import external_names
    from gaia_buildroot.source_tree import find_defconfig, require_source_tree
    from gaia_core.checkpoints.fingerprint import canonical_json, effective_value
    from gaia_core.fingerprints import digest_paths, hash_file
    from gaia_core.treedigest import input_files

    cfg = buildroot_config(build)
    layout = BuildrootLayout.of(build, cfg)
    trees = [require_source_tree(build, layout), *external_names(layout).values()]
    kconfig = [digest_paths(tree, [f for f in input_files(tree) if f.rpartition("/")[2].startswith("Config.in")
                                   or f == "external.desc"]) for tree in trees]
    name = defconfig_name(build, cfg)
    found = find_defconfig(build, name, layout) if name else None
    data = {"values": {path: effective_value(build, path) for path in _CONFIG_PATHS}, "kconfig": kconfig,
            "defconfig": hash_file(found) if found else None, "download_dir": str(layout.download_dir),
            "jlevel": jlevel(cfg)}
    return hashlib.sha256(canonical_json(data)).hexdigest()


def configure(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    if cfg.starting_point.enabled:
        ctx.log(
            "starting point enabled (buildroot.starting_point.enabled=true): skipping configure"
        )
        return
    build = ctx.build
    layout = BuildrootLayout.of(build, cfg)
    defconfig = defconfig_name(build, cfg)
    if defconfig is None:
        raise TaskFailed("buildroot.defconfig (or buildroot.rpi.defconfig) is required")
    check_external_trees(layout)
    prepare_out_dir(ctx, layout.out_dir)
    layout.out_dir.mkdir(parents=True, exist_ok=True)
    layout.download_dir.mkdir(parents=True, exist_ok=True)
    env = layout.make_env()
    ctx.run_cmd(layout.make(defconfig), env=env)
    ctx.run_cmd(layout.make("olddefconfig"), env=env)

    dotconfig_path = layout.out_dir / ".config"
    config = DotConfig.read(dotconfig_path)
    wanted = edit_dotconfig(config, cfg, layout)
    config.write(dotconfig_path)
    ctx.run_cmd(layout.make("olddefconfig"), env=env)

    missing = unrealized(DotConfig.read(dotconfig_path), wanted)
    for key in missing:
        ctx.log(
            f"WARN: requested symbol '{key}' was not realized after olddefconfig (unmet dependency?)"
        )
    if missing:
        ctx.log(f"WARN: {len(missing)} requested symbol(s) not realized")
    (layout.out_dir / OUT_DIR_SCHEMA_FILE).write_text(OUT_DIR_SCHEMA + "\n")
    write_json(layout.out_dir / CONFIGURED_FILE, {"inputs": configured_inputs(build)})
    ctx.log(
        f"configured Buildroot: src={layout.src_dir} O={layout.out_dir} defconfig={defconfig} BR2_JLEVEL={jlevel(cfg)}"
    )
