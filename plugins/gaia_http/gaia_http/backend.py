"""The ``http`` backend: objects at ``<base_url>/<id>/<fingerprint>/<file>``.

Works with any server that does PUT/GET/HEAD on file URLs. Uploads go to a temporary
name and are renamed with WebDAV ``MOVE`` so readers never see a partial object; a server
without MOVE (405/501) gets a direct PUT instead, remembered for the session. Listing
uses the original's ``GET <base>/<id>/?list=1`` JSON contract, or a stock nginx
``autoindex_format json`` directory listing (whose directories are then probed for a
manifest).
"""

from __future__ import annotations

import os
import secrets as random_tokens
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from gaia_core.backends import MANIFEST, Backend
from gaia_core.errors import BackendError, ObjectNotFound
from gaia_http.config import HttpConfig
from gaia_http.listing import ListingFormatError, parse_listing
from gaia_http.urls import BaseUrl, is_safe_segment

if TYPE_CHECKING:
    import requests

#: a listing bigger than this is refused (hostile or misconfigured server)
MAX_LISTING_BYTES = 8 * 1024 * 1024
_NOT_FOUND = (404, 410)
_AUTH_FAILED = (401, 403)
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class _Retryable(BackendError):
    """A failure that another attempt of a whole upload or download may fix: a body cut
    short, or 429/5xx on a method urllib3 does not replay itself (PUT, MOVE)."""


#: methods whose 429/5xx answers our own loop retries (urllib3 retries the others)
_OWN_RETRY_METHODS = frozenset({"PUT", "MOVE"})


