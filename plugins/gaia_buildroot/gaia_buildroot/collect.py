"""``buildroot.collect``: current stage into the target tree, images, manifest.

It always runs in full, also after a checkpoint restore skipped configure and build: the
stage is synced into ``<out>/target`` (undoing the previous sync), ``make
target-post-image`` makes the images, and they are copied to ``<run dir>/images``.

``target-post-image`` runs ``target-finalize`` again, whose steps rewrite parts of the
target tree (``/etc/hostname``, ``os-release``, the user's overlays, post-build scripts).
The stage root therefore also goes to that one ``make`` call as the last
``BR2_ROOTFS_OVERLAY`` (a command-line variable, never written into ``.config``), so that
Buildroot copies it after its own steps and before the post-build scripts, as it does
with any overlay: the stage wins, as it did when it was the overlay of the build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def overlays_with_stage(layout: BuildrootLayout) -> str:
    """BR2_ROOTFS_OVERLAY for ``target-post-image``: the ``.config``'s overlays, then the stage."""
    stage = str(layout.stage_root)
    if any(c.isspace() or c == '"' for c in stage):
        raise TaskFailed(
            f"the stage root {stage} contains a space or a quote; Buildroot cannot use it as an overlay"
        )
    configured = DotConfig.read(layout.out_dir / ".config").get("BR2_ROOTFS_OVERLAY")
    overlays = unquote(configured).split() if configured not in (None, "n") else []
    return quote(" ".join([*overlays, stage]))


def collect(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    if cfg.starting_point.enabled:
        from gaia_buildroot.starting_point import collect_starting_point

        collect_starting_point(ctx, cfg)
        return
    build = ctx.build
    layout = BuildrootLayout.of(build, cfg)
    check_out_dir(layout)
    target = layout.target_dir
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
    overlay: dict[str, str] = {}
    if layout.stage_root.is_dir():
        overlay["BR2_ROOTFS_OVERLAY"] = overlays_with_stage(layout)
    before = image_files(layout.out_dir / "images")
    ctx.run_cmd(
        layout.make("target-post-image", **overlay), env=layout.make_env(jlevel(cfg))
    )
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
