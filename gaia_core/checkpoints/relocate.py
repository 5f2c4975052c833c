"""TEMPORARY stand-in until the archive branch lands: no relocation."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RelocationPlan:
    rewrite: list = dataclasses.field(default_factory=list)
    unrewritable: list = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rewrite


@dataclasses.dataclass
class RelocationResult:
    rewritten: list
    failed: list


def plan_relocation(embedded, old_roots, new_roots) -> RelocationPlan:
    return RelocationPlan()


def apply_relocation(staging, plan) -> RelocationResult:
    return RelocationResult([], [])
