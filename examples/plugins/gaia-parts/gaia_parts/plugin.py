"""gaia-parts: an anchor with units (issue 20). ``[parts]`` builds one directory per part.

``parts.build`` works like make: a part is built when its stamp is missing or older than
its source file (``sources/<name>.txt`` in the workspace, a make prerequisite), and each
built part is appended to ``parts.log`` in the workspace root. A part's directory holds its
value, the values of its dependencies, and a hard link to each dependency's ``lib.txt``
(as Buildroot's per-package directories link their dependencies' files). ``all.txt`` is
assembled from every part on each run, as Buildroot assembles ``target/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target, Unit, Units
from gaia_core.fingerprints import hash_file
from gaia_core.tasks import Module, StrictModel, Task

TARGET = "parts_out"


class PartConfig(StrictModel):
    value: str = "v1"
    deps: list[str] = Field(default_factory=list)
    #: a part whose key cannot be computed (its inputs unreadable)
    opaque: bool = False


class PartsConfig(StrictModel):
    flavor: str = "plain"
    parts: dict[str, PartConfig] = Field(default_factory=dict)
    #: files written into the tree by every build, owned by no part (a log, a cache)
    scratch: bool = False


def out_dir(build) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.build_dir / "parts-out"


def source_file(build, name: str) -> Path:  # type: ignore[no-untyped-def]
    return build.workspace.root / "sources" / f"{name}.txt"


def ordered(parts: dict[str, PartConfig]) -> list[str]:
    done: list[str] = []
    while len(done) < len(parts):
        for name in sorted(parts):
            if name not in done and all(d in done for d in parts[name].deps):
                done.append(name)
    return done


def build_parts(ctx) -> None:  # type: ignore[no-untyped-def]
    settings: PartsConfig = ctx.build.settings["parts"]
    out = out_dir(ctx.build)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    for name in ordered(settings.parts):
        part = settings.parts[name]
        here = out / "parts" / name
        stamp = here / ".stamp"
        source = source_file(ctx.build, name)
        if stamp.exists() and (not source.exists() or stamp.stat().st_mtime_ns > source.stat().st_mtime_ns):
            continue
        here.mkdir(parents=True, exist_ok=True)
        text = f"{name}={part.value} flavor={settings.flavor}"
        if source.exists():
            text += " source=" + source.read_text().strip()
        (here / "value.txt").write_text(text + "\n")
        (here / "lib.txt").write_text(f"lib of {name}\n")
        for dep in part.deps:
            linked = here / f"from-{dep}.txt"
            linked.unlink(missing_ok=True)
            os.link(out / "parts" / dep / "lib.txt", linked)
        stamp.write_text("")
        with open(ctx.build.workspace.root / "parts.log", "a") as log:
            log.write(f"{name}\n")
        ctx.log(f"built part {name}")
    with open(out / "all.txt", "a") as assembled:  # appends: only a fresh all.txt is right
        for name in sorted(settings.parts):
            assembled.write((out / "parts" / name / "value.txt").read_text())
    if settings.scratch:
        (out / "scratch.log").write_text("written by every build\n")


class PartsModule(Module):
    table = "parts"
    config_model = PartsConfig

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [Task("parts.build", run=build_parts, module="parts", phase="build", after=["core.init"],
                     provides=["parts:built"])]


class PartsAnchor(Anchor):
    task = "parts.build"
    default_fingerprint_paths = ("parts.flavor", "parts.parts")

    def targets(self) -> list[Target]:
        return [Target(TARGET, out_dir(self.build), writes=("parts/*", "all.txt"))]

    def units(self) -> Units:
        settings: PartsConfig = self.build.settings["parts"]
        units = []
        for name, part in sorted(settings.parts.items()):
            inputs = None if part.opaque else {"value": part.value,
                                               "source": hash_file(source_file(self.build, name))}
            units.append(Unit(name, inputs, tuple(part.deps), (f"{TARGET}/parts/{name}",),
                              unknown="its inputs are opaque" if part.opaque else None, label=part.value))
        return Units(tuple(units), shared={"flavor": settings.flavor}, assembled=(f"{TARGET}/all.txt",))


@hookimpl
def gaia_register_modules() -> list[type[Module]]:
    return [PartsModule]


@hookimpl
def gaia_register_anchors() -> list[type[Anchor]]:
    return [PartsAnchor]
