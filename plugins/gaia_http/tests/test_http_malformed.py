"""Offline: every malformed value is a config error naming its key (or its variable),
never an internal error, and never repeats a secret."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig

from gaia_core.errors import ConfigError

SECRET = "pw-secret-4711"

MALFORMED_URLS = [
    f"http://u:{SECRET}@[::1/cp",  # unbalanced IPv6 bracket: urlsplit's ValueError
    "http://[zz::1]/cp",  # not an IPv6 address
    "http://h:99999/cp",  # port out of range
    "http://h:http/cp",  # port not a number
    "http://h:0/cp",
    "http://a..b/cp",  # empty host label
    "http://h/c p",  # whitespace
    "http://h/c\x00p",  # control character
    "ftp://h/cp",
    "http:///cp",
    "https://h/cp?x=1",
    "https://h/cp#frag",
]


def make(environ: dict[str, str] | None = None, **fields) -> HttpBackend:
    return HttpBackend("cache", HttpConfig.model_validate(fields), environ=environ or {})


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_literal_base_url_is_a_validation_error_of_that_key(url: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        HttpConfig.model_validate({"base_url": url})
    [error] = info.value.errors()
    assert error["loc"] == ("base_url",)
    assert SECRET not in error["msg"]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_base_url_from_the_environment_names_the_variable(url: str) -> None:
    backend = make({"URL": url}, base_url_env="URL")
    for call in (backend.describe, backend.secrets):
        call()  # never raise: they are used to render errors
    [problem] = backend.environment_problems()
    with pytest.raises(ConfigError) as info:
        backend.exists("p/f/manifest.json")
    assert info.value.problems == [problem]
    assert problem.startswith("checkpoints.backends.http.cache.base_url_env (env var 'URL') ")
    assert SECRET not in problem


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"stall_timeout": -1}, "stall_timeout"),
        ({"probe_timeout": 4000}, "probe_timeout"),
        ({"connect_timeout": "5"}, "connect_timeout"),  # no silent coercion
        ({"retries": -1}, "retries"),
        ({"backoff": 100}, "backoff"),
        ({"token_env": "NOT A NAME"}, "token_env"),
        ({"base_url_env": "1X"}, "base_url_env"),
        ({"ca_bundle": "/etc/\x00ca.pem"}, "ca_bundle"),
        ({"allow_insecure_token": "yes"}, "allow_insecure_token"),
    ],
)
def test_malformed_values_are_validation_errors_of_their_key(fields: dict, key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        HttpConfig.model_validate({"base_url": "https://h", **fields})
    assert [error["loc"] for error in info.value.errors()] == [(key,)]


def test_a_ca_bundle_from_the_environment_with_a_nul_is_a_config_error() -> None:
    backend = make({"CA": "/etc/\x00ca.pem"}, base_url="https://h", ca_bundle_env="CA")
    with pytest.raises(ConfigError, match="ca_bundle_env"):
        backend.session()


def test_the_loader_reports_file_and_key_of_a_malformed_base_url(gaia_cli, gaia_pm, tmp_path: Path) -> None:
    build = tmp_path / "build.toml"
    build.write_text(
        "[checkpoints]\nenabled = true\n"
        f'[checkpoints.backends.http.x]\nbase_url = "http://u:{SECRET}@[::1/cp"\nread_timeout = 0\n'
    )
    result = gaia_cli("checkpoints", "status", str(build), pm=gaia_pm)
    assert result.exit_code == 2, result.output
    assert f"{build}: checkpoints.backends.http.x.base_url: " in result.stderr
    assert f"{build}: checkpoints.backends.http.x.read_timeout: " in result.stderr
    assert SECRET not in result.stderr + result.output
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_base_url_from_the_environment_is_an_environment_problem(url: str) -> None:
    [problem] = make({"URL": url}, base_url_env="URL").environment_problems()
    assert problem.startswith("checkpoints.backends.http.cache.base_url_env (env var 'URL')")
    assert SECRET not in problem


def test_unset_variables_are_no_environment_problem() -> None:
    assert make({}, base_url_env="URL", token_env="TOKEN", ca_bundle_env="CA").environment_problems() == []
    assert make({"URL": "https://cache.example/cp"}, base_url_env="URL").environment_problems() == []


def test_a_bad_token_or_ca_bundle_from_the_environment_is_an_environment_problem(tmp_path: Path) -> None:
    problems = make({"T": f"two {SECRET}", "CA": str(tmp_path / "none.pem")}, base_url="https://h",
                    token_env="T", ca_bundle_env="CA").environment_problems()
    assert [p.split(" (env var")[0] for p in problems] == [
        "checkpoints.backends.http.cache.token_env", "checkpoints.backends.http.cache.ca_bundle_env"]
    assert SECRET not in "".join(problems)


@pytest.mark.parametrize("command", [["checkpoints", "status"], ["checkpoints", "list"], ["checkpoints", "verify"],
                                     ["plan"], ["run"]])
def test_every_command_refuses_a_malformed_url_in_the_environment_with_exit_2(
    gaia_cli, gaia_pm, tmp_path: Path, command: list[str]
) -> None:
    build = tmp_path / "build.toml"
    build.write_text(
        "[checkpoints]\nenabled = true\n"
        '[checkpoints.backends.http.x]\nbase_url_env = "GAIA_TEST_CACHE_URL"\n'
        '[[checkpoints.points]]\nid = "p"\nanchor_task = "buildroot.build"\nbackend = "http:x"\n'
        '[buildroot]\ndefconfig = "qemu_x86_64_defconfig"\n'
    )
    assert gaia_cli("plan", str(build), pm=gaia_pm).exit_code == 0  # unset: valid, as on a machine without it
    result = gaia_cli(*command[:1], *command[1:], str(build), pm=gaia_pm,
                      env={"GAIA_TEST_CACHE_URL": f"http://u:{SECRET}@[::1/cp"})
    assert result.exit_code == 2, result.output
    assert "checkpoints.backends.http.x.base_url_env (env var 'GAIA_TEST_CACHE_URL') is not a valid URL" in result.stderr
    assert SECRET not in result.stderr + result.output and "Traceback" not in result.stderr
