"""Config resolution, safety checks and redaction of the HTTP backend (offline)."""

from __future__ import annotations

import pydantic
import pytest
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig

from gaia_core.errors import BackendError, BackendUnavailable, ConfigError

TOKEN = "s3cr3t-token-value"


def make(environ: dict[str, str] | None = None, **fields) -> HttpBackend:
    return HttpBackend("cache", HttpConfig.model_validate(fields), environ={} if environ is None else environ)


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(pydantic.ValidationError):
        HttpConfig.model_validate({"base_url": "http://x", "tokn_env": "T"})


URL = {"base_url": "https://h"}


def test_timeouts_accept_integers_and_must_be_positive() -> None:
    assert HttpConfig.model_validate({**URL, "connect_timeout": 2, "stall_timeout": 30}).connect_timeout == 2.0
    for field in ("connect_timeout", "stall_timeout", "probe_timeout", "read_timeout"):
        with pytest.raises(pydantic.ValidationError):
            HttpConfig.model_validate({**URL, field: 0})


def test_read_timeout_is_the_former_name_of_the_stall_timeout() -> None:
    assert HttpConfig.model_validate({**URL, "read_timeout": 7}).stall_timeout == 7.0
    assert HttpConfig.model_validate(URL).stall_timeout == 30.0
    with pytest.raises(pydantic.ValidationError, match="former name of stall_timeout"):
        HttpConfig.model_validate({**URL, "read_timeout": 7, "stall_timeout": 8})


def test_a_table_without_a_base_url_is_refused_with_its_other_problems() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        HttpConfig.model_validate({"retries": -1})
    assert sorted(e["loc"][0] for e in info.value.errors()) == ["base_url", "retries"]


def test_literal_base_url_wins_over_env_and_trailing_slash_is_trimmed() -> None:
    backend = make({"URL": "https://env.example"}, base_url="https://literal.example/cache/", base_url_env="URL")
    assert backend.base().url("p/f/manifest.json") == "https://literal.example/cache/p/f/manifest.json"


def test_base_url_from_env_is_read_at_use_time() -> None:
    environ: dict[str, str] = {}
    backend = make(environ, base_url_env="URL")
    environ["URL"] = "https://env.example/root"
    assert backend.base().url("p/f/x") == "https://env.example/root/p/f/x"


@pytest.mark.parametrize("field", ["base_url_env", "token_env", "ca_bundle_env"])
def test_a_variable_that_is_not_set_makes_the_backend_unavailable_naming_it(field: str) -> None:
    """Never a fallback: no token is no anonymous access, no CA bundle not the system's."""
    fields = {"base_url_env": "U", "token_env": "T", "ca_bundle_env": "C", field: "GAIA_UNSET"}
    environ = {"U": "https://h/root", "T": TOKEN, "C": __file__}
    with pytest.raises(BackendUnavailable) as info:
        make(environ, **fields).exists("p/f/manifest.json")
    assert str(info.value) == f"checkpoints.backends.http.cache.{field}: env var 'GAIA_UNSET' is not set"


@pytest.mark.parametrize("url", ["ftp://host/x", "host/x", "http:///x", "https://h/x?q=1"])
def test_base_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="base_url"):
        make(base_url=url)
    with pytest.raises(ConfigError, match=r"base_url_env \(env var 'URL'\)"):
        make({"URL": url}, base_url_env="URL").base()


@pytest.mark.parametrize("key", ["p/../manifest.json", "p/f/", "/p/f/x", "p/f/a b", "p/./x", "p/f/..", "p\\f/x"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(BackendError, match="unsafe"):
        make(base_url="https://h").base().url(key)


def test_token_is_refused_over_plain_http_to_a_remote_host() -> None:
    backend = make({"TOK": TOKEN}, base_url="http://cache.example.com/root", token_env="TOK")
    with pytest.raises(BackendError, match="allow_insecure_token") as info:
        backend.exists("p/f/manifest.json")
    assert TOKEN not in str(info.value)


def test_url_password_counts_as_a_credential_for_the_plain_http_check() -> None:
    with pytest.raises(BackendError, match="plain http"):
        make({"URL": "http://user:pw-secret@cache.example.com/root"}, base_url_env="URL").session()


@pytest.mark.parametrize(
    "url",
    ["https://cache.example.com", "http://127.0.0.1:8080", "http://127.8.9.10", "http://[::1]:81", "http://localhost:1"],
)
def test_token_is_allowed_over_https_and_to_loopback(url: str) -> None:
    make({"TOK": TOKEN}, base_url=url, token_env="TOK").session()


def test_explicit_opt_in_allows_a_token_over_plain_http() -> None:
    backend = make({"TOK": TOKEN}, base_url="http://cache.example.com", token_env="TOK", allow_insecure_token=True)
    assert backend.session().auth is not None


def test_plain_http_without_credentials_is_fine() -> None:
    assert make(base_url="http://cache.example.com").session().auth is None


def test_token_with_whitespace_is_refused_without_echoing_it() -> None:
    backend = make({"TOK": "abcd\nInjected: yes"}, base_url="https://h", token_env="TOK")
    with pytest.raises(ConfigError, match="whitespace") as info:
        backend.session()
    assert "Injected" not in str(info.value)


def test_missing_ca_bundle_file_is_an_error(tmp_path) -> None:
    backend = make({"CA": str(tmp_path / "nope.pem")}, base_url="https://h", ca_bundle_env="CA")
    with pytest.raises(ConfigError, match="ca_bundle_env"):
        backend.session()


def test_ca_bundle_is_used_for_verification(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert make(base_url="https://h", ca_bundle=str(bundle)).session().verify == str(bundle)


def test_secrets_cover_token_and_url_password_and_are_redacted() -> None:
    backend = make({"TOK": TOKEN, "URL": "https://user:url-password@h/root"}, base_url_env="URL", token_env="TOK")
    assert set(backend.secrets()) == {TOKEN, "url-password"}
    assert backend.redact(f"x {TOKEN} y url-password z") == "x *** y *** z"


def test_describe_and_messages_never_show_user_info() -> None:
    backend = make({"URL": "https://user:url-password@h/root"}, base_url_env="URL")
    assert backend.describe() == "http:cache (https://h/root)"
    assert "url-password" not in backend._message("probe", "p/f/x", "because url-password")
    assert "user" not in backend.base().url("p/f/x")


def test_secrets_do_not_raise_when_nothing_is_set() -> None:
    assert make(base_url_env="URL", token_env="TOK").secrets() == []
    assert make(base_url_env="URL").describe() == "http:cache"


def test_bearer_auth_repr_hides_the_token() -> None:
    from gaia_http.session import BearerAuth

    assert TOKEN not in repr(BearerAuth(TOKEN))


@pytest.mark.parametrize(("field", "value"), [("token", TOKEN), ("base_url", "https://user:pw-secret@h/root")])
def test_secrets_written_into_the_build_file_are_refused_without_echoing_them(field: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        HttpConfig.model_validate({**URL, field: value})
    [error] = info.value.errors()
    assert "_env" in error["msg"]  # gaia shows the message, never the input value
    assert "pw-secret" not in error["msg"] and TOKEN not in error["msg"]
