"""Paths under a root directory that follow no symbolic link and never block.

A directory that others can write (a shared store, gaia's own workspace directories) is
data, never a path to follow: a symlink in it leads nowhere, a FIFO or a device in it is
never read, and nothing outside it is ever written or deleted. Every operation reaches
its directory from the root's file descriptor with no link followed on any component,
in one step with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has
it, else one ``openat(O_NOFOLLOW | O_DIRECTORY)`` per component; the last component is
then handled relative to that directory's descriptor (``lstat``, ``O_NOFOLLOW``,
``O_NONBLOCK``, ``unlinkat``, ``renameat``, ``linkat``). The root's own path is
configuration and is followed like any path.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import shutil
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2), Linux 5.6+: one number on every architecture
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
#: cleared for good when the kernel (or a seccomp filter) has no openat2
use_openat2 = True
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
except (OSError, AttributeError):  # pragma: no cover - not Linux
    use_openat2 = False

_KINDS = {
    stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
}


class UnsafePath(OSError):
    """A link on the way, or not the kind of file expected (a FIFO where a file should be)."""


@dataclasses.dataclass(frozen=True)
class Item:
    """A directory entry as ``lstat`` sees it (:meth:`Root.listdir`, :meth:`Root.entries`)."""

    name: str
    #: :func:`kind_of` its mode: ``"file"``, ``"directory"``, ``"symbolic link"`` ...
    kind: str
    size: int
    mtime: float


def kind_of(mode: int) -> str:
    """``file``, ``directory``, ``symbolic link``, ``FIFO``, ``socket``, ``... device``."""
    return _KINDS.get(stat.S_IFMT(mode), "special file")


def parts_of(rel: str | os.PathLike[str]) -> list[str]:
    """The components of a relative path; ``""`` is the root itself. Refuses ``..``,
    absolute paths, empty components and NUL, so no name can leave the root."""
    text = os.fspath(rel)
    if text in ("", "."):
        return []
    parts = text.split("/")
    if text.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise UnsafePath(errno.EINVAL, "not a plain relative path", text)
    return parts


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), its last component not
    followed and never blocking: for small files in gaia's own directories (owner
    records, journals), whose directories are its own."""
    fd = os.open(path, _READ)
    try:
        return _read_fd(fd, str(path), limit)
    finally:
        os.close(fd)


def _read_fd(fd: int, where: str, limit: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePath(errno.EINVAL, f"not a regular file (a {kind_of(info.st_mode)})", where)
    if info.st_size > limit:
        raise UnsafePath(errno.EFBIG, f"larger than {limit} bytes", where)
    chunks, size = [], 0
    while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UnsafePath(errno.EFBIG, f"larger than {limit} bytes", where)
    return b"".join(chunks)


def _openat2(dirfd: int, rel: str) -> int | None:
    """A directory fd through ``openat2``; None when the kernel can't (use the chain)."""
    global use_openat2
    how = struct.pack("=QQQ", _DIR, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(rel)),
                  ctypes.c_char_p(how), ctypes.c_size_t(len(how)))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):
        use_openat2 = False
        return None
    if err in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR, errno.EINVAL, errno.E2BIG, errno.EAGAIN):
        return None  # the chain names the component (or copes where openat2 can't)
    raise OSError(err, os.strerror(err), rel)


