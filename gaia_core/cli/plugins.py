"""``gaia plugins``: which plugins are installed and what each registers."""

from __future__ import annotations

import json
from typing import Any

import click

from gaia_core.cli.common import App, pass_app
from gaia_core.plugins import CORE_DISTRIBUTION, PluginInfo, incompatibility


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins of gaia-core.")
@pass_app
def plugins_cmd(app: App, as_json: bool, show_all: bool) -> None:
    """List installed plugins, their hooks and what they register.

    Warns (on stderr) about every plugin whose declared gaia-core range excludes this core.
    """
    rows = [row for row in describe_plugins(app) if show_all or not row["builtin"]]
    for name in sorted(app.pm.infos):
        warning = incompatibility(app.pm.infos[name])
        if warning:
            click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows and not app.pm.not_loaded:
        click.echo("no plugins installed (built-ins: gaia plugins --all)")
        return
    if not rows:
        click.echo("no plugins loaded (built-ins: gaia plugins --all)")
    for row in rows:
        origin = f"{row['distribution']} {row['version']}" if row["distribution"] else "not from a distribution"
        click.echo(f"{row['name']} ({origin}) {row['module']}")
        if row["requires_core"] is not None:
            flag = " (not satisfied by this core)" if row["core_compatible"] is False else ""
            click.echo(f"  requires: {CORE_DISTRIBUTION}{row['requires_core']}{flag}")
        click.echo(f"  hooks: {', '.join(row['hooks']) or '-'}")
        for what, keys in row["provides"].items():
            if keys:
                click.echo(f"  {what}: {', '.join(keys)}")
        if row["tables"]:
            click.echo(f"  tables: {', '.join(row['tables'])}")
    for name, why in sorted(app.pm.not_loaded.items()):
        click.echo(f"{name} ({why}): installed, not loaded")


def describe_plugins(app: App) -> list[dict[str, Any]]:
    pm = app.pm
    registry = app.registry
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        info = pm.infos.get(name) or PluginInfo(name, getattr(plugin, "__name__", type(plugin).__qualname__))
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        rows.append(
            {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": name if info.distribution and not info.builtin else None,
                "module": info.module,
                "builtin": info.builtin,
                "requires_core": info.requires_core,
                "core_compatible": info.core_compatible,
                "hooks": hooks,
                "provides": registry.provided_by(name),
                "tables": [table for table, owner in registry.config_tables.items() if owner == name],
            }
        )
    return rows
