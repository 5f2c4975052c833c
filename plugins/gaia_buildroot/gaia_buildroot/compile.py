"""``buildroot.build``: ``make target-finalize`` (packages and the target tree, no images).

Images are made by ``buildroot.collect`` so that they always see the current stage, also
when this task was skipped because a checkpoint was restored. The stage never takes part
here: what the last collect put into the out dir (its stage sync, the root filesystem
images) is taken out first, so the tree the checkpoint captures right after this task is
Buildroot's own and serves every build file of the workspace. A package built from an
override tree that changed since is cleaned too, so that the tree matches the
fingerprint, which hashed the new source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot.anchor import refuse_escaping_target_tree
from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.layout import (
    SYNC_BACKUP_DIR,
    SYNC_MANIFEST_FILE,
    BuildrootLayout,
    jlevel,
)
from gaia_buildroot.overlay import undo_sync
from gaia_buildroot.package_overrides import (
    digest_overrides,
    record_built_from,
    stale_override_builds,
)
from gaia_buildroot.post_image import remove_outputs
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
    env = layout.make_env(jlevel(cfg))
    undo_last_collect(ctx, layout)
    refuse_escaping_target_tree(ctx.build, layout)
    srcdirs = (digest_overrides(ctx.build) or {}).get("srcdirs", {})
    clean_stale_overrides(ctx, layout, srcdirs, env)
    ctx.run_cmd(layout.make("target-finalize"), env=env)
    record_built_from(layout.out_dir, srcdirs)
    ctx.log(f"built Buildroot target tree in {layout.target_dir}")


def undo_last_collect(ctx: TaskContext, layout: BuildrootLayout) -> None:
    """Take the stage sync and the images of the last collect out of the out dir."""
    removed = undo_sync(
        layout.target_dir,
        layout.out_dir / SYNC_MANIFEST_FILE,
        layout.out_dir / SYNC_BACKUP_DIR,
    )
    if removed:
        ctx.log(
            f"took {len(removed)} file(s) of an earlier stage sync out of {layout.target_dir}"
        )
    images = remove_outputs(layout.out_dir)
    if images:
        ctx.log(f"removed earlier collects' images: {', '.join(images)}")


def clean_stale_overrides(
    ctx: TaskContext,
    layout: BuildrootLayout,
    srcdirs: dict[str, str],
    env: dict[str, str],
) -> None:
    for package in stale_override_builds(layout.out_dir, srcdirs):
        ctx.log(
            f"{package}: its override source changed since it was built; rebuilding it"
        )
        ctx.run_cmd(layout.make(f"{package}-dirclean"), env=env)
