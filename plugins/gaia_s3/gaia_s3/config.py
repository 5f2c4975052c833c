"""``[checkpoints.backends.s3.<name>]``: the seed's fields plus gaia's time budget.

Literal values are checked here (the loader names the file and key of a malformed one),
and so are the rules between fields: a bucket (or ``bucket_env``) is needed, an access key
id needs its secret. Values named by ``*_env`` fields are checked when gaia loads the
build file if they are set (a malformed one is a configuration error); an unset one makes
the backend unavailable when it is used, naming the variable, so a job without the
secrets still builds under ``use_policy = "auto"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from gaia_core.backends import BackendConfig, is_set
from gaia_s3.values import CHECKS

#: the name of an environment variable, not its value
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class S3Config(BackendConfig):
    bucket: str | None = None
    bucket_env: EnvName | None = None
    region: str | None = None
    region_env: EnvName | None = None
    #: leading and trailing '/' are ignored
    prefix: str | None = None
    prefix_env: EnvName | None = None
    #: an S3-compatible service (MinIO, Ceph, ...); path-style addressing is used with it
    endpoint_url: str | None = None
    endpoint_url_env: EnvName | None = None
    profile: str | None = None
    profile_env: EnvName | None = None
    # Credentials have no literal form: secrets stay out of build files.
    aws_access_key_id_env: EnvName | None = None
    aws_secret_access_key_env: EnvName | None = None
    aws_session_token_env: EnvName | None = None
    aws_shared_credentials_file_env: EnvName | None = None
    aws_config_file_env: EnvName | None = None
    aws_ca_bundle_env: EnvName | None = None

    @classmethod
    def table_problems(cls, table: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = []
        if not is_set(table, "bucket", "bucket_env"):
            problems.append(("bucket", "no bucket: set bucket, or bucket_env to the variable holding it"))
        key_id, secret = is_set(table, "aws_access_key_id_env"), is_set(table, "aws_secret_access_key_env")
        if key_id and not secret:
            problems.append(("aws_secret_access_key_env", "aws_access_key_id_env is set without its secret: set both"))
        elif secret and not key_id:
            problems.append(("aws_access_key_id_env", "aws_secret_access_key_env is set without a key id: set both"))
        elif is_set(table, "aws_session_token_env") and not key_id:
            problems.append(("aws_session_token_env", "a session token needs aws_access_key_id_env and "
                                                      "aws_secret_access_key_env too"))
        return problems

    @field_validator(*CHECKS)
    @classmethod
    def _well_formed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return value
        assert info.field_name is not None
        problem = CHECKS[info.field_name](value.strip())
        if problem:
            raise ValueError(problem)
        return value
