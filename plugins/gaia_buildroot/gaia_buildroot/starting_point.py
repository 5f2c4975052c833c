"""Starting point: an existing root filesystem (a directory or a tarball) instead of a
Buildroot compile, with the stage applied on top and packed as ``rootfs.tar``.

A tarball is hostile input: it is extracted with tarfile's ``data`` filter (no absolute
or ``..`` paths, no writes through links, no device nodes). The one relaxation is that
absolute *symlinks* are kept, since every real root filesystem has them (they mean
``/`` of the image); the filter still refuses any later member whose path goes through
one, so nothing is ever written outside the extraction directory.
"""

from __future__ import annotations

import os
import platform
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_buildroot.config import BuildrootConfig
from gaia_buildroot.fsutil import clear_dir, copy_tree
from gaia_buildroot.images import describe_images, images_dir, write_manifest
from gaia_buildroot.layout import stage_root
from gaia_buildroot.overlay import sync_overlay
from gaia_core.errors import TaskFailed

if TYPE_CHECKING:
    from gaia_core.run import TaskContext


class _RootfsFilter:
    """tarfile's ``data`` filter, keeping absolute symlinks and skipping device nodes."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.SpecialFileError:
            self.skipped.append(member.name)
            return None
        except tarfile.AbsoluteLinkError:
            if not member.issym():
                raise
            # check the member's own path with a harmless link target, then restore it
            checked = tarfile.data_filter(
                member.replace(linkname=".", deep=False), dest
            )
            return checked.replace(linkname=member.linkname, deep=False)


def extract_rootfs(tar_path: Path, dest: Path) -> list[str]:
    """Extract ``tar_path`` into ``dest``; returns the special files skipped."""
    if not hasattr(tarfile, "data_filter"):  # PEP 706: CPython 3.11.4 and newer
        raise TaskFailed(
            f"cannot extract starting point {tar_path}: extracting a tarball safely needs "
            "tarfile's data filter (Python 3.11.4 or newer); this is Python "
            f"{platform.python_version()}"
        )
    keep = _RootfsFilter()
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            tar.extractall(dest, filter=keep)
    except (tarfile.TarError, OSError) as exc:
        raise TaskFailed(
            f"cannot extract starting point {tar_path}: {type(exc).__name__}: {exc}"
        ) from None
    return keep.skipped


def _single_top_dir(root: Path) -> Path:
    """``root/x`` when ``x`` is all the tarball held (a wrapped rootfs), else ``root``."""
    entries = list(root.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return root


def pack_rootfs(rootfs: Path, tar_path: Path) -> None:
    """``rootfs.tar``: sorted, owned by root like an image made under fakeroot."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    tmp = tar_path.with_name(f".{tar_path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(rootfs, arcname=".", filter=as_root)
    os.replace(tmp, tar_path)


def collect_starting_point(ctx: TaskContext, cfg: BuildrootConfig) -> None:
    sp = cfg.starting_point
    build = ctx.build
    dest = images_dir(build)
    clear_dir(dest)
    rootfs = dest / "rootfs"
    skipped: list[str] = []
    if sp.rootfs_dir is not None:
        kind, raw = "rootfs_dir", sp.rootfs_dir
        source = build.workspace.resolve(raw)
        if not source.is_dir():
            raise TaskFailed(
                f"buildroot.starting_point.rootfs_dir '{raw}' ({source}) is not a directory"
            )
        copy_tree(
            source, rootfs, on_skip=lambda p: skipped.append(str(p.relative_to(source)))
        )
    else:
        kind, raw = "rootfs_tar", str(sp.rootfs_tar)
        source = build.workspace.resolve(raw)
        if not source.is_file():
            raise TaskFailed(
                f"buildroot.starting_point.rootfs_tar '{raw}' ({source}) is not a file"
            )
        staging = dest / ".extract"
        staging.mkdir()
        skipped = extract_rootfs(source, staging)
        os.rename(_single_top_dir(staging), rootfs)
        shutil.rmtree(staging, ignore_errors=True)
    ctx.log(f"starting point {kind} {source} -> {rootfs}")
    if skipped:
        ctx.log(
            f"skipped {len(skipped)} device node(s)/FIFO(s): {', '.join(sorted(skipped)[:10])}"
        )
    if sp.apply_stage_overlay:
        _, copied = sync_overlay(stage_root(build), rootfs, record_file=None)
        ctx.log(f"stage overlay: {len(copied)} file(s) applied")
    pack_rootfs(rootfs, dest / "rootfs.tar")
    files = describe_images(dest, exclude=("rootfs",))
    manifest = write_manifest(
        build,
        files,
        rootfs=str(rootfs),
        starting_point={
            "source_label": sp.source_label or f"{kind}:{raw}",
            "kind": kind,
            "source": str(source),
            "stage_overlay_applied": sp.apply_stage_overlay,
            "skipped_special_files": len(skipped),
        },
    )
    ctx.log(f"collected starting point into {dest}; manifest {manifest}")
