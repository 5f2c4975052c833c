"""The ``[checkpoints.backends.ssh.<name>]`` table and its resolution at use time.

Config load only checks shape; values (and the environment variables named by the
``*_env`` fields) are read when the backend is first used, so a build file stays valid on
a machine that never talks to the remote.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from gaia_core.errors import BackendError
from gaia_core.tasks import StrictModel

if TYPE_CHECKING:
    from gaia_core.backends import Backend

DEFAULT_PORT = 22


class SSHConfig(StrictModel):
    """One SSH remote; each literal wins over its ``*_env`` twin when non-empty."""

    target: str | None = None
    target_env: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: str | None = None
    identity_file: str | None = None
    identity_file_env: str | None = None
    #: names the variable holding the identity file's passphrase (a secret)
    identity_passphrase_env: str | None = None
    known_hosts_file: str | None = None
    known_hosts_file_env: str | None = None
    strict_host_key_checking: bool = True
    #: seconds allowed for TCP connect, the SSH banner and authentication, each
    connect_timeout: float = Field(default=15.0, gt=0)
    #: seconds an SFTP request may wait for the server before the transfer fails
    io_timeout: float = Field(default=60.0, gt=0)


@dataclasses.dataclass(frozen=True)
class SSHSettings:
    """Everything needed to connect, resolved from config and environment."""

    user: str | None
    host: str
    base: str
    port: int
    identity_file: Path | None
    passphrase: str | None = dataclasses.field(repr=False)
    known_hosts_file: Path | None
    strict_host_key_checking: bool
    connect_timeout: float
    io_timeout: float

    @property
    def address(self) -> str:
        """``user@host:port`` for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


def key_name(backend: Backend, field: str) -> str:
    return f"checkpoints.backends.{backend.kind}.{backend.name}.{field}"


def parse_target(value: str, where: str) -> tuple[str | None, str, str]:
    """``[user@]host:/base`` -> (user, host, base), split at the first ``:``.

    The base keeps a leading ``/`` (absolute) or not (relative to the login directory);
    an empty base is the login directory itself, as with ``scp host:``.
    """
    head, sep, base = value.partition(":")
    if not sep:
        raise BackendError(f"{where} must be '[user@]host:/path' (no ':' found)")
    user, at, host = head.strip().rpartition("@")
    host = host.strip()
    if not host:
        raise BackendError(f"{where} must be '[user@]host:/path' (empty host)")
    base = base.strip()
    if base != "/":
        base = base.rstrip("/")
    return (user.strip() or None) if at else None, host, base


def parse_port(backend: Backend) -> int:
    literal = getattr(backend.config, "port", None)
    if literal is not None:
        return literal
    raw = backend.env_value("port_env")
    if raw is None:
        return DEFAULT_PORT
    try:
        port = int(raw, 10)
        if not 1 <= port <= 65535:
            raise ValueError(f"{port} is outside 1..65535")
    except ValueError as exc:
        env_name = backend.config.port_env
        raise BackendError(f"{key_name(backend, 'port_env')} (env var '{env_name}') parse failed: {exc}") from None
    return port


def existing_file(backend: Backend, field: str) -> Path | None:
    value = backend.setting(field)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise BackendError(f"{key_name(backend, field)}: no such file: {path}")
    return path


def resolve(backend: Backend) -> SSHSettings:
    """Read every value now; errors name the config key (and env var) at fault."""
    config: SSHConfig = backend.config  # type: ignore[assignment]
    target = backend.setting("target", required=True)
    assert target is not None
    where = key_name(backend, "target")
    if not (config.target or "").strip():
        where += f" (from env var '{config.target_env}')"
    user, host, base = parse_target(target, where)
    return SSHSettings(
        user=user,
        host=host,
        base=base,
        port=parse_port(backend),
        identity_file=existing_file(backend, "identity_file"),
        passphrase=backend.env_value("identity_passphrase_env"),
        known_hosts_file=existing_file(backend, "known_hosts_file"),
        strict_host_key_checking=config.strict_host_key_checking,
        connect_timeout=config.connect_timeout,
        io_timeout=config.io_timeout,
    )
