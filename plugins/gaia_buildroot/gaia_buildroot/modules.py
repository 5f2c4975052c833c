"""The modules: which tasks each config table adds to the plan, and in what order.

Task functions live in their own modules and are imported when a task runs, so that
loading the plugin (``gaia plugins``, ``gaia plan``) stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gaia_buildroot.config import (
    BuildrootConfig,
    ProgramsConfig,
    RpiConfig,
    StageConfig,
)
from gaia_buildroot.layout import defconfig_name
from gaia_core.errors import ConfigError
from gaia_core.tasks import Module, Task

if TYPE_CHECKING:
    from gaia_core.build import Build

PREPARED = "buildroot:target-prepared"


def _lazy(target: str, *args: Any) -> Callable[[Any], None]:
    """``module:function`` bound to ``args``, imported on first call."""
    module_name, _, func_name = target.partition(":")

    def run(ctx: Any) -> None:
        func = getattr(
            importlib.import_module(f"gaia_buildroot.{module_name}"), func_name
        )
        func(ctx, *args)

    run.__qualname__ = run.__name__ = f"{module_name}.{func_name}"
    return run


def stage_render_task(cfg: StageConfig) -> Task:
    return Task(
        id="stage.render",
        run=_lazy("stage:render", cfg),
        label="Render stage content",
        module="stage",
        phase="render",
        after=["core.init"],
        provides=["stage:content"],
    )


class BuildrootModule(Module):
    """``[buildroot]``: fetch, configure, build (the checkpoint anchor), collect."""

    table = "buildroot"
    config_model = BuildrootConfig

    def plan(self, build: Build, settings: BuildrootConfig) -> list[Task]:
        if not settings.enabled:
            return []
        if (
            not settings.starting_point.enabled
            and defconfig_name(build, settings) is None
        ):
            raise ConfigError(
                f"{build.origin('buildroot')}: buildroot.defconfig (or buildroot.rpi.defconfig) is required"
            )
        prepared = PREPARED + "?"
        tasks = [
            Task(
                "buildroot.fetch",
                _lazy("fetch:fetch", settings),
                "Fetch Buildroot",
                "buildroot",
                "fetch",
                ["core.init", prepared],
                ["buildroot:source"],
            ),
            Task(
                "buildroot.configure",
                _lazy("configure:configure", settings),
                "Configure Buildroot",
                "buildroot",
                "configure",
                # the stage is not an input of configure or build (collect applies it),
                # so Buildroot need not wait for it
                ["buildroot.fetch", prepared],
                ["buildroot:config"],
            ),
            Task(
                "buildroot.build",
                _lazy("compile:build", settings),
                "Build Buildroot target tree",
                "buildroot",
                "build",
                ["buildroot.configure"],
                ["buildroot:artifacts"],
            ),
            Task(
                "buildroot.collect",
                _lazy("collect:collect", settings),
                "Collect images",
                "buildroot",
                "collect",
                ["buildroot.build", "stage:done?", prepared],
                ["artifacts:rootfs"],
            ),
        ]
        if not build.has("stage"):
            # The stage root is rebuilt every run, also when [stage] was removed from the config.
            tasks.append(stage_render_task(StageConfig()))
        return tasks


class RpiModule(Module):
    """``[buildroot.rpi]``: check and stage Raspberry Pi board files before Buildroot runs."""

    table = "buildroot.rpi"
    config_model = RpiConfig

    def plan(self, build: Build, settings: RpiConfig) -> list[Task]:
        if not settings.enabled:
            return []
        return [
            Task(
                "buildroot.rpi.validate",
                _lazy("rpi:validate", settings),
                "Validate Raspberry Pi inputs",
                "buildroot.rpi",
                "preflight",
                ["core.init"],
                ["buildroot:target-validated"],
            ),
            Task(
                "buildroot.rpi.prepare",
                _lazy("rpi:prepare", settings),
                "Stage Raspberry Pi inputs",
                "buildroot.rpi",
                "prepare",
                ["buildroot.rpi.validate", "stage:content?"],
                [PREPARED, "stage:rpi"],
            ),
        ]


class StageModule(Module):
    """``[stage]``: files placed into the image on top of what Buildroot built."""

    table = "stage"
    config_model = StageConfig

    def plan(self, build: Build, settings: StageConfig) -> list[Task]:
        return [stage_render_task(settings)]


class ProgramModule(Module):
    """``[program.<name>]``: build your software and install its artifacts into the stage."""

    table = "program"
    config_model = ProgramsConfig

    def plan(self, build: Build, settings: ProgramsConfig) -> list[Task]:
        tasks = []
        for name, cfg in settings.root.items():
            tasks.append(
                Task(
                    f"program.{name}.build",
                    _lazy("program:build_program", name, cfg),
                    f"Build program {name}",
                    "program",
                    "build",
                    ["core.init"],
                    [f"program:{name}-built"],
                )
            )
            tasks.append(
                Task(
                    f"program.{name}.install",
                    _lazy("program:install_program", name, cfg),
                    f"Install program {name} into the stage",
                    "program",
                    "stage",
                    [f"program.{name}.build", "stage:content?"],
                    [f"stage:program-{name}"],
                )
            )
        return tasks


MODULES = [BuildrootModule, RpiModule, StageModule, ProgramModule]
