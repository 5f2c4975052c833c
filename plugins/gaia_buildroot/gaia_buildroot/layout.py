"""Where things live: every absolute path the buildroot tasks, the anchor and the fingerprint
sources agree on, computed in one place from the config."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_buildroot.config import BuildrootConfig, RpiConfig
from gaia_core.errors import ConfigError

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext

#: written into the Buildroot out dir by configure; a different value means "not ours / too old".
#: 2: the stage is no longer BR2_ROOTFS_OVERLAY, and what collect copies into target/ can
#: be undone (schema 1 trees hold stage files with nothing to restore under them).
OUT_DIR_SCHEMA = "2"
OUT_DIR_SCHEMA_FILE = ".gaia-buildroot-outdir-schema"
#: what the last stage sync put into <out>/target (see overlay.SyncRecord)
SYNC_MANIFEST_FILE = ".gaia-stage-overlay-sync.json"
#: the files of <out>/target that the last stage sync replaced, put back by its undo
SYNC_BACKUP_DIR = ".gaia-stage-overlay-backup"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/@:]+@[^/:]+:")


def stage_root(build: Build) -> Path:
    """The directory the stage renders into, one per build file; only collect reads it."""
    return build.workspace.build_dir / "stage" / build.name / "rootfs"


def buildroot_config(build: Build) -> BuildrootConfig:
    """The validated ``[buildroot]`` settings (validated here when the module did not run)."""
    found = build.settings.get("buildroot")
    if isinstance(found, BuildrootConfig):
        return found
    table = {k: v for k, v in (build.get("buildroot") or {}).items() if k != "rpi"}
    return BuildrootConfig.model_validate(table)


def rpi_config(build: Build) -> RpiConfig | None:
    """``[buildroot.rpi]`` when present and enabled."""
    found = build.settings.get("buildroot.rpi")
    if found is None and build.has("buildroot.rpi"):
        found = RpiConfig.model_validate(build.get("buildroot.rpi"))
    if found is None or not found.enabled:
        return None
    return found


@dataclasses.dataclass(frozen=True)
class BuildrootLayout:
    src_dir: Path
    out_dir: Path
    stage_root: Path
    download_dir: Path
    externals: tuple[Path, ...]
    #: False when ``source_dir`` names a tree used as is
    uses_git: bool
    repo: str
    #: (the configured path users know, the padded directory it links to)
    links: tuple[tuple[Path, Path], ...] = ()

    @classmethod
    def of(cls, build: Build, cfg: BuildrootConfig | None = None) -> BuildrootLayout:
        cfg = cfg or buildroot_config(build)
        resolve = build.workspace.resolve
        links: list[tuple[Path, Path]] = []
        if cfg.source_dir is not None:
            src = resolve(cfg.source_dir)
        else:
            src = chosen_dir(build, "src_dir", cfg.src_dir, links)
        return cls(
            src_dir=src,
            out_dir=chosen_dir(build, "br_output_dir", cfg.br_output_dir, links),
            stage_root=stage_root(build),
            download_dir=resolve(cfg.download_dir),
            externals=tuple(resolve(e) for e in cfg.external),
            uses_git=cfg.source_dir is None,
            repo=resolve_repo(build, cfg.repo),
            links=tuple(links),
        )

    def make_env(self, jlevel: int | None = None) -> dict[str, str]:
        """Environment added to every ``make`` call (the process environment stays)."""
        env = {"GIT_TERMINAL_PROMPT": "0"}
        if self.externals:
            env["BR2_EXTERNAL"] = ":".join(str(p) for p in self.externals)
        if jlevel is not None:
            env["BR2_JLEVEL"] = str(jlevel)
        return env

    def make(self, target: str, **variables: str) -> list[str]:
        """``make -C <src> O=<out> [VAR=value ...] <target>``; command-line variables
        override ``.config`` for this one call."""
        assignments = [f"{key}={value}" for key, value in variables.items()]
        return [
            "make",
            "-C",
            str(self.src_dir),
            f"O={self.out_dir}",
            *assignments,
            target,
        ]

    @property
    def target_dir(self) -> Path:
        return self.out_dir / "target"


def chosen_dir(build: Build, key: str, configured: str, links: list[tuple[Path, Path]]) -> Path:
    """The directory gaia builds in for ``buildroot.<key>``.

    Inside the build dir (the defaults ``@build/buildroot/output`` and ``src``) it is a padded
    directory, and the configured path becomes a link to it (appended to ``links``), so
    that a checkpoint restores anywhere with every embedded path rewritten; elsewhere it is
    the configured directory itself.
    """
    workspace = build.workspace
    path = workspace.resolve(configured)
    try:
        name = path.relative_to(workspace.build_dir).as_posix()
    except ValueError:
        return path
    if name == ".":
        return path
    try:
        padded = workspace.padded_dir(name)
    except ValueError as exc:
        raise ConfigError(f"{build.origin(f'buildroot.{key}')}: buildroot.{key}: {exc}") from None
    links.append((path, padded))
    return padded


def link_known_paths(ctx: TaskContext, layout: BuildrootLayout) -> None:
    """(Re)make the links from the configured paths to the padded directories, every run."""
    for link, padded in layout.links:
        note = ctx.build.workspace.link_padded_dir(link, padded)
        if note:
            ctx.log(note)


def resolve_repo(build: Build, repo: str) -> str:
    """A URL stays as is; a path (``@alias/...``, relative, absolute) is resolved."""
    if _URL.match(repo):
        return repo
    return str(build.workspace.resolve(repo))


def jlevel(cfg: BuildrootConfig) -> int:
    return cfg.threads or os.cpu_count() or 1


def defconfig_name(build: Build, cfg: BuildrootConfig) -> str | None:
    """``buildroot.defconfig``, else the enabled ``buildroot.rpi.defconfig``."""
    if cfg.defconfig:
        return cfg.defconfig
    rpi = rpi_config(build)
    return rpi.defconfig if rpi else None
