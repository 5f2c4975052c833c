"""Tasks and modules: what a plugin adds to the plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.run import TaskContext


@dataclasses.dataclass
class Task:
    """One node of the plan.

    ``after`` holds task ids or ``provides`` tokens; a trailing ``?`` makes a dependency
    optional (dropped when nothing provides it). ``run`` receives a :class:`TaskContext`.
    """

    id: str
    run: Callable[[TaskContext], Any] | None = None
    label: str = ""
    module: str = ""
    phase: str = ""
    after: list[str] = dataclasses.field(default_factory=list)
    provides: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.id


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Module:
    """A config table that adds tasks to the plan.

    The module is active when its ``table`` (a dotted path such as ``"buildroot.rpi"``)
    exists in the build file. The table, minus sub-tables owned by other modules, is
    validated with ``config_model`` and handed to :meth:`plan`.
    """

    table: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def plan(self, build: Build, settings: Any) -> Iterable[Task]:
        raise NotImplementedError
