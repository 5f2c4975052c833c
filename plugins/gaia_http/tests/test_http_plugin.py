"""Registration: found through its entry point, and cheap to load."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from gaia_core.plugins import Registry, get_plugin_manager


def test_entry_point_in_group_gaia() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="gaia") if ep.name == "http"]
    assert ep.value == "gaia_http.plugin"
    assert ep.dist is not None and ep.dist.name == "gaia-http"


def test_registry_knows_the_http_kind() -> None:
    from gaia_http.backend import HttpBackend

    registry = Registry(get_plugin_manager())
    assert registry.backends["http"].cls is HttpBackend


def test_loading_and_registering_does_not_import_requests() -> None:
    code = (
        "import sys\n"
        "import gaia_http.plugin as p\n"
        "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules, 'import'\n"
        "cls = p.gaia_register_backends()\n"
        "assert cls.kind == 'http'\n"
        "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules, 'register'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
