"""The ``s3`` backend: checkpoints in an S3 bucket (or an S3-compatible store).

Objects live at ``[<prefix>/]<point id>/<fingerprint>/<file>``. Uploads go through
s3transfer (multipart above a threshold, a few threads, reading parts straight from the
file), so memory stays bounded; S3 makes an object visible only when its PutObject or
CompleteMultipartUpload succeeds, so readers never see a partial one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel

from gaia_core.backends import MANIFEST, Backend
from gaia_core.errors import BackendError, ObjectNotFound
from gaia_s3.config import S3Config
from gaia_s3.errors import analyse
from gaia_s3.session import S3Settings, Tuning, credential_values, make_client, make_transfer_config

STREAM_CHUNK = 1 << 20


class S3Backend(Backend):
    kind: ClassVar[str] = "s3"
    config_model: ClassVar[type[BaseModel]] = S3Config

    def __init__(
        self, name: str, config: BaseModel, environ: Mapping[str, str] | None = None, tuning: Tuning | None = None
    ):
        super().__init__(name, config, environ)
        self.tuning = tuning or Tuning()
        self._lock = threading.Lock()
        self._settings: S3Settings | None = None
        self._client: Any = None
        self._credentials: Any = None
        self._bucket_confirmed = False

    # -- setup ------------------------------------------------------------------------

    @property
    def settings(self) -> S3Settings:
        if self._settings is None:
            self._settings = S3Settings.resolve(self)
        return self._settings

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                settings = self.settings
                try:
                    self._client, self._credentials = make_client(settings, self.tuning)
                except Exception as exc:  # noqa: BLE001 -- botocore: ProfileNotFound, bad config file, ...
                    raise self._error("set up a client for", None, exc) from None
            return self._client

    def secrets(self) -> list[str]:
        values = list(credential_values(self._credentials))
        try:
            values += self.settings.secrets()
        except BackendError:
            for field in ("aws_access_key_id_env", "aws_secret_access_key_env", "aws_session_token_env"):
                value = self.env_value(field)
                if value:
                    values.append(value)
        return values

    def describe(self) -> str:
        try:
            settings = self.settings
        except BackendError:
            return f"{self.ref} (bucket from ${self.config.bucket_env or '?'})"
        where = f"s3://{settings.bucket}/{settings.prefix}"
        if settings.endpoint_url:
            where += f" at {settings.endpoint_url}"
        return self.redact(where)

    def object_name(self, key: str) -> str:
        return f"{self.settings.prefix}{key}"

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        name = self.object_name(key)
        try:
            self.client.head_object(Bucket=self.settings.bucket, Key=name)
        except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
            if analyse(exc).key_not_found:
                self._confirm_bucket()
                return False
            raise self._error("probe", name, exc) from None
        return True

    def upload(self, key: str, source: Path) -> None:
        from boto3.s3.transfer import create_transfer_manager

        name = self.object_name(key)
        try:
            with create_transfer_manager(self.client, make_transfer_config(self.tuning)) as manager:
                manager.upload(str(source), self.settings.bucket, name).result()
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
            raise self._error("upload", name, exc) from None

    def download(self, key: str, dest: BinaryIO) -> None:
        name = self.object_name(key)
        try:
            if _seekable(dest):
                self._download_concurrently(name, dest)
            else:
                self._download_streaming(name, dest)
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
            if analyse(exc).key_not_found:
                self._confirm_bucket()
                raise ObjectNotFound(
                    self.redact(f"S3 object s3://{self.settings.bucket}/{name} does not exist")
                ) from None
            raise self._error("download", name, exc) from None

    def _download_concurrently(self, name: str, dest: BinaryIO) -> None:
        from boto3.s3.transfer import create_transfer_manager

        with create_transfer_manager(self.client, make_transfer_config(self.tuning)) as manager:
            manager.download(self.settings.bucket, name, dest).result()

    def _download_streaming(self, name: str, dest: BinaryIO) -> None:
        response = self.client.get_object(Bucket=self.settings.bucket, Key=name)
        body = response["Body"]
        try:
            dest.writelines(body.iter_chunks(STREAM_CHUNK))
        finally:
            body.close()

    def list_fingerprints(self, point_id: str) -> list[str]:
        list_prefix = self.object_name(f"{point_id}/")
        found: set[str] = set()
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.settings.bucket,
                Prefix=list_prefix,
                PaginationConfig={"PageSize": self.tuning.list_page_size},
            )
            for page in pages:
                for item in page.get("Contents", []) or []:
                    fingerprint = _fingerprint_of(item.get("Key", ""), list_prefix)
                    if fingerprint:
                        found.add(fingerprint)
        except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
            raise self._error("list", list_prefix, exc) from None
        return sorted(found)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- helpers ----------------------------------------------------------------------

    def _confirm_bucket(self) -> None:
        """A 404 on HEAD cannot tell a missing key from a missing bucket: ask once."""
        if self._bucket_confirmed:
            return
        bucket = self.settings.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001 -- any failure of a transfer is a BackendError
            failure = analyse(exc)
            if failure.key_not_found or failure.bucket_not_found:
                raise BackendError(self.redact(f"S3 bucket '{bucket}' does not exist{self._at()}")) from None
            raise self._error("check bucket", None, exc) from None
        self._bucket_confirmed = True

    def _error(self, operation: str, name: str | None, exc: BaseException) -> BackendError:
        failure = analyse(exc)
        if failure.bucket_not_found:
            return BackendError(
                self.redact(f"S3 {operation} failed: bucket '{self.settings.bucket}' does not exist{self._at()}")
            )
        target = f"s3://{self.settings.bucket}/{name}" if name is not None else f"bucket '{self.settings.bucket}'"
        return BackendError(self.redact(f"S3 {operation} {target} failed{self._at()}: {failure.render()}"))

    def _at(self) -> str:
        endpoint = self._settings.endpoint_url if self._settings else None
        return f" at {endpoint}" if endpoint else ""


def _fingerprint_of(key: str, list_prefix: str) -> str | None:
    """``<prefix><id>/<fp>/manifest.json`` -> ``<fp>``; anything else -> None."""
    if not key.startswith(list_prefix):
        return None
    parts = key[len(list_prefix) :].split("/")
    if len(parts) == 2 and parts[1] == MANIFEST and parts[0] not in ("", ".", ".."):
        return parts[0]
    return None


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False
