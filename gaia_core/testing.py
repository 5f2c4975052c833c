"""pytest plugin for gaia and its plugins, loaded in every pytest run where gaia-core is
installed through its ``pytest11`` entry point ``gaia`` (do not add ``-p gaia_core.testing``
as well: pytest refuses a plugin registered twice). ``docs/testing.md`` is its guide.

Fixtures:

- ``gaia_pm``: a fresh plugin manager with the built-ins and the installed plugins.
- ``gaia_core_pm``: a fresh plugin manager with the built-ins only.
- ``gaia_demo_pm``: ``gaia_core_pm`` plus the ``[demo]`` module below.
- ``gaia_cli``: ``gaia_cli("plan", path, pm=...)`` runs the CLI in-process and returns
  the click result with ``.json`` parsed from stdout.
- ``write_build``: ``write_build("build.toml", text_or_dict)`` writes a TOML file
  under ``tmp_path`` and returns its path.
- every test runs without ``GAIA_*`` environment variables, and with ``XDG_CACHE_HOME`` in a
  directory of its own (gaia remembers store tiers it found down there: no test sees
  another's, nor the developer's).

The ``[demo]`` module turns a table into tasks, so executor behaviour can be tested
from TOML alone::

    [demo.tasks.hello]
    cmd = ["sh", "-c", "echo hi"]   # run through ctx.run_cmd
    after = ["core.init"]           # default
    provides = ["demo:hello"]
    fail = "message"                # raise TaskFailed after cmd
    skip = { "demo.other" = "why" } # put other tasks into ctx.state.skipped
    hang = 60                       # sit in a blocking Python call that ignores cancellation
"""

from __future__ import annotations

import functools
import json
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from gaia_core import hookimpl
from gaia_core.errors import TaskFailed
from gaia_core.plugins import GaiaPluginManager, get_plugin_manager
from gaia_core.tasks import Module, StrictModel, Task

# -- the demo module --------------------------------------------------------------------


class DemoTaskModel(StrictModel):
    cmd: list[str] | None = None
    after: list[str] = Field(default_factory=lambda: ["core.init"])
    provides: list[str] = Field(default_factory=list)
    label: str = ""
    phase: str = "demo"
    log: list[str] = Field(default_factory=list)
    fail: str | None = None
    crash: bool = False
    skip: dict[str, str] = Field(default_factory=dict)
    #: seconds spent blocked in Python (like a transfer waiting on a socket), not cancellable
    hang: float = 0


class DemoSettings(StrictModel):
    tasks: dict[str, DemoTaskModel] = Field(default_factory=dict)


class DemoModule(Module):
    """``[demo.tasks.<name>]`` -> task ``demo.<name>``."""

    table = "demo"
    config_model = DemoSettings

    def plan(self, build: Any, settings: DemoSettings) -> list[Task]:
        return [
            Task(
                id=f"demo.{name}",
                run=functools.partial(_run_demo_task, spec),
                label=spec.label,
                module="demo",
                phase=spec.phase,
                after=list(spec.after),
                provides=list(spec.provides),
            )
            for name, spec in settings.tasks.items()
        ]


def _run_demo_task(spec: DemoTaskModel, ctx: Any) -> None:
    for line in spec.log:
        ctx.log(line)
    ctx.state.skipped.update(spec.skip)
    if spec.hang:
        time.sleep(spec.hang)
    if spec.cmd:
        ctx.run_cmd(spec.cmd, cwd=ctx.build.workspace.root)
    if spec.crash:
        raise RuntimeError("demo task crashed")
    if spec.fail:
        raise TaskFailed(spec.fail)


class DemoPlugin:
    """Registers :class:`DemoModule`; ``pm.register(DemoPlugin(), name="demo")``."""

    @hookimpl
    def gaia_register_modules(self) -> list[type[Module]]:
        return [DemoModule]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _gaia_clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in list(os.environ):
        if name.startswith("GAIA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def gaia_pm() -> GaiaPluginManager:
    return get_plugin_manager(load_entrypoints=True)


@pytest.fixture
def gaia_core_pm() -> GaiaPluginManager:
    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
def gaia_demo_pm(gaia_core_pm: GaiaPluginManager) -> GaiaPluginManager:
    gaia_core_pm.register(DemoPlugin(), name="demo")
    return gaia_core_pm


class CliResult:
    """A click ``Result`` plus ``.json`` (stdout parsed)."""

    def __init__(self, result: Any):
        self._result = result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    @functools.cached_property
    def json(self) -> Any:
        return json.loads(self._result.stdout)

    def __repr__(self) -> str:
        return f"<CliResult exit_code={self.exit_code} output={self.output!r}>"


@pytest.fixture
def gaia_cli(request: pytest.FixtureRequest) -> Callable[..., CliResult]:
    """Run the CLI in-process; with no ``pm=`` it uses ``gaia_pm`` (installed plugins)."""
    from click.testing import CliRunner

    from gaia_core.cli import make_cli

    def invoke(*args: Any, pm: GaiaPluginManager | None = None, env: dict[str, str] | None = None) -> CliResult:
        cli = make_cli(pm if pm is not None else request.getfixturevalue("gaia_pm"))
        runner = CliRunner()
        return CliResult(runner.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False))

    return invoke


@pytest.fixture
def write_build(tmp_path: Path) -> Callable[..., Path]:
    import tomli_w

    def write(name: str = "build.toml", content: str | dict[str, Any] = "") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = tomli_w.dumps(content) if isinstance(content, dict) else textwrap.dedent(content)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def gaia_demo_build(write_build: Callable[..., Path]) -> Iterator[Callable[..., Path]]:
    """``gaia_demo_build({"a": {"cmd": [...]}})``: a build file with ``[demo.tasks]``."""

    def write(tasks: dict[str, dict[str, Any]], name: str = "build.toml", **extra: Any) -> Path:
        return write_build(name, {**extra, "demo": {"tasks": tasks}})

    yield write
