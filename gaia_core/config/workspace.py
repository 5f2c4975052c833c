"""``[workspace]``: where the build, its outputs and the checkpoint store live."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pydantic import Field

from gaia_core import padding
from gaia_core.errors import ConfigError
from gaia_core.tasks import StrictModel

_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")
BUILTIN_ALIASES = ("root", "build", "out")


class WorkspaceModel(StrictModel):
    #: relative to the directory of the top-level build file
    root_dir: str = "."
    build_dir: str = "build"
    out_dir: str = "out"
    #: the local checkpoint store; outside build_dir so cleaning a build keeps it if wanted
    checkpoints_dir: str = "@build/checkpoints"
    paths: dict[str, str] = Field(default_factory=dict)
    #: the length of every padded directory's absolute path (see :mod:`gaia_core.padding`)
    padded_length: int = Field(
        padding.DEFAULT_PADDED_LENGTH, ge=padding.MIN_PADDED_LENGTH, le=padding.MAX_PADDED_LENGTH
    )


@dataclasses.dataclass
class Workspace:
    root: Path
    build_dir: Path
    out_dir: Path
    checkpoints_dir: Path
    aliases: dict[str, Path]
    padded_length: int = padding.DEFAULT_PADDED_LENGTH

    @classmethod
    def from_model(cls, model: WorkspaceModel, base_dir: Path) -> Workspace:
        root = _absolute(Path(model.root_dir), base_dir)
        for field in ("build_dir", "out_dir"):
            if ".." in Path(getattr(model, field)).parts:
                raise ConfigError(f"workspace.{field} = '{getattr(model, field)}' must not contain '..'")
        build_dir = _absolute(Path(model.build_dir), root)
        out_dir = _absolute(Path(model.out_dir), root)
        aliases = {"root": root, "build": build_dir, "out": out_dir}
        for name, value in model.paths.items():
            if not _ALIAS.match(name) or name in BUILTIN_ALIASES:
                raise ConfigError(
                    f"workspace.paths.{name}: alias names must match [A-Za-z0-9_-]+ and not be one of "
                    f"{', '.join(BUILTIN_ALIASES)}"
                )
            aliases[name] = _absolute(Path(value), root)
        ws = cls(root, build_dir, out_dir, root, aliases, model.padded_length)
        ws.checkpoints_dir = ws.resolve(model.checkpoints_dir)
        return ws

    def padding_problem(self) -> str | None:
        """Why the build dir is too deep for ``padded_length`` (the loader reports it)."""
        return padding.room_problem(self.build_dir, self.padded_length)

    def padded_dir(self, name: str) -> Path:
        """``<build_dir>/padded/<padding>/<name>``: an absolute path of exactly
        ``padded_length`` characters wherever the workspace is, for a directory whose tree
        embeds its own path (a restore elsewhere then rewrites binaries at equal length)."""
        return padding.padded_path(self.build_dir, name, self.padded_length)

    def link_padded_dir(self, link: Path, padded: Path) -> str | None:
        """Keep the path users know (``link``) as a relative link to ``padded``; see
        :func:`gaia_core.padding.link_padded_dir`."""
        return padding.link_padded_dir(link, padded, self.build_dir)

    def resolve(self, value: str | Path) -> Path:
        """``@alias/rest`` -> alias dir + rest; absolute as is; else relative to the root."""
        text = str(value)
        if text.startswith("@"):
            alias, _, rest = text[1:].partition("/")
            if alias not in self.aliases:
                raise ConfigError(f"unknown path alias '@{alias}' in '{text}'; known: {', '.join('@' + a for a in self.aliases)}")
            return self.aliases[alias] / rest if rest else self.aliases[alias]
        return _absolute(Path(text).expanduser(), self.root)


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else (base / path)
