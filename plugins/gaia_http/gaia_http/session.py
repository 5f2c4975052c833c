"""The requests Session behind a backend: auth, TLS and timeouts, with no retries of its own.

gaia's retry loop (:mod:`gaia_core.retry`) owns every retry, so urllib3's are off
(``max_retries=0``). urllib3 sends a request body under the *connect* timeout; the
connections here send under the stall timeout instead, so a slow upload link is not
mistaken for a dead one and a frozen one ends after ``stall_timeout``.

Imported only when a backend is used, so that loading the plugin stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import requests
import requests.adapters
import requests.auth
import urllib3.connection
import urllib3.connectionpool

from gaia_core.errors import exception_chain
from gaia_core.retry import Failure

#: bytes per socket write of an upload body: one buffer, refilled with readinto. Measured
#: over loopback: 128-256 KiB matches curl; socket.sendfile was ~40% slower, 1 MiB
#: freshly allocated blocks ~15% slower (each new block is a fresh mmap to zero-fill)
SEND_CHUNK = 256 * 1024
#: bytes per read of a download, into one reused buffer (http.client reads straight into
#: it; fewer, larger socket reads and file writes)
RECV_CHUNK = 1024 * 1024
#: statuses worth another attempt: overloaded or failing servers, not client mistakes
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: statuses that say the server is not there for us right now
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer``; as an auth object (not a session header) it also keeps
    ~/.netrc from replacing the token, and requests drops it on redirects to other hosts."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


class FileBody:
    """An upload body of exactly ``size`` bytes from an open file.

    Iterated by urllib3 (it has no ``read``, so urllib3 sends what ``__iter__`` yields):
    memoryviews of one reused buffer, each sent with ``sendall`` before the next read.
    ``sent`` is called with the size of each chunk once it went out (it may raise to
    cancel the upload). ``tell``/``seek`` let a caller rewind it.
    """

    def __init__(self, file, size: int, sent: Callable[[int], None] | None = None):  # type: ignore[no-untyped-def]
        self.file = file
        self.size = size
        self.sent = sent

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[memoryview]:
        buffer = bytearray(SEND_CHUNK)
        view = memoryview(buffer)
        remaining = self.size - self.file.tell()
        while remaining > 0:
            count = self.file.readinto(view[: min(SEND_CHUNK, remaining)])
            if not count:
                # Content-Length promised more: fail now rather than leave the server waiting
                raise OSError(f"file ended {remaining} bytes short of its announced size")
            remaining -= count
            yield view[:count]
            if self.sent is not None:
                self.sent(count)

    def tell(self) -> int:
        return self.file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)


def _stall_bounded(connection_class: type, stall_timeout: float) -> type:
    class StallBoundedConnection(connection_class):  # type: ignore[misc, valid-type]
        """Connects under the connect timeout, then sends under the stall timeout."""

        def send(self, data):  # type: ignore[no-untyped-def]
            if self.sock is None:
                self.connect()
            self.sock.settimeout(stall_timeout)
            return super().send(data)

    return StallBoundedConnection


class StallBoundedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pools hand out :func:`_stall_bounded` connections."""

    def __init__(self, stall_timeout: float, **kwargs):  # type: ignore[no-untyped-def]
        self.stall_timeout = stall_timeout
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool_class, connection_class in (
            ("http", urllib3.connectionpool.HTTPConnectionPool, urllib3.connection.HTTPConnection),
            ("https", urllib3.connectionpool.HTTPSConnectionPool, urllib3.connection.HTTPSConnection),
        ):
            bounded = _stall_bounded(connection_class, self.stall_timeout)
            pools[scheme] = type(f"StallBounded{pool_class.__name__}", (pool_class,), {"ConnectionCls": bounded})
        self.poolmanager.pool_classes_by_scheme = pools

    def __getstate__(self):  # type: ignore[no-untyped-def]
        state = super().__getstate__()
        state["stall_timeout"] = self.stall_timeout
        return state


def make_session(*, auth: requests.auth.AuthBase | None, verify: bool | str, stall_timeout: float) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    session.verify = verify
    session.headers["User-Agent"] = "gaia-http/0.1"
    adapter = StallBoundedAdapter(stall_timeout, max_retries=0, pool_connections=2, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def classify(exc: BaseException) -> Failure | None:
    """The kind of a transport failure; None when another attempt cannot help (TLS)."""
    if isinstance(exc, requests.exceptions.SSLError) or _has_cause(exc, "SSLError", "CertificateError"):
        return None
    if any(isinstance(item, ConnectionRefusedError) for item in _chain(exc)):
        return Failure.REFUSED
    if _has_cause(exc, "NameResolutionError"):
        return Failure.REFUSED
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError) or _has_cause(
        exc, "ReadTimeoutError", "ConnectTimeoutError", "TimeoutError"
    ):
        return Failure.STALLED
    return Failure.TRANSIENT


def transport_reason(exc: BaseException, connect_timeout: float, stall_timeout: float) -> str:
    """A short cause for a failed request, never the request itself (no headers, no body)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout) or _has_cause(exc, "ConnectTimeoutError"):
        return f"no connection within {connect_timeout:g}s (connect_timeout)"
    # a bare TimeoutError is the socket's own: a body moves below urllib3
    if isinstance(exc, requests.exceptions.ReadTimeout | TimeoutError) or _has_cause(exc, "ReadTimeoutError", "TimeoutError"):
        return f"no data moved for {stall_timeout:g}s (stall_timeout)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (set ca_bundle for a private CA)"
    if _has_cause(exc, "NameResolutionError"):
        return "the host name does not resolve"
    os_error = _innermost_os_error(exc)
    if os_error is not None and os_error.strerror:
        return f"connection failed: {os_error.strerror.lower()}"
    if isinstance(exc, requests.exceptions.ConnectionError) or _has_cause(exc, "ProtocolError"):
        return "connection failed: the server closed the connection"
    return f"request failed: {type(exc).__name__}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """urllib3 and requests wrap the socket error in ``reason`` and in their ``args``."""
    return exception_chain(exc, lambda e: (getattr(e, "reason", None), *e.args))


def _innermost_os_error(exc: BaseException) -> OSError | None:
    found = None
    for item in _chain(exc):
        if isinstance(item, OSError) and item.strerror:
            found = item
    return found


def _has_cause(exc: BaseException, *class_names: str) -> bool:
    return any(type(item).__name__ in class_names for item in _chain(exc))
