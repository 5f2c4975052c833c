"""Remote store backends.

A backend moves files between the local store and a remote one. Keys look like
``points/<point id>/<fingerprint>/<manifest file>`` and ``packs/<pack id>.pack`` (and
``.idx``); the core decides the order (packs first, manifest last on upload; manifest
first on download) and does all verification and atomic publishing on the local side. A backend only has to stream bytes in bounded
memory, tell "not found" apart from failures, keep to its time budget and never put a
secret into a message.

Objects are written once. A pack's name is the hash of its bytes, so two writers of one
key upload the same bytes; the manifest, which names every chunk, is published last with
:meth:`Backend.publish`, which creates it only when it is absent. A reader that sees a
manifest therefore finds every chunk it names, whoever won.

Time budgets (all in seconds, fields of :class:`BackendConfig`): ``connect_timeout``
bounds one connection attempt; ``stall_timeout`` ends a transfer or a request in which
no byte moved for that long; ``probe_timeout`` bounds :meth:`Backend.exists` and the
listing calls in total, retries included. gaia owns the retries (the libraries' own are
off or counted inside the budget): an idempotent request is retried with backoff inside
its budget, a refused connection at most once, a stalled transfer once. A backend that
ran out of time raises :class:`~gaia_core.errors.BackendUnavailable`, and the core skips
it for the rest of the run.

Settings from the environment: a ``*_env`` field names a variable. When that variable is
unset (or empty) the backend is unavailable, with a reason naming the variable: it never
falls back to another store (a default endpoint, another bucket). A variable that is set
but malformed is a configuration error (:meth:`Backend.environment_problems`). The
variables of the ``credential_fields``, and the library's own ``credential_variables``,
are kept out of the build commands' environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gaia_core.errors import BackendError, CheckpointError, UnavailableHere
from gaia_core.tasks import StrictModel

MANIFEST = "manifest.json"
#: top-level directories of a store: checkpoint manifests, and the packs they share
POINTS = "points"
PACKS = "packs"

#: called with the number of bytes that moved since the last call; it may raise (e.g. to
#: cancel), and the backend lets that exception through unchanged, without a retry. A
#: backend may call it with 0 while a transfer waits, so that a frozen one can be cancelled
Progress = Callable[[int], None]


class BackendConfig(StrictModel):
    """Fields every backend table has; a backend's ``config_model`` subclasses it."""

    connect_timeout: float = Field(5.0, gt=0, le=3600)
    stall_timeout: float = Field(30.0, gt=0, le=3600)
    probe_timeout: float = Field(10.0, gt=0, le=3600)
    #: the largest object the store takes (packs are cut to fit): ``8MiB`` .. ``5GiB``
    max_object_size: str = "256MiB"
    #: transfers that run at once (packs, ranges of packs)
    parallel: int = Field(4, ge=1, le=64)
    #: gaia reads from this store and never writes to it (a proxy cache, a public mirror,
    #: credentials that can only read): no upload, backfill or gc, in any build file
    read_only: bool = False

    @field_validator("max_object_size")
    @classmethod
    def _object_size(cls, value: str) -> str:
        from gaia_core.checkpoints.units import parse_size

        size = parse_size(value)
        if not 8 << 20 <= size <= 5 << 30:
            raise ValueError("must be between 8MiB and 5GiB")
        return value

    @classmethod
    def table_problems(cls, table: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(field, problem)`` for rules between fields (a bucket or its ``*_env`` twin
        is needed; a key id needs its secret), read from the raw table so that they are
        reported together with every problem of a single field. Default: none."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem_at_once(cls, data: Any, handler: Any) -> Any:
        rules = cls.table_problems(data) if isinstance(data, Mapping) else []
        found = [InitErrorDetails(type=PydanticCustomError("backend_table", problem), loc=(field,), input=None)
                 for field, problem in rules]
        try:
            model = handler(data)
        except ValidationError as exc:
            if not found:
                raise
            raise ValidationError.from_exception_data(exc.title, [*exc.errors(), *found]) from None
        if found:
            raise ValidationError.from_exception_data(cls.__name__, found)
        return model


def is_set(table: Mapping[str, Any], *fields: str) -> bool:
    """Whether ``table`` gives any of ``fields`` a value (a non-blank string, or any other)."""

    def given(value: Any) -> bool:
        return value is not None and not (isinstance(value, str) and not value.strip())

    return any(given(table.get(field)) for field in fields)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One stored file under a point, as :meth:`Backend.list_entries` sees it."""

    #: ``<point id>/<fingerprint>/<file name>``, or the backend's own name for a temporary
    key: str
    size: int | None
    #: seconds since the epoch of the last write, None when the store does not say
    mtime: float | None
    #: a temporary object of an upload in progress or killed (never a complete object)
    temporary: bool = False

    @property
    def fingerprint(self) -> str | None:
        parts = self.key.split("/")
        return parts[2] if len(parts) == 4 and parts[0] == POINTS and not self.temporary else None

    @property
    def is_manifest(self) -> bool:
        """A signer's manifest (``manifest.json``, ``manifest.key.<name>.json``)."""
        name = self.file_name or ""
        return name == MANIFEST or (name.startswith("manifest.key.") and name.endswith(".json"))

    @property
    def file_name(self) -> str | None:
        parts = self.key.split("/")
        return parts[-1] if len(parts) >= 2 and not self.temporary else None


class Backend:
    """Base class of backend kinds; return subclasses from ``gaia_register_backends``."""

    #: the kind as written in config: ``[checkpoints.backends.<kind>.<name>]``
    kind: ClassVar[str]
    #: pydantic model of one backend table (``extra="forbid"``)
    config_model: ClassVar[type[BaseModel]]
    #: the ``*_env`` fields whose variables hold credentials (keys, tokens, passwords,
    #: passphrases, or the files holding them): build commands never see those variables
    credential_fields: ClassVar[tuple[str, ...]] = ()
    #: variables the backend's library reads credentials from by itself (its standard
    #: chain, such as ``AWS_SECRET_ACCESS_KEY``): withheld from build commands too while a
    #: backend of this kind is configured
    credential_variables: ClassVar[tuple[str, ...]] = ()
    #: whether the store is reached over the network; ``gaia run --offline`` uses only the
    #: stores that are not (the built-in ``dir`` backend: a mounted directory)
    needs_network: ClassVar[bool] = True

    def __init__(self, name: str, config: BaseModel, environ: Mapping[str, str] | None = None):
        self.name = name
        self.config = config
        self.environ = os.environ if environ is None else environ

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.name}"

    # -- settings ---------------------------------------------------------------------

    def setting(self, field: str, *, required: bool = False) -> str | None:
        """The literal ``field`` if set, else the variable named by ``<field>_env``.

        A ``<field>_env`` that names an unset (or empty) variable raises
        :class:`~gaia_core.errors.UnavailableHere` naming it: no default stands in for it.
        """
        literal = getattr(self.config, field, None)
        if isinstance(literal, str) and literal.strip():
            return literal.strip()
        if literal is not None and not isinstance(literal, str):
            return str(literal)
        if getattr(self.config, f"{field}_env", None):
            return self.env_value(f"{field}_env")
        if required:
            raise BackendError(f"{self.key(field)} is not set (nor {field}_env)")
        return None

    def env_value(self, env_field: str) -> str | None:
        """The value of the variable named by the ``*_env`` field ``env_field``; None when
        the field is not configured. An unset or empty variable raises
        :class:`~gaia_core.errors.UnavailableHere` (a kind of ``BackendUnavailable``)."""
        env_name = getattr(self.config, env_field, None)
        if not env_name:
            return None
        value = self.environ.get(env_name, "").strip()
        if not value:
            raise UnavailableHere(f"{self.key(env_field)}: env var '{env_name}' is not set")
        return value

    def variable(self, env_field: str) -> str | None:
        """Like :meth:`env_value`, but None for an unset variable too (for :meth:`secrets`)."""
        env_name = getattr(self.config, env_field, None)
        return (self.environ.get(env_name, "").strip() or None) if env_name else None

    def key(self, field: str) -> str:
        """The dotted config key of ``field``, for messages."""
        return f"checkpoints.backends.{self.kind}.{self.name}.{field}"

    def environment_problems(self) -> list[str]:
        """Set but malformed values of the variables the ``*_env`` fields name, one line
        each (``<dotted key> (env var 'NAME') <what is wrong>``), never quoting a value.

        gaia calls it when it loads a build file: each problem is a configuration error
        (exit 2). An unset variable is no problem here (the backend is unavailable when
        used). The default finds none.
        """
        return []

    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs or the upload queue."""
        return []

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    # -- operations -------------------------------------------------------------------

    def describe(self) -> str:
        """Where objects go, for humans (no secrets)."""
        return self.ref

    @property
    def connect_timeout(self) -> float:
        return float(getattr(self.config, "connect_timeout", 5.0))

    @property
    def stall_timeout(self) -> float:
        return float(getattr(self.config, "stall_timeout", 30.0))

    @property
    def probe_timeout(self) -> float:
        return float(getattr(self.config, "probe_timeout", 10.0))

    def exists(self, key: str) -> bool:
        """Whether the object exists, within ``probe_timeout``.

        Raise :class:`BackendError` when that is unknown (``BackendUnavailable`` when
        the time ran out or no connection could be made).
        """
        raise NotImplementedError

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        """Stream ``source`` to ``key``; readers never see a partial object.

        Used for payloads, whose names derive from their content: replacing an existing
        object of that name is allowed. A transfer in which nothing moved for
        ``stall_timeout`` ends with ``BackendUnavailable``.
        """
        raise NotImplementedError

    def publish(self, key: str, source: Path) -> None:
        """Create ``key`` from the small file ``source`` only if ``key`` does not exist.

        Atomic and create-only: of concurrent publishers exactly one succeeds; the others,
        and any publisher when the key exists, get :class:`~gaia_core.errors.ObjectExists`
        and the existing object stays as it is.
        """
        raise NotImplementedError

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        """Stream ``key`` into ``dest``; raise :class:`ObjectNotFound` when it is missing.

        An exception raised by ``dest.write`` or ``progress`` (a size limit, a
        cancellation) propagates unchanged and is never retried. A retry after a
        stall resumes or restarts into ``dest`` only when ``dest`` can be truncated
        (``dest.seek(0); dest.truncate()``).
        """
        raise NotImplementedError

    def read_small(self, key: str, limit: int) -> bytes:
        """The bytes of the small object ``key`` (a manifest), within ``probe_timeout`` in
        total, retries included; :class:`ObjectNotFound` when it is missing.

        At most ``limit + 1`` bytes are read: a result longer than ``limit`` means the
        object is larger, and the caller refuses it. The default streams through
        :meth:`download` (bounded by the stall timeout, not the probe budget); a backend
        with a network below overrides it.
        """
        sink = _Bounded(limit)
        try:
            self.download(key, sink)
        except _Full:
            pass
        return bytes(sink.data)

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that does not exist is not an error."""
        raise NotImplementedError

    def list_entries(self, point_id: str) -> list[Entry]:
        """Every file stored under ``points/<point_id>/`` (keys
        ``points/<point_id>/<fingerprint>/<file>``), temporaries of unfinished uploads
        included, within ``probe_timeout``."""
        raise NotImplementedError

    def list_files(self, prefix: str) -> list[Entry]:
        """The files directly in the directory ``prefix`` (``packs``,
        ``points/<id>/<fingerprint>``; keys ``<prefix>/<name>``), temporaries of unfinished
        uploads included, within ``probe_timeout``; empty when there is no such directory."""
        raise NotImplementedError

    def list_dirs(self, prefix: str) -> list[str]:
        """The names of the directories directly in ``prefix`` (``points``: the point ids),
        within ``probe_timeout``; empty when there is no such directory."""
        raise NotImplementedError

    def read_range(self, key: str, offset: int, length: int) -> bytes | bytearray:
        """``length`` bytes of ``key`` from ``offset`` (a ranged read of a pack), under the
        stall budget; :class:`ObjectNotFound` when ``key`` is missing, a short answer when
        the object ends first. This default reads from the start and keeps the range;
        backends override it with a ranged request."""
        sink = _RangeSink(offset, length)
        self.download(key, sink)  # type: ignore[arg-type]
        return sink.data

    def list_fingerprints(self, point_id: str) -> list[str]:
        """Fingerprints under ``point_id`` that hold a manifest (complete objects), sorted."""
        return sorted({e.fingerprint for e in self.list_entries(point_id) if e.is_manifest and e.fingerprint})

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _RangeSink:
    """Keeps ``length`` bytes from ``offset`` of a stream, and drops the rest."""

    def __init__(self, offset: int, length: int):
        self.offset, self.length = offset, length
        self.position = 0
        self.data = bytearray()

    def write(self, data: Any) -> int:
        start, end = self.position, self.position + len(data)
        lo, hi = max(start, self.offset), min(end, self.offset + self.length)
        if lo < hi:
            self.data += memoryview(data)[lo - start:hi - start]
        self.position = end
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position, self.data = 0, bytearray()
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0

    def flush(self) -> None:
        pass


def object_key(point_id: str, fingerprint: str, file_name: str) -> str:
    return f"{POINTS}/{point_id}/{fingerprint}/{file_name}"


def object_dir(point_id: str, fingerprint: str) -> str:
    return f"{POINTS}/{point_id}/{fingerprint}"


def pack_key(file_name: str) -> str:
    return f"{PACKS}/{file_name}"


def legacy_object_key(point_id: str, fingerprint: str, file_name: str) -> str:
    """Where store format 3 kept an object's files (a hit there is ``format_changed``)."""
    return f"{point_id}/{fingerprint}/{file_name}"


class _Full(CheckpointError):
    """The object holds more than a small read wants: stop the download (gaia's own error:
    a plugin's download lets it through unchanged)."""


class _Bounded:
    """A download destination that keeps at most ``limit + 1`` bytes, then stops it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()

    def write(self, chunk: Any) -> int:
        self.data += bytes(chunk)[: self.limit + 1 - len(self.data)]
        if len(self.data) > self.limit:
            raise _Full()
        return len(chunk)

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("only a restart from the beginning is supported")
        return 0

    def truncate(self, size: int | None = None) -> int:
        del self.data[:]
        return 0