class HttpBackend(Backend):
    kind = "http"
    config_model = HttpConfig
    config: HttpConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._session: requests.Session | None = None
        self._base: BaseUrl | None = None
        #: False once the server answered MOVE with 405/501
        self.move_supported = True

    # -- settings ---------------------------------------------------------------------

    def base(self) -> BaseUrl:
        if self._base is None:
            raw = self.setting("base_url", required=True)
            assert raw is not None
            self._base = BaseUrl(raw, f"checkpoints.backends.http.{self.name}.base_url")
        return self._base

    def secrets(self) -> list[str]:
        found = [self.setting("token") or ""]
        try:
            found.append(self.base().password)
        except BackendError:
            pass
        return [s for s in found if s]

    def describe(self) -> str:
        try:
            return f"{self.ref} ({self.base().display})"
        except BackendError:
            return self.ref

    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.config.connect_timeout, self.config.read_timeout)

    def session(self) -> requests.Session:
        """The shared session, built on first use after the safety checks."""
        if self._session is not None:
            return self._session
        import requests.auth

        from gaia_http.session import BearerAuth, make_session

        base = self.base()
        token = self.setting("token")
        where = f"checkpoints.backends.http.{self.name}"
        if token and (any(ch.isspace() for ch in token) or not token.isprintable()):
            raise BackendError(f"{where}.token contains whitespace or control characters")
        has_credentials = bool(token or base.password)
        if has_credentials and base.scheme == "http" and not base.is_loopback() and not self.config.allow_insecure_token:
            raise BackendError(
                f"refusing to send credentials over plain http to {base.host}; use https "
                f"or set {where}.allow_insecure_token = true"
            )
        auth: requests.auth.AuthBase | None = None
        if token:
            auth = BearerAuth(token)
        elif base.username or base.password:
            auth = requests.auth.HTTPBasicAuth(base.username, base.password)
        ca_bundle = self.setting("ca_bundle")
        if ca_bundle and not Path(ca_bundle).is_file():
            raise BackendError(f"{where}.ca_bundle {ca_bundle} is not a file")
        self._session = make_session(
            auth=auth, verify=ca_bundle or True, retries=self.config.retries, backoff=self.config.backoff
        )
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        response = self._request("HEAD", "probe", key, self.base().url(key), allow_redirects=True)
        with response:
            if response.status_code in _NOT_FOUND:
                return False
            if 200 <= response.status_code < 300:
                return True
            self._fail("probe", key, response)

    def upload(self, key: str, source: Path) -> None:
        self._with_retries("upload", key, lambda: self._upload_once(key, Path(source)))

    def download(self, key: str, dest: BinaryIO) -> None:
        start = dest.tell() if dest.seekable() else None

        def attempt() -> None:
            if start is not None:
                dest.seek(start)
                dest.truncate()
            self._download_once(key, dest)

        self._with_retries("download", key, attempt, can_retry=start is not None)

    def list_fingerprints(self, point_id: str) -> list[str]:
        if not is_safe_segment(point_id):
            raise BackendError(f"refusing unsafe point id {point_id!r}")
        url = self.base().url(point_id, directory=True) + "?list=1"
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        response = self._request("GET", "list", point_id, url, headers=headers, stream=True)
        with response:
            if response.status_code in _NOT_FOUND:
                return []
            if not 200 <= response.status_code < 300:
                self._fail("list", point_id, response)
            body = self._read_bounded(response, point_id)
        try:
            listing = parse_listing(body)
        except ListingFormatError as exc:
            raise BackendError(self._message("list", point_id, str(exc))) from None
        if listing.complete:
            return listing.names
        return [fp for fp in listing.names if self.exists(f"{point_id}/{fp}/{MANIFEST}")]

    # -- upload -----------------------------------------------------------------------

    def _upload_once(self, key: str, source: Path) -> None:
        if self.move_supported:
            directory, name = key.rsplit("/", 1)
            temp_key = f"{directory}/{name}.tmp-{random_tokens.token_hex(6)}"
            self._put(key, temp_key, source)
            if self._move(key, temp_key):
                return
            self.move_supported = False
            self._delete_quietly(temp_key)
        self._put(key, key, source)

    def _put(self, key: str, target_key: str, source: Path) -> None:
        """PUT ``source`` at ``target_key``; on 409 create the parent collections once."""
        from gaia_http.session import FileBody

        for first_try in (True, False):
            with source.open("rb") as body:
                size = os.fstat(body.fileno()).st_size
                headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
                # requests turns an empty streamed body into chunked encoding: send b""
                data = FileBody(body, size) if size else b""
                response = self._request(
                    "PUT", "upload", key, self.base().url(target_key), data=data, headers=headers, allow_redirects=False
                )
            with response:
                if 200 <= response.status_code < 300:
                    return
                if response.status_code == 409 and first_try:
                    self._make_collections(key, target_key)
                    continue
                self._fail("upload", key, response)

    def _make_collections(self, key: str, target_key: str) -> None:
        """MKCOL the base URL and every directory of ``target_key``, for servers that
        do not create parents on PUT (nginx does with create_full_put_path)."""
        parts = target_key.split("/")[:-1]
        urls = [self.base().root + "/"]
        urls += [self.base().url("/".join(parts[: i + 1]), directory=True) for i in range(len(parts))]
        for url in urls:
            response = self._request("MKCOL", "upload", key, url, allow_redirects=False)
            with response:
                # 405: the collection already exists
                if not (200 <= response.status_code < 300 or response.status_code == 405):
                    self._fail("upload (MKCOL)", key, response)

    def _move(self, key: str, temp_key: str) -> bool:
        """Rename ``temp_key`` to ``key``; False when the server does not do MOVE."""
        headers = {"Destination": self.base().url(key), "Overwrite": "T"}
        try:
            response = self._request("MOVE", "upload", key, self.base().url(temp_key), headers=headers, allow_redirects=False)
        except BackendError:
            self._delete_quietly(temp_key)
            raise
        with response:
            if 200 <= response.status_code < 300:
                return True
            if response.status_code in (405, 501):
                return False
            self._delete_quietly(temp_key)
            self._fail("upload (MOVE)", key, response)

    def _delete_quietly(self, key: str) -> None:
        """Best-effort removal of a temporary object; leftovers are never listed."""
        try:
            self._request("DELETE", "cleanup", key, self.base().url(key), allow_redirects=False).close()
        except BackendError:
            pass

    # -- download ---------------------------------------------------------------------

    def _download_once(self, key: str, dest: BinaryIO) -> None:
        import http.client

        import urllib3.exceptions

        from gaia_http.session import transport_reason

        headers = {"Accept-Encoding": "identity"}
        response = self._request("GET", "download", key, self.base().url(key), headers=headers, stream=True)
        with response:
            if response.status_code in _NOT_FOUND:
                raise ObjectNotFound(self._message("download", key, f"not found (HTTP {response.status_code})"))
            if response.status_code != 200:
                self._fail("download", key, response)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise BackendError(self._message("download", key, f"server sent Content-Encoding {encoding[:20]!r}"))
            expected = self._content_length(response, key)
            received = 0
            try:
                # raw bytes, never decoded: what we write is exactly what the server sent
                for chunk in _body_chunks(response):
                    dest.write(chunk)
                    received += len(chunk)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                reason = transport_reason(exc, *self._timeout)
                raise _Retryable(self._message("download", key, f"{reason} after {received} bytes")) from None
            if expected is not None and received != expected:
                raise _Retryable(self._message("download", key, f"short body: {received} of {expected} bytes"))

    def _content_length(self, response: requests.Response, key: str) -> int | None:
        value = response.headers.get("Content-Length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise BackendError(self._message("download", key, "invalid Content-Length"))
        return int(value)

    def _read_bounded(self, response: requests.Response, point_id: str) -> bytes:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise BackendError(self._message("list", point_id, f"server sent Content-Encoding {encoding[:20]!r}"))
        import urllib3.exceptions

        from gaia_http.session import transport_reason

        body = bytearray()
        try:
            for chunk in response.raw.stream(64 * 1024, decode_content=False):
                body += chunk
                if len(body) > MAX_LISTING_BYTES:
                    raise BackendError(self._message("list", point_id, f"listing larger than {MAX_LISTING_BYTES} bytes"))
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            raise BackendError(self._message("list", point_id, transport_reason(exc, *self._timeout))) from None
        return bytes(body)

    # -- plumbing ---------------------------------------------------------------------

    def _request(self, method: str, operation: str, key: str, url: str, **kwargs: Any) -> requests.Response:
        """One request; transport failures become :class:`_Retryable` with a short reason."""
        import requests

        from gaia_http.session import is_connect_failure, transport_reason

        session = self.session()
        try:
            return session.request(method, url, timeout=self._timeout, **kwargs)
        except (requests.exceptions.RequestException, OSError) as exc:
            message = self._message(operation, key, transport_reason(exc, *self._timeout))
            if is_connect_failure(exc):
                # urllib3 already retried the connection with backoff: final
                raise BackendError(message) from None
            raise _Retryable(message) from None

    def _with_retries(self, operation: str, key: str, attempt: Any, *, can_retry: bool = True) -> None:
        """Run ``attempt`` again after transport errors, 429 and 5xx, with exponential backoff."""
        tries = self.config.retries + 1 if can_retry else 1
        for number in range(tries):
            try:
                attempt()
                return
            except _Retryable as exc:
                if number + 1 == tries:
                    suffix = f" (after {tries} attempts)" if tries > 1 else ""
                    raise BackendError(f"{exc}{suffix}") from None
                time.sleep(min(self.config.backoff * 2**number, 30.0))

    def _fail(self, operation: str, key: str, response: requests.Response) -> NoReturn:
        status = response.status_code
        if status in _AUTH_FAILED:
            reason = f"authentication failed (HTTP {status}); check token / token_env"
        elif status == 413:
            reason = "HTTP 413: the server refuses a body this large (nginx: client_max_body_size 0)"
        elif 300 <= status < 400:
            reason = f"unexpected redirect (HTTP {status}); point base_url at the final location"
        else:
            reason = f"HTTP {status}"
        message = self._message(operation, key, reason)
        if status in _RETRYABLE and response.request.method in _OWN_RETRY_METHODS:
            raise _Retryable(message)
        raise BackendError(message)

    def _message(self, operation: str, key: str, reason: str) -> str:
        try:
            where = self.base().display
        except BackendError:
            where = self.ref
        return self.redact(f"HTTP {operation} of {key} at {where} failed: {reason}")


def _body_chunks(response: requests.Response) -> Iterator[memoryview | bytes]:
    """The undecoded body, read into one reused buffer.

    urllib3's own ``stream()`` allocates a new bytes object per read (and its
    ``readinto`` copies from one); the ``http.client`` response under it reads straight
    into our buffer, de-chunking and stopping at Content-Length itself. Each view is
    only valid until the next one is yielded: the caller writes it out first.
    """
    import http.client

    from gaia_http.session import RECV_CHUNK

    inner = getattr(response.raw, "_fp", None)
    if not isinstance(inner, http.client.HTTPResponse):
        # another urllib3 layout: its public, copying API
        yield from response.raw.stream(RECV_CHUNK, decode_content=False)
        return
    buffer = bytearray(RECV_CHUNK)
    view = memoryview(buffer)
    while count := inner.readinto(buffer):
        yield view[:count]
