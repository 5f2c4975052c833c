"""A small anchor plugin that only the tests define: ``[counter]`` builds a directory.

``counter.build`` is the anchor (it appends to ``builds.log`` in the workspace root each
time it really runs); ``counter.consume`` reads and then writes into the anchor's output,
like ``buildroot.collect`` does, so capture must come before it.

Options that make the output look like a real Buildroot out dir: ``embed_root`` writes a
text file and a binary file that name the workspace root (relocation), ``link_to`` adds an
absolute symlink to a directory outside the tree (a prerequisite, like an external
toolchain), ``source`` names a file that ``counter.fetch`` copies into the workspace and
whose content is fingerprinted (pending until fetch ran).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.errors import TaskFailed
from gaia_core.fingerprints import FingerprintSource, InputPending, hash_file
from gaia_core.tasks import Module, StrictModel, Task


class CounterConfig(StrictModel):
    value: str = "a"
    extra: str = ""  # not fingerprinted
    fail_consume: bool = False
    embed_root: bool = False
    link_to: str | None = None
    source: str | None = None
    #: members under "scratch/" may stay unrelocated (like Buildroot's build/<pkg>/)
    binary_in_scratch: bool = False
    #: bytes of incompressible data in the output (a payload big enough to stall mid-transfer)
    bulk: int = 0
    #: small files in ``many/`` (a tree whose full restore starts helper processes)
    files: int = 0


def out_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "counter-out"


def fetched_source(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "fetched" / "source.txt"


def build_counter(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["counter"]
    out = out_dir(ctx.build)
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "value.txt").write_text(settings.value)
    (out / "sub" / "data.bin").write_bytes(os.urandom(4096))
    if settings.bulk:
        (out / "bulk.bin").write_bytes(os.urandom(settings.bulk))
    if settings.files:
        (out / "many").mkdir(exist_ok=True)
        for index in range(settings.files):
            (out / "many" / f"f{index:04}.txt").write_text(f"{index}\n")
    if not (out / "link").is_symlink():
        os.symlink("value.txt", out / "link")
    root = str(ctx.build.workspace.root)
    if settings.embed_root:
        (out / "config.mk").write_text(f"OUT := {out}\nROOT := {root}\n")
        (out / "canonical.mk").write_text(f"BASE_DIR := {os.path.realpath(out)}\n")  # like Buildroot's O=
        binary_dir = out / ("scratch" if settings.binary_in_scratch else "sub")
        binary_dir.mkdir(exist_ok=True)
        (binary_dir / "tool.bin").write_bytes(b"\x7fELF\0\0" + f"{out}/lib".encode() + b"\0" + os.urandom(64))
        if not (out / "abs-link").is_symlink():
            os.symlink(f"{out}/value.txt", out / "abs-link")
    if settings.link_to and not (out / "external").is_symlink():
        os.symlink(f"{settings.link_to}/tool", out / "external")
    with open(ctx.build.workspace.root / "builds.log", "a") as log:
        log.write("built\n")
    ctx.log("counter built")


def fetch_counter(ctx) -> None:  # type: ignore[no-untyped-def]
    settings = ctx.build.settings["counter"]
    dest = fetched_source(ctx.build)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ctx.build.workspace.resolve(settings.source), dest)


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
        tasks = [
            Task("counter.build", run=build_counter, module="counter", phase="build",
                 after=["core.init", "counter:fetched?"], provides=["counter:built"]),
            Task("counter.consume", run=consume_counter, module="counter", phase="collect",
                 after=["counter:built"]),
        ]
        if settings.source:
            tasks.append(Task("counter.fetch", run=fetch_counter, module="counter", phase="fetch",
                              after=["core.init"], provides=["counter:fetched"]))
        return tasks


class FetchedSource(FingerprintSource):
    """The fetched copy of ``counter.source``: pending until ``counter.fetch`` ran."""

    kind = "counter.source"
    paths = ("counter.source",)

    def digest(self, build, path, value):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        fetched = fetched_source(build)
        if not fetched.is_file():
            raise InputPending("counter.fetch")
        return hash_file(fetched)


class CounterAnchor(Anchor):
    task = "counter.build"
    default_fingerprint_paths = ("counter.value", "counter.source")
    restore_after = ("counter:fetched?",)

    def targets(self) -> list[Target]:
        # what counter.build (when it runs again) and counter.consume write
        return [Target("counter_out", out_dir(self.build), writes=("sub/*", "value.txt", "consumed.txt"))]

    def relocation_required(self, member: str) -> bool:
        return not member.startswith("counter_out/scratch/")


class CounterPlugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [CounterModule]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [CounterAnchor]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        return [FetchedSource]
