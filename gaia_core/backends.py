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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, Field, field_validator

from gaia_core.errors import BackendError
from gaia_core.tasks import StrictModel

MANIFEST = "manifest.json"
#: top-level directories of a store: checkpoint manifests, and the packs they share
POINTS = "points"
PACKS = "packs"

#: called with the number of bytes that moved since the last call; it may raise (e.g. to
#: cancel), and the backend lets that exception through unchanged, without a retry
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

    @field_validator("max_object_size")
    @classmethod
    def _object_size(cls, value: str) -> str:
        from gaia_core.checkpoints.units import parse_size

        size = parse_size(value)
        if not 8 << 20 <= size <= 5 << 30:
            raise ValueError("must be between 8MiB and 5GiB")
        return value


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

    def __init__(self, name: str, config: BaseModel, environ: Mapping[str, str] | None = None):
        self.name = name
        self.config = config
        self.environ = os.environ if environ is None else environ

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.name}"

    # -- settings ---------------------------------------------------------------------

    def setting(self, field: str, *, required: bool = False) -> str | None:
        """The literal ``field`` if set, else the variable named by ``<field>_env``."""
        literal = getattr(self.config, field, None)
        if isinstance(literal, str) and literal.strip():
            return literal.strip()
        if literal is not None and not isinstance(literal, str):
            return str(literal)
        env_name = getattr(self.config, f"{field}_env", None)
        if env_name:
            value = self.environ.get(env_name, "").strip()
            if value:
                return value
        if required:
            where = f"checkpoints.backends.{self.kind}.{self.name}.{field}"
            hint = f" (also checked env var '{env_name}')" if env_name else ""
            raise BackendError(f"{where} is empty{hint}")
        return None

    def env_value(self, env_field: str) -> str | None:
        """The value of the variable named by the ``*_env`` field ``env_field``."""
        env_name = getattr(self.config, env_field, None)
        if not env_name:
            return None
        return self.environ.get(env_name, "").strip() or None

    def environment_problems(self) -> list[str]:
        """Values read through ``*_env`` fields that are set but malformed, each naming the
        config key and the variable, never the value.

        gaia asks when it loads the build file, so a bad value fails every command with a
        config error (exit 2) before anything runs. A variable that is not set is no problem
        here: a build file stays valid on a machine that never talks to this backend, and
        the backend says what is missing when it is used.
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
