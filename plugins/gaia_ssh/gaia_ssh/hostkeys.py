"""Host key checking: known_hosts by default, never a prompt, never a silent key change.

paramiko asks a "missing host key policy" only about hosts that known_hosts does not
list; a host listed with a different key always fails with ``BadHostKeyException``, so
``strict_host_key_checking = false`` still refuses a changed key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

if TYPE_CHECKING:
    from gaia_ssh.config import SSHSettings

log = logging.getLogger("gaia_ssh")

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class UnknownHostKey(paramiko.SSHException):
    """The server's key is not in known_hosts and strict checking is on."""

    def __init__(self, host_entry: str, key: paramiko.PKey):
        super().__init__(f"host key for {host_entry} is not known")
        self.host_entry = host_entry
        self.key = key


class RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


class WarnUnknownHost(paramiko.MissingHostKeyPolicy):
    """Accept for this connection only (nothing is written to known_hosts)."""

    def missing_host_key(self, client, hostname, key):
        log.warning(
            "accepting unverified SSH host key %s %s for %s (strict_host_key_checking = false)",
            key.get_name(),
            key.fingerprint,
            hostname,
        )


def known_hosts_path(settings: SSHSettings) -> Path:
    return settings.known_hosts_file or Path(DEFAULT_KNOWN_HOSTS).expanduser()


def configure(client: paramiko.SSHClient, settings: SSHSettings) -> None:
    """Load known_hosts (read-only) and install the policy for unknown hosts."""
    path = known_hosts_path(settings)
    if path.is_file():
        client.load_system_host_keys(str(path))
    policy = RejectUnknownHost() if settings.strict_host_key_checking else WarnUnknownHost()
    client.set_missing_host_key_policy(policy)


def _keyscan(settings: SSHSettings) -> str:
    port = f"-p {settings.port} " if settings.port != 22 else ""
    return f"ssh-keyscan {port}{settings.host} >> {known_hosts_path(settings)}"


def unknown_host_message(settings: SSHSettings, exc: UnknownHostKey) -> str:
    return (
        f"host key of {exc.host_entry} ({exc.key.get_name()} {exc.key.fingerprint}) is not in "
        f"{known_hosts_path(settings)}; check the fingerprint with the server's admin, then "
        f"add it with `{_keyscan(settings)}` (or set known_hosts_file)"
    )


def changed_host_message(settings: SSHSettings, exc: paramiko.BadHostKeyException) -> str:
    entry = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
    return (
        f"host key of {entry} CHANGED: server offered {exc.key.get_name()} "
        f"{exc.key.fingerprint}, {known_hosts_path(settings)} has {exc.expected_key.fingerprint}; "
        f"this may be an attack. If the server was re-keyed, remove the old entry with "
        f"`ssh-keygen -R '{entry}' -f {known_hosts_path(settings)}` and add the new one "
        f"with `{_keyscan(settings)}`"
    )
