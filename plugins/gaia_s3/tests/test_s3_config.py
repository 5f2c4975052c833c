"""Offline: config validation, use-time resolution, redaction and the client's wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gaia_s3.backend import S3Backend, _below
from gaia_s3.config import S3Config
from gaia_s3.session import S3Settings
from pydantic import ValidationError

from gaia_core.errors import BackendUnavailable

KEY_ID = "AKIAEXAMPLEKEYID1234"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"

FULL = {
    "bucket_env": "B",
    "region_env": "R",
    "prefix_env": "P",
    "endpoint_url_env": "E",
    "profile_env": "PR",
    "aws_access_key_id_env": "K",
    "aws_secret_access_key_env": "S",
    "aws_session_token_env": "T",
    "aws_shared_credentials_file_env": "CF",
    "aws_config_file_env": "CC",
    "aws_ca_bundle_env": "CA",
}


def backend(environ: dict[str, str], **fields) -> S3Backend:
    return S3Backend("cache", S3Config(**fields), environ=environ)


def test_every_seed_field_is_accepted() -> None:
    config = S3Config(bucket="b", region="r", prefix="p", endpoint_url="http://x", profile="pr", **FULL)
    assert config.aws_ca_bundle_env == "CA"


@pytest.mark.parametrize(
    "fields",
    [
        {"bucket_env": "B", "buckett": "x"},  # unknown key
        {"aws_secret_access_key": SECRET},  # credentials have no literal form
        {"bucket_env": "NOT A NAME"},  # *_env names a variable
        {"bucket": 5},  # no silent coercion
    ],
)
def test_invalid_tables_are_rejected(fields) -> None:
    with pytest.raises(ValidationError):
        S3Config(**fields)


def test_values_resolve_at_use_time_and_the_literal_wins() -> None:
    environ: dict[str, str] = {}
    b = backend(environ, bucket_env="B", region="eu-west-1", region_env="R", prefix_env="P")
    environ.update({"B": " from-env ", "R": "us-east-2", "P": "/team/cache/"})
    settings = S3Settings.resolve(b)
    assert (settings.bucket, settings.region, settings.prefix) == ("from-env", "eu-west-1", "team/cache/")
    assert b.object_name("id/fp/manifest.json") == "team/cache/id/fp/manifest.json"


def test_no_prefix_means_keys_at_the_bucket_root() -> None:
    b = backend({"B": "b", "P": "///"}, bucket_env="B", prefix_env="P")
    assert b.object_name("id/fp/payload.tar.zst") == "id/fp/payload.tar.zst"


@pytest.mark.parametrize("field", [f for f in FULL if f != "bucket_env"] + ["bucket_env"])
def test_a_variable_that_is_not_set_makes_the_backend_unavailable_naming_it(field: str, tmp_path: Path) -> None:
    """Never a fallback: no endpoint_url means AWS itself, no prefix the bucket's root,
    no key the developer's own credentials."""
    existing = str(tmp_path / "file")
    Path(existing).write_text("")
    environ = dict.fromkeys(FULL.values(), "x")
    environ.update({"B": "b", "R": "eu-west-1", "E": "http://127.0.0.1:9", "CF": existing, "CC": existing,
                    "CA": existing})
    del environ[FULL[field]]
    environ["EMPTY"] = " "
    for name in (FULL[field], "EMPTY"):
        b = backend(environ, **{**FULL, field: name})
        with pytest.raises(BackendUnavailable) as info:
            b.exists("p/f/manifest.json")
        assert str(info.value) == f"checkpoints.backends.s3.cache.{field}: env var '{name}' is not set"


def test_half_a_key_pair_is_refused_when_the_table_is_read() -> None:
    for fields in ({"aws_access_key_id_env": "K"}, {"aws_secret_access_key_env": "S"}, {"aws_session_token_env": "T"}):
        with pytest.raises(ValidationError) as info:
            S3Config(bucket="b", **fields)
        [error] = info.value.errors()
        assert "set both" in error["msg"] or "needs aws_access_key_id_env" in error["msg"]


def test_a_table_without_a_bucket_is_refused_with_its_other_problems() -> None:
    with pytest.raises(ValidationError) as info:
        S3Config.model_validate({"region": "eu west", "aws_access_key_id_env": "K", "stall_timeout": 0})
    assert sorted(e["loc"][0] for e in info.value.errors()) == [
        "aws_secret_access_key_env", "bucket", "region", "stall_timeout"]


