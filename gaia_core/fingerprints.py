"""Fingerprint sources: turn a config value into the bytes that really matter.

A value such as ``buildroot.defconfig = "qemu_defconfig"`` names a file; hashing only the
name misses edits to the file. A source registered for that config path returns a digest
of the contents, which joins the value in the fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gaia_core.inputtimes import _collect_input_times, _note_mtime, note_input, note_inputs_meanwhile
from gaia_core.treedigest import FileChanges, digest_files, digest_paths, file_changes, is_file_digest

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
    the content will only exist after a planned task ran. Hash a tree with
    :func:`digest_files` and ``exclude=self.exclude``, so that ``--explain`` names the file
    that changed and the point's ``fingerprint_exclude`` applies.

    The digest is stored in clear in every manifest: never return a secret, or anything
    derived from one that could be guessed.
    """

    kind: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]
    #: the globs of the point's ``fingerprint_exclude`` and the anchor's, set by the core on
    #: each instance before :meth:`digest` is called
    exclude: tuple[str, ...] = ()

    def digest(self, build: Build, path: str, value: Any) -> Any:
        raise NotImplementedError


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


__all__ = [
    "FileChanges", "FingerprintSource", "InputPending", "digest_files", "digest_paths", "file_changes", "hash_file",
    "hash_tree", "is_file_digest", "note_input", "note_inputs_meanwhile", "sha256_file",
]
