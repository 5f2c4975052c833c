"""The ``gaia`` command line: ``make_cli(pm)`` builds the group, ``main()`` runs it."""

from __future__ import annotations

import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

import click

from gaia_core import __version__
from gaia_core.cli.common import App
from gaia_core.errors import ExitCode, GaiaError, PluginError, PluginMethodError

if TYPE_CHECKING:
    from gaia_core.plugins import GaiaPluginManager


class GaiaGroup(click.Group):
    """Renders a :class:`GaiaError` once as ``error: <message>`` with its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except PluginMethodError as exc:
            debug = getattr(ctx.obj, "debug", False)
            if debug:
                click.echo("".join(traceback.format_exception(exc.error)), err=True, nl=False)
            hint = "" if debug else " (run with --debug for the traceback)"
            click.echo(f"error: {exc}{hint}", err=True)
            ctx.exit(int(exc.exit_code))
        except GaiaError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            # the reader went away (`gaia plan x | head`): stop quietly, like other CLI tools
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(int(ExitCode.FAILED))
        except Exception as exc:
            debug = getattr(ctx.obj, "debug", False)
            if debug:
                click.echo(traceback.format_exc(), err=True, nl=False)
            hint = "" if debug else " (run with --debug for the traceback)"
            click.echo(f"error: internal error: {type(exc).__name__}: {exc}{hint}", err=True)
            ctx.exit(int(ExitCode.INTERNAL_ERROR))


def make_cli(pm: GaiaPluginManager) -> click.Group:
    """The root group with the core commands and every plugin's ``gaia_register_commands``."""
    from gaia_core.cli.build import plan_cmd, resolve_cmd, run_cmd
    from gaia_core.cli.plugin_new import plugin_group
    from gaia_core.cli.plugins import plugins_cmd

    @click.group(cls=GaiaGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="gaia", message="%(prog)s %(version)s")
    @click.option("--debug", is_flag=True, envvar="GAIA_DEBUG", help="Show tracebacks of unexpected errors.")
    @click.pass_context
    def cli(ctx: click.Context, debug: bool) -> None:
        """Build OS images from layered TOML build files, with build checkpoints."""
        ctx.obj = App(pm=pm, debug=debug)

    for command in (plan_cmd, run_cmd, resolve_cmd, plugins_cmd, plugin_group):
        cli.add_command(command)
    try:
        pm.hook.gaia_register_commands(cli=cli)
    except PluginMethodError as exc:  # while the command line is built: a plugin that fails to load
        raise PluginError(str(exc)) from exc
    except GaiaError:
        raise
    except Exception as exc:
        raise PluginError(f"a plugin's gaia_register_commands failed: {type(exc).__name__}: {exc}") from exc
    return cli


def main(argv: list[str] | None = None, pm: GaiaPluginManager | None = None) -> None:
    """Entry point of the ``gaia`` console script."""
    try:
        if pm is None:
            from gaia_core.plugins import get_plugin_manager

            pm = get_plugin_manager()
        cli = make_cli(pm)
    except GaiaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exc.exit_code))
    cli.main(args=argv, prog_name="gaia")


__all__ = ["GaiaGroup", "main", "make_cli"]
