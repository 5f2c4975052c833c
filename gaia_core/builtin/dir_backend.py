"""The ``dir`` backend: a shared directory (an NFS mount, a synced folder) as a remote store.

It exercises the whole remote flow without a server; the directory must exist (a missing
mount is "unavailable", not "empty"). Uploads write a temporary sibling and rename it
into place; a create-only publish hard-links the temporary to the final name, which
fails when the name exists, so of concurrent publishers exactly one wins. Local and
network file systems have no timeouts of their own: a hung mount blocks like any file
access on that machine.

The directory is data, never a path to follow (:mod:`gaia_core.safefs`): whoever can write
it may leave links, FIFOs or devices in it, so no operation follows a link on any
component, opens anything but a regular file, or writes or deletes outside the directory.
What is not a regular file where an object should be is an invalid object
(:class:`~gaia_core.errors.ObjectInvalid`); listings show regular files in real
directories only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import Field, field_validator

from gaia_core import hookimpl
from gaia_core.backends import POINTS, Backend, BackendConfig, Entry, Progress
from gaia_core.errors import (
    BackendError,
    ObjectExists,
    ObjectInvalid,
    ObjectNotFound,
    UnavailableHere,
)
from gaia_core.retry import CallerCode, is_litter, is_temporary, temporary_name, temporary_of
from gaia_core.safefs import Root, UnsafePath, parts_of

_CHUNK = 4 << 20

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _path_problem(value: str) -> str | None:
    if "\0" in value:
        return "must not contain a NUL character"
    if not value.strip():
        return "must not be empty"
    return None


class DirConfig(BackendConfig):
    path: str | None = None
    path_env: EnvName | None = None

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        problem = None if value is None else _path_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class DirBackend(Backend):
    kind = "dir"
    config_model = DirConfig
    needs_network = False

    @property
    def root(self) -> Path:
        raw = self.setting("path", required=True) or ""
        problem = _path_problem(raw)
        if problem:
            where = f"checkpoints.backends.dir.{self.name}.path"
            raise BackendError(f"{where} (from env var '{self.config.path_env}') {problem}")
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise UnavailableHere(f"{self.ref}: shared directory {root} is not available "
                                  "(mount it, or create it for a new store)")
        return root

    def describe(self) -> str:
        return f"dir:{self.setting('path') or '?'}"

    @contextlib.contextmanager
    def _store(self, operation: str, key: str, caller: CallerCode | None = None) -> Iterator[Root]:
        """The store's root directory. A link, FIFO or device on the way is an invalid
        object; "not found" and "exists" are left to the operation; the caller's own
        exceptions pass unchanged; any other OSError is a failed ``operation``."""
        root_path = self.root
        try:
            opened = Root(root_path)
        except OSError as exc:
            raise UnavailableHere(f"{self.ref}: shared directory {root_path} is not available: "
                                     f"{exc.strerror or exc}") from None
        try:
            with opened as root:
                yield root
        except OSError as exc:
            if caller is not None and exc is caller.raised:
                raise
            if isinstance(exc, UnsafePath):
                raise ObjectInvalid(f"{self.ref}: {operation} of {key} refused: {_where(exc, root_path)} "
                                    f"{exc.strerror}") from None
            if isinstance(exc, (FileNotFoundError, FileExistsError)):
                raise
            raise self._failed(operation, key, exc) from None

    def _key(self, key: str) -> str:
        with contextlib.suppress(UnsafePath):
            if parts_of(key):
                return key
        raise BackendError(f"{self.ref}: unsafe key '{key}'")

    def _failed(self, operation: str, key: str, exc: OSError) -> BackendError:
        return BackendError(f"{self.ref}: {operation} of {key} failed: {exc.strerror or exc}")

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether the name is taken (by anything: a publish there would fail)."""
        with self._store("probe", self._key(key)) as root:
            return root.lstat(key) is not None

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        caller = CallerCode(progress=progress)
        directory, name = _split(self._key(key))
        try:
            with self._store("upload", key, caller) as root, root.subdir(directory, create=True) as folder:
                temporary = self._write_temporary(folder, name, Path(source), caller)
                try:
                    folder.replace(temporary, name)
                except BaseException:
                    folder.unlink(temporary)
                    raise
                folder.fsync()
                _remove_litter(folder, name)
        except (FileNotFoundError, FileExistsError) as exc:
            if exc is caller.raised:
                raise
            raise self._failed("upload", key, exc) from None

    def publish(self, key: str, source: Path) -> None:
        directory, name = _split(self._key(key))
        try:
            with self._store("publish", key) as root, root.subdir(directory, create=True) as folder:
                temporary = self._write_temporary(folder, name, Path(source), CallerCode())
                try:
                    folder.link(temporary, name)
                finally:
                    folder.unlink(temporary)
                folder.fsync()
        except FileExistsError:
            raise ObjectExists(f"{self.ref}: {key} already exists") from None
        except FileNotFoundError as exc:
            raise self._failed("publish", key, exc) from None

    @staticmethod
    def _write_temporary(folder: Root, name: str, source: Path, caller: CallerCode) -> str:
        """A complete, synced copy of ``source`` beside ``name``; removed if anything fails."""
        temporary = temporary_name(name)
        try:
            with open(source, "rb") as src, folder.create(temporary) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    caller.progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            folder.unlink(temporary)
            raise
        return temporary

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        self._copy_out(key, CallerCode(dest, progress))

    def _copy_out(self, key: str, caller: CallerCode, offset: int = 0, length: int | None = None) -> None:
        """Stream ``length`` bytes (all when None) of ``key`` from ``offset`` to the caller."""
        left = length
        try:
            with self._store("download", self._key(key), caller) as root, root.open_read(key) as src:
                src.seek(offset)
                while left is None or left > 0:
                    chunk = src.read(_CHUNK if left is None else min(_CHUNK, left))
                    if not chunk:
                        break
                    caller.write(chunk)
                    caller.progress(len(chunk))
                    if left is not None:
                        left -= len(chunk)
        except FileNotFoundError as exc:
            if exc is caller.raised:
                raise
            raise ObjectNotFound(f"{self.ref}: {key} not found") from None

    def delete(self, key: str) -> None:
        """Remove whatever is at ``key`` (a directory or a FIFO an attacker put there too),
        inside the store only: a link on the way is refused, a link at ``key`` removed."""
        with self._store("delete", self._key(key)) as root:
            root.rmtree(key)

    def read_range(self, key: str, offset: int, length: int) -> bytearray:
        sink = bytearray()
        self._copy_out(key, CallerCode(_Collect(sink)), offset, length)
        return sink

    def list_entries(self, point_id: str) -> list[Entry]:
        entries: list[Entry] = []
        base = f"{POINTS}/{self._key(point_id)}"
        with self._store("list", base) as root:
            for folder in self._dirs(root, base):
                entries += [e for e in self._files(root, f"{base}/{folder}") if e.regular]
        return entries

    def list_files(self, prefix: str) -> list[Entry]:
        with self._store("list", self._key(prefix)) as root:
            return self._files(root, prefix)

    def list_dirs(self, prefix: str) -> list[str]:
        with self._store("list", self._key(prefix)) as root:
            return self._dirs(root, prefix)

    @staticmethod
    def _dirs(root: Root, prefix: str) -> list[str]:
        """The real directories in ``prefix`` (none when it is missing or not a directory)."""
        try:
            if root.kind(prefix) != "directory":
                return []
            return [item.name for item in root.listdir(prefix) if item.kind == "directory"]
        except (FileNotFoundError, UnsafePath):
            return []  # removed, or replaced by a link, while we looked

    @staticmethod
    def _files(root: Root, prefix: str) -> list[Entry]:
        """What is in ``prefix`` but directories: regular files, and whatever else an attacker
        put under an object's name (a link, a FIFO), so that a reader refuses it with its
        reason instead of taking the name for free; nothing when ``prefix`` is gone or a link."""
        try:
            if root.kind(prefix) != "directory":
                return []
            items = root.entries(prefix)
        except (FileNotFoundError, UnsafePath):
            return []
        return [_Listed(key=f"{prefix}/{item.name}", size=item.size, mtime=item.mtime,
                        temporary=_is_temporary(item.name), regular=item.kind == "file")
                for item in items if item.kind != "directory"]


