"""Remote store backends.

A backend moves files between the local store and a remote one. Keys look like
``<point id>/<fingerprint>/<file name>``; the core decides the order (payload first,
manifest last on upload; manifest first on download) and does all verification and
atomic publishing on the local side. A backend only has to stream bytes in bounded
memory, tell "not found" apart from failures, and never put a secret into a message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel

from gaia_core.errors import BackendError

MANIFEST = "manifest.json"


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

    def exists(self, key: str) -> bool:
        """Whether the object exists. Raise :class:`BackendError` when that is unknown."""
        raise NotImplementedError

    def upload(self, key: str, source: Path) -> None:
        """Stream ``source`` to ``key``; readers must never see a partial object."""
        raise NotImplementedError

    def download(self, key: str, dest: BinaryIO) -> None:
        """Stream ``key`` into ``dest``; raise :class:`ObjectNotFound` when it is missing."""
        raise NotImplementedError

    def list_fingerprints(self, point_id: str) -> list[str]:
        """Fingerprints under ``point_id`` that hold a manifest (complete objects), sorted."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def object_key(point_id: str, fingerprint: str, file_name: str) -> str:
    return f"{point_id}/{fingerprint}/{file_name}"
