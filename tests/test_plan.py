"""The task graph: dependency resolution, deterministic order, rendering, build_plan."""

from __future__ import annotations

import json
import random

import pytest

from gaia_core.config.loader import load_build
from gaia_core.errors import PlanError
from gaia_core.plan import Plan, build_plan
from gaia_core.plugins import Registry
from gaia_core.tasks import Task


def ids(plan: Plan) -> list[str]:
    return [t.id for t in plan.order]


def test_order_follows_dependencies_and_breaks_ties_by_id():
    tasks = [
        Task("z.last", after=["m.mid"]),
        Task("m.mid", after=["a.first"]),
        Task("b.free"),
        Task("a.first"),
        Task("c.after-a", after=["a.first"]),
    ]
    assert ids(Plan(tasks)) == ["a.first", "b.free", "c.after-a", "m.mid", "z.last"]


def test_order_does_not_depend_on_input_order():
    tasks = [Task(f"t{i}", after=[f"t{i - 3}"] if i >= 3 else []) for i in range(12)]
    expected = ids(Plan(tasks))
    for seed in range(5):
        shuffled = tasks[:]
        random.Random(seed).shuffle(shuffled)
        assert ids(Plan(shuffled)) == expected


def test_dependency_on_a_token_resolves_to_its_provider():
    plan = Plan([Task("use", after=["area:thing"]), Task("make", provides=["area:thing"])])
    assert plan.deps["use"] == ["make"]
    assert ids(plan) == ["make", "use"]


def test_task_id_wins_over_token_of_the_same_name():
    plan = Plan([Task("x", after=["dup"]), Task("dup"), Task("other", provides=["dup"])])
    assert plan.deps["x"] == ["dup"]


def test_optional_dependency_is_dropped_when_unresolvable_and_kept_otherwise():
    plan = Plan([Task("a", after=["missing?", "b?"]), Task("b")])
    assert plan.deps["a"] == ["b"]


def test_unknown_required_dependency_names_task_and_dependency():
    with pytest.raises(PlanError, match="task 'a' depends on 'missing'"):
        Plan([Task("a", after=["missing"])])


def test_duplicate_task_id_names_both_modules():
    with pytest.raises(PlanError, match="duplicate task id 'x': planned by module 'one' and by module 'two'"):
        Plan([Task("x", module="one"), Task("x", module="two")])


def test_token_provided_twice_names_both_tasks():
    with pytest.raises(PlanError, match="token 'area:t' is provided by both 'a' and 'b'"):
        Plan([Task("b", provides=["area:t"]), Task("a", provides=["area:t"])])


def test_cycle_lists_its_tasks():
    tasks = [
        Task("a", after=["c"]),
        Task("b", after=["a"]),
        Task("c", after=["b"]),
        Task("free"),
        Task("d", after=["a"]),
    ]
    with pytest.raises(PlanError) as excinfo:
        Plan(tasks)
    message = str(excinfo.value)
    assert "cycle" in message
    assert "a -> b -> c -> a" in message
    assert "free" not in message and "d" not in message.split(":", 1)[1].replace("->", "")


def test_self_dependency_is_a_cycle():
    with pytest.raises(PlanError, match="cycle: a -> a"):
        Plan([Task("a", after=["a"])])


def test_duplicate_dependencies_are_resolved_once():
    plan = Plan([Task("a", after=["b", "b", "tok"]), Task("b", provides=["tok"])])
    assert plan.deps["a"] == ["b"]


def test_to_json_and_to_dot():
    plan = Plan([Task("b", label='Say "hi"', module="m", phase="p", after=["a"]), Task("a", provides=["t:a"])])
    data = json.loads(plan.to_json())
    assert [t["id"] for t in data["tasks"]] == ["a", "b"]
    assert data["tasks"][1] == {
        "index": 2,
        "id": "b",
        "label": 'Say "hi"',
        "module": "m",
        "phase": "p",
        "after": ["a"],
        "deps": ["a"],
        "provides": [],
    }
    dot = plan.to_dot()
    assert dot.startswith("digraph gaia {")
    assert '"a" -> "b";' in dot
    assert '"b" [label="Say \\"hi\\"\\nm:p"];' in dot


# -- build_plan -------------------------------------------------------------------------


def test_build_plan_adds_core_init_stage_barrier_and_module_tasks(write_build, gaia_demo_pm):
    path = write_build(
        "build.toml",
        """
        [demo.tasks.render]
        provides = ["stage:content"]
        [demo.tasks.install]
        provides = ["stage:install"]
        [demo.tasks.collect]
        after = ["stage:done?"]
        """,
    )
    plan = build_plan(load_build(path, registry=Registry(gaia_demo_pm)))
    assert ids(plan) == ["core.init", "demo.install", "demo.render", "core.barrier.stage", "demo.collect"]
    assert plan.deps["core.barrier.stage"] == ["demo.install", "demo.render"]
    assert plan.tasks["core.init"].provides == ["core:initialized"]
    assert plan.deps["demo.collect"] == ["core.barrier.stage"]


def test_build_plan_without_modules_has_the_core_tasks(write_build, gaia_demo_pm):
    plan = build_plan(load_build(write_build("build.toml", ""), registry=Registry(gaia_demo_pm)))
    assert ids(plan) == ["core.barrier.stage", "core.init"]


def test_build_plan_includes_checkpoint_tasks_and_their_edges(write_build, gaia_demo_pm, monkeypatch):
    import gaia_core.checkpoints.planning as planning

    def plan_checkpoints(build, tasks):
        anchor = next(t for t in tasks if t.id == "demo.anchor")
        anchor.after.append("checkpoints:restored?")
        return [Task("checkpoints.restore.demo-anchor", module="checkpoints", provides=["checkpoints:restored"])]

    monkeypatch.setattr(planning, "plan_checkpoints", plan_checkpoints)
    path = write_build("build.toml", "[demo.tasks.anchor]\nafter = []\n")
    plan = build_plan(load_build(path, registry=Registry(gaia_demo_pm)))
    assert plan.deps["demo.anchor"] == ["checkpoints.restore.demo-anchor"]
