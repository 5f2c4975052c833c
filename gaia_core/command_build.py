"""A checkpointable build declared in a few lines: its table, its commands, its input trees.

``configure && make`` builds need the same anchor every time: a config table, a task that
runs commands, an output directory that checkpoints capture, the input trees hashed per
file, the values and the commands in the fingerprint. Subclassing :class:`CommandBuild`
declares all of it; the class makes its :attr:`~CommandBuild.anchor` and
:attr:`~CommandBuild.fingerprint_source` classes itself::

    class Hello(CommandBuild):
        table = "hello"
        config_model = HelloConfig          # a CommandConfig: ``source`` plus your values
        cwd = "{source}"
        commands = (["autoreconf", "-i"], ["./configure", "{configure_args}"], ["make", "-j{jobs}"])

Register ``Hello`` with ``gaia_register_modules``, ``Hello.anchor`` with
``gaia_register_anchors`` and ``Hello.fingerprint_source`` with
``gaia_register_fingerprint_sources``.

What the core does for it: the output directory is a padded path of fixed length
(:mod:`gaia_core.padding`), so binaries that embed it relocate to any workspace; each input
tree is copied into the output directory (only the files its digest covers: what git sees,
see :mod:`gaia_core.treecopy`) and the commands run on the copy, so a build that writes into
its sources (``autoreconf``, automake's rebuild rules) leaves its inputs alone and a restored
tree needs nothing outside itself; ``<build_dir>/<table>`` is a link to the output directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from gaia_core.anchors import Anchor, Target
from gaia_core.errors import TaskFailed
from gaia_core.fingerprints import FingerprintSource, digest_files
from gaia_core.tasks import Module, StrictModel, Task
from gaia_core.treecopy import sync_inputs

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext

#: ``{name}`` in a command (``${name}`` is left to the shell)
PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: placeholders every command build has besides its settings
BUILTIN_PLACEHOLDERS = ("out", "jobs")


class CommandConfig(StrictModel):
    """The table of a :class:`CommandBuild`; subclass it to add the values your commands use."""

    #: the input tree, relative to the workspace root
    source: str = "src"


class CommandBuild(Module):
    """A module whose ``<table>.build`` task runs :attr:`commands`, checkpointed as an anchor."""

    table: ClassVar[str]
    config_model: ClassVar[type[BaseModel]] = CommandConfig
    #: argv lists run in order; ``{out}``, ``{jobs}``, ``{<tree>}`` and ``{<setting>}`` are
    #: replaced (a list setting that is a whole argument becomes several arguments)
    commands: ClassVar[Sequence[Sequence[str]]] = ()
    #: where the commands run (placeholders allowed)
    cwd: ClassVar[str] = "{out}"
    #: variables added to the commands' environment (placeholders allowed)
    env: ClassVar[Mapping[str, str]] = {}
    #: settings that name input trees: hashed per file, copied into ``{out}/<name>``
    trees: ClassVar[tuple[str, ...]] = ("source",)
    #: False runs the commands on the trees where they are (the capture then refuses a build
    #: that changed them)
    copy_trees: ClassVar[bool] = True
    #: settings that do not change the output (a parallelism), left out of the fingerprint
    unhashed: ClassVar[tuple[str, ...]] = ()
    #: globs of files in the trees the build never reads, left out of the fingerprint
    fingerprint_exclude: ClassVar[tuple[str, ...]] = ()
    #: what the build task waits for
    after: ClassVar[tuple[str, ...]] = ("core.init",)
    #: made by the class: register them with the anchors and the fingerprint sources
    anchor: ClassVar[type[Anchor]]
    fingerprint_source: ClassVar[type[FingerprintSource]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "table" not in cls.__dict__:
            return
        problems = _declaration_problems(cls)
        if problems:
            raise TypeError(f"{cls.__qualname__}: " + "; ".join(problems))
        cls.anchor = _anchor_class(cls)
        cls.fingerprint_source = _source_class(cls)

    def plan(self, build: Build, settings: Any) -> list[Task]:
        t = self.table
        return [
            # the path users know first: a link they removed starts the output over, as a
            # removed out dir would (the restore then sees no tree in place)
            Task(f"{t}.link", run=type(self).link_output, label=f"Link build/{t}", phase="prepare",
                 after=list(self.after), provides=[f"{t}:output"]),
            Task(f"{t}.build", run=type(self).run_build, label=f"Build {t}", phase="build", after=[f"{t}.link"],
                 provides=[f"{t}:built"]),
        ]

    @classmethod
    def output_dir(cls, build: Build) -> Path:
        """The padded directory the commands build into: the anchor's one target."""
        return build.workspace.padded_dir(cls.table)

    @classmethod
    def placeholders(cls, build: Build) -> dict[str, Any]:
        """What ``{name}`` stands for: the settings, ``out``, ``jobs`` and each tree's directory."""
        settings = build.settings[cls.table]
        out = cls.output_dir(build)
        values: dict[str, Any] = {**settings.model_dump(mode="json"), "out": str(out), "jobs": str(os.cpu_count() or 1)}
        for tree in cls.trees:
            where = out / tree if cls.copy_trees else build.workspace.resolve(getattr(settings, tree))
            values[tree] = str(where)
        return values

    @classmethod
    def run_build(cls, ctx: TaskContext) -> None:
        build = ctx.build
        settings = build.settings[cls.table]
        out = cls.output_dir(build)
        out.mkdir(parents=True, exist_ok=True)
        if cls.copy_trees:
            for tree in cls.trees:
                source = build.workspace.resolve(getattr(settings, tree))
                if not source.is_dir():
                    raise TaskFailed(f"{cls.table}.{tree}: {source} is not a directory")
                done = sync_inputs(source, out / tree)
                ctx.log(f"{tree}: {source} -> {out / tree}: " + ", ".join(f"{n} {k}" for k, n in done.items()))
        values = cls.placeholders(build)
        cwd = Path(_expand_text(cls.cwd, values))
        env = {key: _expand_text(value, values) for key, value in cls.env.items()}
        for argv in cls.commands:
            ctx.run_cmd(expand_argv(argv, values), cwd=cwd, env=env)

    @classmethod
    def link_output(cls, ctx: TaskContext) -> None:
        """``<build_dir>/<table>`` -> the padded output directory (the path users know)."""
        out = cls.output_dir(ctx.build)
        note = ctx.build.workspace.link_padded_dir(ctx.build.workspace.build_dir / cls.table, out)
        ctx.log(note or f"{ctx.build.workspace.build_dir / cls.table} -> {out}")


