"""Offline: every malformed value is a config error naming its key (or its variable),
never an internal error."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from gaia_ssh.backend import SSHBackend
from gaia_ssh.config import SSHConfig

from gaia_core.errors import BackendUnavailable, ConfigError

MALFORMED_TARGETS = ["no-colon", "u@:/path", "u@[::1/path", "u@[zz]:/path", "ho st:/path", "u@a..b:/p", "bad user@h:/p", "h\x01:/p"]


@pytest.mark.parametrize("target", MALFORMED_TARGETS)
def test_a_malformed_literal_target_is_a_validation_error_of_that_key(target: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SSHConfig.model_validate({"target": target})
    assert [error["loc"] for error in info.value.errors()] == [("target",)]


@pytest.mark.parametrize("target", MALFORMED_TARGETS)
def test_a_malformed_target_from_the_environment_names_the_variable(target: str) -> None:
    backend = SSHBackend("box", SSHConfig(target_env="T"), environ={"T": target})
    assert backend.describe() == "ssh:box"
    with pytest.raises(ConfigError, match=r"checkpoints\.backends\.ssh\.box\.target_env \(env var 'T'\)"):
        backend.exists("p/f/manifest.json")


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "22"}, "port"),
        ({"port_env": "NOT A NAME"}, "port_env"),
        ({"identity_file": "/k\x00ey"}, "identity_file"),
        ({"known_hosts_file": "/k\x00h"}, "known_hosts_file"),
        ({"stall_timeout": 0}, "stall_timeout"),
        ({"io_timeout": -1}, "io_timeout"),
        ({"connect_timeout": 1e9}, "connect_timeout"),
        ({"strict_host_key_checking": "no"}, "strict_host_key_checking"),
    ],
)
def test_malformed_values_are_validation_errors_of_their_key(fields: dict, key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SSHConfig.model_validate({"target": "h:/p", **fields})
    assert [error["loc"] for error in info.value.errors()] == [(key,)]


def test_io_timeout_is_the_former_name_of_the_stall_timeout() -> None:
    assert SSHConfig.model_validate({"target": "h:/p", "io_timeout": 7}).stall_timeout == 7.0
    with pytest.raises(pydantic.ValidationError, match="former name of stall_timeout"):
        SSHConfig.model_validate({"target": "h:/p", "io_timeout": 7, "stall_timeout": 8})


@pytest.mark.parametrize("raw", ["ssh", "0", "65536", "", " 22x"])
def test_a_malformed_port_from_the_environment_names_the_variable(raw: str) -> None:
    backend = SSHBackend("box", SSHConfig(target="h:/p", port_env="P"), environ={"P": raw})
    if not raw.strip():
        with pytest.raises(BackendUnavailable, match="env var 'P'"):  # an empty variable is not set
            backend.exists("p/f/manifest.json")
        return
    with pytest.raises(ConfigError, match=r"ssh\.box\.port_env \(env var 'P'\)"):
        backend.exists("p/f/manifest.json")


@pytest.mark.parametrize("field", ["identity_file", "known_hosts_file"])
def test_a_file_from_the_environment_with_a_nul_names_the_variable(field: str) -> None:
    backend = SSHBackend("box", SSHConfig(target="h:/p", **{f"{field}_env": "F"}), environ={"F": "/a\x00b"})
    with pytest.raises(ConfigError, match=rf"ssh\.box\.{field}_env \(env var 'F'\) must not contain a NUL"):
        backend.exists("p/f/manifest.json")


def test_the_loader_reports_file_and_key_of_a_malformed_target(gaia_cli, gaia_pm, tmp_path: Path) -> None:
    build = tmp_path / "build.toml"
    build.write_text('[checkpoints]\nenabled = true\n[checkpoints.backends.ssh.x]\ntarget = "u@[::1/srv"\nport = 0\n')
    result = gaia_cli("checkpoints", "status", str(build), pm=gaia_pm)
    assert result.exit_code == 2, result.output
    assert f"{build}: checkpoints.backends.ssh.x.target: " in result.stderr
    assert f"{build}: checkpoints.backends.ssh.x.port: " in result.stderr


def test_malformed_values_from_the_environment_are_all_environment_problems(tmp_path: Path) -> None:
    environ = {"T": "no-colon-here", "P": "99999", "I": str(tmp_path / "missing-key")}
    problems = SSHBackend("box", SSHConfig(target_env="T", port_env="P", identity_file_env="I"),
                          environ=environ).environment_problems()
    assert [p.split(" (")[0] for p in problems] == [
        "checkpoints.backends.ssh.box.target_env", "checkpoints.backends.ssh.box.port_env",
        "checkpoints.backends.ssh.box.identity_file_env"]
    assert SSHBackend("box", SSHConfig(target_env="T", port_env="P"), environ={}).environment_problems() == []
