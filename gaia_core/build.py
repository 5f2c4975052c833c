"""A loaded build: the merged config document, its workspace, and the plugin registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gaia_core.config.workspace import Workspace
    from gaia_core.plugins import Registry

_MISSING = object()


@dataclasses.dataclass(eq=False)
class Build:
    """What every module, anchor and task sees of the build file (compared by identity)."""

    #: the build file as given
    path: Path
    #: build name: the file's stem (``build.toml`` -> ``build``)
    name: str
    #: the merged document (imports and ``--set`` applied)
    doc: dict[str, Any]
    #: dotted key -> file that set it, for error messages
    origins: dict[str, Path]
    workspace: Workspace
    registry: Registry
    #: validated settings of each active module, by table
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ``gaia run --offline``: features use no network (the checkpoints plugin reads only the
    #: local store and mounted ``dir`` tiers; ``GAIA_OFFLINE=1`` means the same to it)
    offline: bool = False

    def get(self, dotted: str, default: Any = None) -> Any:
        """The value at a dotted path, or ``default`` when any segment is missing."""
        node: Any = self.doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def has(self, dotted: str) -> bool:
        return self.get(dotted, _MISSING) is not _MISSING

    def origin(self, dotted: str) -> Path:
        """The file that set ``dotted`` (or its closest parent), else the build file."""
        parts = dotted.split(".")
        while parts:
            found = self.origins.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return self.path

    @property
    def run_dir(self) -> Path:
        """``<out_dir>/<build name>``: logs, reports and images of this build."""
        return self.workspace.out_dir / self.name
