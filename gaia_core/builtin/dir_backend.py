"""The ``dir`` backend: a shared directory (an NFS mount, a synced folder) as a remote store.

It exercises the whole remote flow without a server; the directory must exist (a missing
mount is "unavailable", not "empty").
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from gaia_core import hookimpl
from gaia_core.backends import MANIFEST, Backend
from gaia_core import atomic
from gaia_core.errors import BackendError, ObjectNotFound
from gaia_core.tasks import StrictModel

_CHUNK = 4 << 20


class DirConfig(StrictModel):
    path: str | None = None
    path_env: str | None = None


class DirBackend(Backend):
    kind = "dir"
    config_model = DirConfig

    @property
    def root(self) -> Path:
        root = Path(self.setting("path", required=True) or "").expanduser()
        if not root.is_dir():
            raise BackendError(f"{self.ref}: shared directory {root} is not available")
        return root

    def describe(self) -> str:
        return f"dir:{self.setting('path') or '?'}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise BackendError(f"{self.ref}: unsafe key '{key}'")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def upload(self, key: str, source: Path, *, progress=None) -> None:
        dest = self._path(key)
        try:
            with open(source, "rb") as src:
                atomic.write_stream(dest, src)
        except OSError as exc:
            raise BackendError(f"{self.ref}: upload of {key} failed: {exc.strerror or exc}") from None

    def download(self, key: str, dest: BinaryIO, *, progress=None) -> None:
        path = self._path(key)
        try:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, dest, _CHUNK)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.ref}: {key} not found") from None
        except OSError as exc:
            raise BackendError(f"{self.ref}: download of {key} failed: {exc.strerror or exc}") from None

    # TEMPORARY until the backends branch lands
    def publish(self, key: str, source: Path) -> None:
        import os

        from gaia_core.errors import ObjectExists

        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copyfile(source, tmp)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise ObjectExists(f"{self.ref}: {key} exists") from None
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_entries(self, point_id: str):  # type: ignore[no-untyped-def]
        from gaia_core.backends import Entry

        base = self._path(point_id)
        out = []
        if base.is_dir():
            for fp_dir in base.iterdir():
                for f in fp_dir.iterdir() if fp_dir.is_dir() else []:
                    st = f.stat()
                    out.append(Entry(f"{point_id}/{fp_dir.name}/{f.name}", st.st_size, st.st_mtime,
                                     temporary=f.name.startswith(".")))
        return out

    def list_fingerprints(self, point_id: str) -> list[str]:
        base = self._path(point_id)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / MANIFEST).is_file())


@hookimpl
def gaia_register_backends() -> list[type[Backend]]:
    return [DirBackend]
