"""A small anchor for the end-to-end tests of store format 4: ``[tree]`` copies a source
directory into ``<build>/tree-out`` and is checkpointed.

The remote suite measures what moves when one file of a large tree changes, so the tree
must be the test's to shape (the quickstart's fake Buildroot out dir is a few KiB of
small files). ``tree.version`` is the anchor's fingerprint; the test bumps it together
with the file it changes. Each real run of the anchor appends a line to
``<root>/builds.log``, so a restore shows as no new line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.tasks import Module, StrictModel, Task


class TreeConfig(StrictModel):
    #: the directory copied into the out dir (absolute, or relative to the workspace root)
    source: str
    version: str = "1"


def out_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "tree-out"


def build_tree(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["tree"]
    out = out_dir(ctx.build)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ctx.build.workspace.resolve(settings.source), out, symlinks=True)  # keeps mtimes
    with open(ctx.build.workspace.root / "builds.log", "a") as log:
        log.write(f"built {settings.version}\n")
    ctx.log(f"tree {settings.version} built")


class TreeModule(Module):
    table = "tree"
    config_model = TreeConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [Task("tree.build", run=build_tree, module="tree", phase="build", after=["core.init"],
                     provides=["tree:built"])]


class TreeAnchor(Anchor):
    task = "tree.build"
    default_fingerprint_paths = ("tree.version",)

    def targets(self) -> list[Target]:
        return [Target("tree_out", out_dir(self.build))]


class TreePlugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [TreeModule]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [TreeAnchor]