@dataclasses.dataclass(frozen=True)
class _Listed(Entry):
    #: a regular file (not a link or FIFO in an object's place)
    regular: bool = True


class _Collect:
    """A destination that keeps what it is given (a ranged read is at most one range)."""

    def __init__(self, sink: bytearray):
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink += data
        return len(data)


def _split(key: str) -> tuple[str, str]:
    directory, _, name = key.rpartition("/")
    return directory, name


def _where(exc: OSError, root: Path) -> str:
    """The path ``exc`` names, relative to the store's root when it lies in it."""
    name = str(exc.filename or "")
    prefix = str(root).rstrip("/") + "/"
    return name[len(prefix):] if name.startswith(prefix) else name


def _remove_litter(folder: Root, name: str) -> None:
    """Temporaries of this key's killed uploads, older than an hour (best effort)."""
    try:
        for item in folder.listdir():
            if item.kind == "file" and temporary_of(name, item.name) and is_litter(item.mtime):
                folder.unlink(item.name)
    except OSError:
        pass  # the upload itself succeeded; gc removes what is left


def _is_temporary(name: str) -> bool:
    # ``.<name>.<random>.tmp``: what gaia's atomic writer used before temporaries had one name
    return is_temporary(name) or (name.startswith(".") and name.endswith(".tmp"))


@hookimpl
def gaia_register_backends() -> list[type[Backend]]:
    return [DirBackend]
