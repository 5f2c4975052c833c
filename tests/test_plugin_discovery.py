"""Entry-point discovery: failures name the distribution, conflicts are errors, switches work."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

from gaia_core import hookimpl
from gaia_core.errors import PluginError
from gaia_core.plugins import Registry, get_plugin_manager


class FakeEntryPoint:
    def __init__(self, name: str, dist: str, load):  # type: ignore[no-untyped-def]
        self.name, self.value, self.group = name, f"{dist.replace('-', '_')}.plugin", "gaia"
        self.dist = types.SimpleNamespace(name=dist, version="9.9")
        self._load = load

    def load(self):  # type: ignore[no-untyped-def]
        return self._load()


def backend_plugin(kind: str):  # type: ignore[no-untyped-def]
    from gaia_core.backends import Backend
    from gaia_core.tasks import StrictModel

    def nothing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None

    methods = {name: nothing for name in ("exists", "upload", "publish", "download", "delete", "list_entries")}
    cls = type(f"{kind.title()}Backend", (Backend,), {"kind": kind, "config_model": StrictModel, **methods})
    module = types.ModuleType(f"fake_{kind}")
    module.gaia_register_backends = hookimpl(lambda: [cls])  # type: ignore[attr-defined]
    return module


@pytest.fixture
def entry_points(monkeypatch):  # type: ignore[no-untyped-def]
    installed: list[FakeEntryPoint] = []
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: list(installed) if group == "gaia" else [])
    return installed


def broken():  # type: ignore[no-untyped-def]
    raise ImportError("No module named 'boto3'")


def test_a_plugin_that_fails_to_import_names_its_distribution(entry_points):
    entry_points.append(FakeEntryPoint("s3", "gaia-s3", broken))
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "gaia-s3" in message and "No module named 'boto3'" in message
    assert "GAIA_DISABLE_PLUGINS=s3" in message


def test_disabled_plugins_are_not_imported(entry_points, monkeypatch):
    entry_points.append(FakeEntryPoint("s3", "gaia-s3", broken))
    monkeypatch.setenv("GAIA_DISABLE_PLUGINS", "s3")
    pm = get_plugin_manager()
    assert "s3" not in pm.infos


def test_load_plugins_allowlist(entry_points, monkeypatch):
    entry_points.append(FakeEntryPoint("s3", "gaia-s3", lambda: backend_plugin("s3")))
    entry_points.append(FakeEntryPoint("http", "gaia-http", broken))
    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "s3")
    pm = get_plugin_manager()
    assert "s3" in pm.infos and "http" not in pm.infos
    assert pm.infos["s3"].distribution == "gaia-s3" and pm.infos["s3"].version == "9.9"


def test_two_distributions_with_one_entry_point_name_conflict(entry_points):
    entry_points.append(FakeEntryPoint("cache", "gaia-cache-a", lambda: backend_plugin("a")))
    entry_points.append(FakeEntryPoint("cache", "gaia-cache-b", lambda: backend_plugin("b")))
    with pytest.raises(PluginError, match="gaia-cache-a.*gaia-cache-b"):
        get_plugin_manager()


def test_a_kind_registered_twice_names_both_providers(entry_points):
    entry_points.append(FakeEntryPoint("one", "gaia-one", lambda: backend_plugin("same")))
    entry_points.append(FakeEntryPoint("two", "gaia-two", lambda: backend_plugin("same")))
    pm = get_plugin_manager()
    with pytest.raises(PluginError, match="backend 'same' is registered twice.*'one'.*'two'"):
        Registry(pm)


def test_a_hookimpl_with_a_wrong_signature_is_a_plugin_error_naming_the_distribution(monkeypatch, tmp_path):
    import importlib.metadata
    import sys

    (tmp_path / "badhooks.py").write_text(
        "from gaia_core import hookimpl\n\n@hookimpl\ndef gaia_register_modules(nonsense):\n    return []\n")
    dist = tmp_path / "gaia_bad-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gaia-bad\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gaia]\nbad = badhooks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setenv("GAIA_LOAD_PLUGINS", "bad")
    try:
        with pytest.raises(PluginError, match="plugin 'bad' from distribution 'gaia-bad' implements a hook wrongly"):
            get_plugin_manager()
    finally:
        sys.modules.pop("badhooks", None)
