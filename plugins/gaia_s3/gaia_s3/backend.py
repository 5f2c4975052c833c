"""The ``s3`` backend: checkpoints in an S3 bucket (or an S3-compatible store).

Objects live at ``[<prefix>/]points/<point id>/<fingerprint>/<manifest file>`` and
``[<prefix>/]packs/<pack id>.pack`` (and ``.idx``). Uploads go through
s3transfer (multipart above a threshold, a few threads, reading parts straight from the
file), so memory stays bounded; S3 makes an object visible only when its PutObject or
CompleteMultipartUpload succeeds, so readers never see a partial one. A create-only
publish is a PutObject with ``If-None-Match: *``, which S3 refuses with 412 when the key
exists. The temporaries of S3 are incomplete multipart uploads: listed with
``ListMultipartUploads`` (as ``<key>#upload=<id>``) and aborted when untouched for an hour.
A ranged read is one ``GetObject`` with a ``Range`` header, read into a buffer of the
range's size.

Every operation is one call of :func:`gaia_core.retry.retrying`; botocore and s3transfer
retry nothing themselves. No redirect is followed (:func:`gaia_s3.errors.refuse_redirects`):
a 3xx answer is an error naming its status and the host it points at.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar

from pydantic import BaseModel

from gaia_core.backends import POINTS, Backend, Entry, Progress
from gaia_core.errors import BackendError, BackendUnavailable, ConfigError, ObjectExists, ObjectNotFound
from gaia_core.retry import (
    CallerCode,
    Deadline,
    Failure,
    Retryable,
    is_litter,
    probe_timed_out,
    retrying,
    run_caller_aware,
)
from gaia_s3.config import S3Config
from gaia_s3.errors import analyse
from gaia_s3.session import (
    S3Settings,
    Tuning,
    credential_values,
    environment_problems,
    make_client,
    make_session,
    make_transfer_config,
)

T = TypeVar("T")

STREAM_CHUNK = 1 << 20
#: how a temporary (an incomplete multipart upload) is named in listings: ``<key>#upload=<id>``
UPLOAD_MARK = "#upload="
#: ``bytes <first>-<last>/<size or *>``
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(?:\d+|\*)$")
#: clients kept for distinct (connect, stall) timeouts of partly spent probe budgets
_CLIENTS_KEPT = 4
#: seconds between two looks at a transfer in flight (each a heartbeat to the caller)
WAIT_TICK = 0.1


class S3Backend(Backend):
    kind: ClassVar[str] = "s3"
    config_model: ClassVar[type[BaseModel]] = S3Config
    credential_fields: ClassVar[tuple[str, ...]] = (
        "aws_access_key_id_env",
        "aws_secret_access_key_env",
        "aws_session_token_env",
        "aws_shared_credentials_file_env",
        "aws_config_file_env",
    )
    #: what boto3's default chain reads secrets from (names of profiles, regions and
    #: config files are no secrets and stay)
    credential_variables: ClassVar[tuple[str, ...]] = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    )

    def __init__(
        self, name: str, config: BaseModel, environ: Mapping[str, str] | None = None, tuning: Tuning | None = None
    ):
        super().__init__(name, config, environ)
        self.tuning = tuning or Tuning()
        self._lock = threading.Lock()
        self._settings: S3Settings | None = None
        self._session: Any = None
        self._credentials: Any = None
        self._clients: OrderedDict[tuple[float, float], Any] = OrderedDict()
        self._bucket_confirmed = False
        #: the wall clock litter ages are measured on (a test may move it)
        self.clock: Callable[[], float] = time.time

    # -- setup ------------------------------------------------------------------------

    @property
    def settings(self) -> S3Settings:
        if self._settings is None:
            self._settings = S3Settings.resolve(self)
        return self._settings

    def _client_for(self, connect_timeout: float, stall_timeout: float) -> Any:
        """A client with these timeouts (made once, then reused)."""
        timeouts = _rounded(connect_timeout, stall_timeout)
        with self._lock:
            client = self._clients.get(timeouts)
            if client is not None:
                self._clients.move_to_end(timeouts)
                return client
            settings = self.settings
            try:
                if self._session is None:
                    self._session = make_session(settings)
                    self._credentials = self._session.get_credentials()
                client = make_client(
                    self._session, settings, self.tuning, connect_timeout=timeouts[0], stall_timeout=timeouts[1]
                )
            except Exception as exc:  # noqa: BLE001 -- botocore: ProfileNotFound, bad config file, ...
                raise self._error("set up a client for", None, exc) from None
            self._clients[timeouts] = client
            transfers = _rounded(self.connect_timeout, self.stall_timeout)
            for kept in list(self._clients)[: max(0, len(self._clients) - _CLIENTS_KEPT)]:
                if kept != transfers:
                    self._clients.pop(kept).close()
            return client

    @property
    def client(self) -> Any:
        """The client of transfers: the configured connect and stall timeouts."""
        return self._client_for(self.connect_timeout, self.stall_timeout)

    def _client_within(self, deadline: Deadline) -> Any:
        return self._client_for(deadline.cap(self.connect_timeout), deadline.cap(self.stall_timeout))

    def secrets(self) -> list[str]:
        values = list(credential_values(self._credentials))
        for field in ("aws_access_key_id_env", "aws_secret_access_key_env", "aws_session_token_env"):
            value = self.variable(field)
            if value:
                values.append(value)
        return values

    def environment_problems(self) -> list[str]:
        return environment_problems(self)

    def describe(self) -> str:
        try:
            settings = self.settings
        except (BackendError, ConfigError):
            return f"{self.ref} (bucket from ${self.config.bucket_env or '?'})"
        where = f"s3://{settings.bucket}/{settings.prefix}"
        if settings.endpoint_url:
            where += f" at {settings.endpoint_url}"
        return self.redact(where)

    def object_name(self, key: str) -> str:
        return f"{self.settings.prefix}{key}"

    def _run(
        self, attempt: Callable[[Deadline], T], *, probe: bool, on_retry: Callable[[Retryable], None] | None = None
    ) -> T:
        """One operation: its attempts share one budget (``probe_timeout`` for probes)."""
        self.settings  # noqa: B018 -- configuration problems fail before any attempt
        return retrying(attempt, deadline=Deadline(self.probe_timeout if probe else None), on_retry=on_retry)

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        name = self.object_name(key)

        def attempt(deadline: Deadline) -> bool:
            client = self._client_within(deadline)
            try:
                client.head_object(Bucket=self.settings.bucket, Key=name)
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                if analyse(exc).key_not_found:
                    self._confirm_bucket(client)
                    return False
                raise self._retryable("probe", name, exc, deadline) from None
            return True

        return self._run(attempt, probe=True)

    @contextlib.contextmanager
    def _transfers(self, caller: CallerCode) -> Iterator[Any]:
        """An s3transfer manager on daemon threads (:mod:`gaia_s3.executor`). When the
        caller cancels (its progress callback raised), the transfer is shut down in the
        background instead of waited for: a worker may sit in a frozen socket call until the
        stall timeout, and a run stopped by a signal must end now."""
        from s3transfer.manager import TransferManager

        from gaia_s3.executor import DaemonExecutor

        manager = TransferManager(self.client, make_transfer_config(self.tuning), executor_cls=DaemonExecutor)
        try:
            yield manager
        except BaseException as exc:
            if caller.raised is None:
                manager.shutdown(True, str(exc))
            else:
                threading.Thread(target=manager.shutdown, args=(True, "cancelled"), daemon=True).start()
            raise
        manager.shutdown()

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        name = self.object_name(key)
        caller = CallerCode(progress=progress)

        def attempt(deadline: Deadline) -> None:
            subscribers = [_ProgressSubscriber(caller)] if caller.wants_progress else None
            try:
                with self._transfers(caller) as manager:
                    _wait(manager.upload(str(source), self.settings.bucket, name, subscribers=subscribers), caller)
            except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
                if caller.raised is not None:
                    raise
                raise self._retryable("upload", name, exc) from None

        run_caller_aware(lambda: self._run(attempt, probe=False), caller)
        self._remove_litter(name)

    def publish(self, key: str, source: Path) -> None:
        name = self.object_name(key)

        def attempt(deadline: Deadline) -> None:
            try:
                with open(source, "rb") as body:
                    self.client.put_object(Bucket=self.settings.bucket, Key=name, Body=body, IfNoneMatch="*")
            except OSError as exc:
                if exc.filename is not None:
                    raise BackendError(self.redact(f"S3 publish of {key}: cannot read {source}: {exc.strerror}")) from None
                raise self._retryable("publish", name, exc) from None
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                if analyse(exc).precondition_failed:
                    raise ObjectExists(self.redact(f"S3 object s3://{self.settings.bucket}/{name} already exists")) from None
                raise self._retryable("publish", name, exc) from None

        self._run(attempt, probe=False)

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        name = self.object_name(key)
        caller = CallerCode(dest, progress)
        # ranged, concurrent writes need a real file; a sequential writer gets one GET
        random_access = _at_start_of_a_file(dest)

        def attempt(deadline: Deadline) -> None:
            try:
                if random_access:
                    self._download_concurrently(name, dest, caller)
                else:
                    self._download_streaming(name, caller)
            except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
                if caller.raised is not None:
                    raise
                if analyse(exc).key_not_found:
                    self._confirm_bucket(self.client)
                    raise ObjectNotFound(
                        self.redact(f"S3 object s3://{self.settings.bucket}/{name} does not exist")
                    ) from None
                raise self._retryable("download", name, exc) from None

        # a retry starts over into dest (seek(0), truncate()), or there is none
        run_caller_aware(lambda: self._run(attempt, probe=False, on_retry=caller.start_over), caller)

    def _download_concurrently(self, name: str, dest: BinaryIO, caller: CallerCode) -> None:
        subscribers = [_ProgressSubscriber(caller)] if caller.wants_progress else None
        with self._transfers(caller) as manager:
            _wait(manager.download(self.settings.bucket, name, _GuardedFile(dest, caller), subscribers=subscribers),
                  caller)

    def _download_streaming(self, name: str, caller: CallerCode) -> None:
        response = self.client.get_object(Bucket=self.settings.bucket, Key=name)
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(STREAM_CHUNK):
                caller.write(chunk)
                caller.progress(len(chunk))
        finally:
            body.close()

    def read_small(self, key: str, limit: int) -> bytes:
        name = self.object_name(key)

        def attempt(deadline: Deadline) -> bytes:
            client = self._client_within(deadline)
            data = bytearray()
            try:
                body = client.get_object(Bucket=self.settings.bucket, Key=name)["Body"]
                try:
                    while len(data) <= limit and (chunk := body.read(min(STREAM_CHUNK, limit + 1 - len(data)))):
                        data += chunk
                        if deadline.expired:
                            raise BackendUnavailable(self.redact(
                                f"S3 read s3://{self.settings.bucket}/{name} failed{self._at()}: "
                                f"{probe_timed_out(self.probe_timeout)}"))
                finally:
                    body.close()
            except BackendError:
                raise
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                if analyse(exc).key_not_found:
                    self._confirm_bucket(client)
                    raise ObjectNotFound(
                        self.redact(f"S3 object s3://{self.settings.bucket}/{name} does not exist")
                    ) from None
                raise self._retryable("read", name, exc, deadline) from None
            return bytes(data)

        return self._run(attempt, probe=True)

    def delete(self, key: str) -> None:
        name, _, upload_id = self.object_name(key).partition(UPLOAD_MARK)

        def attempt(deadline: Deadline) -> None:
            try:
                if upload_id:
                    self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=name, UploadId=upload_id)
                else:
                    self.client.delete_object(Bucket=self.settings.bucket, Key=name)
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                failure = analyse(exc)
                if failure.key_not_found or failure.no_such_upload:
                    return
                raise self._retryable("delete", name, exc) from None

        self._run(attempt, probe=False)

    def read_range(self, key: str, offset: int, length: int) -> bytearray:
        """One ranged GET read into a buffer of ``length`` bytes at most; a store that
        ignores ``Range`` (a 200 with the whole object) is read up to the range's end and
        cut off there, so memory never holds more than the range."""
        if offset < 0 or length < 0:
            raise ValueError(f"a range needs a non-negative offset and length, not {offset}, {length}")
        name = self.object_name(key)
        if length == 0:
            if not self.exists(key):
                raise ObjectNotFound(self.redact(f"S3 object s3://{self.settings.bucket}/{name} does not exist"))
            return bytearray()

        def attempt(deadline: Deadline) -> bytearray:
            try:
                response = self.client.get_object(
                    Bucket=self.settings.bucket, Key=name, Range=f"bytes={offset}-{offset + length - 1}"
                )
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                failure = analyse(exc)
                if failure.key_not_found:
                    self._confirm_bucket(self.client)
                    raise ObjectNotFound(
                        self.redact(f"S3 object s3://{self.settings.bucket}/{name} does not exist")
                    ) from None
                if failure.range_not_satisfiable:
                    return bytearray()  # the object ends before the range starts
                raise self._retryable("ranged read of", name, exc) from None
            body = response["Body"]
            try:
                skip, size = _range_in_answer(response, offset, length)
                return _read_into(body, skip, size)
            except _BadRange as problem:
                raise BackendError(self.redact(f"S3 ranged read of s3://{self.settings.bucket}/{name} "
                                               f"failed{self._at()}: {problem}")) from None
            except _ShortBody as problem:
                error = BackendUnavailable(self.redact(f"S3 ranged read of s3://{self.settings.bucket}/{name} "
                                                       f"failed{self._at()}: {problem}"))
                raise Retryable(error, Failure.TRANSIENT) from None
            except Exception as exc:  # noqa: BLE001 -- a failure mid-body is a BackendError
                raise self._retryable("ranged read of", name, exc) from None
            finally:
                body.close()

        return self._run(attempt, probe=False)

    def list_entries(self, point_id: str) -> list[Entry]:
        """Objects and incomplete uploads two levels below ``points/<point_id>/``."""
        list_prefix = self.object_name(f"{POINTS}/{_checked_segments(point_id)}/")
        return self._list(list_prefix, depth=2)

    def list_files(self, prefix: str) -> list[Entry]:
        return self._list(self.object_name(f"{_checked_segments(prefix)}/"), depth=1)

    def list_dirs(self, prefix: str) -> list[str]:
        list_prefix = self.object_name(f"{_checked_segments(prefix)}/")

        def attempt(deadline: Deadline) -> list[str]:
            client = self._client_within(deadline)
            try:
                pages = self._pages(client, list_prefix, delimiter=True)
                found = {
                    item["Prefix"][len(list_prefix) :].rstrip("/")
                    for page in pages
                    for item in page.get("CommonPrefixes", []) or []
                    if item.get("Prefix", "").startswith(list_prefix)
                }
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                raise self._retryable("list", list_prefix, exc, deadline) from None
            return sorted(name for name in found if _safe_segment(name))

        return self._run(attempt, probe=True)

    def _list(self, list_prefix: str, *, depth: int) -> list[Entry]:
        """Objects and incomplete uploads ``depth`` path segments below ``list_prefix``,
        all pages and every upload's parts within one probe budget."""
        strip = len(self.settings.prefix)

        def attempt(deadline: Deadline) -> list[Entry]:
            client = self._client_within(deadline)
            try:
                pages = self._pages(client, list_prefix, delimiter=depth == 1)
                entries = [
                    Entry(key=item["Key"][strip:], size=item.get("Size"), mtime=_epoch(item.get("LastModified")))
                    for page in pages
                    for item in page.get("Contents", []) or []
                    if _below(item.get("Key", ""), list_prefix, depth)
                ]
                for upload in self._uploads(client, list_prefix):
                    if not _below(upload["Key"], list_prefix, depth):
                        continue
                    entries.append(
                        Entry(
                            key=f"{upload['Key'][strip:]}{UPLOAD_MARK}{upload['UploadId']}",
                            size=None,
                            mtime=self._last_activity(client, upload),
                            temporary=True,
                        )
                    )
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                raise self._retryable("list", list_prefix, exc, deadline) from None
            return entries

        return self._run(attempt, probe=True)

    def list_fingerprints(self, point_id: str) -> list[str]:
        """Only the objects are listed (incomplete uploads never hold a manifest)."""
        list_prefix = self.object_name(f"{POINTS}/{_checked_segments(point_id)}/")
        strip = len(self.settings.prefix)

        def attempt(deadline: Deadline) -> list[str]:
            client = self._client_within(deadline)
            try:
                objects = [
                    Entry(key=item["Key"][strip:], size=item.get("Size"), mtime=None)
                    for page in self._pages(client, list_prefix, delimiter=False)
                    for item in page.get("Contents", []) or []
                    if _below(item.get("Key", ""), list_prefix, 2)
                ]
            except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
                raise self._retryable("list", list_prefix, exc, deadline) from None
            return sorted({e.fingerprint for e in objects if e.is_manifest and e.fingerprint})

        return self._run(attempt, probe=True)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            client.close()

    # -- listings ---------------------------------------------------------------------

    def _pages(self, client: Any, list_prefix: str, *, delimiter: bool) -> list[dict[str, Any]]:
        """Every page of ``ListObjectsV2`` under ``list_prefix`` (with ``Delimiter="/"``:
        the files directly in it, and its sub-directories as ``CommonPrefixes``)."""
        paginator = client.get_paginator("list_objects_v2")
        options: dict[str, Any] = {"Delimiter": "/"} if delimiter else {}
        pages = paginator.paginate(
            Bucket=self.settings.bucket,
            Prefix=list_prefix,
            PaginationConfig={"PageSize": self.tuning.list_page_size},
            **options,
        )
        return list(pages)

    def _uploads(self, client: Any, prefix: str) -> list[dict[str, Any]]:
        paginator = client.get_paginator("list_multipart_uploads")
        pages = paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix)
        return [item for page in pages for item in page.get("Uploads", []) or [] if item.get("Key") and item.get("UploadId")]

    def _last_activity(self, client: Any, upload: dict[str, Any]) -> float | None:
        """When an incomplete upload last moved: its start or its latest part.

        A multipart upload that started hours ago but still sends parts is alive.
        """
        times = [_epoch(upload.get("Initiated"))]
        response = client.list_parts(Bucket=self.settings.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        times += [_epoch(part.get("LastModified")) for part in response.get("Parts", []) or []]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _remove_litter(self, name: str) -> None:
        """Abort the incomplete uploads of ``name`` untouched for an hour (killed uploads:
        S3 keeps and bills their parts). Best effort: the upload itself succeeded."""
        deadline = Deadline(self.probe_timeout)
        try:
            client = self._client_within(deadline)
            for upload in self._uploads(client, name):
                if upload["Key"] != name or deadline.expired:
                    continue
                if is_litter(self._last_activity(client, upload), self.clock()):
                    client.abort_multipart_upload(Bucket=self.settings.bucket, Key=name, UploadId=upload["UploadId"])
        except Exception:  # noqa: BLE001 -- cleanup never fails an upload that succeeded
            pass

    # -- helpers ----------------------------------------------------------------------

    def _confirm_bucket(self, client: Any) -> None:
        """A 404 on HEAD cannot tell a missing key from a missing bucket: ask once."""
        if self._bucket_confirmed:
            return
        bucket = self.settings.bucket
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 -- any failure of a request is a BackendError
            failure = analyse(exc)
            if failure.key_not_found or failure.bucket_not_found:
                raise BackendError(self.redact(f"S3 bucket '{bucket}' does not exist{self._at()}")) from None
            raise self._retryable("check bucket", None, exc) from None
        self._bucket_confirmed = True

    def _retryable(
        self, operation: str, name: str | None, exc: BaseException, deadline: Deadline | None = None
    ) -> Retryable | BackendError:
        """The error to raise for ``exc``: wrapped in :class:`Retryable` when another
        attempt may help. A timeout at the end of a probe's ``deadline`` is named after it."""
        failure = analyse(exc)
        error = self._error(operation, name, exc, deadline)
        if failure.unavailable:
            error = BackendUnavailable(str(error))
        return Retryable(error, failure.retry) if failure.retry is not None else error

    def _error(self, operation: str, name: str | None, exc: BaseException, deadline: Deadline | None = None
               ) -> BackendError:
        failure = analyse(exc)
        bucket = self._settings.bucket if self._settings else "?"
        if failure.bucket_not_found:
            return BackendError(self.redact(f"S3 {operation} failed: bucket '{bucket}' does not exist{self._at()}"))
        target = f"s3://{bucket}/{name}" if name is not None else f"bucket '{bucket}'"
        spent = deadline is not None and deadline.spent and failure.retry is Failure.STALLED
        reason = probe_timed_out(self.probe_timeout) if spent else failure.render()
        return BackendError(self.redact(f"S3 {operation} {target} failed{self._at()}: {reason}"))

    def _at(self) -> str:
        endpoint = self._settings.endpoint_url if self._settings else None
        return f" at {endpoint}" if endpoint else ""


class _ProgressSubscriber:
    """s3transfer reports bytes moved to subscribers' ``on_progress``, from its threads."""

    def __init__(self, caller: CallerCode):
        self.caller = caller

    def on_progress(self, future: Any = None, bytes_transferred: int = 0, **kwargs: Any) -> None:
        self.caller.progress(bytes_transferred)

    def on_queued(self, future: Any = None, **kwargs: Any) -> None:
        pass

    def on_done(self, future: Any = None, **kwargs: Any) -> None:
        pass


class _GuardedFile:
    """The caller's destination as s3transfer writes it: writes go through
    :class:`CallerCode` so that an exception of the caller's stays the caller's."""

    def __init__(self, dest: BinaryIO, caller: CallerCode):
        self._dest = dest
        self._caller = caller

    def write(self, data: Any) -> Any:
        return self._caller.write(data)

    def seek(self, *args: Any) -> int:
        return self._dest.seek(*args)

    def tell(self) -> int:
        return self._dest.tell()

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        self._dest.flush()


def _wait(future: Any, caller: CallerCode) -> Any:
    """The result of an s3transfer future, waited for on this thread with a heartbeat to the
    caller's progress callback every :data:`WAIT_TICK` seconds, so that a cancellation
    (Ctrl-C, SIGTERM) ends the wait even while the transfer is frozen."""
    while not future.done():
        time.sleep(WAIT_TICK)
        caller.heartbeat()
    return future.result()


def _rounded(connect_timeout: float, stall_timeout: float) -> tuple[float, float]:
    return round(connect_timeout, 1), round(stall_timeout, 1)


def _safe_segment(part: str) -> bool:
    return part not in ("", ".", "..")


def _checked_segments(prefix: str) -> str:
    """``prefix`` without outer slashes, refused when a segment could climb out."""
    trimmed = prefix.strip("/")
    if not all(_safe_segment(part) for part in trimmed.split("/")):
        raise BackendError(f"refusing unsafe S3 key prefix {prefix!r}")
    return trimmed


def _below(key: str, list_prefix: str, depth: int) -> bool:
    """Whether ``key`` lies exactly ``depth`` segments below ``list_prefix``."""
    parts = key[len(list_prefix) :].split("/") if key.startswith(list_prefix) else []
    return len(parts) == depth and all(_safe_segment(part) for part in parts)


class _BadRange(Exception):
    """The answer to a ranged GET is not the range asked for."""


class _ShortBody(Exception):
    """The body of a ranged GET ended before the bytes its headers promised."""


def _range_in_answer(response: dict[str, Any], offset: int, length: int) -> tuple[int, int]:
    """(bytes to skip, bytes to keep) of a ranged GET's body: a 206 holds the range itself,
    a 200 (``Range`` ignored) the whole object, of which the range is cut out."""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    content_length = response.get("ContentLength")
    if status == 200:
        total = content_length if isinstance(content_length, int) else offset + length
        return offset, max(0, min(length, total - offset))
    found = _CONTENT_RANGE.match(str(response.get("ContentRange") or ""))
    if status != 206 or found is None:
        raise _BadRange(f"answered HTTP {status} with Content-Range {str(response.get('ContentRange'))[:40]!r}")
    first, last = int(found.group(1)), int(found.group(2))
    if first != offset or last < first or last >= offset + length:
        raise _BadRange(f"asked for bytes {offset}-{offset + length - 1}, got {first}-{last}")
    return 0, last - first + 1


def _read_into(body: Any, skip: int, size: int) -> bytearray:
    """``size`` bytes of ``body`` after ``skip`` bytes, read into one buffer of that size
    (no second copy); a body that ends early raises."""
    if skip:
        scratch = memoryview(bytearray(min(skip, STREAM_CHUNK)))
        while skip:
            count = body.readinto(scratch[: min(skip, len(scratch))])
            if not count:
                raise _ShortBody("the body ended before the range")
            skip -= count
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = body.readinto(view[filled : filled + STREAM_CHUNK])
        if not count:
            raise _ShortBody(f"the body ended after {filled} of {size} bytes")
        filled += count
    return buffer


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime.datetime) else None


def _at_start_of_a_file(stream: BinaryIO) -> bool:
    """A seekable destination at offset 0: s3transfer may write its ranges into it."""
    try:
        return bool(stream.seekable()) and stream.tell() == 0
    except (AttributeError, ValueError, OSError):
        return False
