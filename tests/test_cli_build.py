"""``gaia plan``, ``gaia run``, ``gaia resolve`` and how the CLI renders errors."""

from __future__ import annotations

import tomllib

import pytest

from gaia_core.errors import ExitCode


@pytest.fixture
def demo_build(gaia_demo_build):
    return gaia_demo_build(
        {
            "render": {"provides": ["stage:content"], "label": "Render it"},
            "collect": {"after": ["stage:done"], "phase": "collect"},
        },
        build={"version": "1.0"},
    )


def test_plan_text_lists_tasks_in_order(gaia_cli, gaia_demo_pm, demo_build):
    result = gaia_cli("plan", demo_build, pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["core.init", "demo.render", "core.barrier.stage", "demo.collect"]
    assert lines[1].split() == ["2.", "demo.render", "demo", "demo", "Render", "it"]


def test_plan_json(gaia_cli, gaia_demo_pm, demo_build):
    result = gaia_cli("plan", demo_build, "--json", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    tasks = result.json["tasks"]
    assert [t["id"] for t in tasks] == ["core.init", "demo.render", "core.barrier.stage", "demo.collect"]
    assert tasks[3]["deps"] == ["core.barrier.stage"]


def test_plan_dot(gaia_cli, gaia_demo_pm, demo_build):
    result = gaia_cli("plan", demo_build, "--dot", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("digraph gaia {")
    assert '"demo.render" -> "core.barrier.stage";' in result.stdout


def test_plan_json_and_dot_conflict(gaia_cli, gaia_demo_pm, demo_build):
    result = gaia_cli("plan", demo_build, "--dot", "--json", pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.USAGE_ERROR


def test_set_is_applied_by_every_build_command(gaia_cli, gaia_demo_pm, demo_build):
    override = "demo.tasks.render.label=Overridden"
    plan = gaia_cli("plan", demo_build, "--set", override, "--json", pm=gaia_demo_pm)
    assert plan.json["tasks"][1]["label"] == "Overridden"
    resolved = gaia_cli("resolve", demo_build, "--set", override, "--json", pm=gaia_demo_pm)
    assert resolved.json["demo"]["tasks"]["render"]["label"] == "Overridden"


def test_resolve_prints_merged_toml(gaia_cli, gaia_demo_pm, write_build):
    write_build("base.toml", "[build]\nversion = '1'\nname = 'base'\n")
    path = write_build("build.toml", "imports = ['base.toml']\n[build]\nversion = '2'\n")
    result = gaia_cli("resolve", path, "--set", "build.jobs=4", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout) == {"build": {"version": "2", "name": "base", "jobs": 4}}


def test_resolve_no_validate_shows_an_invalid_document(gaia_cli, gaia_demo_pm, write_build):
    path = write_build("build.toml", "[mystery]\nx = 1\n")
    assert gaia_cli("resolve", path, pm=gaia_demo_pm).exit_code == ExitCode.USAGE_ERROR
    result = gaia_cli("resolve", path, "--no-validate", "--json", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    assert result.json == {"mystery": {"x": 1}}


def test_run_dry_run_prints_tasks_and_writes_nothing(gaia_cli, gaia_demo_pm, demo_build, tmp_path):
    result = gaia_cli("run", demo_build, "--dry-run", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("gaia ")
    assert "DRY-RUN: demo.render (demo/demo)" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["build.toml"]


def test_run_executes_and_exits_non_zero_on_failure(gaia_cli, gaia_demo_pm, gaia_demo_build, tmp_path):
    path = gaia_demo_build(
        {"ok": {"cmd": ["sh", "-c", "echo fine"]}, "bad": {"after": ["demo.ok"], "fail": "it broke"}}
    )
    result = gaia_cli("run", path, "--max-parallel", "2", pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.FAILED
    assert "[demo.ok] fine" in result.stdout
    assert "FAIL: demo.bad" in result.stdout
    assert result.stderr == "error: task 'demo.bad' failed: it broke\n"
    assert (tmp_path / "out" / "build" / "logs" / "demo.bad.log").is_file()


def test_config_errors_are_rendered_once_with_usage_exit_code(gaia_cli, gaia_demo_pm, write_build):
    path = write_build("build.toml", "[demo]\nbogus = 1\n[other]\n")
    result = gaia_cli("plan", path, pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert result.stdout == ""
    assert result.stderr.startswith("error: 2 configuration problems:\n")
    assert f"  - {path}: demo.bogus: unknown key; allowed: tasks\n" in result.stderr
    assert result.stderr.count("error:") == 1


def test_plan_errors_are_rendered(gaia_cli, gaia_demo_pm, gaia_demo_build):
    path = gaia_demo_build({"a": {"after": ["nowhere"]}})
    result = gaia_cli("plan", path, pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert result.stderr == (
        "error: task 'demo.a' depends on 'nowhere', which is neither a planned task nor a token any "
        "planned task provides (append '?' to make it optional)\n"
    )


@pytest.mark.parametrize("bad", ["novalue", "=1"])
def test_malformed_set_is_a_usage_error(gaia_cli, gaia_demo_pm, demo_build, bad):
    result = gaia_cli("plan", demo_build, "--set", bad, pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert "--set" in result.stderr and bad in result.stderr


def test_missing_build_file(gaia_cli, gaia_demo_pm, tmp_path):
    result = gaia_cli("plan", tmp_path / "nope.toml", pm=gaia_demo_pm)
    assert result.exit_code == ExitCode.USAGE_ERROR
    assert result.stderr == f"error: {tmp_path / 'nope.toml'}: no such file\n"


def test_unexpected_exception_is_an_internal_error_with_traceback_only_on_debug(gaia_cli, gaia_core_pm, demo_build):
    from gaia_core import hookimpl

    class Broken:
        @hookimpl
        def gaia_register_commands(self, cli):
            @cli.command()
            def boom():
                raise ValueError("bad thing")

    gaia_core_pm.register(Broken(), name="broken")
    result = gaia_cli("boom", pm=gaia_core_pm)
    assert result.exit_code == ExitCode.INTERNAL_ERROR
    assert result.stderr == "error: internal error: ValueError: bad thing (run with --debug for the traceback)\n"
    debug = gaia_cli("--debug", "boom", pm=gaia_core_pm)
    assert debug.exit_code == ExitCode.INTERNAL_ERROR
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.endswith("error: internal error: ValueError: bad thing\n")


def test_plugin_error_at_startup_is_rendered_by_main(capsys, monkeypatch):
    from gaia_core import cli
    from gaia_core.errors import PluginError

    def broken_pm(*args, **kwargs):
        raise PluginError("plugin 'x' from distribution 'gaia-x' failed to import")

    monkeypatch.setattr("gaia_core.plugins.get_plugin_manager", broken_pm)
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["plugins"])
    assert excinfo.value.code == ExitCode.PLUGIN_ERROR
    assert capsys.readouterr().err == "error: plugin 'x' from distribution 'gaia-x' failed to import\n"


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    import subprocess
    import sys

    build = tmp_path / "build.toml"
    build.write_text("".join(f'[demo.tasks.t{i}]\ncmd = ["true"]\n' for i in range(3000)))
    script = (
        "import sys; from gaia_core.cli import main; from gaia_core.plugins import get_plugin_manager;"
        "from gaia_core.testing import DemoPlugin; pm = get_plugin_manager(load_entrypoints=False);"
        "pm.register(DemoPlugin(), name='demo'); main(sys.argv[1:], pm=pm)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, "plan", str(build)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "internal error" not in err and "Traceback" not in err
