"""A small anchor plugin that only the tests define: ``[counter]`` builds a directory.

``counter.build`` is the anchor (it appends to ``builds.log`` in the workspace root each
time it really runs); ``counter.consume`` reads and then writes into the anchor's output,
like ``buildroot.collect`` does, so capture must come before it.
"""

from __future__ import annotations

import os
from pathlib import Path

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.errors import TaskFailed
from gaia_core.tasks import Module, StrictModel, Task


class CounterConfig(StrictModel):
    value: str = "a"
    extra: str = ""  # not fingerprinted
    fail_consume: bool = False


def out_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "counter-out"


def build_counter(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["counter"]
    out = out_dir(ctx.build)
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "value.txt").write_text(settings.value)
    (out / "sub" / "data.bin").write_bytes(os.urandom(4096))
    if not (out / "link").is_symlink():
        os.symlink("value.txt", out / "link")
    with open(ctx.build.workspace.root / "builds.log", "a") as log:
        log.write("built\n")
    ctx.log("counter built")


def consume_counter(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["counter"]
    out = out_dir(ctx.build)
    result = (out / "value.txt").read_text() + "+" + settings.extra
    (out / "consumed.txt").write_text(result)  # mutates the anchor's output, like collect
    ctx.build.run_dir.mkdir(parents=True, exist_ok=True)
    (ctx.build.run_dir / "result.txt").write_text(result)
    if settings.fail_consume:
        raise TaskFailed("consume failed on purpose")


class CounterModule(Module):
    table = "counter"
    config_model = CounterConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [
            Task("counter.build", run=build_counter, module="counter", phase="build",
                 after=["core.init"], provides=["counter:built"]),
            Task("counter.consume", run=consume_counter, module="counter", phase="collect",
                 after=["counter:built"]),
        ]


class CounterAnchor(Anchor):
    task = "counter.build"
    default_fingerprint_paths = ("counter.value",)

    def targets(self) -> list[Target]:
        return [Target("counter_out", out_dir(self.build))]


class CounterPlugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [CounterModule]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [CounterAnchor]
