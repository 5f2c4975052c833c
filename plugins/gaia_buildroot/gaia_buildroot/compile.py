"""``buildroot.build``: ``make target-finalize`` (packages and the target tree, no images).

Images are made by ``buildroot.collect`` so that they always see the current stage, also
when this task was skipped because a checkpoint was restored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.layout import SYNC_MANIFEST_FILE, BuildrootLayout, jlevel
from gaia_buildroot.overlay import read_manifest, stage_files, write_manifest
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext


def build(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    if cfg.starting_point.enabled:
        ctx.log(
            "starting point enabled (buildroot.starting_point.enabled=true): skipping the Buildroot compile"
        )
        return
    layout = BuildrootLayout.of(ctx.build, cfg)
    if not (layout.out_dir / ".config").is_file():
        raise TaskFailed(
            f"{layout.out_dir}/.config is missing: buildroot.configure has not run"
        )
    # target-finalize copies BR2_ROOTFS_OVERLAY (the stage root) into target/. Whatever the
    # stage held before or after it is recorded, so that collect can take those files out
    # again even in a checkpoint of this out dir restored by a later run.
    before = stage_files(layout.stage_root)
    ctx.run_cmd(layout.make("target-finalize"), env=layout.make_env(jlevel(cfg)))
    manifest = layout.out_dir / SYNC_MANIFEST_FILE
    write_manifest(
        manifest, [*read_manifest(manifest), *before, *stage_files(layout.stage_root)]
    )
    ctx.log(f"built Buildroot target tree in {layout.out_dir / 'target'}")
