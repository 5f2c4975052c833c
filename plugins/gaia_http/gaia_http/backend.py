"""The ``http`` backend: objects at ``<base_url>/<key>`` (``points/<id>/<fingerprint>/<file>``,
``packs/<pack id>.pack`` and ``.idx``).

Works with any server that does PUT/GET/HEAD on file URLs. Uploads go to a temporary
name (``<file>.tmp-<host>-<pid>-<random>``) and are renamed with WebDAV ``MOVE``, so
readers never see a partial object; a create-only publish moves with ``Overwrite: F``,
which a WebDAV server refuses with 412 when the name exists. A server without MOVE
(405/501) gets a direct PUT instead (conditional, ``If-None-Match: *``, for a publish),
remembered for the session. A listing is ``GET <base>/<dir>/?list=1``: the contract's
``{"entries": [...]}`` (gaia's extension of the original's fingerprint list, for any
directory) or a stock nginx ``autoindex_format json`` listing, both with sizes, mtimes and
the temporaries of killed uploads (:mod:`.listing`). A ranged read asks for ``Range`` and
takes a 206 of exactly that range; from a server that ignores ``Range`` (a 200 with the
whole body) it keeps the range and stops reading there.

Every operation is one call of :func:`gaia_core.retry.retrying`: probes and listings
within ``probe_timeout`` in total, transfers bounded by ``stall_timeout`` per stall.

Redirects: a read (HEAD, GET) follows at most 5; while the backend holds credentials (a
token, or a password in the base URL) only within the base URL's origin (scheme, host and
port), so a redirect never takes them elsewhere. A write follows none. Any other redirect
is an error naming its status and the host it points at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar

from gaia_core.backends import MANIFEST, POINTS, Backend, Entry, Progress
from gaia_core.errors import BackendError, BackendUnavailable, ConfigError, ObjectExists, ObjectNotFound
from gaia_core.retry import (
    CallerCode,
    Deadline,
    Failure,
    Retryable,
    RetryPolicy,
    is_litter,
    is_temporary,
    probe_timed_out,
    retrying,
    run_caller_aware,
    temporary_name,
    temporary_of,
)
from gaia_http.config import HttpConfig
from gaia_http.listing import Listing, ListingFormatError, parse_listing
from gaia_http.urls import BaseUrl, UrlProblem, is_safe_segment

if TYPE_CHECKING:
    import requests

T = TypeVar("T")

#: an upload larger than this first checks, with an empty object, that the server does MOVE
MOVE_PROBE_ABOVE = 1 << 20
#: a listing bigger than this is refused (hostile or misconfigured server)
MAX_LISTING_BYTES = 8 * 1024 * 1024
#: redirects a read (HEAD, GET) follows at most, within the base URL's origin while the
#: backend holds credentials; writes follow none
MAX_REDIRECTS = 5
_NOT_FOUND = (404, 410)
_AUTH_FAILED = (401, 403)
#: ``bytes <first>-<last>/<size or *>``
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(?:\d+|\*)$")


class HttpBackend(Backend):
    kind = "http"
    config_model = HttpConfig
    #: the token, and the base URL, which may carry a password (basic auth)
    credential_fields = ("token_env", "base_url_env")
    config: HttpConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._session: requests.Session | None = None
        self._base: BaseUrl | None = None
        #: False once the server answered MOVE with 405/501
        self.move_supported = True
        #: True once a MOVE succeeded
        self._move_confirmed = False
        #: whether requests carry a token or a password (then redirects stay on the origin)
        self.credentials = False

    # -- settings ---------------------------------------------------------------------

    def base(self) -> BaseUrl:
        if self._base is None:
            self._check_environment()
            raw = self.setting("base_url", required=True)
            assert raw is not None
            self._base = BaseUrl(raw)  # checked: by the model, or by environment_problems
        return self._base

    def environment_problems(self) -> list[str]:
        problems = []
        if not self.config.base_url.strip() and (raw := self.variable("base_url_env")):
            try:
                BaseUrl(raw)
            except UrlProblem as problem:
                problems.append(f"{self._where('base_url_env')} {problem}")
        token = self.variable("token_env")
        if token and (any(ch.isspace() for ch in token) or not token.isprintable()):
            problems.append(f"{self._where('token_env')} contains whitespace or control characters")
        if not self.config.ca_bundle and (bundle := self.variable("ca_bundle_env")):
            if "\0" in bundle or not Path(bundle).is_file():
                problems.append(f"{self._where('ca_bundle_env')} does not name an existing file")
        return problems

    def _where(self, env_field: str) -> str:
        return f"{self.key(env_field)} (env var '{getattr(self.config, env_field)}')"

    def _check_environment(self) -> None:
        problems = self.environment_problems()
        if problems:
            raise ConfigError(problems)

    def secrets(self) -> list[str]:
        found = [self.variable("token_env") or ""]
        raw = self.config.base_url.strip() or self.variable("base_url_env")
        try:
            found.append(BaseUrl(raw).password if raw else "")
        except UrlProblem:
            pass
        return [s for s in found if s]

    def describe(self) -> str:
        try:
            return f"{self.ref} ({self.base().display})"
        except (BackendError, ConfigError):
            return self.ref

    def session(self) -> requests.Session:
        """The shared session, built on first use after the safety checks."""
        if self._session is not None:
            return self._session
        import requests.auth

        from gaia_http.session import BearerAuth, make_session

        base = self.base()
        token = self.setting("token")
        where = f"checkpoints.backends.http.{self.name}"
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
        if ca_bundle and ("\0" in ca_bundle or not Path(ca_bundle).is_file()):
            raise BackendError(f"{where}.ca_bundle {ca_bundle!r} is not a file")
        self._session = make_session(auth=auth, verify=ca_bundle or True, stall_timeout=self.stall_timeout)
        self.credentials = has_credentials
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(transient_attempts=self.config.retries + 1, backoff=self.config.backoff)

    def _run(
        self, attempt: Callable[[Deadline], T], *, probe: bool, on_retry: Callable[[Retryable], None] | None = None
    ) -> T:
        """One operation: its attempts share one budget (``probe_timeout`` for probes)."""
        self.session()  # configuration problems fail before any attempt
        deadline = Deadline(self.probe_timeout if probe else None)
        return retrying(attempt, deadline=deadline, policy=self._policy, on_retry=on_retry)

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        url = self.base().url(key)
        return self._run(lambda deadline: self._exists_once(key, url, deadline), probe=True)

    def _exists_once(self, key: str, url: str, deadline: Deadline) -> bool:
        with self._request("HEAD", "probe", key, url, deadline, follow=True) as response:
            if response.status_code in _NOT_FOUND:
                return False
            if 200 <= response.status_code < 300:
                return True
            self._fail("probe", key, response)

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        source = Path(source)
        caller = CallerCode(progress=progress)
        self._run_transfer(lambda deadline: self._upload_once(key, source, deadline, caller), caller)
        self._remove_litter(key)

    def publish(self, key: str, source: Path) -> None:
        source = Path(source)
        self._run_transfer(lambda deadline: self._publish_once(key, source, deadline), CallerCode())

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        caller = CallerCode(dest, progress)

        def attempt(deadline: Deadline) -> None:
            self._download_once(key, deadline, caller)

        # a retry starts over into dest (seek(0), truncate()), or there is none
        self._run_transfer(attempt, caller, on_retry=caller.start_over)

    def read_small(self, key: str, limit: int) -> bytes:
        url = self.base().url(key)

        def attempt(deadline: Deadline) -> bytes:
            headers = {"Accept-Encoding": "identity"}
            with self._request(
                "GET", "read", key, url, deadline, headers=headers, stream=True, follow=True
            ) as response:
                if response.status_code in _NOT_FOUND:
                    raise ObjectNotFound(self._message("read", key, f"not found (HTTP {response.status_code})"))
                if response.status_code != 200:
                    self._fail("read", key, response)
                return self._read_bounded("read", key, response, deadline, limit=limit)

        return self._run(attempt, probe=True)

    def delete(self, key: str) -> None:
        url = self.base().url(key)

        def attempt(deadline: Deadline) -> None:
            with self._request("DELETE", "delete", key, url, deadline) as response:
                if 200 <= response.status_code < 300 or response.status_code in _NOT_FOUND:
                    return
                self._fail("delete", key, response)

        self._run(attempt, probe=False)

    def list_entries(self, point_id: str) -> list[Entry]:
        if not is_safe_segment(point_id):
            raise BackendError(f"refusing unsafe point id {point_id!r}")
        return self._run(lambda deadline: self._entries_once(point_id, deadline), probe=True)

    def list_files(self, prefix: str) -> list[Entry]:
        directory = prefix.strip("/")

        def attempt(deadline: Deadline) -> list[Entry]:
            listing = self._directory_listing(directory, deadline, need_files=True)
            return [] if listing is None else _files_of(directory, listing)

        return self._run(attempt, probe=True)

    def list_dirs(self, prefix: str) -> list[str]:
        directory = prefix.strip("/")

        def attempt(deadline: Deadline) -> list[str]:
            listing = self._directory_listing(directory, deadline, need_files=True)
            return [] if listing is None else listing.names

        return self._run(attempt, probe=True)

    def read_range(self, key: str, offset: int, length: int) -> bytearray:
        if offset < 0 or length < 0:
            raise ValueError(f"a range needs a non-negative offset and length, not {offset}, {length}")
        if length == 0:
            if not self.exists(key):
                raise ObjectNotFound(self._message("ranged read", key, "not found"))
            return bytearray()
        url = self.base().url(key)
        return self._run(lambda deadline: self._read_range_once(key, url, offset, length, deadline), probe=False)

    # -- upload -----------------------------------------------------------------------

    def _run_transfer(
        self, attempt: Callable[[Deadline], T], caller: CallerCode, *, on_retry: Callable[[Retryable], None] | None = None
    ) -> T:
        return run_caller_aware(lambda: self._run(attempt, probe=False, on_retry=on_retry), caller)

    def _upload_once(self, key: str, source: Path, deadline: Deadline, caller: CallerCode) -> None:
        if self.move_supported and not self._move_confirmed and _size_of(source) > MOVE_PROBE_ABOVE:
            self._probe_move(key, deadline)
        if self.move_supported:
            temp_key = _temporary_key(key)
            self._put(key, temp_key, source, deadline, caller)
            if self._move(key, temp_key, deadline, overwrite=True):
                return
        self._put(key, key, source, deadline, caller)

    def _probe_move(self, key: str, deadline: Deadline) -> None:
        """Learn whether the server does MOVE with an empty temporary object, before a
        large body goes to a temporary name that a server without MOVE could not rename
        (each backend instance, one per transfer thread, learns it once)."""
        probe_key, moved_key = _temporary_key(key), _temporary_key(key)
        self._put(key, probe_key, Path(os.devnull), deadline, CallerCode())  # an empty body
        if self._move(moved_key, probe_key, deadline, overwrite=True):
            self._delete_quietly(moved_key, deadline)
            self._move_confirmed = True

    def _publish_once(self, key: str, source: Path, deadline: Deadline) -> None:
        if self.move_supported:
            temp_key = _temporary_key(key)
            self._put(key, temp_key, source, deadline, CallerCode())
            if self._move(key, temp_key, deadline, overwrite=False):
                return
        # No MOVE: a PUT that RFC 9110 servers refuse (412) when the name exists. Servers
        # that ignore If-None-Match on PUT (nginx does) make this create-only only as far
        # as the HEAD before it can tell.
        if self._exists_once(key, self.base().url(key), deadline):
            raise ObjectExists(self._message("publish", key, "the object already exists"))
        self._put(key, key, source, deadline, CallerCode(), create_only=True)

    def _put(
        self, key: str, target_key: str, source: Path, deadline: Deadline, caller: CallerCode, *, create_only: bool = False
    ) -> None:
        """PUT ``source`` at ``target_key``; on 409 create the parent collections once."""
        from gaia_http.session import FileBody

        operation = "publish" if create_only else "upload"
        for first_try in (True, False):
            try:
                body = source.open("rb")
            except OSError as exc:
                raise BackendError(self._message(operation, key, f"cannot read {source}: {exc.strerror}")) from None
            with body:
                size = os.fstat(body.fileno()).st_size
                headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
                if create_only:
                    headers["If-None-Match"] = "*"
                # requests turns an empty streamed body into chunked encoding: send b""
                data = FileBody(body, size, caller.progress if caller.wants_progress else None) if size else b""
                response = self._request(
                    "PUT", operation, key, self.base().url(target_key), deadline,
                    caller=caller, data=data, headers=headers,
                )  # fmt: skip
            with response:
                if 200 <= response.status_code < 300:
                    return
                if response.status_code == 412 and create_only:
                    raise ObjectExists(self._message(operation, key, "the object already exists (HTTP 412)"))
                if response.status_code == 409 and first_try:
                    self._make_collections(key, target_key, deadline)
                    continue
                self._fail(operation, key, response)

    def _make_collections(self, key: str, target_key: str, deadline: Deadline) -> None:
        """MKCOL the base URL and every directory of ``target_key``, for servers that
        do not create parents on PUT (nginx does with create_full_put_path)."""
        parts = target_key.split("/")[:-1]
        urls = [self.base().root + "/"]
        urls += [self.base().url("/".join(parts[: i + 1]), directory=True) for i in range(len(parts))]
        for url in urls:
            with self._request("MKCOL", "upload", key, url, deadline) as response:
                # 405: the collection already exists
                if not (200 <= response.status_code < 300 or response.status_code == 405):
                    self._fail("upload (MKCOL)", key, response)

    def _move(self, key: str, temp_key: str, deadline: Deadline, *, overwrite: bool) -> bool:
        """Rename ``temp_key`` to ``key``; False when the server does not do MOVE.

        With ``overwrite`` False an existing ``key`` stays and :class:`ObjectExists` is
        raised. A temporary whose MOVE got no answer stays behind as litter (removed by
        a later upload of the key or by gc): asking a server that does not answer to
        delete it would only cost another timeout.
        """
        operation = "upload" if overwrite else "publish"
        headers = {"Destination": self.base().url(key), "Overwrite": "T" if overwrite else "F"}
        url = self.base().url(temp_key)
        with self._request("MOVE", operation, key, url, deadline, headers=headers) as response:
            status = response.status_code
            if 200 <= status < 300:
                self._move_confirmed = True
                return True
        self._delete_quietly(temp_key, deadline)
        if status in (405, 501):
            self.move_supported = False
            return False
        if status == 412 and not overwrite:
            raise ObjectExists(self._message(operation, key, "the object already exists (HTTP 412)"))
        self._fail(f"{operation} (MOVE)", key, response)

    def _delete_quietly(self, key: str, deadline: Deadline) -> None:
        """Best-effort removal of a temporary object of ours."""
        try:
            self._request("DELETE", "cleanup", key, self.base().url(key), deadline).close()
        except (BackendError, Retryable):
            pass

    def _remove_litter(self, key: str) -> None:
        """Delete temporaries of ``key`` older than an hour: uploads killed before their
        MOVE. Needs a listing with mtimes (nginx autoindex); best effort, never fails the
        upload that succeeded."""
        directory, name = key.rsplit("/", 1)
        deadline = Deadline(self.probe_timeout)
        try:
            listing = self._directory_listing(directory, deadline)
            if listing is None:
                return
            for item in listing.files:
                if temporary_of(name, item.name) and is_litter(item.mtime):
                    self._delete_quietly(f"{directory}/{item.name}", deadline)
        except (BackendError, Retryable):
            pass

    # -- download ---------------------------------------------------------------------

    def _download_once(self, key: str, deadline: Deadline, caller: CallerCode) -> None:
        """Stream ``key`` into the caller's destination."""
        import http.client

        import urllib3.exceptions

        from gaia_http.session import classify, transport_reason

        headers = {"Accept-Encoding": "identity"}
        with self._request(
            "GET", "download", key, self.base().url(key), deadline, headers=headers, stream=True, follow=True
        ) as response:
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
                    caller.write(chunk)
                    received += len(chunk)
                    caller.progress(len(chunk))
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                if caller.raised is not None:
                    raise
                reason = transport_reason(exc, self.connect_timeout, self.stall_timeout)
                failure = classify(exc) or Failure.TRANSIENT
                error = BackendUnavailable(self._message("download", key, f"{reason} after {received} bytes"))
                raise Retryable(error, failure) from None
            if expected is not None and received != expected:
                error = BackendError(self._message("download", key, f"short body: {received} of {expected} bytes"))
                raise Retryable(error, Failure.TRANSIENT)

    def _content_length(self, response: requests.Response, key: str) -> int | None:
        value = response.headers.get("Content-Length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise BackendError(self._message("download", key, "invalid Content-Length"))
        return int(value)

    def _read_range_once(self, key: str, url: str, offset: int, length: int, deadline: Deadline) -> bytearray:
        """One ranged GET into a buffer of at most ``length`` bytes."""
        import http.client

        import urllib3.exceptions

        from gaia_http.session import classify, transport_reason

        headers = {"Accept-Encoding": "identity", "Range": f"bytes={offset}-{offset + length - 1}"}
        with self._request("GET", "ranged read", key, url, deadline, headers=headers, stream=True) as response:
            status = response.status_code
            if status in _NOT_FOUND:
                raise ObjectNotFound(self._message("ranged read", key, f"not found (HTTP {status})"))
            if status == 416:
                return bytearray()  # the object ends before the range starts
            if status not in (200, 206):
                self._fail("ranged read", key, response)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise BackendError(self._message("ranged read", key, f"server sent Content-Encoding {encoding[:20]!r}"))
            skip, size = self._range_in_answer(response, key, offset, length)
            # a 200 of unknown length may end anywhere: the object is just shorter
            exact = response.status_code == 206 or "Content-Length" in response.headers
            try:
                return _read_into(response, skip, size, exact=exact)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                reason = transport_reason(exc, self.connect_timeout, self.stall_timeout)
                error = BackendUnavailable(self._message("ranged read", key, reason))
                raise Retryable(error, classify(exc) or Failure.TRANSIENT) from None
            except _ShortBody as short:
                error = BackendError(self._message("ranged read", key, f"short body: {short}"))
                raise Retryable(error, Failure.TRANSIENT) from None

    def _range_in_answer(self, response: requests.Response, key: str, offset: int, length: int) -> tuple[int, int]:
        """(bytes to skip, bytes to keep) of the body: a 206 holds exactly the range (or
        its part before the object ends); a 200 is the whole object, from which the range
        is cut while it streams past."""
        declared = self._content_length(response, key)
        if response.status_code == 200:
            total = offset + length if declared is None else declared
            return offset, max(0, min(length, total - offset))
        content_type = response.headers.get("Content-Type", "").lower()
        found = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if content_type.startswith("multipart/") or found is None:
            raise BackendError(self._message("ranged read", key, "HTTP 206 without a single Content-Range"))
        first, last = int(found.group(1)), int(found.group(2))
        if first != offset or last < first or last >= offset + length or (
            declared is not None and declared != last - first + 1
        ):
            raise BackendError(self._message(
                "ranged read", key, f"asked for bytes {offset}-{offset + length - 1}, got {first}-{last}"))
        return 0, last - first + 1

    # -- listing ----------------------------------------------------------------------

    def _entries_once(self, point_id: str, deadline: Deadline) -> list[Entry]:
        point_dir = f"{POINTS}/{point_id}"
        listing = self._directory_listing(point_dir, deadline)
        if listing is None:
            return []
        if listing.complete:
            # the original contract names complete objects only: their manifests
            return [Entry(key=f"{point_dir}/{fp}/{MANIFEST}", size=None, mtime=None) for fp in listing.names]
        entries = []
        for folder in listing.names:
            directory = f"{point_dir}/{folder}"
            inner = self._directory_listing(directory, deadline, need_files=True)
            entries += [] if inner is None else _files_of(directory, inner)
        return entries

    def _directory_listing(self, path: str, deadline: Deadline, *, need_files: bool = False) -> Listing | None:
        """The listing of directory ``path`` (``GET <path>/?list=1``); None when it does
        not exist. With ``need_files``, a server that answers with the original contract's
        fingerprint list (which names no files) is an error."""
        url = self.base().url(path, directory=True) + "?list=1"
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        with self._request("GET", "list", path, url, deadline, headers=headers, stream=True, follow=True) as response:
            if response.status_code in _NOT_FOUND:
                return None
            if not 200 <= response.status_code < 300:
                self._fail("list", path, response)
            body = self._read_bounded("list", path, response, deadline)
        try:
            listing = parse_listing(body)
        except ListingFormatError as exc:
            raise BackendError(self._message("list", path, str(exc))) from None
        if need_files and listing.complete:
            raise BackendError(self._message(
                "list", path, "the server's ?list=1 answer is a fingerprint list, which names no files; "
                "gaia needs the {\"entries\": [...]} listing of any directory (see the gaia-http README)"))
        return listing

    def _read_bounded(
        self, operation: str, key: str, response: requests.Response, deadline: Deadline, *, limit: int | None = None
    ) -> bytes:
        """The body, bounded in size and by ``deadline``. Without ``limit`` (a listing) a
        body past :data:`MAX_LISTING_BYTES` is an error; with it, reading stops after
        ``limit + 1`` bytes, which tell the caller that the object is larger."""
        import urllib3.exceptions

        from gaia_http.session import classify, transport_reason

        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise BackendError(self._message(operation, key, f"server sent Content-Encoding {encoding[:20]!r}"))
        cap = MAX_LISTING_BYTES if limit is None else limit + 1
        body = bytearray()
        try:
            for chunk in response.raw.stream(64 * 1024, decode_content=False):
                body += chunk
                if len(body) >= cap and limit is not None:
                    return bytes(body[:cap])
                if len(body) > cap:
                    raise BackendError(self._message(operation, key, f"listing larger than {MAX_LISTING_BYTES} bytes"))
                if deadline.expired:
                    error = BackendUnavailable(self._message(operation, key, probe_timed_out(self.probe_timeout)))
                    raise Retryable(error, Failure.STALLED)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            failure = classify(exc) or Failure.TRANSIENT
            reason = transport_reason(exc, self.connect_timeout, self.stall_timeout)
            if failure is Failure.STALLED and deadline.spent:
                reason = probe_timed_out(self.probe_timeout)
            raise Retryable(BackendUnavailable(self._message(operation, key, reason)), failure) from None
        return bytes(body)

    # -- plumbing ---------------------------------------------------------------------

    def _request(
        self, method: str, operation: str, key: str, url: str, deadline: Deadline, *, caller: CallerCode | None = None,
        follow: bool = False, **kwargs: Any
    ) -> requests.Response:
        """One request with the deadline's share of the timeouts, following the redirects
        a read may follow (``follow``); transport failures become :class:`Retryable` (or a
        final error when no attempt can help)."""
        for hops in range(MAX_REDIRECTS + 1):
            response = self._send(method, operation, key, url, deadline, caller, kwargs)
            if not (follow and response.is_redirect):
                return response
            with response:
                target = _redirect_target(url, response)
                if hops == MAX_REDIRECTS:
                    self._fail_redirect(operation, key, response, f"more than {MAX_REDIRECTS} redirects")
                if self.credentials and _origin(target) != _origin(url):
                    self._fail_redirect(operation, key, response, "gaia sends its credentials to the base URL's "
                                        "origin only")
            url = target
        raise AssertionError("unreachable")

    def _send(
        self, method: str, operation: str, key: str, url: str, deadline: Deadline, caller: CallerCode | None,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        import requests

        from gaia_http.session import classify, transport_reason

        timeouts = (deadline.cap(self.connect_timeout), deadline.cap(self.stall_timeout))
        try:
            return self.session().request(method, url, timeout=timeouts, allow_redirects=False, **kwargs)
        except (requests.exceptions.RequestException, OSError) as exc:
            if caller is not None and caller.raised is not None:
                raise  # the caller's progress callback raised: run_caller_aware re-raises it
            failure = classify(exc)
            reason = transport_reason(exc, *timeouts)
            if failure is Failure.STALLED and deadline.spent:
                reason = probe_timed_out(self.probe_timeout)
            message = self._message(operation, key, reason)
            if failure is None:
                raise BackendError(message) from None
            raise Retryable(BackendUnavailable(message), failure) from None

    def _fail(self, operation: str, key: str, response: requests.Response) -> NoReturn:
        from gaia_http.session import RETRY_STATUSES, UNAVAILABLE_STATUSES

        status = response.status_code
        if 300 <= status < 400:
            self._fail_redirect(operation, key, response,
                                "a write follows no redirect" if response.is_redirect else "nothing to follow")
        if status in _AUTH_FAILED:
            reason = f"authentication failed (HTTP {status}); check token / token_env"
        elif status == 413:
            reason = "HTTP 413: the server refuses a body this large (nginx: client_max_body_size 0)"
        else:
            reason = f"HTTP {status}"
        message = self._message(operation, key, reason)
        if status in RETRY_STATUSES:
            error_class = BackendUnavailable if status in UNAVAILABLE_STATUSES else BackendError
            raise Retryable(error_class(message), Failure.TRANSIENT)
        raise BackendError(message)

    def _fail_redirect(self, operation: str, key: str, response: requests.Response, why: str) -> NoReturn:
        location = response.headers.get("Location")
        host = _host(_redirect_target(response.url or self.base().root, response)) if location else None
        where = f"a redirect to {host}" if host else "a redirect without a usable location"
        raise BackendError(self._message(
            operation, key, f"HTTP {response.status_code}, {where}, not followed ({why}); point base_url at the "
                            "final location"))

    def _message(self, operation: str, key: str, reason: str) -> str:
        try:
            where = self.base().display
        except BackendError:
            where = self.ref
        return self.redact(f"HTTP {operation} of {key} at {where} failed: {reason}")


def _size_of(source: Path) -> int:
    try:
        return source.stat().st_size
    except OSError:
        return 0  # the upload itself reports the file it cannot read


def _files_of(directory: str, listing: Listing) -> list[Entry]:
    return [
        Entry(key=f"{directory}/{item.name}", size=item.size, mtime=item.mtime, temporary=is_temporary(item.name))
        for item in listing.files
    ]


class _ShortBody(Exception):
    """A body that ended before the bytes its headers promised."""


def _read_into(response: requests.Response, skip: int, size: int, *, exact: bool) -> bytearray:
    """``size`` bytes of the body after ``skip`` bytes, read straight into one buffer of
    that size (what is skipped goes through a small scratch buffer); the rest of the body
    is left unread, and closing the response then drops the connection. A body that ends
    first is :class:`_ShortBody` when ``exact``, else the bytes there were."""
    import http.client

    from gaia_http.session import RECV_CHUNK

    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    inner = getattr(response.raw, "_fp", None)
    if isinstance(inner, http.client.HTTPResponse):
        scratch = memoryview(bytearray(min(skip, RECV_CHUNK)))
        while skip and size:
            count = inner.readinto(scratch[: min(skip, len(scratch))])
            if not count:
                break
            skip -= count
        while filled < size and not skip:
            count = inner.readinto(view[filled : filled + RECV_CHUNK])
            if not count:
                break
            filled += count
    else:  # another urllib3 layout: its public, copying API
        position = 0
        for piece in response.raw.stream(RECV_CHUNK, decode_content=False) if size else ():
            start = max(0, skip - position)
            position += len(piece)
            take = min(len(piece) - start, size - filled)
            if take > 0:
                view[filled : filled + take] = piece[start : start + take]
                filled += take
            if filled == size:
                break
    if filled < size:
        if exact:
            raise _ShortBody(f"{filled} of {size} bytes")
        view.release()
        del buffer[filled:]
    return buffer


def _redirect_target(url: str, response: requests.Response) -> str:
    """The absolute URL a redirect points at (relative locations resolved against ``url``)."""
    import urllib.parse

    return urllib.parse.urljoin(url, response.headers.get("Location", "").strip())


def _origin(url: str) -> tuple[str, str, int | None]:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _host(url: str) -> str | None:
    """``host:port`` of ``url`` for messages (no user info, path or query)."""
    scheme, host, port = _origin(url)
    if not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return "".join(ch for ch in f"{shown}:{port}" if ch.isprintable())[:100]


def _temporary_key(key: str) -> str:
    directory, name = key.rsplit("/", 1)
    return f"{directory}/{temporary_name(name)}"


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
