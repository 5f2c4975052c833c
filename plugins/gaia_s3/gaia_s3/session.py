"""Resolve an S3 backend's settings and build its boto3 clients from them.

The ``*_env`` credential fields map onto a boto3 Session of our own, never onto
``os.environ``: other code in the process (and child processes) keeps its own AWS
configuration. Credentials (and the region) left out of the config come from boto3's
default chain; the endpoint never does: botocore's ``AWS_ENDPOINT_URL*`` variables and
``endpoint_url`` in AWS config files are ignored, so an unset ``endpoint_url`` means AWS
itself and nothing else.

Clients never retry (``total_max_attempts = 1``) and s3transfer never retries a
download (``num_download_attempts = 1``): gaia's own loop owns every retry, inside the
operation's budget. A client's timeouts are fixed when it is made, so a probe whose
budget is partly spent gets a client made for what is left (cheap: the service model is
cached by the session). The service model itself is loaded once per process: every
session shares one botocore data loader, so the backend instances of parallel transfers
(one per worker thread) cost a client each, not a parsed S3 model each (~13 MB).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.errors import ConfigError
from gaia_s3.errors import refuse_redirects
from gaia_s3.values import CHECKS

if TYPE_CHECKING:
    from gaia_core.backends import Backend

MiB = 1 << 20

#: the botocore data loader (service models, endpoints) every session of this process shares
_loader: Any = None
_loader_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Transfer sizes and concurrency; bounded memory whatever the payload size."""

    multipart_threshold: int = 16 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 10
    #: queued 256 KiB chunks of a download waiting to be written: at most 8 MiB
    max_io_queue: int = 32
    io_chunksize: int = 256 * 1024
    #: objects per list request (S3 caps it at 1000)
    list_page_size: int = 1000


@dataclasses.dataclass(frozen=True)
class S3Settings:
    bucket: str
    #: "" or "some/prefix/"
    prefix: str
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    shared_credentials_file: str | None = None
    config_file: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def resolve(cls, backend: Backend) -> S3Settings:
        """Read the literal fields and the variables named by the ``*_env`` fields, now.

        A malformed value raises :class:`ConfigError`; a named variable that is unset
        raises :class:`~gaia_core.errors.BackendUnavailable` naming it."""
        problems = environment_problems(backend)
        if problems:
            raise ConfigError(problems)
        prefix = (backend.setting("prefix") or "").strip("/")
        bucket = backend.setting("bucket", required=True)
        assert bucket is not None
        return cls(
            bucket=bucket,
            prefix=f"{prefix}/" if prefix else "",
            region=backend.setting("region"),
            endpoint_url=backend.setting("endpoint_url"),
            profile=backend.setting("profile"),
            access_key_id=backend.env_value("aws_access_key_id_env"),
            secret_access_key=backend.env_value("aws_secret_access_key_env"),
            session_token=backend.env_value("aws_session_token_env"),
            shared_credentials_file=_path(backend.env_value("aws_shared_credentials_file_env")),
            config_file=_path(backend.env_value("aws_config_file_env")),
            ca_bundle=_path(backend.env_value("aws_ca_bundle_env")),
        )

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s]


#: ``*_env`` fields that name a file, which must exist when the variable is set
FILE_FIELDS = ("aws_shared_credentials_file_env", "aws_config_file_env", "aws_ca_bundle_env")


def environment_problems(backend: Backend) -> list[str]:
    """Set but malformed values of the variables of the ``*_env`` fields, each naming the
    key and the variable (never the value): a typo must not silently mean "no credentials"
    or another store."""
    problems = []
    for field, check in CHECKS.items():
        literal = getattr(backend.config, field, None)
        value = None if isinstance(literal, str) and literal.strip() else backend.variable(f"{field}_env")
        problem = check(value) if value is not None else None
        if problem:
            problems.append(f"{_where(backend, f'{field}_env')} {problem}")
    for env_field in FILE_FIELDS:
        value = backend.variable(env_field)
        if value is not None and ("\0" in value or not Path(value).expanduser().is_file()):
            problems.append(f"{_where(backend, env_field)} does not name an existing file")
    return problems


def _where(backend: Backend, env_field: str) -> str:
    return f"{backend.key(env_field)} (env var '{getattr(backend.config, env_field)}')"


def _path(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser())


def make_session(settings: S3Settings) -> Any:
    """The boto3 Session every client of one backend is made from."""
    import boto3
    import botocore.session

    core = botocore.session.Session()
    # The supported way to point botocore at other files than AWS_SHARED_CREDENTIALS_FILE
    # / AWS_CONFIG_FILE name: instance variables win over the environment.
    if settings.shared_credentials_file:
        core.set_config_variable("credentials_file", settings.shared_credentials_file)
    if settings.config_file:
        core.set_config_variable("config_file", settings.config_file)
    # after the files: making the first loader reads the config (its data_path)
    _share_loader(core)
    session = boto3.Session(
        botocore_session=core,
        profile_name=settings.profile,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
    )
    return session


def _share_loader(core: Any) -> None:
    """Give ``core`` the process's data loader (the first session's): the models it loads
    are read-only and cached, so one parse serves every backend instance."""
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)


def make_client(session: Any, settings: S3Settings, tuning: Tuning, *, connect_timeout: float, stall_timeout: float) -> Any:
    """An S3 client with these timeouts and no retries of its own."""
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        connect_timeout=connect_timeout,
        # botocore's read timeout is per socket read: no byte for this long ends a request
        read_timeout=stall_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max(10, tuning.max_concurrency + 2),
        # S3-compatible services (MinIO, Ceph, moto) are addressed by path, AWS by host
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        # CRC checksums only where the API requires them: several S3-compatible stores
        # reject the newer default; the core verifies a sha256 of every payload anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # the endpoint is what the build file says, never AWS_ENDPOINT_URL* or a config file's
        ignore_configured_endpoint_urls=True,
    )
    client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        verify=settings.ca_bundle or None,
        config=config,
    )
    client.meta.events.register_first("needs-retry.s3", refuse_redirects)
    return client


def make_transfer_config(tuning: Tuning) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=tuning.multipart_threshold,
        multipart_chunksize=tuning.multipart_chunksize,
        max_concurrency=tuning.max_concurrency,
        max_io_queue=tuning.max_io_queue,
        io_chunksize=tuning.io_chunksize,
        num_download_attempts=1,
        preferred_transfer_client="classic",
    )


def credential_values(credentials: Any) -> list[str]:
    """The secret parts of botocore credentials, without triggering a refresh."""
    if credentials is None:
        return []
    # plain Credentials keep them as attributes, RefreshableCredentials behind properties
    fields = vars(credentials)
    names = ("access_key", "secret_key", "token", "_access_key", "_secret_key", "_token")
    return [v for v in (fields.get(n) for n in names) if isinstance(v, str) and v]
