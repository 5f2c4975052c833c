"""Turn boto3 / botocore / s3transfer failures into short, structured facts.

Decisions use error codes and HTTP statuses, never message text. Server messages are
hostile input: they are cut short and stripped of control characters before they reach
a message (which the backend then redacts).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterator
from typing import Any

from gaia_core.errors import exception_chain
from gaia_core.retry import Failure as Retry

#: codes S3 and compatible stores use for "this key does not exist" (HEAD has no body: "404")
KEY_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
BUCKET_NOT_FOUND = frozenset({"NoSuchBucket"})
#: a create-only put found the key (412), or an abort found no such multipart upload
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
NO_SUCH_UPLOAD = frozenset({"NoSuchUpload"})
#: a ranged GET that starts at or past the end of the object
RANGE_NOT_SATISFIABLE = frozenset({"InvalidRange", "416"})
#: answers another attempt may fix: throttling, a server's own timeout, a conditional
#: write that raced another (AWS asks to retry those)
TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ConditionalRequestConflict", "InternalError"}
)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
MAX_DETAIL = 160


@dataclasses.dataclass(frozen=True)
class Failure:
    code: str | None
    status: int | None
    detail: str
    #: whether (and how) another attempt may succeed; None: it cannot
    retry: Retry | None = None
    #: the store did not answer, or not in time (the core skips it for the run)
    unavailable: bool = False

    @property
    def key_not_found(self) -> bool:
        return self.code in KEY_NOT_FOUND

    @property
    def bucket_not_found(self) -> bool:
        return self.code in BUCKET_NOT_FOUND

    @property
    def precondition_failed(self) -> bool:
        return self.code in PRECONDITION_FAILED

    @property
    def no_such_upload(self) -> bool:
        return self.code in NO_SUCH_UPLOAD

    @property
    def range_not_satisfiable(self) -> bool:
        return self.code in RANGE_NOT_SATISFIABLE or self.status == 416

    def render(self) -> str:
        if self.code and self.status and self.code != str(self.status):
            head = f"{self.code} (HTTP {self.status})"
        elif self.status:
            head = f"HTTP {self.status}"
        else:
            head = self.code or ""
        if head and self.detail:
            return f"{head}: {self.detail}"
        return head or self.detail or "unknown error"


class Redirected(Exception):
    """The endpoint answered with a redirect, which gaia never follows for S3."""

    def __init__(self, status: int, location: str | None, region: str | None):
        super().__init__(f"HTTP {status}")
        self.status = status
        #: the host the answer points at (its Location, or the endpoint S3 names), if any
        self.location = location
        #: the bucket's region, when S3 says
        self.region = region

    def describe(self) -> str:
        where = f"a redirect to {self.location}" if self.location else "a redirect without a location"
        hint = f"; the bucket is in region '{self.region}': set region" if self.region else \
            "; set endpoint_url to the final location"
        return f"{where}, which gaia does not follow (each S3 request is signed for the configured endpoint){hint}"


def refuse_redirects(response: Any = None, **kwargs: Any) -> None:
    """A ``needs-retry.s3`` handler registered first: any 3xx answer ends the request.

    botocore's own S3 region redirector would re-send a signed request to whichever
    region or host the answer names, and asks the bucket's region with a HEAD through the
    same client, which a server answering 3xx to everything turns into endless recursion.
    """
    if response is None or response[0] is None:
        return
    http, parsed = response
    if not 300 <= http.status_code < 400 or http.status_code == 304:
        return
    headers = http.headers or {}
    error = (parsed or {}).get("Error", {}) or {}
    location = headers.get("Location")
    if isinstance(location, str) and location.strip():
        location = urllib.parse.urljoin(str(getattr(http, "url", "") or ""), location.strip())
    location = _host_of(location) or _host_of(error.get("Endpoint"), bare=True)
    region = headers.get("x-amz-bucket-region") or error.get("Region")
    raise Redirected(http.status_code, location, clean(str(region)) if region else None)


def _host_of(value: Any, *, bare: bool = False) -> str | None:
    """``host[:port]`` of a URL (or of a bare host name, as S3's ``Endpoint`` element)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip() if not bare or "//" in value else f"//{value.strip()}"
    try:
        parts = urllib.parse.urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return clean(f"{host}:{port}" if port else host)


def analyse(exc: BaseException) -> Failure:
    """The code, status and a short description of ``exc`` or of the error it wraps."""
    from botocore.exceptions import BotoCoreError, ClientError

    exc = _unwrap(exc)
    if isinstance(exc, Redirected):
        return Failure(str(exc.status), exc.status, exc.describe())
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "") or (str(status) if status else None)
        retry = Retry.TRANSIENT if code in TRANSIENT_CODES or status in TRANSIENT_STATUSES else None
        return Failure(code, status, clean(str(error.get("Message") or "")), retry, status in UNAVAILABLE_STATUSES)
    retry = transport_retry(exc)
    if isinstance(exc, BotoCoreError):
        return Failure(None, None, _describe(exc), retry, retry is not None)
    if isinstance(exc, OSError):
        return Failure(None, None, f"{type(exc).__name__}: {clean(exc.strerror or str(exc))}", retry, retry is not None)
    return Failure(None, None, f"{type(exc).__name__}: {clean(str(exc))}")


def transport_retry(exc: BaseException) -> Retry | None:
    """How another attempt may help after a failure below HTTP; None for TLS and
    configuration errors, which another attempt repeats."""
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
        SSLError,
    )

    chain = list(_chain(exc))
    if any(isinstance(item, SSLError) for item in chain):
        return None
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return Retry.REFUSED
    if any(isinstance(item, ConnectTimeoutError | ReadTimeoutError | TimeoutError) for item in chain):
        return Retry.STALLED
    if any(isinstance(item, EndpointConnectionError) for item in chain):
        return Retry.REFUSED  # no connection: DNS, unreachable network
    if any(isinstance(item, ConnectionClosedError | ResponseStreamingError | IncompleteReadError | ConnectionError)
           for item in chain):
        return Retry.TRANSIENT
    return None


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    # botocore's texts carry the endpoint URL, which the caller already names
    if isinstance(exc, ConnectTimeoutError):
        return "no connection within the connect_timeout"
    if isinstance(exc, ReadTimeoutError):
        return "no data moved for the stall_timeout"
    if isinstance(exc, EndpointConnectionError):
        refused = any(isinstance(item, ConnectionRefusedError) for item in _chain(exc))
        return "connection refused" if refused else "could not connect to the endpoint"
    return f"{type(exc).__name__}: {clean(str(exc))}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """botocore wraps the socket error in its ``error`` kwarg and in ``last_exception``."""

    def wrapped(e: BaseException) -> tuple[object, ...]:
        kwargs = getattr(e, "kwargs", None)
        return (kwargs.get("error") if isinstance(kwargs, dict) else None, getattr(e, "last_exception", None))

    return exception_chain(exc, wrapped)


def _unwrap(exc: BaseException) -> BaseException:
    """s3transfer and boto3 wrap the real error; follow the chain to it."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ClientError, BotoCoreError, Redirected)):
            return current
        last = getattr(current, "last_exception", None)  # RetriesExceededError
        current = last if isinstance(last, BaseException) else (current.__cause__ or current.__context__)
    return exc


def clean(text: str) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
