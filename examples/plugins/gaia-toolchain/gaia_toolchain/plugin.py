"""The hooks of gaia-toolchain: a [toolchain] table whose toolchain.build task is a checkpoint anchor.

gaia finds this module through the entry point ``toolchain = "gaia_toolchain.plugin"`` in
group ``gaia`` (pyproject.toml).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.build import Build
from gaia_core.fingerprints import FingerprintSource, digest_files
from gaia_core.run import TaskContext
from gaia_core.tasks import Module, StrictModel, Task

#: the file checkpoints keep in each target; not part of what the build produced
MARKER = ".gaia-checkpoint.json"


class ToolchainConfig(StrictModel):
    """The [toolchain] table; unknown keys are errors."""

    command: list[str]  # run in the source directory; writes into $OUT
    source: str = "src"  # the sources, relative to the workspace root
    version: str = "1"  # change it to force a rebuild


def output_dir(build: Build) -> Path:
    """Where toolchain.build writes: the anchor's target, captured and restored by checkpoints."""
    return build.workspace.build_dir / "toolchain"


class ToolchainModule(Module):
    table = "toolchain"  # active when the build file has a [toolchain] table
    config_model = ToolchainConfig

    def plan(self, build: Build, settings: ToolchainConfig) -> list[Task]:
        return [
            Task("toolchain.build", run=build_toolchain, label="Build toolchain", phase="build",
                 after=["core.init"], provides=["toolchain:built"]),
            Task("toolchain.install", run=install_toolchain, label="Install toolchain", phase="install",
                 after=["toolchain:built"]),
        ]


def build_toolchain(ctx: TaskContext) -> None:
    settings: ToolchainConfig = ctx.build.settings["toolchain"]
    out = output_dir(ctx.build)
    shutil.rmtree(out, ignore_errors=True)  # a clean build; drop it if the command is incremental
    out.mkdir(parents=True)
    source = ctx.build.workspace.resolve(settings.source)
    ctx.run_cmd(settings.command, cwd=source, env={"OUT": str(out)})


def install_toolchain(ctx: TaskContext) -> None:
    dest = ctx.build.run_dir / "toolchain"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(output_dir(ctx.build), dest, symlinks=True, ignore=shutil.ignore_patterns(MARKER))
    ctx.log(f"installed into {dest}")


class ToolchainAnchor(Anchor):
    task = "toolchain.build"  # the task checkpoints attach to
    default_fingerprint_paths = ("toolchain.command", "toolchain.source", "toolchain.version")

    def targets(self) -> list[Target]:
        return [Target("toolchain", output_dir(self.build))]


class ToolchainSources(FingerprintSource):
    kind = "toolchain-sources"
    paths = ("toolchain.source",)

    def digest(self, build: Build, path: str, value: str | None) -> Any:
        return digest_files(build.workspace.resolve(value), exclude=self.exclude) if value is not None else None


@hookimpl
def gaia_register_modules() -> list[type[Module]]:
    return [ToolchainModule]


@hookimpl
def gaia_register_anchors() -> list[type[Anchor]]:
    return [ToolchainAnchor]


@hookimpl
def gaia_register_fingerprint_sources() -> list[type[FingerprintSource]]:
    return [ToolchainSources]
