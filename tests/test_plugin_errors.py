"""A plugin's mistakes name the plugin: what its hooks return is checked, hook names are
checked, and an exception inside its code says which plugin and which method."""

from __future__ import annotations

import importlib.metadata
import types
from pathlib import Path

import pytest
from gaia_core import hookimpl
from gaia_core.anchors import Anchor, Target
from gaia_core.backends import Backend, BackendConfig
from gaia_core.errors import PluginError
from gaia_core.fingerprints import FingerprintSource
from gaia_core.plugins import Registry, get_plugin_manager
from gaia_core.tasks import Module, StrictModel, Task


class Settings(StrictModel):
    source: str = "src"


class GoodModule(Module):
    table = "tool"
    config_model = Settings

    def plan(self, build, settings):  # type: ignore[no-untyped-def]
        return [Task("tool.build", after=["core.init"])]


class GoodAnchor(Anchor):
    task = "tool.build"
    default_fingerprint_paths = ("tool.source",)

    def targets(self):  # type: ignore[no-untyped-def]
        return [Target("tool", self.build.workspace.build_dir / "tool")]


def plugin(**hooks):  # type: ignore[no-untyped-def]
    """A plugin object whose registration hooks return the given values."""
    module = types.ModuleType("fake_plugin")
    for name, value in hooks.items():
        setattr(module, name, hookimpl(lambda value=value: value))
    return module


def registry_error(pm, **hooks) -> str:  # type: ignore[no-untyped-def]
    pm.register(plugin(**hooks), name="tool")
    with pytest.raises(PluginError) as info:
        Registry(pm)
    return str(info.value)


# -- what registration hooks return -----------------------------------------------------------


def test_an_instance_instead_of_a_class_is_refused_naming_plugin_and_hook(gaia_core_pm):
    message = registry_error(gaia_core_pm, gaia_register_modules=[GoodModule()])
    assert message == ("plugin 'tool': gaia_register_modules() returned an instance of GoodModule, not the class: "
                       "return GoodModule itself (gaia creates the instances)")


def test_a_class_without_its_key_or_methods_is_refused(gaia_core_pm):
    class NoTask(Anchor):
        pass

    class NoDigest(FingerprintSource):
        kind = "k"
        paths = ()

    message = registry_error(gaia_core_pm, gaia_register_anchors=[NoTask], gaia_register_fingerprint_sources=NoDigest)
    assert message.startswith("4 plugin problems:")  # all at once
    assert "plugin 'tool': gaia_register_anchors() returned NoTask, which sets no 'task' (a non-empty string)" in message
    assert "NoTask, which does not implement targets()" in message
    assert "NoDigest, which does not implement digest()" in message


def test_a_source_without_paths_and_a_backend_without_methods_are_refused(gaia_core_pm):
    class NoPaths(FingerprintSource):
        kind = "k"
        paths = ()

        def digest(self, build, path, value):  # type: ignore[no-untyped-def]
            return None

    class Half(Backend):
        kind = "half"
        config_model = BackendConfig

        def exists(self, key):  # type: ignore[no-untyped-def]
            return False

    message = registry_error(gaia_core_pm, gaia_register_fingerprint_sources=[NoPaths],
                             gaia_register_backends=[Half])
    assert "NoPaths, whose paths is not a non-empty tuple of dotted config paths" in message
    assert "Half, which does not implement upload(), publish(), download(), delete(), list_entries()" in message


def test_something_else_than_a_subclass_is_refused(gaia_core_pm):
    class Plain:
        table = "tool"

    class NotPydantic(GoodModule):
        config_model = dict  # type: ignore[assignment]

    message = registry_error(gaia_core_pm, gaia_register_modules=[Plain, NotPydantic, "tool"])
    assert "returned Plain, which is not a subclass of gaia_core.tasks.Module" in message
    assert "NotPydantic, whose config_model is not a pydantic model class" in message
    assert "returned 'tool' (str), not a module class" in message


def test_an_exception_in_a_registration_hook_names_it(gaia_core_pm):
    def broken():  # type: ignore[no-untyped-def]
        raise KeyError("oops")

    module = types.ModuleType("fake_plugin")
    module.gaia_register_anchors = hookimpl(broken)  # type: ignore[attr-defined]
    gaia_core_pm.register(module, name="tool")
    with pytest.raises(PluginError, match=r"plugin 'tool' failed in hook gaia_register_anchors\(\): KeyError: 'oops'"):
        Registry(gaia_core_pm)