def _expand_text(text: str, values: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: _as_text(values[m.group(1)]), text)


def expand_argv(argv: Sequence[str], values: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        whole = PLACEHOLDER.fullmatch(arg)
        if whole and isinstance(values[whole.group(1)], list):
            out += [_as_text(v) for v in values[whole.group(1)]]
        else:
            out.append(_expand_text(arg, values))
    return out


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_as_text(v) for v in value)
    return "" if value is None else str(value)


def _declaration_problems(cls: type[CommandBuild]) -> list[str]:
    """What is wrong with a CommandBuild subclass, found when the plugin is imported."""
    fields = set(getattr(cls.config_model, "model_fields", {}))
    problems = []
    if not isinstance(cls.table, str) or not re.match(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$", cls.table):
        problems.append(f"table {cls.table!r} is no dotted lower-case name")
    if not cls.commands or any(isinstance(c, str) or not c for c in cls.commands):
        problems.append("commands must be a non-empty sequence of argv lists")
    for name in (*cls.trees, *cls.unhashed):
        if name not in fields:
            problems.append(f"'{name}' is no field of {cls.config_model.__qualname__}")
    if reserved := sorted(fields & set(BUILTIN_PLACEHOLDERS)):
        problems.append(f"settings cannot be named {', '.join(reserved)} (placeholders of their own)")
    texts = [arg for argv in cls.commands for arg in argv] + [cls.cwd, *cls.env.values()]
    known = fields | set(BUILTIN_PLACEHOLDERS)
    for name in sorted({m for text in texts for m in PLACEHOLDER.findall(str(text))} - known):
        problems.append(f"{{{name}}} is neither a setting nor one of {', '.join(BUILTIN_PLACEHOLDERS)}")
    return problems


class CommandAnchor(Anchor):
    """The anchor a CommandBuild makes: its padded output directory is the one target."""

    build_class: ClassVar[type[CommandBuild]]

    def targets(self) -> list[Target]:
        table = self.build_class.table
        return [Target(table, self.build_class.output_dir(self.build), link=self.build.workspace.build_dir / table)]

    def fingerprint_salt(self) -> dict[str, Any]:
        cls = self.build_class
        return {"commands": [list(argv) for argv in cls.commands], "cwd": cls.cwd, "env": dict(cls.env),
                "copy_trees": cls.copy_trees}

    def relocation_roots(self) -> dict[str, Path]:
        cls = self.build_class
        roots = {**super().relocation_roots(), "out": cls.output_dir(self.build)}
        if not cls.copy_trees:
            settings = self.build.settings.get(cls.table)
            for tree in cls.trees if settings is not None else ():
                roots[f"tree-{tree}"] = self.build.workspace.resolve(getattr(settings, tree))
        return roots


class CommandTrees(FingerprintSource):
    """The source a CommandBuild makes: each of its trees digested per file."""

    def digest(self, build: Build, path: str, value: Any) -> Any:
        return digest_files(build.workspace.resolve(value), exclude=self.exclude) if isinstance(value, str) else None


def _anchor_class(cls: type[CommandBuild]) -> type[Anchor]:
    hashed = [f for f in getattr(cls.config_model, "model_fields", {}) if f not in cls.unhashed]
    return type(f"{cls.__name__}Anchor", (CommandAnchor,), {
        "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.anchor", "build_class": cls,
        "task": f"{cls.table}.build", "default_fingerprint_paths": tuple(f"{cls.table}.{f}" for f in hashed),
        "restore_after": (f"{cls.table}.link",),
        "fingerprint_exclude": tuple(cls.fingerprint_exclude),
    })


def _source_class(cls: type[CommandBuild]) -> type[FingerprintSource]:
    return type(f"{cls.__name__}Trees", (CommandTrees,), {
        "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.fingerprint_source",
        "kind": f"{cls.table}.trees", "paths": tuple(f"{cls.table}.{t}" for t in cls.trees),
    })