def test_the_endpoint_comes_from_the_build_file_only(monkeypatch) -> None:
    """botocore would take AWS_ENDPOINT_URL_S3 (or a config file's endpoint_url) when the
    build file names none: another store, which gaia never falls back to."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    b = backend({"K": KEY_ID, "S": SECRET}, bucket="b", region="eu-west-1", aws_access_key_id_env="K",
                aws_secret_access_key_env="S")
    assert b.client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"


def test_secrets_are_reported_and_redacted() -> None:
    environ = {"B": "b", "K": KEY_ID, "S": SECRET, "T": TOKEN}
    b = backend(
        environ, bucket_env="B", aws_access_key_id_env="K", aws_secret_access_key_env="S", aws_session_token_env="T"
    )
    assert {KEY_ID, SECRET, TOKEN} <= set(b.secrets())
    text = b.redact(f"failed with {KEY_ID} / {SECRET} / {TOKEN}")
    assert KEY_ID not in text and SECRET not in text and TOKEN not in text
    assert "s3://b/" in b.describe() and SECRET not in b.describe()
    assert SECRET not in repr(S3Settings.resolve(b))


def test_secrets_are_known_even_when_the_settings_are_incomplete() -> None:
    b = backend({"S": SECRET}, bucket_env="B", aws_access_key_id_env="K", aws_secret_access_key_env="S")
    assert SECRET in b.secrets()


def test_client_uses_the_mapped_files_and_profile_and_leaves_os_environ_alone(tmp_path: Path, monkeypatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[ci]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
    config = tmp_path / "config"
    config.write_text("[profile ci]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    before = dict(os.environ)
    b = backend(
        {"B": "b", "CF": str(credentials), "CC": str(config), "PR": "ci"},
        bucket_env="B",
        aws_shared_credentials_file_env="CF",
        aws_config_file_env="CC",
        profile_env="PR",
    )
    client = b.client
    creds = b._credentials
    assert (creds.access_key, creds.secret_key) == (KEY_ID, SECRET)
    assert client.meta.region_name == "ap-south-1"
    assert dict(os.environ) == before
    assert SECRET in b.secrets()


def test_client_takes_mapped_keys_token_timeouts_and_path_style() -> None:
    environ = {"B": "b", "K": KEY_ID, "S": SECRET, "T": TOKEN, "E": "http://127.0.0.1:9"}
    b = backend(
        environ,
        bucket_env="B",
        endpoint_url_env="E",
        aws_access_key_id_env="K",
        aws_secret_access_key_env="S",
        aws_session_token_env="T",
        connect_timeout=3,
        stall_timeout=7,
    )
    client = b.client
    creds = b._credentials
    assert (creds.access_key, creds.secret_key, creds.token) == (KEY_ID, SECRET, TOKEN)
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 7)
    # gaia owns the retries: botocore makes one attempt
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert config.signature_version == "s3v4"
    assert config.s3["addressing_style"] == "path"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("key", "depth", "expected"),
    [
        ("p/id/fp1/manifest.json", 2, True),
        ("p/id/fp1/sub/manifest.json", 2, False),
        ("p/id/manifest.json", 2, False),
        ("p/id/manifest.json", 1, True),
        ("p/id//manifest.json", 2, False),
        ("p/id/../manifest.json", 2, False),
        ("p/idx/fp1/manifest.json", 2, False),
    ],
)
def test_listed_keys_lie_exactly_that_deep_below_the_prefix(key: str, depth: int, expected: bool) -> None:
    assert _below(key, "p/id/", depth) is expected


def test_malformed_values_from_the_environment_are_all_environment_problems(tmp_path: Path) -> None:
    # (a key id without its secret is refused with the table, before any variable is read)
    environ = {"B": "no spaces please", "E": "ftp://host", "R": "eu_west!", "C": str(tmp_path / "none")}
    problems = backend(environ, bucket_env="B", endpoint_url_env="E", region_env="R",
                       aws_config_file_env="C").environment_problems()
    where = "checkpoints.backends.s3.cache."
    assert sorted(p.split(" (env var")[0] for p in problems) == sorted([
        f"{where}bucket_env", f"{where}region_env", f"{where}endpoint_url_env", f"{where}aws_config_file_env"])


def test_unset_or_good_variables_are_no_environment_problem() -> None:
    assert backend({}, bucket_env="B", endpoint_url_env="E").environment_problems() == []
    good = {"B": "cache", "E": "http://127.0.0.1:9000"}
    assert backend(good, bucket_env="B", endpoint_url_env="E").environment_problems() == []


def test_backend_instances_share_one_loaded_service_model() -> None:
    """The core runs one backend instance per transfer thread: each must not parse the S3
    model again."""
    environ = {"K": KEY_ID, "S": SECRET}
    config = S3Config(bucket="b", region="eu-west-1", endpoint_url="http://127.0.0.1:9",
                      aws_access_key_id_env="K", aws_secret_access_key_env="S")
    first, second = S3Backend("a", config, environ=environ), S3Backend("b", config, environ=environ)
    assert first.client is not second.client
    loaders = [backend._session._session.get_component("data_loader") for backend in (first, second)]
    assert loaders[0] is loaders[1]
