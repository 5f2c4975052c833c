"""The ``ssh`` backend: objects under a base directory on an SFTP server
(``<base>/points/<id>/<fingerprint>/<file>``, ``<base>/packs/<pack id>.pack`` and ``.idx``).

paramiko is imported only when a connection is opened, so listing plugins or validating
a build file never loads it. One connection is kept per backend instance and reopened
when the server has dropped it (or stopped answering).

Time: a connection attempt (TCP, banner, key exchange, authentication, the SFTP
subsystem) gets ``connect_timeout`` in all, enforced by a watchdog that shuts the socket
down; every SFTP request then waits at most ``stall_timeout`` (``channel.settimeout``),
less when a probe's budget is nearly spent. Every operation is one call of
:func:`gaia_core.retry.retrying`.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from gaia_core.backends import POINTS, Backend, Entry, Progress
from gaia_core.errors import BackendError, BackendUnavailable, ConfigError, ObjectExists, ObjectNotFound
from gaia_core.retry import (
    CallerCode,
    Deadline,
    Failure,
    Retryable,
    is_litter,
    is_temporary,
    probe_timed_out,
    retrying,
    run_caller_aware,
    temporary_of,
)
from gaia_ssh.config import SSHConfig, SSHSettings, environment_problems, key_name, resolve

if TYPE_CHECKING:
    import paramiko

T = TypeVar("T")

# paramiko's transport thread logs dropped connections itself; without this, Python's
# last-resort handler would print them raw next to the BackendError that reports them
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _ConnectTimedOut(TimeoutError):
    """The watchdog ended a connection attempt that took longer than its budget."""


class _Stalled(TimeoutError):
    """A transfer's stall guard ended the connection: nothing moved for the stall timeout."""


