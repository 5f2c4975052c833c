"""``[checkpoints.backends.s3.<name>]``: the seed's fields plus gaia's time budget.

Literal values are checked here (the loader names the file and key of a malformed one);
a value named by a ``*_env`` field is checked when the build file is loaded too, if it is
set (``environment_problems``: a malformed one is a config error); a missing variable fails
the transfer that needs it, not the loading of a build file that may never touch the remote.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from gaia_core.backends import BackendConfig
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
