"""A feature plugin (like gaia's own checkpoints) plugs in through documented hooks only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gaia_core
from gaia_core import hookimpl
from gaia_core.config.loader import load_build
from gaia_core.errors import ConfigError, PluginError
from gaia_core.plan import build_plan
from gaia_core.plugins import Registry
from gaia_core.tasks import Task

CORE = Path(gaia_core.__file__).parent


class AuditFeature:
    """Owns ``[audit]``: one task after every ``demo.*`` task, a preamble line."""

    @hookimpl
    def gaia_register_config_tables(self):
        return "audit"

    @hookimpl
    def gaia_validate_config(self, build):
        table = build.get("audit")
        if table is None:
            return []
        return [f"{build.origin('audit.' + key)}: audit.{key}: unknown key" for key in table if key != "level"]

    @hookimpl
    def gaia_extend_plan(self, build, tasks):
        if not build.has("audit"):
            return []
        audit = Task("audit.check", module="audit", phase="audit")
        for task in tasks:
            if task.id.startswith("demo."):
                task.after.append("audit:before?")
        audit.after = [t.id for t in tasks if t.id.startswith("demo.")]
        return [audit, Task("audit.before", module="audit", provides=["audit:before"], after=["core.init"])]

    @hookimpl
    def gaia_run_preamble(self, build, dry_run):
        return [f"audit level {build.get('audit.level')} (dry_run={dry_run})"] if build.has("audit") else []


@pytest.fixture
def audit_pm(gaia_demo_pm):
    gaia_demo_pm.register(AuditFeature(), name="audit")
    return gaia_demo_pm


def test_a_feature_table_is_accepted_and_validated_with_every_problem(write_build, audit_pm):
    ok = write_build("ok.toml", "[audit]\nlevel = 2\n[demo.tasks.a]\n")
    assert load_build(ok, registry=Registry(audit_pm)).get("audit.level") == 2

    bad = write_build("bad.toml", "[audit]\nlevel = 1\nx = 1\ny = 2\n[demo]\nbogus = 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_build(bad, registry=Registry(audit_pm))
    problems = excinfo.value.problems
    assert f"{bad}: audit.x: unknown key" in problems
    assert f"{bad}: audit.y: unknown key" in problems
    assert any("demo.bogus" in p for p in problems)


def test_without_the_plugin_the_table_is_unknown(write_build, gaia_demo_pm):
    path = write_build("build.toml", "[audit]\nlevel = 2\n")
    with pytest.raises(ConfigError, match="audit: unknown top-level table"):
        load_build(path, registry=Registry(gaia_demo_pm))


def test_a_feature_adds_tasks_around_the_planned_ones(write_build, audit_pm):
    path = write_build("build.toml", "[audit]\nlevel = 1\n[demo.tasks.a]\n[demo.tasks.b]\nafter = ['demo.a']\n")
    plan = build_plan(load_build(path, registry=Registry(audit_pm)))
    order = [t.id for t in plan.order]
    assert order.index("audit.before") < order.index("demo.a") < order.index("demo.b") < order.index("audit.check")
    assert plan.deps["audit.check"] == ["demo.a", "demo.b"]


def test_a_feature_contributes_to_the_run_preamble(gaia_cli, write_build, audit_pm):
    path = write_build("build.toml", "[audit]\nlevel = 3\n[demo.tasks.a]\n")
    result = gaia_cli("run", path, "--dry-run", pm=audit_pm)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "audit level 3 (dry_run=True)" in lines
    assert lines.index("audit level 3 (dry_run=True)") < lines.index("DRY-RUN: core.init (core/init)")


def test_a_table_claimed_twice_names_both_plugins(audit_pm):
    class Other:
        @hookimpl
        def gaia_register_config_tables(self):
            return ["audit"]

    audit_pm.register(Other(), name="other")
    with pytest.raises(PluginError, match="'audit' is claimed twice: by plugin '(audit|other)' and by plugin '(audit|other)'"):
        Registry(audit_pm)


def test_a_feature_table_may_not_be_a_module_table(audit_pm):
    class Clash:
        @hookimpl
        def gaia_register_config_tables(self):
            return "demo"

    audit_pm.register(Clash(), name="clash")
    with pytest.raises(PluginError, match="'demo' is claimed twice: by plugin 'demo' and by plugin 'clash'"):
        Registry(audit_pm)


def test_checkpoints_is_a_builtin_plugin_listed_with_all(gaia_cli, gaia_core_pm):
    rows = {row["name"]: row for row in gaia_cli("plugins", "--json", "--all", pm=gaia_core_pm).json}
    checkpoints = rows["checkpoints"]
    assert checkpoints["builtin"] is True
    assert checkpoints["module"] == "gaia_core.checkpoints.plugin"
    assert checkpoints["tables"] == ["checkpoints"]
    assert set(checkpoints["hooks"]) == {
        "gaia_register_config_tables", "gaia_validate_config", "gaia_extend_plan", "gaia_run_preamble",
        "gaia_secret_env_vars", "gaia_register_commands", "gaia_run_finished",
    }


def test_disabling_the_checkpoint_plugin_removes_its_table_and_commands(gaia_cli, write_build, gaia_core_pm):
    gaia_core_pm.unregister(name="checkpoints")
    assert "checkpoints" not in Registry(gaia_core_pm).config_tables
    assert gaia_cli("checkpoints", "--help", pm=gaia_core_pm).exit_code == 2
    path = write_build("build.toml", "[checkpoints]\nenabled = true\n")
    with pytest.raises(ConfigError, match="checkpoints: unknown top-level table"):
        load_build(path, registry=Registry(gaia_core_pm))


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("rel", ["plan.py", "run.py", "build.py", "tasks.py", "config", "cli"])
def test_the_generic_core_imports_nothing_of_the_checkpoint_feature(rel):
    paths = [CORE / rel] if rel.endswith(".py") else sorted((CORE / rel).rglob("*.py"))
    for path in paths:
        bad = sorted(m for m in _imported_modules(path) if m.startswith("gaia_core.checkpoints"))
        assert not bad, f"{path.relative_to(CORE)} imports {bad}"
