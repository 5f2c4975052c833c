"""The requests Session behind a backend: auth, TLS, timeouts and transport retries.

Imported only when a backend is used, so that loading the plugin stays cheap.
"""

from __future__ import annotations

import requests
import requests.adapters
import requests.auth
from urllib3.util.retry import Retry

#: bytes per socket write of an upload body: one buffer, refilled with readinto. Measured
#: over loopback: 128-256 KiB matches curl; socket.sendfile was ~40% slower, 1 MiB
#: freshly allocated blocks ~15% slower (each new block is a fresh mmap to zero-fill)
SEND_CHUNK = 256 * 1024
#: bytes per read of a download, into one reused buffer (http.client reads straight into
#: it; fewer, larger socket reads and file writes)
RECV_CHUNK = 1024 * 1024
#: statuses worth retrying: overloaded or failing servers, not client mistakes
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: methods urllib3 may replay on its own; uploads have their own retry loop
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "MKCOL"})


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
    ``tell``/``seek`` let urllib3 rewind it before replaying a request.
    """

    def __init__(self, file, size: int):  # type: ignore[no-untyped-def]
        self.file = file
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # type: ignore[no-untyped-def]
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

    def tell(self) -> int:
        return self.file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)


def make_session(
    *,
    auth: requests.auth.AuthBase | None,
    verify: bool | str,
    retries: int,
    backoff: float,
) -> requests.Session:
    session = requests.Session()
    session.auth = auth
    session.verify = verify
    session.headers["User-Agent"] = "gaia-http/0.1"
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=5,
        backoff_factor=backoff,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=IDEMPOTENT,
        raise_on_status=False,
        # a server-chosen Retry-After could stall a build for hours; our backoff is bounded
        respect_retry_after_header=False,
    )
    adapter = requests.adapters.HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=4)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def transport_reason(exc: BaseException, connect_timeout: float, read_timeout: float) -> str:
    """A short cause for a failed request, never the request itself (no headers, no body)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connect timeout after {connect_timeout:g}s"
    # a bare TimeoutError is the socket's own: a download reads below urllib3
    if isinstance(exc, requests.exceptions.ReadTimeout | TimeoutError) or _has_cause(exc, "ReadTimeoutError"):
        return f"no data for {read_timeout:g}s (read timeout)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (set ca_bundle for a private CA)"
    os_error = _innermost_os_error(exc)
    if os_error is not None and os_error.strerror:
        return f"connection failed: {os_error.strerror.lower()}"
    if isinstance(exc, requests.exceptions.ConnectionError) or _has_cause(exc, "ProtocolError"):
        return "connection failed: the server closed the connection"
    return f"request failed: {type(exc).__name__}"


def is_connect_failure(exc: BaseException) -> bool:
    """No connection was made: urllib3 has already retried it with backoff."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    return any(type(item).__name__ in ("NewConnectionError", "NameResolutionError") for item in _chain(exc))


def _chain(exc: BaseException):  # type: ignore[no-untyped-def]
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _innermost_os_error(exc: BaseException) -> OSError | None:
    found = None
    for item in _chain(exc):
        if isinstance(item, OSError) and item.strerror:
            found = item
    return found


def _has_cause(exc: BaseException, class_name: str) -> bool:
    return any(type(item).__name__ == class_name for item in _chain(exc))
