"""Offline: every malformed value is a config error naming its key (or its variable),
never an internal error from botocore, and never repeats a secret."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from gaia_s3.backend import S3Backend
from gaia_s3.config import S3Config

from gaia_core.errors import ConfigError

SECRET = "pw-secret-4711"

MALFORMED = [
    ("bucket", "my bucket"),
    ("bucket", "a/b"),
    ("bucket", "b\x00"),
    ("region", "eu west 1"),
    ("region", "eu_west_1"),
    ("region", "-eu"),
    ("endpoint_url", "http://[::1"),
    ("endpoint_url", "http://h:99999"),
    ("endpoint_url", "http://h:abc"),
    ("endpoint_url", "ftp://h"),
    ("endpoint_url", "h:9000"),
    ("endpoint_url", f"http://u:{SECRET}@h:9000"),
    ("endpoint_url", "http://a..b:9000"),
    ("endpoint_url", "http://h:9000/?x=1"),
    ("prefix", "team/../other"),
    ("prefix", "a\x01b"),
    ("profile", "my profile"),
]


@pytest.mark.parametrize(("field", "value"), MALFORMED)
def test_a_malformed_literal_is_a_validation_error_of_that_key(field: str, value: str) -> None:
    fields = {"bucket": "b", field: value}
    with pytest.raises(pydantic.ValidationError) as info:
        S3Config.model_validate(fields)
    [error] = info.value.errors()
    assert error["loc"] == (field,)
    assert SECRET not in error["msg"]


@pytest.mark.parametrize(("field", "value"), MALFORMED)
def test_a_malformed_value_from_the_environment_names_the_variable(field: str, value: str) -> None:
    fields = {"bucket": "b", f"{field}_env": "VALUE"} if field != "bucket" else {"bucket_env": "VALUE"}
    backend = S3Backend("cache", S3Config.model_validate(fields), environ={"VALUE": value})
    backend.describe()  # never raises: it is used to render errors
    [problem] = backend.environment_problems()
    with pytest.raises(ConfigError) as info:
        backend.exists("p/f/manifest.json")
    assert info.value.problems == [problem]
    assert problem.startswith(f"checkpoints.backends.s3.cache.{field}_env (env var 'VALUE') ")
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"stall_timeout": -5}, "stall_timeout"),
        ({"probe_timeout": 3601}, "probe_timeout"),
        ({"stall_timeout": "30"}, "stall_timeout"),
        ({"aws_ca_bundle_env": "not a name"}, "aws_ca_bundle_env"),
    ],
)
def test_malformed_settings_are_validation_errors_of_their_key(fields: dict, key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        S3Config.model_validate({"bucket": "b", **fields})
    assert [error["loc"] for error in info.value.errors()] == [(key,)]


@pytest.mark.parametrize("field", ["aws_ca_bundle_env", "aws_shared_credentials_file_env", "aws_config_file_env"])
def test_a_file_variable_that_names_no_file_is_an_error_naming_it(field: str, tmp_path: Path) -> None:
    backend = S3Backend("cache", S3Config(bucket="b", **{field: "FILE"}), environ={"FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=rf"{field} \(env var 'FILE'\) does not name an existing file"):
        backend.exists("p/f/manifest.json")


def test_the_loader_reports_file_and_key_of_a_malformed_value(gaia_cli, gaia_pm, tmp_path: Path) -> None:
    build = tmp_path / "build.toml"
    build.write_text(
        "[checkpoints]\nenabled = true\n"
        f'[checkpoints.backends.s3.x]\nbucket = "a b"\nendpoint_url = "http://u:{SECRET}@[::1"\n'
    )
    result = gaia_cli("checkpoints", "status", str(build), pm=gaia_pm)
    assert result.exit_code == 2, result.output
    assert f"{build}: checkpoints.backends.s3.x.bucket: " in result.stderr
    assert f"{build}: checkpoints.backends.s3.x.endpoint_url: " in result.stderr
    assert SECRET not in result.stderr + result.output