# -- hook names -------------------------------------------------------------------------------


def test_a_misspelt_hook_is_refused_with_the_nearest_name(gaia_core_pm):
    class Typo:
        @hookimpl
        def gaia_register_anchor(self):  # type: ignore[no-untyped-def]
            return []

    with pytest.raises(PluginError, match="plugin 'typo' defines gaia_register_anchor, which is no gaia hook; "
                                          "did you mean gaia_register_anchors\\?"):
        gaia_core_pm.register(Typo(), name="typo")


def test_a_hook_without_hookimpl_is_refused(gaia_core_pm):
    module = types.ModuleType("forgetful")
    module.gaia_register_modules = lambda: [GoodModule]  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="defines gaia_register_modules without @hookimpl"):
        gaia_core_pm.register(module, name="forgetful")


def test_a_misspelt_hook_of_an_installed_plugin_names_its_distribution(monkeypatch, tmp_path: Path):
    import sys

    (tmp_path / "typohooks.py").write_text(
        "from gaia_core import hookimpl\n\n@hookimpl\ndef gaia_extend_plans(build, tasks):\n    return []\n")
    dist = tmp_path / "gaia_typo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gaia-typo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gaia]\ntypo = typohooks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "typo")
    try:
        with pytest.raises(PluginError) as info:
            get_plugin_manager()
    finally:
        sys.modules.pop("typohooks", None)
    assert str(info.value) == ("plugin 'typo' (gaia-typo 1.0) defines gaia_extend_plans, which is no gaia hook; did "
                               "you mean gaia_extend_plan? (see docs/hooks.md); disable it with "
                               "GAIA_DISABLE_PLUGINS=typo")


# -- GAIA_LOAD_PLUGINS --------------------------------------------------------------------------


def test_load_plugins_naming_nothing_installed_exits_2(monkeypatch):
    from gaia_core.cli import main

    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "buidlroot")
    with pytest.raises(SystemExit) as exit_info:
        main(["plugins"])
    assert exit_info.value.code == 2


def test_load_plugins_error_names_the_installed_plugins(monkeypatch):
    from gaia_core.errors import ConfigError

    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "buidlroot")
    with pytest.raises(ConfigError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "GAIA_LOAD_PLUGINS='buidlroot' names 'buidlroot', which is no installed plugin" in message
    assert "buildroot (gaia-buildroot)" in message


def test_plugins_lists_installed_plugins_that_were_not_loaded(gaia_cli, monkeypatch):
    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "")
    result = gaia_cli("plugins", pm=get_plugin_manager())
    assert result.exit_code == 0, result.output
    assert "no plugins loaded" in result.stdout and "no plugins installed" not in result.stdout
    assert "buildroot (gaia-buildroot, not in GAIA_LOAD_PLUGINS): installed, not loaded" in result.stdout


# -- exceptions inside a plugin's code ----------------------------------------------------------


class Crashing:
    """Registers a module, an anchor and a source whose methods raise on demand."""

    def __init__(self, where: str):
        self.where = where
        where_ = where

        class Source(FingerprintSource):
            kind = "tool.src"
            paths = ("tool.source",)

            def digest(self, build, path, value):  # type: ignore[no-untyped-def]
                if where_ == "digest":
                    raise RuntimeError("cannot read the sources")
                return None

        class CrashAnchor(GoodAnchor):
            def targets(self):  # type: ignore[no-untyped-def]
                if where_ == "targets":
                    raise RuntimeError("no target today")
                return super().targets()

            def relocation_roots(self):  # type: ignore[no-untyped-def]
                if where_ == "relocation_roots":
                    raise RuntimeError("late")
                return super().relocation_roots()

        class CrashModule(GoodModule):
            def plan(self, build, settings):  # type: ignore[no-untyped-def]
                if where_ == "plan":
                    raise ValueError("bad plan")
                return super().plan(build, settings)

        self.classes = (CrashModule, CrashAnchor, Source)

    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [self.classes[0]]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [self.classes[1]]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        return [self.classes[2]]

    @hookimpl
    def gaia_extend_plan(self, build, tasks):  # type: ignore[no-untyped-def]
        if self.where == "extend_plan":
            raise KeyError("tasks")
        return []


