"""A ``[toolchain]`` module whose ``toolchain.build`` task is a checkpoint anchor."""

from __future__ import annotations

import shutil
from pathlib import Path

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.fingerprints import FingerprintSource, hash_tree
from gaia_core.tasks import Module, StrictModel, Task


class ToolchainConfig(StrictModel):
    source: str  # directory holding the sources; its contents are fingerprinted
    command: list[str]  # run in the source dir; writes into $OUT
    version: str = "1"


def output_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "toolchain"


def build_toolchain(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["toolchain"]
    out = output_dir(ctx.build)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = ctx.build.workspace.resolve(settings.source)
    ctx.run_cmd(settings.command, cwd=source, env={"OUT": str(out)})


def install_toolchain(ctx) -> None:  # type: ignore[no-untyped-def]
    dest = ctx.build.run_dir / "toolchain"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(output_dir(ctx.build), dest, symlinks=True,
                    ignore=shutil.ignore_patterns(".gaia-checkpoint.json"))
    ctx.log(f"installed into {dest}")


class ToolchainModule(Module):
    table = "toolchain"
    config_model = ToolchainConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [
            Task("toolchain.build", run=build_toolchain, module="toolchain", phase="build",
                 after=["core.init"], provides=["toolchain:built"]),
            Task("toolchain.install", run=install_toolchain, module="toolchain", phase="install",
                 after=["toolchain:built"]),
        ]


class ToolchainAnchor(Anchor):
    task = "toolchain.build"
    default_fingerprint_paths = ("toolchain.source", "toolchain.command", "toolchain.version")

    def targets(self) -> list[Target]:
        return [Target("toolchain", output_dir(self.build))]


class ToolchainSources(FingerprintSource):
    kind = "toolchain-sources"
    paths = ("toolchain.source",)

    def digest(self, build, path, value):  # type: ignore[no-untyped-def]
        return hash_tree(build.workspace.resolve(value)) if value else None


@hookimpl
def gaia_register_modules():  # type: ignore[no-untyped-def]
    return [ToolchainModule]


@hookimpl
def gaia_register_anchors():  # type: ignore[no-untyped-def]
    return [ToolchainAnchor]


@hookimpl
def gaia_register_fingerprint_sources():  # type: ignore[no-untyped-def]
    return [ToolchainSources]
