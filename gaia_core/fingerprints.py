"""Fingerprint sources: turn a config value into the bytes that really matter.

A value such as ``buildroot.defconfig = "qemu_defconfig"`` names a file; hashing only the
name misses edits to the file. A source registered for that config path returns a digest
of the contents, which joins the value in the fingerprint.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from gaia_core.build import Build


class InputPending(Exception):
    """What a fingerprint needs is not there yet, but a planned task makes it.

    Raised by :meth:`FingerprintSource.digest` (for instance, before ``buildroot.fetch``
    cloned the source tree that a defconfig lives in). ``status`` then prints the
    fingerprint as unknown with ``needs`` instead of guessing; the restore task runs after
    that task and computes it for real.
    """

    def __init__(self, needs: str, detail: str = ""):
        self.needs = needs
        self.detail = detail
        super().__init__(f"needs {needs}" + (f" ({detail})" if detail else ""))


class FingerprintSource:
    """Digest the contents behind one or more config paths.

    ``paths`` lists the dotted config paths it handles. :meth:`digest` gets the effective
    value at that path (validated, defaults applied, JSON types) and returns something
    JSON-serializable: None when nothing is behind it. Raise :class:`InputPending` when
    the content will only exist after a planned task ran.
    """

    kind: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]

    def digest(self, build: Build, path: str, value: Any) -> Any:
        raise NotImplementedError


class _InputTimes:
    """The newest mtime among the files a fingerprint read (None: none was reported)."""

    def __init__(self) -> None:
        self.newest_ns: int | None = None

    def note(self, mtime_ns: int) -> None:
        if self.newest_ns is None or mtime_ns > self.newest_ns:
            self.newest_ns = mtime_ns


_INPUT_TIMES: contextvars.ContextVar[_InputTimes | None] = contextvars.ContextVar("gaia_input_times", default=None)


@contextlib.contextmanager
def _collect_input_times() -> Iterator[_InputTimes]:
    """While a fingerprint is computed: the newest mtime of what its sources read.

    A checkpoint tree is up to date for make against inputs no newer than the time it was
    placed or built; an input written since (a checkout again, same content) is found here.
    """
    times = _InputTimes()
    token = _INPUT_TIMES.set(times)
    try:
        yield times
    finally:
        _INPUT_TIMES.reset(token)


def _note_mtime(mtime_ns: int) -> None:
    times = _INPUT_TIMES.get()
    if times is not None:
        times.note(mtime_ns)


def note_input(path: Path) -> None:
    """Count ``path``'s modification time among the inputs of the fingerprint being computed.

    ``hash_tree`` and ``hash_file`` do this for every entry they hash. Call it from a
    source that reads an input another way (a git checkout known by its commit: its
    directories, whose mtimes git sets when it creates their files anew). Links are not
    followed; a missing path and a call outside a fingerprint computation do nothing.
    """
    if _INPUT_TIMES.get() is None:
        return
    try:
        _note_mtime(os.lstat(path).st_mtime_ns)
    except OSError:
        pass


def hash_tree(root: Path, *, skip_dirs: Collection[str] = ()) -> str:
    """sha256 over the relative names, modes, link targets and contents of a tree.

    ``skip_dirs`` names directories left out wherever they are (``.git``, as rsync's
    ``--exclude`` would)."""
    h = hashlib.sha256()
    root = Path(root)
    if root.is_file() or root.is_symlink():
        _hash_entry(h, root, ".")
        return "sha256:" + h.hexdigest()
    if not root.is_dir():
        return "missing"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            _hash_entry(h, Path(dirpath) / name, os.path.normpath(os.path.join(rel_dir, name)))
    return "sha256:" + h.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_file(path: Path) -> str:
    if not Path(path).is_file():
        return "missing"
    h = hashlib.sha256()
    _hash_entry(h, Path(path), ".")
    return "sha256:" + h.hexdigest()


def _hash_entry(h: Any, path: Path, rel: str) -> None:
    st = os.lstat(path)
    _note_mtime(st.st_mtime_ns)
    h.update(f"{rel}\0{st.st_mode & 0o7777:o}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(b"L" + os.readlink(path).encode() + b"\0")
        return
    if not stat.S_ISREG(st.st_mode):  # a fifo or device: its type, never its (blocking) content
        h.update(f"T{stat.S_IFMT(st.st_mode):o}\0".encode())
        return
    h.update(b"F")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(b"\0")
