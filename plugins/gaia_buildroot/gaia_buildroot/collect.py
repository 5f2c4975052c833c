"""``buildroot.collect``: current stage into the target tree, images, manifest.

It runs also after a checkpoint restore skipped configure and build: the stage is synced
into ``<out>/target`` (undoing the previous sync), ``make target-post-image`` makes the
images, and they are copied to ``<run dir>/images``.

``target-post-image`` runs ``target-finalize`` again, whose steps rewrite parts of the
target tree (``/etc/hostname``, ``os-release``, the user's overlays, post-build scripts).
The stage root therefore also goes to that one ``make`` call as the last
``BR2_ROOTFS_OVERLAY`` (a command-line variable, never written into ``.config``), so that
Buildroot copies it after its own steps and before the post-build scripts, as it does
with any overlay: the stage wins, as it did when it was the overlay of the build.
Buildroot's overlay copy normalises modes (``rsync --chmod=u=rwX,go=rX``), so the same
call appends gaia's own post-build script (:mod:`.stage_modes`) that puts the stage's
modes back, after every other script.

When nothing changed since the last collect of this build file (:mod:`.collect_record`),
the make call and the copy are skipped and the images stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot import collect_record
from gaia_buildroot.anchor import refuse_escaping_target_tree
from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.dotconfig import DotConfig, quote, unquote
from gaia_buildroot.fsutil import clear_dir, copy_tree
from gaia_buildroot.images import describe_images, images_dir, write_manifest
from gaia_buildroot.layout import (
    OUT_DIR_SCHEMA,
    OUT_DIR_SCHEMA_FILE,
    SYNC_BACKUP_DIR,
    SYNC_MANIFEST_FILE,
    BuildrootLayout,
    defconfig_name,
    jlevel,
)
from gaia_buildroot.overlay import sync_overlay
from gaia_buildroot.post_image import image_files, record_outputs
from gaia_buildroot.stage_modes import SCRIPT_FILE, modes_to_apply, write_post_build_script
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext


def check_out_dir(layout: BuildrootLayout) -> None:
    out = layout.out_dir
    if not (out / ".config").is_file():
        raise TaskFailed(
            f"Buildroot out dir {out} has no .config: neither buildroot.build nor a checkpoint restore produced it"
        )
    marker = out / OUT_DIR_SCHEMA_FILE
    found = marker.read_text().strip() if marker.is_file() else None
    if found != OUT_DIR_SCHEMA:
        raise TaskFailed(
            f"Buildroot out dir {out} has gaia out-dir schema {found or 'none'}, this gaia-buildroot "
            f"needs {OUT_DIR_SCHEMA}; rebuild it (disable the checkpoint or remove the out dir)"
        )


def _append(layout: BuildrootLayout, symbol: str, path: str, what: str) -> str:
    """``symbol`` for ``target-post-image``: the ``.config``'s words, then ``path``."""
    if any(c.isspace() or c == '"' for c in path):
        raise TaskFailed(f"{what} {path} contains a space or a quote; Buildroot cannot use it as one")
    configured = DotConfig.read(layout.out_dir / ".config").get(symbol)
    words = unquote(configured).split() if configured not in (None, "n") else []
    return quote(" ".join([*words, path]))


def overlays_with_stage(layout: BuildrootLayout) -> str:
    """BR2_ROOTFS_OVERLAY for ``target-post-image``: the ``.config``'s overlays, then the stage."""
    return _append(layout, "BR2_ROOTFS_OVERLAY", str(layout.stage_root), "the stage root")


def post_build_scripts_with_modes(layout: BuildrootLayout) -> str:
    """BR2_ROOTFS_POST_BUILD_SCRIPT: the ``.config``'s scripts, then gaia's stage modes script."""
    script = layout.stage_root.parent / SCRIPT_FILE
    return _append(layout, "BR2_ROOTFS_POST_BUILD_SCRIPT", str(script), "the stage modes script")


def make_variables(layout: BuildrootLayout) -> dict[str, str]:
    """The command-line variables of collect's make call (none without a stage)."""
    if not layout.stage_root.is_dir():
        return {}
    return {
        "BR2_ROOTFS_OVERLAY": overlays_with_stage(layout),
        "BR2_ROOTFS_POST_BUILD_SCRIPT": post_build_scripts_with_modes(layout),
    }


def collect(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    if cfg.starting_point.enabled:
        from gaia_buildroot.starting_point import collect_starting_point

        collect_starting_point(ctx, cfg)
        return
    build = ctx.build
    layout = BuildrootLayout.of(build, cfg)
    check_out_dir(layout)
    variables = make_variables(layout)
    env = layout.make_env(jlevel(cfg))
    argv = layout.make("target-post-image", **variables)
    inputs = collect_record.inputs_digest(layout, argv, env)
    if collect_record.unchanged(build, layout, inputs):
        ctx.log(
            "nothing changed since the last collect (checkpoint, stage, make call, target tree, "
            f"images): make target-post-image skipped, {images_dir(build)} kept"
        )
        return
    collect_record.forget(build)
    target = layout.target_dir
    modes = modes_to_apply(layout.stage_root, target) if variables else []
    if target.is_dir():
        try:
            removed, copied = sync_overlay(
                layout.stage_root,
                target,
                layout.out_dir / SYNC_MANIFEST_FILE,
                layout.out_dir / SYNC_BACKUP_DIR,
            )
        except OSError as exc:
            raise TaskFailed(f"syncing the stage into {target}: {exc}") from None
        ctx.log(
            f"stage overlay: {len(copied)} file(s) synced into {target}; {len(removed)} file(s) of the "
            "last sync removed (no longer staged)"
        )
    else:
        ctx.log(
            f"no target tree at {target} yet: make target-post-image applies the overlay"
        )
    refuse_escaping_target_tree(build, layout)
    if variables:
        write_post_build_script(layout.stage_root.parent, modes)
    before = image_files(layout.out_dir / "images")
    ctx.run_cmd(argv, env=env)
    record_outputs(layout.out_dir, before)

    source = layout.out_dir / "images"
    if not source.is_dir():
        raise TaskFailed(f"make target-post-image produced no {source}")
    dest = images_dir(build)
    clear_dir(dest)
    copy_tree(source, dest)
    files = describe_images(dest)
    manifest = write_manifest(
        build,
        files,
        buildroot={
            "src_dir": str(layout.src_dir),
            "out_dir": str(layout.out_dir),
            "defconfig": defconfig_name(build, cfg),
            "version": cfg.version,
        },
    )
    for entry in files:
        ctx.log(
            f"image {entry['path']}"
            + (
                f" {entry['bytes']} bytes sha256:{entry['sha256']}"
                if "sha256" in entry
                else ""
            )
        )
    ctx.log(f"collected {len(files)} image file(s) into {dest}; manifest {manifest}")
    collect_record.save(build, layout, inputs)
