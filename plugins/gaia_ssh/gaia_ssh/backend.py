"""The ``ssh`` backend: objects under a base directory on an SFTP server.

paramiko is imported only when a connection is opened, so listing plugins or validating
a build file never loads it. One connection is kept per backend instance and reopened
when the server has dropped it.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from gaia_core.backends import MANIFEST, Backend
from gaia_core.errors import BackendError, ObjectNotFound
from gaia_ssh.config import SSHConfig, SSHSettings, resolve

if TYPE_CHECKING:
    import paramiko

# paramiko's transport thread logs dropped connections itself; without this, Python's
# last-resort handler would print them raw next to the BackendError that reports them
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class SSHBackend(Backend):
    """``[checkpoints.backends.ssh.<name>]``: ``target = "[user@]host:/base/path"``."""

    kind = "ssh"
    config_model = SSHConfig

    def __init__(self, name: str, config: SSHConfig, environ=None):
        super().__init__(name, config, environ)
        self._settings: SSHSettings | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._limits: Any = None  # transfer.Limits of the open session
        self._known_dirs: set[str] = set()

    # -- settings -------------------------------------------------------------------

    @property
    def settings(self) -> SSHSettings:
        if self._settings is None:
            self._settings = resolve(self)
        return self._settings

    def secrets(self) -> list[str]:
        passphrase = self.env_value("identity_passphrase_env")
        return [passphrase] if passphrase else []

    def describe(self) -> str:
        try:
            settings = self.settings
        except BackendError:
            return self.ref
        return f"{self.ref} (sftp://{settings.address}{'' if settings.base.startswith('/') else '/~/'}{settings.base})"

    def remote_path(self, key: str) -> str:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise BackendError(self.redact(f"{self.ref}: invalid object key {key!r}"))
        base = self.settings.base
        return posixpath.join(base, *parts) if base else posixpath.join(*parts)

    # -- connection -----------------------------------------------------------------

    def _session(self) -> paramiko.SFTPClient:
        """The open SFTP session, (re)connecting when there is none or it died."""
        client = self._client
        transport = client.get_transport() if client is not None else None
        # transfer.get closes the SFTP channel when a download fails with requests in flight
        alive = transport is not None and transport.is_active()
        if self._sftp is not None and alive and not self._sftp.get_channel().closed:
            return self._sftp
        from gaia_ssh import transfer

        self.close()
        self._client, self._sftp = self._connect(self.settings)
        self._limits = transfer.negotiate(self._sftp)
        return self._sftp

    def _connect(self, settings: SSHSettings) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        import paramiko

        from gaia_ssh import hostkeys, transfer

        def transport_factory(sock: Any, **kwargs: Any) -> paramiko.Transport:
            transport = paramiko.Transport(
                sock,
                default_window_size=transfer.WINDOW_SIZE,
                default_max_packet_size=transfer.MAX_PACKET_SIZE,
                **kwargs,
            )
            options = transport.get_security_options()
            available = options.ciphers
            first = tuple(c for c in transfer.PREFERRED_CIPHERS if c in available)
            options.ciphers = first + tuple(c for c in available if c not in first)
            return transport

        client = paramiko.SSHClient()
        started = time.monotonic()
        try:
            hostkeys.configure(client, settings)
            client.connect(
                settings.host,
                port=settings.port,
                username=settings.user,
                key_filename=str(settings.identity_file) if settings.identity_file else None,
                passphrase=settings.passphrase,
                look_for_keys=settings.identity_file is None,
                allow_agent=True,
                timeout=settings.connect_timeout,
                banner_timeout=settings.connect_timeout,
                auth_timeout=settings.connect_timeout,
                channel_timeout=settings.connect_timeout,
                transport_factory=transport_factory,
            )
            sftp = transfer.open_sftp(client.get_transport(), settings.connect_timeout)
            sftp.get_channel().settimeout(settings.io_timeout)
        except paramiko.SSHException as exc:
            client.close()
            # paramiko stops waiting for a stalled handshake at `timeout` and goes on,
            # failing later with a vague "No existing session"
            if type(exc) is paramiko.SSHException and time.monotonic() - started >= settings.connect_timeout:
                raise TimeoutError("the SSH handshake did not finish in time") from exc
            raise
        except BaseException:
            client.close()
            raise
        return client, sftp

    def close(self) -> None:
        for closable in (self._sftp, self._client):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        self._sftp = self._client = None
        self._known_dirs.clear()

    # -- errors ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, operation: str, path: str) -> Iterator[None]:
        """Turn every failure below into a short, redacted :class:`BackendError`."""
        try:
            yield
        except BackendError:
            raise  # already worded (and redacted) here or in config resolution
        except Exception as exc:  # noqa: BLE001  (every failure becomes a BackendError)
            if self._connection_broken(exc):
                self.close()
            reason = self.redact(self._reason(exc))
            where = f"{self.settings.address}:{path}"
            raise BackendError(f"{self.ref}: {operation} {where} failed: {reason}") from None

    @staticmethod
    def _connection_broken(exc: BaseException) -> bool:
        """False for a plain SFTP status error (the session is still usable)."""
        sftp_status = isinstance(exc, OSError) and not isinstance(exc, socket.timeout | ConnectionError)
        return not sftp_status

    def _reason(self, exc: BaseException) -> str:
        import paramiko

        from gaia_ssh import hostkeys

        settings = self.settings
        if isinstance(exc, hostkeys.UnknownHostKey):
            return hostkeys.unknown_host_message(settings, exc)
        if isinstance(exc, paramiko.BadHostKeyException):
            return hostkeys.changed_host_message(settings, exc)
        if isinstance(exc, paramiko.PasswordRequiredException):
            return "the identity file is encrypted; name the variable holding its passphrase in identity_passphrase_env"
        if isinstance(exc, paramiko.AuthenticationException):
            used = f"identity_file {settings.identity_file}" if settings.identity_file else "agent and default keys"
            return f"authentication failed ({used}); is the public key in the server's authorized_keys?"
        if any(isinstance(e, socket.timeout | TimeoutError) for e in _causes(exc)):
            return f"timed out (connect_timeout {settings.connect_timeout:g}s, io_timeout {settings.io_timeout:g}s)"
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return "connection refused; is the SSH server running?"
        if isinstance(exc, EOFError):
            return "the server closed the connection"
        if isinstance(exc, OSError) and exc.errno is not None:
            return f"{exc.strerror or 'error'} (errno {exc.errno})"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    # -- operations -----------------------------------------------------------------

    def exists(self, key: str) -> bool:
        path = self.remote_path(key)
        with self._errors("probe", path):
            try:
                attrs = self._session().stat(path)
            except FileNotFoundError:
                return False
            return stat.S_ISREG(attrs.st_mode or 0)

    def upload(self, key: str, source: Path) -> None:
        from gaia_ssh import transfer

        path = self.remote_path(key)
        with self._errors("upload to", path):
            sftp = self._session()
            transfer.makedirs(sftp, posixpath.dirname(path), self._known_dirs)
            temporary = transfer.temporary_name(path)
            try:
                with open(source, "rb") as handle:
                    transfer.put(sftp, handle, temporary, self._limits)
                sftp.posix_rename(temporary, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(temporary)
                raise

    def download(self, key: str, dest: BinaryIO) -> None:
        from gaia_ssh import transfer

        path = self.remote_path(key)
        with self._errors("download of", path):
            sftp = self._session()
            try:
                transfer.get(sftp, path, dest, self._limits)
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.ref}: {path} not found on {self.settings.address}") from None

    def list_fingerprints(self, point_id: str) -> list[str]:
        directory = self.remote_path(point_id)
        with self._errors("list", directory):
            sftp = self._session()
            try:
                entries = sftp.listdir_attr(directory)
            except FileNotFoundError:
                return []
            found = []
            for entry in entries:
                if entry.filename.startswith(".") or not stat.S_ISDIR(entry.st_mode or 0):
                    continue
                try:
                    sftp.stat(posixpath.join(directory, entry.filename, MANIFEST))
                except FileNotFoundError:
                    continue
                found.append(entry.filename)
            return sorted(found)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (paramiko wraps timeouts)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
