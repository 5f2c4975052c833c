"""``buildroot.fetch``: a Buildroot source tree at the wanted version.

Either ``source_dir`` (a tree used as is) or a git clone of ``repo`` in ``src_dir``,
fetched and checked out at ``version`` on every run so a moving branch is followed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.gitrepo import (
    git_output,
    is_git_checkout,
    is_pinned,
    resolve_commit,
    resolve_version,
)
from gaia_buildroot.layout import BuildrootLayout, link_known_paths
from gaia_buildroot.source_tree import record_fetched
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_HTTP_LOW_SPEED_LIMIT": "1024",
    "GIT_HTTP_LOW_SPEED_TIME": "60",
}


def fetch(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    if cfg.starting_point.enabled:
        ctx.log(
            "starting point enabled (buildroot.starting_point.enabled=true): skipping fetch"
        )
        return
    layout = BuildrootLayout.of(ctx.build, cfg)
    link_known_paths(ctx, layout)
    src = layout.src_dir
    if not layout.uses_git:
        if not (src / "Makefile").is_file():
            raise TaskFailed(
                f"buildroot.source_dir '{cfg.source_dir}' ({src}) is not a Buildroot tree: no Makefile"
            )
        note = (
            f" (buildroot.version '{cfg.version}' is not checked out: source_dir is used as is)"
            if cfg.version
            else ""
        )
        ctx.log(f"using Buildroot source tree {src}{note}")
        return
    if not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        ctx.log(f"cloning {layout.repo} into {src}")
        ctx.run_cmd(["git", "clone", "--", layout.repo, str(src)], env=GIT_ENV)
    elif not is_git_checkout(src):
        raise TaskFailed(
            f"buildroot.src_dir {src} exists but is not a git checkout; remove it, or use "
            f"buildroot.source_dir to build an existing tree as is"
        )
    else:
        try:
            ctx.run_cmd(
                [
                    "git",
                    "-C",
                    str(src),
                    "fetch",
                    "--tags",
                    "--prune",
                    "--force",
                    "origin",
                ],
                env=GIT_ENV,
            )
        except TaskFailed:
            if not (cfg.version and is_pinned(src, cfg.version)):
                raise
            ctx.log(
                f"WARN: git fetch failed; using the local copy of pinned version '{cfg.version}'"
            )
    if not cfg.version:
        ctx.log(
            f"buildroot.version not set: building {src} at {git_output(src, 'rev-parse', 'HEAD') or 'its current HEAD'}"
        )
        record_fetched(ctx.build, src)
        return
    wanted = resolve_version(src, cfg.version)
    if wanted is None:
        raise TaskFailed(
            f"buildroot.version '{cfg.version}' is not a tag, branch or commit of {layout.repo}"
        )
    # src_dir is gaia's clone: keep it pristine, the fingerprint only knows the commit
    dirty = git_output(src, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        ctx.log(
            f"resetting local changes in {src}: {', '.join(line[3:] for line in dirty.splitlines()[:5])}"
        )
    if resolve_commit(src, "HEAD") != wanted or dirty:
        ctx.run_cmd(
            ["git", "-C", str(src), "checkout", "--force", "--detach", wanted],
            env=GIT_ENV,
        )
        ctx.run_cmd(["git", "-C", str(src), "reset", "--hard", wanted], env=GIT_ENV)
    record_fetched(ctx.build, src)
    ctx.log(f"Buildroot {cfg.version} at {wanted} in {src}")
