"""The ``[checkpoints.backends.http.<name>]`` table.

Literal values are checked here, so the loader reports a malformed one as
``<file>: checkpoints.backends.http.<name>.<key>: <problem>``; values read from the
environment are checked the same way when gaia loads the build file (if they are set; an
unset one makes the backend unavailable when it is used).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from gaia_core.backends import BackendConfig, is_set
from gaia_http.urls import BaseUrl, UrlProblem

#: the name of an environment variable (or empty: not used)
EnvName = Annotated[str, Field(pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*$")]


class HttpConfig(BackendConfig):
    """Where the store lives and how to talk to it.

    Literal fields win when non-empty, else the variable named by the ``*_env`` field is
    read at use time, so a config file can be shared without its secrets.
    """

    base_url: str = ""
    base_url_env: EnvName = ""
    #: refused when set: secrets come from the environment (``token_env``), never the file
    token: str = ""
    #: names the variable holding the token sent as ``Authorization: Bearer <token>``
    token_env: EnvName = ""
    #: a CA bundle (PEM) to trust instead of the system's, for private CAs
    ca_bundle: str = ""
    ca_bundle_env: EnvName = ""
    #: a token is only sent over plain http to loopback unless this is true
    allow_insecure_token: bool = False
    #: seconds without a byte moving before a request or transfer fails (``read_timeout``
    #: is its former name)
    stall_timeout: float = Field(
        default=30.0, gt=0, le=3600, validation_alias=AliasChoices("stall_timeout", "read_timeout")
    )
    #: further attempts after a 429/5xx answer or a dropped connection, inside the budget
    retries: int = Field(default=2, ge=0, le=20)
    #: first pause in seconds between attempts, doubled on every retry
    backoff: float = Field(default=0.25, ge=0, le=60)

    @classmethod
    def table_problems(cls, table: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not is_set(table, "base_url", "base_url_env"):
            return [("base_url", "no base URL: set base_url, or base_url_env to the variable holding it")]
        return []

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_the_stall_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stall_timeout" in data and "read_timeout" in data:
            raise ValueError("read_timeout is the former name of stall_timeout: set only stall_timeout")
        return data

    @field_validator("token")
    @classmethod
    def _no_literal_token(cls, value: str) -> str:
        if value:
            raise ValueError(
                "a token written into the build file would be printed by `gaia resolve` and copied into "
                "files; put it in an environment variable and name that variable with token_env"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        if not value.strip():
            return value
        try:
            base = BaseUrl(value)
        except UrlProblem as problem:
            raise ValueError(str(problem)) from None
        if base.password:
            raise ValueError("base_url must not carry a password; set base_url_env to a variable holding the URL")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value
