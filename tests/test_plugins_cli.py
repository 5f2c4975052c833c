"""``gaia plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import click

from gaia_core import hookimpl


def test_plugins_json_lists_builtins_only_with_all(gaia_cli, gaia_core_pm):
    without = gaia_cli("plugins", "--json", pm=gaia_core_pm)
    assert without.exit_code == 0, without.output
    assert without.json == []

    result = gaia_cli("plugins", "--json", "--all", pm=gaia_core_pm)
    assert result.exit_code == 0, result.output
    by_name = {row["name"]: row for row in result.json}
    assert {"core", "dir_backend"} <= set(by_name)
    core = by_name["core"]
    assert core["distribution"] == "gaia-core"
    assert core["module"] == "gaia_core.builtin.core"
    assert core["builtin"] is True
    assert set(core["provides"]) == {"modules", "anchors", "fingerprint_sources", "backends"}


def test_plugins_shows_hooks_and_registered_kinds(gaia_cli, gaia_demo_pm):
    result = gaia_cli("plugins", "--json", pm=gaia_demo_pm)
    assert result.exit_code == 0, result.output
    (demo,) = result.json
    assert demo["name"] == "demo"
    assert demo["builtin"] is False
    assert demo["hooks"] == ["gaia_register_modules"]
    assert demo["provides"]["modules"] == ["demo"]

    text = gaia_cli("plugins", pm=gaia_demo_pm)
    assert text.exit_code == 0
    assert "  hooks: gaia_register_modules" in text.stdout
    assert "  modules: demo" in text.stdout


def test_installed_entry_point_plugins_are_listed(gaia_cli, gaia_pm):
    result = gaia_cli("plugins", "--json", pm=gaia_pm)
    assert result.exit_code == 0, result.output
    assert {row["name"] for row in result.json} == set(gaia_pm.infos) - {
        name for name, info in gaia_pm.infos.items() if info.builtin
    }
    for row in result.json:
        assert row["distribution"] and row["entry_point"] == row["name"]


def test_plugin_commands_are_attached(gaia_cli, gaia_core_pm):
    class CommandPlugin:
        @hookimpl
        def gaia_register_commands(self, cli):
            @cli.command()
            def hello():
                click.echo("hello from a plugin")

    gaia_core_pm.register(CommandPlugin(), name="cmd")
    result = gaia_cli("hello", pm=gaia_core_pm)
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from a plugin\n"


def test_version(gaia_cli, gaia_core_pm):
    from gaia_core import __version__

    result = gaia_cli("--version", pm=gaia_core_pm)
    assert result.stdout == f"gaia {__version__}\n"
