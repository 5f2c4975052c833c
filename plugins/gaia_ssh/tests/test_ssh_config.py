"""Config shape, resolution at use time, error wording and redaction (offline)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from gaia_ssh.backend import SSHBackend
from gaia_ssh.config import SSHConfig, parse_target

from gaia_core.errors import BackendError, BackendUnavailable, ConfigError

PASSPHRASE = "correct-horse-battery"


def make(environ: dict[str, str] | None = None, **fields) -> SSHBackend:
    return SSHBackend("box", SSHConfig.model_validate(fields), environ={} if environ is None else environ)


def test_unknown_keys_and_bad_types_are_errors() -> None:
    with pytest.raises(pydantic.ValidationError):
        SSHConfig.model_validate({"target": "h:/p", "hostname": "h"})
    with pytest.raises(pydantic.ValidationError):
        SSHConfig.model_validate({"target": "h:/p", "port": "22"})
    with pytest.raises(pydantic.ValidationError):
        SSHConfig.model_validate({"target": "h:/p", "port": 70000})
    with pytest.raises(pydantic.ValidationError):
        SSHConfig.model_validate({"target": "h:/p", "io_timeout": 0})


def test_a_table_without_a_target_is_refused_with_its_other_problems() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SSHConfig.model_validate({"port": 0})
    assert sorted(e["loc"][0] for e in info.value.errors()) == ["port", "target"]


def test_strict_host_key_checking_defaults_on() -> None:
    assert SSHConfig(target="h:/p").strict_host_key_checking is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("u@h:/srv/checkpoints", ("u", "h", "/srv/checkpoints")),
        (" h : /srv/checkpoints/ ", (None, "h", "/srv/checkpoints")),
        ("h:relative/dir", (None, "h", "relative/dir")),
        ("h:", (None, "h", "")),
        ("h:/", (None, "h", "/")),
        ("u@h:/a:b", ("u", "h", "/a:b")),  # split at the first ':'
    ],
)
def test_parse_target(value: str, expected: tuple) -> None:
    assert parse_target(value) == expected


@pytest.mark.parametrize("value", ["just-a-host", "u@:/path"])
def test_bad_targets_name_the_key(value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"must be '\[user@\]host:/path'"):
        make(target=value)
    with pytest.raises(
        ConfigError, match=r"^checkpoints\.backends\.ssh\.box\.target_env \(env var 'T'\) must be '\[user@\]host:/path'"
    ):
        _ = make({"T": value}, target_env="T").settings


def test_target_from_env_is_read_at_use_time_and_named_in_errors() -> None:
    environ: dict[str, str] = {}
    backend = make(environ, target_env="SSH_TARGET")
    environ["SSH_TARGET"] = "u@h:/srv/checkpoints"
    assert (backend.settings.user, backend.settings.host, backend.settings.base) == ("u", "h", "/srv/checkpoints")
    with pytest.raises(ConfigError, match="env var 'SSH_TARGET'"):
        _ = make({"SSH_TARGET": "nocolon"}, target_env="SSH_TARGET").settings


@pytest.mark.parametrize("field", ["target_env", "port_env", "identity_file_env", "identity_passphrase_env",
                                   "known_hosts_file_env"])
def test_a_variable_that_is_not_set_makes_the_backend_unavailable_naming_it(field: str) -> None:
    """Never a fallback: no port_env is not port 22, no identity file not the agent's keys."""
    fields = {"target_env": "T", "port_env": "P", "identity_file_env": "I", "identity_passphrase_env": "W",
              "known_hosts_file_env": "K", field: "GAIA_UNSET"}
    environ = {"T": "u@h:/srv", "P": "2222", "I": __file__, "W": PASSPHRASE, "K": __file__}
    with pytest.raises(BackendUnavailable) as info:
        make(environ, **fields).exists("p/f/manifest.json")
    assert str(info.value) == f"checkpoints.backends.ssh.box.{field}: env var 'GAIA_UNSET' is not set"


def test_literal_port_wins_over_port_env() -> None:
    assert make({"P": "2222"}, target="h:/p", port=2200, port_env="P").settings.port == 2200
    assert make({"P": "2222"}, target="h:/p", port_env="P").settings.port == 2222
    assert make({}, target="h:/p").settings.port == 22


@pytest.mark.parametrize("raw", ["ssh", "70000", "0", "22.5"])
def test_port_env_parse_errors_name_the_key(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"checkpoints\.backends\.ssh\.box\.port_env \(env var 'P'\) parse failed"):
        _ = make({"P": raw}, target="h:/p", port_env="P").settings


def test_files_must_exist_and_errors_name_the_key(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    settings = make({"KEY": str(key)}, target="h:/p", identity_file_env="KEY").settings
    assert settings.identity_file == key
    with pytest.raises(BackendError, match=r"ssh\.box\.known_hosts_file: no such file"):
        _ = make(target="h:/p", known_hosts_file=str(tmp_path / "missing")).settings


def test_object_keys_are_joined_under_the_base() -> None:
    assert make(target="h:/srv/c").remote_path("id/fp/manifest.json") == "/srv/c/id/fp/manifest.json"
    assert make(target="h:rel").remote_path("id/fp/x") == "rel/id/fp/x"
    assert make(target="h:").remote_path("id/fp/x") == "id/fp/x"
    assert make(target="h:/").remote_path("id/fp/x") == "/id/fp/x"


@pytest.mark.parametrize("key", ["../etc/passwd", "id//x", "/abs/x", "id/./x", "id/fp/"])
def test_keys_that_leave_the_base_are_refused(key: str) -> None:
    with pytest.raises(BackendError, match="invalid object key"):
        make(target="h:/srv").remote_path(key)


def test_the_passphrase_is_a_secret_and_is_redacted() -> None:
    backend = make({"PASS": PASSPHRASE}, target="u@h:/srv", identity_passphrase_env="PASS")
    assert backend.secrets() == [PASSPHRASE]
    assert backend.redact(f"failed with {PASSPHRASE}") == "failed with ***"
    assert PASSPHRASE not in repr(backend.settings)
    assert PASSPHRASE not in backend.describe()


def test_describe_names_the_remote_without_secrets() -> None:
    assert make(target="u@h:/srv", port=2222).describe() == "ssh:box (sftp://u@h:2222/srv)"
    assert make(target_env="T").describe() == "ssh:box"  # unresolvable: still says which backend
