"""What every command shares: the ``App`` on ``ctx.obj`` and the build-file options."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gaia_core.errors import ConfigError

if TYPE_CHECKING:
    from gaia_core.build import Build
    from gaia_core.plugins import GaiaPluginManager, Registry

SET_HELP = (
    "Override a config value: dotted key = TOML value, e.g. --set buildroot.jobs=8, "
    '--set \'build.tags=["a", "b"]\'. Text that is not valid TOML is taken as a string; '
    "quote strings that look like numbers: --set 'buildroot.version=\"2025.11\"'. Repeatable; later wins."
)


@dataclasses.dataclass
class App:
    pm: GaiaPluginManager
    debug: bool = False
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from gaia_core.plugins import Registry

            self._registry = Registry(self.pm)
        return self._registry

    def load_build(self, path: Path, overrides: tuple[str, ...]) -> Build:
        from gaia_core.config.loader import load_build

        return load_build(path, overrides, registry=self.registry)


pass_app = click.make_pass_decorator(App)


def _check_overrides(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    from gaia_core.config.overrides import parse_override

    for value in values:
        try:
            parse_override(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return values


def build_file_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``BUILD_FILE`` argument plus repeatable ``--set KEY=VALUE``, passed as ``build_file``, ``overrides``."""

    @click.argument("build_file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_check_overrides, help=SET_HELP)
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper
