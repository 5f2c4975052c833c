"""Registration: found through its entry point, and cheap to load."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from gaia_core.plugins import Registry, get_plugin_manager


def test_entry_point_in_group_gaia() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="gaia") if ep.name == "ssh"]
    assert ep.value == "gaia_ssh.plugin"
    assert ep.dist is not None and ep.dist.name == "gaia-ssh"


def test_registry_knows_the_ssh_kind() -> None:
    from gaia_ssh.backend import SSHBackend

    registry = Registry(get_plugin_manager())
    assert registry.backends["ssh"].cls is SSHBackend


def test_loading_registering_and_configuring_do_not_import_paramiko() -> None:
    code = (
        "import sys\n"
        "import gaia_ssh.plugin as p\n"
        "assert 'paramiko' not in sys.modules, 'import'\n"
        "(cls,) = p.gaia_register_backends()\n"
        "assert cls.kind == 'ssh'\n"
        "backend = cls('x', cls.config_model(target='h:/srv'), environ={})\n"
        "backend.describe()\n"
        "assert 'paramiko' not in sys.modules, 'register'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_paramiko_log_records_are_not_printed_raw_when_logging_is_unconfigured() -> None:
    code = (
        "import logging\n"
        "import gaia_ssh.backend\n"
        "logging.getLogger('paramiko.transport').error('Socket exception: reset')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Socket exception" not in result.stderr
