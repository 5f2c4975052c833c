"""The ``[checkpoints.backends.ssh.<name>]`` table and its resolution at use time.

Literal values are checked when the build file is loaded (the loader names the file and
key of a malformed one), and so are values named by ``*_env`` fields when their variables
are set (:func:`environment_problems`, naming the variable). An unset variable makes the
backend unavailable when it is used, so a build file stays valid on a machine that never
talks to the remote.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from gaia_core.backends import BackendConfig, is_set
from gaia_core.errors import BackendError, ConfigError

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

    @classmethod
    def table_problems(cls, table: Mapping[str, Any]) -> list[tuple[str, str]]:
        if not is_set(table, "target", "target_env"):
            return [("target", "no target: set target = \"[user@]host:/path\", or target_env to the variable "
                               "holding it")]
        return []

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


def _port(raw: str) -> int:
    port = int(raw, 10)
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is outside 1..65535")
    return port


def _where(backend: Backend, env_field: str) -> str:
    return f"{key_name(backend, env_field)} (env var '{getattr(backend.config, env_field)}')"


def environment_problems(backend: Backend) -> list[str]:
    """Set but malformed values of the variables the ``*_env`` fields name, each naming
    the key and the variable."""
    config: SSHConfig = backend.config  # type: ignore[assignment]
    problems = []
    if not (config.target or "").strip() and (target := backend.variable("target_env")):
        try:
            parse_target(target)
        except TargetProblem as problem:
            problems.append(f"{_where(backend, 'target_env')} {problem}")
    if config.port is None and (port := backend.variable("port_env")):
        try:
            _port(port)
        except ValueError as exc:
            problems.append(f"{_where(backend, 'port_env')} parse failed: {exc}")
    for field in ("identity_file", "known_hosts_file"):
        value = None if (getattr(config, field) or "").strip() else backend.variable(f"{field}_env")
        if value is None:
            continue
        if "\0" in value:
            problems.append(f"{_where(backend, field + '_env')} must not contain a NUL character")
        elif not Path(value).expanduser().is_file():
            problems.append(f"{_where(backend, field + '_env')}: no such file: {Path(value).expanduser()}")
    return problems


def existing_file(backend: Backend, field: str) -> Path | None:
    value = backend.setting(field)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():  # a literal path (one from the environment was checked already)
        raise BackendError(f"{key_name(backend, field)}: no such file: {path}")
    return path


def resolve(backend: Backend) -> SSHSettings:
    """Read every value now: a malformed one raises :class:`ConfigError`, an unset
    variable :class:`~gaia_core.errors.BackendUnavailable`, each naming key and variable."""
    problems = environment_problems(backend)
    if problems:
        raise ConfigError(problems)
    config: SSHConfig = backend.config  # type: ignore[assignment]
    target = backend.setting("target", required=True)
    assert target is not None
    user, host, base = parse_target(target)  # checked: by the model, or just above
    port = config.port if config.port is not None else backend.env_value("port_env")
    return SSHSettings(
        user=user,
        host=host,
        base=base,
        port=DEFAULT_PORT if port is None else int(port),
        identity_file=existing_file(backend, "identity_file"),
        passphrase=backend.env_value("identity_passphrase_env"),
        known_hosts_file=existing_file(backend, "known_hosts_file"),
        strict_host_key_checking=config.strict_host_key_checking,
    )
