"""The ``[checkpoints.backends.http.<name>]`` table."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from gaia_core.tasks import StrictModel


class HttpConfig(StrictModel):
    """Where the store lives and how to talk to it.

    Literal fields win when non-empty, else the variable named by the ``*_env`` field is
    read at use time, so a config file can be shared without its secrets.
    """

    base_url: str = ""
    base_url_env: str = ""
    #: refused when set: secrets come from the environment (``token_env``), never the file
    token: str = ""
    #: names the variable holding the token sent as ``Authorization: Bearer <token>``
    token_env: str = ""
    #: a CA bundle (PEM) to trust instead of the system's, for private CAs
    ca_bundle: str = ""
    ca_bundle_env: str = ""
    #: a token is only sent over plain http to loopback unless this is true
    allow_insecure_token: bool = False
    #: seconds to establish a connection
    connect_timeout: float = Field(default=5.0, gt=0)
    #: seconds without a byte from the server before a request fails (not a total limit)
    read_timeout: float = Field(default=60.0, gt=0)
    #: retries of a failed request (connection errors, 429 and 5xx) before giving up
    retries: int = Field(default=3, ge=0, le=20)
    #: first backoff delay in seconds, doubled on every retry
    backoff: float = Field(default=0.5, ge=0, le=60)

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
    def _no_password_in_base_url(cls, value: str) -> str:
        try:
            password = urlsplit(value.strip()).password
        except ValueError:
            return value  # a malformed URL is reported when the backend is used
        if password:
            raise ValueError("base_url must not carry a password; set base_url_env to a variable holding the URL")
        return value
