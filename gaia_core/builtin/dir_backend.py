"""The ``dir`` backend: a shared directory (an NFS mount, a synced folder) as a remote store.

It exercises the whole remote flow without a server; the directory must exist (a missing
mount is "unavailable", not "empty"). Uploads write a temporary sibling and rename it
into place; a create-only publish hard-links the temporary to the final name, which
fails when the name exists, so of concurrent publishers exactly one wins. Local and
network file systems have no timeouts of their own: a hung mount blocks like any file
access on that machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import Field, field_validator

from gaia_core import hookimpl
from gaia_core.atomic import fsync_dir
from gaia_core.backends import POINTS, Backend, BackendConfig, Entry, Progress
from gaia_core.errors import BackendError, BackendUnavailable, ObjectExists, ObjectNotFound
from gaia_core.retry import CallerCode, is_litter, is_temporary, temporary_name, temporary_of

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

    @property
    def root(self) -> Path:
        raw = self.setting("path", required=True) or ""
        problem = _path_problem(raw)
        if problem:
            where = f"checkpoints.backends.dir.{self.name}.path"
            raise BackendError(f"{where} (from env var '{self.config.path_env}') {problem}")
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise BackendUnavailable(f"{self.ref}: shared directory {root} is not available (mount it, or create it for a new store)")
        return root

    def describe(self) -> str:
        return f"dir:{self.setting('path') or '?'}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise BackendError(f"{self.ref}: unsafe key '{key}'")
        return self.root.joinpath(*parts)

    def _failed(self, operation: str, key: str, exc: OSError) -> BackendError:
        return BackendError(f"{self.ref}: {operation} of {key} failed: {exc.strerror or exc}")

    # -- operations -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def upload(self, key: str, source: Path, *, progress: Progress | None = None) -> None:
        dest = self._path(key)
        caller = CallerCode(progress=progress)
        try:
            temporary = self._write_temporary(dest, Path(source), caller)
            try:
                os.replace(temporary, dest)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            fsync_dir(dest.parent)
        except OSError as exc:
            if exc is caller.raised:
                raise
            raise self._failed("upload", key, exc) from None
        self._remove_litter(dest)

    def publish(self, key: str, source: Path) -> None:
        dest = self._path(key)
        try:
            temporary = self._write_temporary(dest, Path(source), CallerCode())
            try:
                os.link(temporary, dest)
            finally:
                temporary.unlink(missing_ok=True)
            fsync_dir(dest.parent)
        except FileExistsError:
            raise ObjectExists(f"{self.ref}: {key} already exists") from None
        except OSError as exc:
            raise self._failed("publish", key, exc) from None

    def _write_temporary(self, dest: Path, source: Path, caller: CallerCode) -> Path:
        """A complete, synced copy of ``source`` beside ``dest``; removed if anything fails."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        temporary = dest.with_name(temporary_name(dest.name))
        try:
            with open(source, "rb") as src, open(temporary, "xb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    caller.progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    def download(self, key: str, dest: BinaryIO, *, progress: Progress | None = None) -> None:
        path = self._path(key)
        caller = CallerCode(dest, progress)
        try:
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    caller.write(chunk)
                    caller.progress(len(chunk))
        except FileNotFoundError as exc:
            if exc is caller.raised:
                raise
            raise ObjectNotFound(f"{self.ref}: {key} not found") from None
        except OSError as exc:
            if exc is caller.raised:
                raise
            raise self._failed("download", key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed("delete", key, exc) from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as src:
                src.seek(offset)
                return src.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.ref}: {key} not found") from None
        except OSError as exc:
            raise self._failed("read", key, exc) from None

    def list_entries(self, point_id: str) -> list[Entry]:
        base = self._path(f"{POINTS}/{point_id}")
        entries: list[Entry] = []
        try:
            folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            for folder in folders:
                entries += self._files(folder, f"{POINTS}/{point_id}/{folder.name}")
        except OSError as exc:
            raise self._failed("list", point_id, exc) from None
        return entries

    def list_files(self, prefix: str) -> list[Entry]:
        folder = self._path(prefix)
        try:
            return self._files(folder, prefix) if folder.is_dir() else []
        except OSError as exc:
            raise self._failed("list", prefix, exc) from None

    def list_dirs(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        try:
            return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.is_symlink()) \
                if folder.is_dir() else []
        except OSError as exc:
            raise self._failed("list", prefix, exc) from None

    @staticmethod
    def _files(folder: Path, prefix: str) -> list[Entry]:
        entries = []
        for item in sorted(folder.iterdir()):
            try:
                info = item.stat()
            except FileNotFoundError:
                continue  # renamed or removed while we looked
            if not item.is_file():
                continue
            entries.append(Entry(key=f"{prefix}/{item.name}", size=info.st_size, mtime=info.st_mtime,
                                 temporary=_is_temporary(item.name)))
        return entries

    def _remove_litter(self, dest: Path) -> None:
        """Temporaries of this key's killed uploads, older than an hour (best effort)."""
        try:
            for item in dest.parent.iterdir():
                if temporary_of(dest.name, item.name) and is_litter(item.stat().st_mtime):
                    item.unlink(missing_ok=True)
        except OSError:
            pass  # the upload itself succeeded; gc removes what is left


def _is_temporary(name: str) -> bool:
    # ``.<name>.<random>.tmp``: what gaia's atomic writer used before temporaries had one name
    return is_temporary(name) or (name.startswith(".") and name.endswith(".tmp"))


@hookimpl
def gaia_register_backends() -> list[type[Backend]]:
    return [DirBackend]
