"""The task graph: resolve dependencies, order tasks deterministically, render it.

A dependency string names a task id, else a token some task ``provides``; a trailing
``?`` makes it optional (dropped when nothing matches). The order is Kahn's algorithm
with the ready set kept sorted by id, so the same build always gives the same order.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gaia_core.errors import PlanError
from gaia_core.tasks import Task

if TYPE_CHECKING:
    from gaia_core.build import Build


class Plan:
    def __init__(self, tasks: Iterable[Task]):
        self.tasks: dict[str, Task] = {}
        for task in tasks:
            if task.id in self.tasks:
                other = self.tasks[task.id]
                first, second = other.module or "?", task.module or "?"
                raise PlanError(f"duplicate task id '{task.id}': planned by module '{first}' and by module '{second}'")
            self.tasks[task.id] = task
        self.providers = self._providers()
        #: task id -> resolved dependency ids (sorted, no duplicates)
        self.deps: dict[str, list[str]] = {tid: self._resolve(self.tasks[tid]) for tid in sorted(self.tasks)}
        #: the tasks in execution order
        self.order: list[Task] = [self.tasks[tid] for tid in self._order()]

    def __len__(self) -> int:
        return len(self.order)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def dependents(self) -> dict[str, list[str]]:
        """task id -> ids of the tasks that depend on it (sorted)."""
        out: dict[str, list[str]] = {tid: [] for tid in self.tasks}
        for tid, deps in self.deps.items():
            for dep in deps:
                out[dep].append(tid)
        return {tid: sorted(ids) for tid, ids in out.items()}

    # -- building -------------------------------------------------------------------

    def _providers(self) -> dict[str, str]:
        providers: dict[str, str] = {}
        for tid in sorted(self.tasks):
            for token in self.tasks[tid].provides:
                if token in providers and providers[token] != tid:
                    raise PlanError(f"token '{token}' is provided by both '{providers[token]}' and '{tid}'")
                providers[token] = tid
        return providers

    def _resolve(self, task: Task) -> list[str]:
        resolved: set[str] = set()
        for raw in task.after:
            optional = raw.endswith("?")
            name = raw[:-1] if optional else raw
            if name in self.tasks:
                resolved.add(name)
            elif name in self.providers:
                resolved.add(self.providers[name])
            elif not optional:
                raise PlanError(
                    f"task '{task.id}' depends on '{name}', which is neither a planned task nor a token "
                    f"any planned task provides (append '?' to make it optional)"
                )
        return sorted(resolved)

    def _order(self) -> list[str]:
        waiting = {tid: len(deps) for tid, deps in self.deps.items()}
        dependents = self.dependents()
        ready = [tid for tid, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            tid = heapq.heappop(ready)
            order.append(tid)
            for child in dependents[tid]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, child)
        if len(order) != len(self.tasks):
            remaining = {tid for tid in self.tasks if tid not in set(order)}
            raise PlanError(f"task graph contains a cycle: {' -> '.join(self._find_cycle(remaining))}")
        return order

    def _find_cycle(self, remaining: set[str]) -> list[str]:
        """One cycle among ``remaining`` (every one of them waits on another one)."""
        node = min(remaining)
        path: list[str] = []
        seen: dict[str, int] = {}
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = min(d for d in self.deps[node] if d in remaining)
        cycle = path[seen[node] :]
        # show it in execution direction: dependency first
        cycle.reverse()
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        return [*cycle, cycle[0]]

    # -- rendering ------------------------------------------------------------------

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "id": t.id,
                "label": t.label,
                "module": t.module,
                "phase": t.phase,
                "after": list(t.after),
                "deps": list(self.deps[t.id]),
                "provides": list(t.provides),
            }
            for i, t in enumerate(self.order, 1)
        ]

    def to_json(self) -> str:
        return json.dumps({"tasks": self.to_dict()}, indent=2)

    def to_dot(self) -> str:
        lines = ["digraph gaia {", "  rankdir=LR;", "  node [shape=box];"]
        for t in self.order:
            label = f"{t.label}\n{t.module}:{t.phase}"
            lines.append(f"  {_quote(t.id)} [label={_quote(label)}];")
        for t in self.order:
            for dep in self.deps[t.id]:
                lines.append(f"  {_quote(dep)} -> {_quote(t.id)};")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def build_plan(build: Build) -> Plan:
    """Every active module's tasks, ``core.init``, the stage barrier and what plugins add."""
    from gaia_core.builtin import core

    tasks: list[Task] = [core.init_task()]
    for table, provided in build.registry.modules.items():
        if table not in build.settings:
            continue
        module = provided.make()
        planned = list(module.plan(build, build.settings[table]) or [])
        for task in planned:
            if not task.module:
                task.module = table
        tasks += planned
    tasks.append(core.stage_barrier(tasks))
    for added in build.registry.pm.hook.gaia_extend_plan(build=build, tasks=tasks):
        tasks += list(added or ())
    return Plan(tasks)
