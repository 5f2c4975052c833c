"""The ``[checkpoints.backends.ssh.<name>]`` table and its resolution at use time.

Literal values are checked when the build file is loaded (the loader names the file and
key of a malformed one). Values named by ``*_env`` fields are checked at load too when they
are set (``environment_problems``: a malformed one is a config error naming the variable),
and read when the backend is first used, so a build file whose variables are unset stays
valid on a machine that never talks to the remote.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from gaia_core.backends import BackendConfig
from gaia_core.errors import BackendError

if TYPE_CHECKING:
    from gaia_core.backends import Backend

DEFAULT_PORT = 22

#: the name of an environment variable, not its value
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._@+-]*$")


class TargetProblem(ValueError):
    """What is wrong with a ``[user@]host:/path`` target."""


class SSHConfig(BackendConfig):
    """One SSH remote; each literal wins over its ``*_env`` twin when non-empty."""

    target: str | None = None
    target_env: EnvName | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    port_env: EnvName | None = None
    identity_file: str | None = None
    identity_file_env: EnvName | None = None
    #: names the variable holding the identity file's passphrase (a secret)
    identity_passphrase_env: EnvName | None = None
    known_hosts_file: str | None = None
    known_hosts_file_env: EnvName | None = None
    strict_host_key_checking: bool = True
    #: seconds without a byte moving before an SFTP request or transfer fails
    #: (``io_timeout`` is its former name)
    stall_timeout: float = Field(default=30.0, gt=0, le=3600, validation_alias=AliasChoices("stall_timeout", "io_timeout"))

    @model_validator(mode="before")
    @classmethod
    def _one_name_for_the_stall_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stall_timeout" in data and "io_timeout" in data:
            raise ValueError("io_timeout is the former name of stall_timeout: set only stall_timeout")
        return data

    @field_validator("target")
    @classmethod
    def _valid_target(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_target(value)
        return value

    @field_validator("identity_file", "known_hosts_file")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value


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

    @property
    def address(self) -> str:
        """``user@host:port`` for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


def key_name(backend: Backend, field: str) -> str:
    return f"checkpoints.backends.{backend.kind}.{backend.name}.{field}"


def parse_target(value: str) -> tuple[str | None, str, str]:
    """``[user@]host:/base`` (or ``[user@][v6]:/base``) -> (user, host, base).

    Split at the first ``:`` after the host; the base keeps a leading ``/`` (absolute)
    or not (relative to the login directory); an empty base is the login directory
    itself, as with ``scp host:``. Raises :class:`TargetProblem`.
    """
    text = value.strip()
    if any(not ch.isprintable() for ch in text):
        raise TargetProblem("must not contain control characters")
    bracket, colon = text.find("["), text.find(":")
    if bracket != -1 and (colon == -1 or bracket < colon):
        head_end = text.find("]:", bracket)
        if head_end == -1:
            raise TargetProblem("must be '[user@]host:/path' (an IPv6 host is written '[addr]:/path')")
        head, base = text[: head_end + 1], text[head_end + 2 :]
    else:
        head, sep, base = text.partition(":")
        if not sep:
            raise TargetProblem("must be '[user@]host:/path' (no ':' found)")
    user, at, host = head.strip().rpartition("@")
    host = host.strip()
    if not host:
        raise TargetProblem("must be '[user@]host:/path' (empty host)")
    _check_host(host)
    user = user.strip()
    if at and user and not _USER.match(user):
        raise TargetProblem("the user name may hold letters, digits and '._@+-' only")
    base = base.strip()
    if base != "/":
        base = base.rstrip("/")
    return (user or None) if at else None, host.strip("[]"), base


def _check_host(host: str) -> None:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            raise TargetProblem("the host is not a valid IPv6 address") from None
        return
    if any(ch.isspace() for ch in host):
        raise TargetProblem("the host must not contain whitespace")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetProblem("the host is not a valid host name") from None
    if not all(_HOST_LABEL.match(label) for label in ascii_host.rstrip(".").split(".")):
        raise TargetProblem("the host is not a valid host name")


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
    where = key_name(backend, field)
    if not (getattr(backend.config, field, None) or "").strip():
        where = f"{key_name(backend, field + '_env')} (env var '{getattr(backend.config, field + '_env')}')"
    if "\0" in value:
        raise BackendError(f"{where} must not contain a NUL character")
    path = Path(value).expanduser()
    if not path.is_file():
        raise BackendError(f"{where}: no such file: {path}")
    return path


def environment_problems(backend: Backend) -> list[str]:
    """Every malformed value the ``*_env`` fields read (an unset variable is no problem here)."""
    config: SSHConfig = backend.config  # type: ignore[assignment]
    problems = []
    target = backend.env_value("target_env")
    if target and not (config.target or "").strip():
        try:
            parse_target(target)
        except TargetProblem as problem:
            problems.append(f"{key_name(backend, 'target')} (from env var '{config.target_env}') {problem}")
    checks = [lambda: parse_port(backend)]
    for field in ("identity_file", "known_hosts_file"):
        if not (getattr(config, field) or "").strip():
            checks.append(lambda field=field: existing_file(backend, field))
    for check in checks:
        try:
            check()
        except BackendError as exc:
            problems.append(str(exc))
    return problems


def resolve(backend: Backend) -> SSHSettings:
    """Read every value now; errors name the config key (and env var) at fault."""
    config: SSHConfig = backend.config  # type: ignore[assignment]
    target = backend.setting("target", required=True)
    assert target is not None
    where = key_name(backend, "target")
    if not (config.target or "").strip():
        where += f" (from env var '{config.target_env}')"
    try:
        user, host, base = parse_target(target)
    except TargetProblem as problem:
        raise BackendError(f"{where} {problem}") from None
    return SSHSettings(
        user=user,
        host=host,
        base=base,
        port=parse_port(backend),
        identity_file=existing_file(backend, "identity_file"),
        passphrase=backend.env_value("identity_passphrase_env"),
        known_hosts_file=existing_file(backend, "known_hosts_file"),
        strict_host_key_checking=config.strict_host_key_checking,
    )
