"""The ``[checkpoints.backends.http.<name>]`` table."""

from __future__ import annotations

from pydantic import Field

from gaia_core.tasks import StrictModel


class HttpConfig(StrictModel):
    """Where the store lives and how to talk to it.

    Literal fields win when non-empty, else the variable named by the ``*_env`` field is
    read at use time, so a config file can be shared without its secrets.
    """

    base_url: str = ""
    base_url_env: str = ""
    #: sent as ``Authorization: Bearer <token>``; prefer ``token_env`` over a literal
    token: str = ""
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