class Root:
    """A directory opened once; every path given to its methods is relative to it.

    Use as a context manager (or :meth:`close`). Paths are POSIX relative strings
    (``"points/base-os"``); ``""`` is the root. An operation that meets a symbolic link
    on the way, or a FIFO, device or socket where it expects a file or directory, raises
    :class:`UnsafePath` (an ``OSError``: ``ELOOP`` for a link); a missing path raises
    ``FileNotFoundError`` as usual.
    """

    def __init__(self, path: str | os.PathLike[str], *, _fd: int | None = None):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if _fd is None else _fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    def _where(self, parts: list[str]) -> str:
        return str(self.path.joinpath(*parts))

    # -- reaching a directory -------------------------------------------------------

    def _open_dir(self, parts: list[str], *, create: bool = False) -> int:
        """A new fd of the directory ``parts``, no link followed; ``create`` makes missing ones."""
        if not parts:
            return os.dup(self._fd)
        if use_openat2 and not create:
            try:
                fd = _openat2(self._fd, "/".join(parts))
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None
            if fd is not None:
                return fd
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts):
                nxt = self._step(fd, part, parts[: i + 1], create)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _step(self, fd: int, part: str, upto: list[str], create: bool) -> int:
        """A new fd of the directory ``part`` under ``fd``."""
        try:
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                self._refuse_kind(fd, part, upto, "directory")
            raise type(exc)(exc.errno, exc.strerror, self._where(upto)) from None
        return nxt

    def _refuse_kind(self, fd: int, name: str, upto: list[str], wanted: str) -> None:
        """Raise UnsafePath naming what is at ``name`` instead of a ``wanted``."""
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except OSError:
            return
        found = kind_of(mode)
        if stat.S_ISLNK(mode):
            raise UnsafePath(errno.ELOOP, f"is a symbolic link where a {wanted} should be (not followed)",
                             self._where(upto))
        raise UnsafePath(errno.ENOTDIR if wanted == "directory" else errno.EINVAL,
                         f"is a {found}, not a {'regular file' if wanted == 'file' else wanted}", self._where(upto))

    @contextlib.contextmanager
    def _parent(self, rel: str | os.PathLike[str], *, create: bool = False) -> Iterator[tuple[int, str, list[str]]]:
        """(fd of the directory holding ``rel``, its last name, all parts)."""
        parts = parts_of(rel)
        if not parts:
            raise UnsafePath(errno.EINVAL, "names the root itself", str(self.path))
        fd = self._open_dir(parts[:-1], create=create)
        try:
            yield fd, parts[-1], parts
        finally:
            os.close(fd)

    def subdir(self, rel: str | os.PathLike[str], *, create: bool = False) -> Root:
        """The directory ``rel`` as a Root of its own (``create``: ``mkdir -p`` it first)."""
        parts = parts_of(rel)
        return Root(self.path.joinpath(*parts), _fd=self._open_dir(parts, create=create))

    def makedirs(self, rel: str | os.PathLike[str]) -> None:
        """``mkdir -p`` under the root; an existing component must be a real directory."""
        os.close(self._open_dir(parts_of(rel), create=True))

    # -- looking ------------------------------------------------------------------------

    def lstat(self, rel: str | os.PathLike[str]) -> os.stat_result | None:
        """``lstat`` of ``rel``; None when it (or a directory on the way) does not exist."""
        parts = parts_of(rel)
        if not parts:
            return os.fstat(self._fd)
        try:
            with self._parent(rel) as (fd, name, _):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def kind(self, rel: str | os.PathLike[str]) -> str | None:
        """What is at ``rel`` (``file``, ``directory``, ``symbolic link``, ``FIFO`` ...), None if nothing."""
        info = self.lstat(rel)
        return None if info is None else kind_of(info.st_mode)

    def entries(self, rel: str | os.PathLike[str] = "") -> list[Item]:
        """Every entry in ``rel`` with its kind as ``lstat`` sees it (links, FIFOs, devices
        included: listed, never followed or opened), by name."""
        fd = self._open_dir(parts_of(rel))
        try:
            items = []
            for name in sorted(os.listdir(fd)):
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we looked
                items.append(Item(name, kind_of(info.st_mode), info.st_size, info.st_mtime))
            return items
        finally:
            os.close(fd)

    def listdir(self, rel: str | os.PathLike[str] = "") -> list[Item]:
        """Regular files and real directories in ``rel``, by name; links, FIFOs, devices and
        sockets are left out (never followed, never opened)."""
        return [item for item in self.entries(rel) if item.kind in ("file", "directory")]

    def walk_files(self, rel: str | os.PathLike[str] = "") -> Iterator[tuple[str, Item]]:
        """``(path relative to the root, item)`` of every regular file below ``rel``, sorted;
        only real directories are entered."""
        base = "/".join(parts_of(rel))
        try:
            items = self.listdir(base)
        except (FileNotFoundError, UnsafePath):
            return
        for item in items:
            path = f"{base}/{item.name}" if base else item.name
            if item.kind == "file":
                yield path, item
            else:
                yield from self.walk_files(path)

    # -- reading and writing files ------------------------------------------------------

    def open_read(self, rel: str | os.PathLike[str]) -> BinaryIO:
        """The regular file ``rel`` for reading (seekable). Never blocks: a FIFO, device or
        socket there is refused before it is opened, and checked again once open."""
        with self._parent(rel) as (fd, name, parts):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                self._refuse_kind(fd, name, parts, "file")
            try:
                file_fd = os.open(name, _READ, dir_fd=fd)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None
        opened = os.fstat(file_fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            os.close(file_fd)
            raise UnsafePath(errno.EINVAL, "was replaced while it was opened", self._where(parts))
        os.set_blocking(file_fd, True)
        return os.fdopen(file_fd, "rb")

    def read_bytes(self, rel: str | os.PathLike[str], limit: int) -> bytes:
        """The regular file ``rel``, at most ``limit`` bytes (more is an error)."""
        with self.open_read(rel) as f:
            return _read_fd(f.fileno(), self._where(parts_of(rel)), limit)

    def create(self, rel: str | os.PathLike[str], mode: int = 0o666) -> BinaryIO:
        """A new regular file ``rel`` for writing; ``FileExistsError`` when the name is taken
        (by anything, a link included). The directory must exist."""
        with self._parent(rel) as (fd, name, parts):
            try:
                file_fd = os.open(name, _CREATE, mode, dir_fd=fd)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None
        return os.fdopen(file_fd, "wb")

    # -- changing names -----------------------------------------------------------------

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        """Rename ``src`` to ``dst`` (replacing what ``dst`` names; a link there is replaced,
        not followed), both under the root."""
        with self._parent(src) as (sfd, sname, _), self._parent(dst) as (dfd, dname, dparts):
            try:
                os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(dparts)) from None

    def link(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        """Hard-link ``src`` (itself, never what it points to) as ``dst``; ``FileExistsError``
        when ``dst`` exists: a create-only publish."""
        with self._parent(src) as (sfd, sname, _), self._parent(dst) as (dfd, dname, dparts):
            try:
                os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(dparts)) from None

    def move_in(self, source: Path, rel: str | os.PathLike[str]) -> None:
        """Rename ``source`` (an entry outside the root, itself: a link stays a link) to
        ``rel``; the directory of ``rel`` must exist. Only ``rel``'s way is checked here."""
        with self._parent(rel) as (fd, name, parts):
            try:
                os.replace(source, name, dst_dir_fd=fd)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None

    def move_out(self, rel: str | os.PathLike[str], dest: Path) -> None:
        """Rename the entry ``rel`` (itself) to ``dest`` outside the root, replacing what is
        there. Only ``rel``'s way is checked here."""
        with self._parent(rel) as (fd, name, parts):
            try:
                os.replace(name, dest, src_dir_fd=fd)
            except OSError as exc:
                raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None

    def unlink(self, rel: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
        """Remove the entry ``rel`` that is not a directory (a link goes, its target stays)."""
        try:
            with self._parent(rel) as (fd, name, parts):
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError as exc:
                    raise type(exc)(exc.errno, exc.strerror, self._where(parts)) from None
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self, rel: str | os.PathLike[str], *, missing_ok: bool = True) -> None:
        """Remove ``rel`` whatever it is: a directory with all it holds (links inside are
        removed, never followed), or a single entry."""
        try:
            with self._parent(rel) as (fd, name, parts):
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                try:
                    if stat.S_ISDIR(info.st_mode):
                        shutil.rmtree(name, dir_fd=fd)
                    else:
                        os.unlink(name, dir_fd=fd)
                except OSError as exc:
                    raise type(exc)(exc.errno, exc.strerror, exc.filename or self._where(parts)) from None
        except FileNotFoundError:
            if not missing_ok:
                raise

    def fsync(self, rel: str | os.PathLike[str] = "") -> None:
        """fsync the directory ``rel`` (after names in it changed)."""
        fd = self._open_dir(parts_of(rel))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["Item", "Root", "UnsafePath", "kind_of", "parts_of", "read_regular"]