class SSHBackend(Backend):
    """``[checkpoints.backends.ssh.<name>]``: ``target = "[user@]host:/base/path"``."""

    kind = "ssh"
    config_model = SSHConfig
    #: the key's passphrase, and where the private key is
    credential_fields = ("identity_passphrase_env", "identity_file_env")
    #: the agent paramiko uses (allow_agent): a build script could sign with its keys
    credential_variables = ("SSH_AUTH_SOCK",)

    def __init__(self, name: str, config: SSHConfig, environ=None):
        super().__init__(name, config, environ)
        self._settings: SSHSettings | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._limits: Any = None  # transfer.Limits of the open session
        self._known_dirs: set[str] = set()
        self._pkey: Any = None
        #: the wall clock litter ages are measured on (a test may move it)
        self.clock: Callable[[], float] = time.time

    # -- settings -------------------------------------------------------------------

    @property
    def settings(self) -> SSHSettings:
        if self._settings is None:
            self._settings = resolve(self)
        return self._settings

    def secrets(self) -> list[str]:
        passphrase = self.variable("identity_passphrase_env")
        return [passphrase] if passphrase else []

    def environment_problems(self) -> list[str]:
        return environment_problems(self)

    def describe(self) -> str:
        try:
            settings = self.settings
        except (BackendError, ConfigError):
            return self.ref
        return f"{self.ref} (sftp://{settings.address}{'' if settings.base.startswith('/') else '/~/'}{settings.base})"

    def remote_path(self, key: str) -> str:
        parts = key.split("/")
        if any(part in ("", ".", "..") or "\0" in part for part in parts):
            raise BackendError(self.redact(f"{self.ref}: invalid object key {key!r}"))
        base = self.settings.base
        return posixpath.join(base, *parts) if base else posixpath.join(*parts)

    def _identity(self) -> Any:
        """The configured private key, loaded once (OpenSSH's permission rule applies)."""
        settings = self.settings
        if settings.identity_file is None:
            return None
        if self._pkey is None:
            from gaia_ssh import identity

            where = key_name(self, "identity_file")
            self._pkey = identity.load(
                settings.identity_file,
                settings.passphrase,
                where=self.redact(where),
                passphrase_env=self.config.identity_passphrase_env,
            )
        return self._pkey

    # -- connection -----------------------------------------------------------------

    def _session(self, deadline: Deadline | None = None) -> paramiko.SFTPClient:
        """The open SFTP session, (re)connecting when there is none or it died."""
        deadline = deadline or Deadline(None)
        client = self._client
        transport = client.get_transport() if client is not None else None
        # transfer.get closes the SFTP channel when a download fails with requests in flight
        alive = transport is not None and transport.is_active()
        if self._sftp is not None and alive and not self._sftp.get_channel().closed:
            return self._sftp
        from gaia_ssh import transfer

        self.close()
        self._client, self._sftp = self._connect(self.settings, deadline.cap(self.connect_timeout))
        self._limits = transfer.negotiate(self._sftp)
        return self._sftp

    def _connect(self, settings: SSHSettings, budget: float) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        import paramiko

        from gaia_ssh import hostkeys, transfer

        pkey = self._identity()

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

        started = time.monotonic()
        sock = socket.create_connection((settings.host, settings.port), timeout=budget)
        watchdog = _Watchdog(sock, budget - (time.monotonic() - started))
        client = paramiko.SSHClient()
        try:
            hostkeys.configure(client, settings)
            left = max(0.05, budget - (time.monotonic() - started))
            client.connect(
                settings.host,
                port=settings.port,
                username=settings.user,
                pkey=pkey,
                look_for_keys=pkey is None,
                allow_agent=True,
                sock=sock,
                timeout=left,
                banner_timeout=left,
                auth_timeout=left,
                channel_timeout=left,
                transport_factory=transport_factory,
            )
            left = max(0.05, budget - (time.monotonic() - started))
            sftp = transfer.open_sftp(client.get_transport(), left)
            watchdog.cancel()
            sftp.get_channel().settimeout(self.stall_timeout)
        except BaseException as exc:
            watchdog.cancel()
            client.close()
            sock.close()
            # paramiko stops waiting for a stalled handshake at its timeouts and goes on,
            # failing later with a vague error: the clock says what happened
            if watchdog.fired or (
                isinstance(exc, paramiko.SSHException | EOFError) and time.monotonic() - started >= budget
            ):
                raise _ConnectTimedOut(f"the SSH connection was not set up within {budget:g}s") from exc
            raise
        return client, sftp

    def close(self) -> None:
        # the transport first: it stops paramiko's writers, which otherwise wait forever
        # on a socket a frozen server no longer reads
        for closable in (self._client, self._sftp):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        self._sftp = self._client = None
        self._known_dirs.clear()

    # -- one operation ----------------------------------------------------------------

    def _operate(
        self,
        operation: str,
        path: str,
        work: Callable[[paramiko.SFTPClient], T],
        *,
        probe: bool,
        caller: CallerCode | None = None,
        on_retry: Callable[[Retryable], None] | None = None,
    ) -> T:
        """``work(sftp)`` as one operation: attempts share one budget (``probe_timeout``
        for probes), and every failure below becomes a short, redacted BackendError."""
        self.settings  # noqa: B018 -- configuration problems fail before any attempt
        caller = caller or CallerCode()

        def attempt(deadline: Deadline) -> T:
            try:
                sftp = self._session(deadline)
                sftp.get_channel().settimeout(deadline.cap(self.stall_timeout))
                return work(sftp)
            except (BackendError, Retryable):
                raise
            except Exception as exc:  # noqa: BLE001  (every failure becomes a BackendError)
                if caller.raised is not None:
                    if self._connection_broken():
                        self.close()
                    raise
                raise self._failure(operation, path, exc, deadline) from None

        deadline = Deadline(self.probe_timeout if probe else None)
        return run_caller_aware(lambda: retrying(attempt, deadline=deadline, on_retry=on_retry), caller)

    def _connection_broken(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return (
            transport is None
            or not transport.is_active()
            or self._sftp is None
            or self._sftp.get_channel().closed
        )

    def _failure(self, operation: str, path: str, exc: BaseException, deadline: Deadline | None = None
                 ) -> Retryable | BackendError:
        """The error for ``exc``, wrapped in :class:`Retryable` when another attempt may
        help. A timeout at the end of a probe's ``deadline`` is named after it."""
        import paramiko

        from gaia_ssh import hostkeys

        causes = list(_causes(exc))
        if isinstance(exc, hostkeys.UnknownHostKey | paramiko.BadHostKeyException | paramiko.AuthenticationException):
            kind = None  # another attempt meets the same key
            self.close()
        elif any(isinstance(e, socket.timeout | TimeoutError) for e in causes):
            kind = Failure.STALLED
            self.close()  # replies may still come: never read them as answers to the next request
        elif any(isinstance(e, ConnectionRefusedError | socket.gaierror) for e in causes) or isinstance(
            exc, paramiko.ssh_exception.NoValidConnectionsError
        ):
            kind = Failure.REFUSED
            self.close()
        elif self._connection_broken():
            kind = Failure.TRANSIENT  # the connection dropped: a new one may work
            self.close()
        else:
            kind = None  # an SFTP status on a live session (permission denied, ...)
        spent = deadline is not None and deadline.spent and kind is Failure.STALLED
        reason = probe_timed_out(self.probe_timeout) if spent else self._reason(exc)
        message = f"{self.ref}: {operation} {self.settings.address}:{path} failed: {self.redact(reason)}"
        if kind is None:
            return BackendError(message)
        return Retryable(BackendUnavailable(message), kind)

    def _reason(self, exc: BaseException) -> str:
        import paramiko

        from gaia_ssh import hostkeys

        settings = self.settings
        if isinstance(exc, hostkeys.UnknownHostKey):
            return hostkeys.unknown_host_message(settings, exc)
        if isinstance(exc, paramiko.BadHostKeyException):
            return hostkeys.changed_host_message(settings, exc)
        if isinstance(exc, paramiko.AuthenticationException):
            used = f"identity_file {settings.identity_file}" if settings.identity_file else "agent and default keys"
            return f"authentication failed ({used}); is the public key in the server's authorized_keys?"
        if isinstance(exc, _ConnectTimedOut):
            return f"timed out: {exc} (connect_timeout)"
        if any(isinstance(e, socket.timeout | TimeoutError) for e in _causes(exc)):
            return f"timed out: no data moved for {self.stall_timeout:g}s (stall_timeout)"
        if any(isinstance(e, ConnectionRefusedError) for e in _causes(exc)) or isinstance(
            exc, paramiko.ssh_exception.NoValidConnectionsError
        ):
            return "connection refused; is the SSH server running?"
        if isinstance(exc, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(exc, EOFError):
            return "the server closed the connection"
        if isinstance(exc, OSError) and exc.errno is not None:
            return f"{exc.strerror or 'error'} (errno {exc.errno})"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    # -- operations -----------------------------------------------------------------

    def exists(self, key: str) -> bool:
        path = self.remote_path(key)

        def work(sftp: paramiko.SFTPClient) -> bool:
            try:
                attrs = sftp.stat(path)
            except FileNotFoundError:
                return False
            return stat.S_ISREG(attrs.st_mode or 0)

        return self._operate("probe", path, work, probe=True)

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        path = self.remote_path(key)
        caller = CallerCode(progress=progress)
        reported = caller.progress if caller.wants_progress else None
        self._operate(
            "upload to", path, lambda sftp: self._put(sftp, Path(source), path, reported, replace=True), probe=False, caller=caller
        )
        self._remove_litter(path)

    def publish(self, key: str, source: Path) -> None:
        path = self.remote_path(key)
        self._operate("publish", path, lambda sftp: self._put(sftp, Path(source), path, None, replace=False), probe=False)

    def _put(self, sftp: paramiko.SFTPClient, source: Path, path: str, progress: Progress | None, *, replace: bool) -> None:
        """Upload to a temporary name, then rename it into place: ``posix-rename`` to
        replace, plain SFTP ``rename`` (which fails when the name exists) to publish."""
        from gaia_ssh import transfer

        try:
            handle = open(source, "rb")
        except OSError as exc:
            raise BackendError(f"{self.ref}: upload of {path}: cannot read {source}: {exc.strerror}") from None
        transfer.makedirs(sftp, posixpath.dirname(path), self._known_dirs)
        temporary = transfer.temporary_name(path)
        try:
            with handle, StallGuard(sftp, self.stall_timeout) as guard:
                transfer.put(sftp, handle, temporary, self._limits, progress, guard.touch)
            if replace:
                sftp.posix_rename(temporary, path)
                return
            try:
                sftp.rename(temporary, path)
            except OSError:
                if _is_file(sftp, path):  # the rename failed because the name exists
                    raise ObjectExists(f"{self.ref}: {path} already exists on {self.settings.address}") from None
                raise
        except BaseException as exc:
            # a frozen or dead server would only make us wait again: its temporary stays
            # behind as litter, for a later upload of this key (or gc) to remove
            if not _is_connection_failure(exc) and not self._connection_broken():
                with contextlib.suppress(Exception):
                    sftp.remove(temporary)
            raise

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        from gaia_ssh import transfer

        path = self.remote_path(key)
        caller = CallerCode(dest, progress)

        def work(sftp: paramiko.SFTPClient) -> None:
            try:
                with StallGuard(sftp, self.stall_timeout) as guard:
                    transfer.get(sftp, path, caller, self._limits, caller.progress, guard.touch)
            except FileNotFoundError:
                if caller.raised is not None:
                    raise
                raise ObjectNotFound(f"{self.ref}: {path} not found on {self.settings.address}") from None

        # a retry starts over into dest (seek(0), truncate()), or there is none
        self._operate("download of", path, work, probe=False, caller=caller, on_retry=caller.start_over)

    def read_small(self, key: str, limit: int) -> bytes:
        path = self.remote_path(key)

        def work(sftp: paramiko.SFTPClient) -> bytes:
            try:
                with sftp.open(path, "rb") as remote:
                    return bytes(remote.read(limit + 1))
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.ref}: {path} not found on {self.settings.address}") from None

        return self._operate("read of", path, work, probe=True)

    def delete(self, key: str) -> None:
        path = self.remote_path(key)

        def work(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self._operate("delete of", path, work, probe=False)

    def read_range(self, key: str, offset: int, length: int) -> bytearray:
        """Pipelined READs of just the range, from an open handle, under the stall guard."""
        from gaia_ssh import transfer

        if offset < 0 or length < 0:
            raise ValueError(f"a range needs a non-negative offset and length, not {offset}, {length}")
        path = self.remote_path(key)

        def work(sftp: paramiko.SFTPClient) -> bytearray:
            try:
                with StallGuard(sftp, self.stall_timeout) as guard:
                    return transfer.read_range(sftp, path, offset, length, self._limits, guard.touch)
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.ref}: {path} not found on {self.settings.address}") from None

        return self._operate("ranged read of", path, work, probe=False)

    def list_entries(self, point_id: str) -> list[Entry]:
        point_dir = f"{POINTS}/{point_id}"
        directory = self.remote_path(point_dir)

        def work(sftp: paramiko.SFTPClient) -> list[Entry]:
            entries = []
            for folder in _listdir(sftp, directory):
                if _is_listed_dir(folder):
                    inner = posixpath.join(directory, folder.filename)
                    entries += _files(_listdir(sftp, inner), f"{point_dir}/{folder.filename}")
            return entries

        return self._operate("list", directory, work, probe=True)

    def list_files(self, prefix: str) -> list[Entry]:
        key = prefix.strip("/")
        directory = self.remote_path(key)
        return self._operate("list", directory, lambda sftp: _files(_listdir(sftp, directory), key), probe=True)

    def list_dirs(self, prefix: str) -> list[str]:
        directory = self.remote_path(prefix.strip("/"))

        def work(sftp: paramiko.SFTPClient) -> list[str]:
            return sorted(item.filename for item in _listdir(sftp, directory) if _is_listed_dir(item))

        return self._operate("list", directory, work, probe=True)

    def _remove_litter(self, path: str) -> None:
        """Temporaries of ``path`` untouched for an hour: uploads killed before their
        rename. Best effort: the upload itself succeeded."""
        directory, name = posixpath.split(path)

        def work(sftp: paramiko.SFTPClient) -> None:
            for item in _listdir(sftp, directory):
                if temporary_of(name, item.filename) and is_litter(item.st_mtime, self.clock()):
                    with contextlib.suppress(FileNotFoundError):
                        sftp.remove(posixpath.join(directory, item.filename))

        with contextlib.suppress(BackendError):
            self._operate("cleanup of", directory, work, probe=True)


def _is_connection_failure(exc: BaseException) -> bool:
    import paramiko

    return any(isinstance(e, TimeoutError | EOFError | ConnectionError | paramiko.SSHException) for e in _causes(exc))


class StallGuard:
    """Closes the connection when nothing moved for ``seconds``.

    paramiko bounds reads with the channel timeout, but its writes wait forever on a
    socket that a frozen server no longer reads. Closing the transport ends them; the
    transfer then fails with :class:`_Stalled`.
    """

    def __init__(self, sftp: paramiko.SFTPClient, seconds: float):
        self._transport = sftp.get_channel().get_transport()
        self._seconds = seconds
        self._last = time.monotonic()
        self._done = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def touch(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(0.1, self._seconds / 10)):
            if time.monotonic() - self._last > self._seconds:
                self.fired = True
                self._transport.close()
                return

    def __enter__(self) -> StallGuard:
        self._thread.start()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self._done.set()
        self._thread.join()
        if self.fired and exc is not None:
            raise _Stalled(f"no data moved for {self._seconds:g}s") from exc


def _is_listed_dir(item: Any) -> bool:
    return not item.filename.startswith(".") and stat.S_ISDIR(item.st_mode or 0)


def _files(items: list[Any], key_prefix: str) -> list[Entry]:
    """The regular files of a directory listing, as entries under ``key_prefix``."""
    return [
        Entry(
            key=f"{key_prefix}/{item.filename}",
            size=item.st_size,
            mtime=float(item.st_mtime) if item.st_mtime is not None else None,
            temporary=is_temporary(item.filename),
        )
        for item in items
        if stat.S_ISREG(item.st_mode or 0)
    ]


def _listdir(sftp: paramiko.SFTPClient, directory: str) -> list[Any]:
    try:
        return sftp.listdir_attr(directory)
    except FileNotFoundError:
        return []


def _is_file(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISREG(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


class _Watchdog:
    """Shuts ``sock`` down after ``seconds``: every blocked read or write on it returns."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling (paramiko wraps timeouts)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