BUILD = """
[tool]

[checkpoints]
enabled = true

[[checkpoints.points]]
id = "tool"
anchor_task = "tool.build"
"""


@pytest.mark.parametrize(("where", "command", "method"), [
    ("targets", "status", "CrashAnchor.targets(): RuntimeError: no target today"),
    ("digest", "status", "Source.digest(): RuntimeError: cannot read the sources"),
    ("plan", "plan", "CrashModule.plan(): ValueError: bad plan"),
    ("extend_plan", "plan", "hook gaia_extend_plan(): KeyError: 'tasks'"),
])
def test_an_exception_in_a_plugin_method_names_plugin_and_method_exit_3(gaia_cli, gaia_core_pm, write_build, where,
                                                                        command, method):
    gaia_core_pm.register(Crashing(where), name="tool")
    build = write_build("build.toml", BUILD)
    args = ("checkpoints", "status", build) if command == "status" else ("plan", build)
    result = gaia_cli(*args, pm=gaia_core_pm)
    assert result.exit_code == 3, result.output
    assert result.stderr == f"error: plugin 'tool' failed in {method} (run with --debug for the traceback)\n"
    debug = gaia_cli("--debug", *args, pm=gaia_core_pm)
    assert debug.exit_code == 3 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"error: plugin 'tool' failed in {method}")


def test_in_a_run_the_task_fails_naming_the_plugin_with_the_traceback_in_its_log(gaia_cli, gaia_core_pm,
                                                                                   write_build, tmp_path):
    gaia_core_pm.register(Crashing("relocation_roots"), name="tool")  # asked first by the capture task
    build = write_build("build.toml", BUILD)
    result = gaia_cli("run", build, pm=gaia_core_pm)
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith("error: task 'checkpoints.capture.tool-build' failed: plugin 'tool' failed in "
                                  "CrashAnchor.relocation_roots(): RuntimeError: late\n")
    log = (tmp_path / "out" / "build" / "logs" / "checkpoints.capture.tool-build.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: late" in log


class LeakyBackend(Backend):
    kind = "leaky"
    config_model = type("LeakyConfig", (BackendConfig,), {"__annotations__": {"token_env": str}})

    def secrets(self):  # type: ignore[no-untyped-def]
        return [self.env_value("token_env") or ""]

    def exists(self, key):  # type: ignore[no-untyped-def]
        raise TypeError(f"cannot sign with {self.env_value('token_env')}")

    def upload(self, key, source, *, progress=None):  # type: ignore[no-untyped-def]
        raise OSError("disk")

    publish = download = delete = list_entries = upload  # type: ignore[assignment]


def test_a_backend_method_that_raises_names_the_plugin_and_redacts_its_secrets(monkeypatch):
    from gaia_core.errors import PluginMethodError
    from gaia_core.plugins import Provided

    monkeypatch.setenv("LEAKY_TOKEN", "s3cr3t-token")
    config = LeakyBackend.config_model(token_env="LEAKY_TOKEN")
    backend = Provided(LeakyBackend, "leaky", "plugin 'leaky' (gaia-leaky 1.0)", "gaia_register_backends").make(
        "team", config)
    with pytest.raises(PluginMethodError) as info:
        backend.exists("k")
    assert str(info.value) == "plugin 'leaky' (gaia-leaky 1.0) failed in LeakyBackend.exists(): TypeError: " \
                              "cannot sign with ***"
    with pytest.raises(OSError):  # a backend's I/O error passes unchanged: the remote code degrades on it
        backend.upload("k", Path("/nonexistent"))


def test_a_module_registered_right_is_accepted(gaia_core_pm, write_build):
    from gaia_core.config.loader import load_build
    from gaia_core.plan import build_plan

    gaia_core_pm.register(plugin(gaia_register_modules=[GoodModule], gaia_register_anchors=GoodAnchor), name="tool")
    registry = Registry(gaia_core_pm)
    assert registry.modules["tool"].cls is GoodModule and registry.modules["tool"].origin == "plugin 'tool'"
    plan = build_plan(load_build(write_build("build.toml", "[tool]\n"), registry=registry))
    assert "tool.build" in plan
