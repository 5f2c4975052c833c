"""Per-file digests of an input tree, compact enough to keep in every manifest.

A tree input hashed as one opaque digest explains a miss as "the tree changed". Hashed
per file, ``status --explain`` names the files added, removed and changed. The digest keeps
the full sha256 of the tree (what the fingerprint relies on) and a listing of every file
with the first 4 bytes of its own digest (enough to tell which file changed; never used to
decide a hit), front-coded, xz-compressed and base85-encoded: Buildroot's own 15,000-file
tree takes 12 bytes a file, /usr/include 9, against about 120 for a JSON map of hex digests.

Which files count: in a git work tree, the files git sees (tracked, and untracked but not
ignored), with their content read from the work tree, so an untracked patch counts and a
build product that ``.gitignore`` names does not; elsewhere every file. ``.git`` never
counts. ``exclude`` globs leave out what the build never reads (:func:`exclude_matcher`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import lzma
import os
import re
import stat
import subprocess
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from gaia_core.inputtimes import _note_mtime

#: the ``format`` of a per-file digest value
FORMAT = "gaia.files/1"
#: bytes of each file's sha256 kept in the listing: a changed file goes unnamed with a
#: chance of one in 4 billion (the fingerprint itself uses the full digests)
LISTED_DIGEST_BYTES = 4
#: trees with more files keep only their sha256 and count: explained as changed, not file by file
LISTED_FILES_MAX = 50_000
#: a listing that unpacks to more is refused (LISTED_FILES_MAX files of 4 KiB names fit)
MAX_LISTING_BYTES = 256 << 20
#: directories never walked (version control metadata)
VCS_DIRS = (".git",)
_GIT_TIMEOUT_S = 120


# -- which files ------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    """A gitignore-style glob as a regex over a relative path: ``*`` and ``?`` stay inside a
    component, ``**`` crosses components, ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def exclude_problem(pattern: str) -> str | None:
    """Why ``pattern`` is no usable exclude glob (None when it is)."""
    if not pattern.strip():
        return "an empty pattern"
    if ".." in pattern.strip("/").split("/"):
        return f"'{pattern}' leaves the tree ('..'); patterns are relative to each input tree"
    try:
        re.compile(_glob_regex(pattern.strip().strip("/")))
    except re.error as exc:
        return f"'{pattern}' is not a valid glob ({exc})"
    return None


def exclude_matcher(patterns: Collection[str]) -> Callable[[str], bool]:
    """Whether a relative path (``a/b/c.txt``) is excluded by one of ``patterns``.

    As in ``.gitignore``: a pattern without ``/`` matches a name at any depth (``*.md``,
    ``autom4te.cache``); one with ``/`` is anchored at the tree's root (``docs/**``,
    ``/README``); a pattern that matches a directory leaves out everything under it; a
    trailing ``/`` matches directories only.
    """
    if not patterns:
        return lambda rel: False
    files, dirs = [], []
    for raw in patterns:
        pattern = raw.strip()
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern  # a leading or inner slash anchors it, as in .gitignore
        regex = re.compile(("^" if anchored else "^(?:.*/)?") + _glob_regex(pattern.lstrip("/")) + "$")
        dirs.append(regex)
        if not dir_only:
            files.append(regex)

    def excluded(rel: str) -> bool:
        if any(r.match(rel) for r in files):
            return True
        parts = rel.split("/")
        return any(r.match("/".join(parts[:n])) for n in range(1, len(parts)) for r in dirs)

    return excluded


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, stdin=subprocess.DEVNULL,
                              env=env, check=False, timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_visible_files(root: Path) -> list[str] | None:
    """The files git sees under ``root`` (tracked or untracked, not ignored), relative to it,
    including deleted tracked ones; None when ``root`` is in no work tree, or is ignored."""
    inside = _git(root, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != b"true":
        return None
    ignored = _git(root, "check-ignore", "-q", ".")
    if ignored is not None and ignored.returncode == 0:
        return None
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None or listed.returncode != 0:
        return None
    return sorted({os.fsdecode(name) for name in listed.stdout.split(b"\0") if name})


def input_files(root: Path, *, exclude: Collection[str] = (), git_aware: bool = True,
                skip_dirs: Collection[str] = VCS_DIRS) -> Iterator[str]:
    """Relative paths of the files (and symlinks) under ``root`` that are inputs, sorted.

    ``git_aware``: in a work tree, only what git sees (see the module docstring); a
    submodule or a nested repository is listed by its own git."""
    excluded = exclude_matcher(exclude)
    for rel in sorted(_walk(Path(root), "", git_aware, frozenset(skip_dirs))):
        if not excluded(rel):
            yield rel


def _walk(root: Path, prefix: str, git_aware: bool, skip_dirs: frozenset[str]) -> Iterator[str]:
    listed = git_visible_files(root) if git_aware else None
    if listed is None:
        yield from _plain_walk(root, prefix, skip_dirs)
        return
    for rel in listed:
        rel = rel.rstrip("/")
        path = root / rel
        try:
            st = os.lstat(path)
        except OSError:  # tracked but deleted in the work tree: the build does not see it
            continue
        if stat.S_ISDIR(st.st_mode):  # a submodule or a nested repository
            yield from _walk(path, f"{prefix}{rel}/", git_aware, skip_dirs)
        else:
            yield prefix + rel


def _plain_walk(root: Path, prefix: str, skip_dirs: frozenset[str]) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        base = prefix if rel_dir == "." else f"{prefix}{rel_dir}/"
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in skip_dirs and d not in links]
        for name in filenames + links:
            if name not in skip_dirs:
                yield base + name


# -- digests ----------------------------------------------------------------------------------


def entry_digest(path: str | os.PathLike[str], *, follow: bool = False) -> bytes:
    """sha256 of one entry: its type, permission bits and content (a link: its target text,
    unless ``follow``; a fifo or device: its type only, never its blocking content)."""
    st = os.stat(path) if follow else os.lstat(path)
    _note_mtime(st.st_mtime_ns)
    h = hashlib.sha256(f"{st.st_mode & 0o7777:o}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(b"L" + os.fsencode(os.readlink(path)))
    elif stat.S_ISREG(st.st_mode):
        h.update(b"F")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    else:
        h.update(f"T{stat.S_IFMT(st.st_mode):o}".encode())
    return h.digest()


def digest_files(root: Path, *, exclude: Collection[str] = (), git_aware: bool = True,
                 skip_dirs: Collection[str] = VCS_DIRS) -> dict[str, Any] | str:
    """The per-file digest of the tree (or single file) at ``root``; ``"missing"`` when absent.

    ``{"format": "gaia.files/1", "sha256": "sha256:<hex>", "files": N, "listing": "<text>"}``:
    ``sha256`` covers every file's relative name, type, permission bits and content (never
    times or owners); ``listing`` names each file with a short digest, for explanations.
    """
    root = Path(root)
    if root.is_dir():  # a link to a directory is the directory the config means
        return digest_paths(root, input_files(root, exclude=exclude, git_aware=git_aware, skip_dirs=skip_dirs))
    if root.exists():
        return _digest_value([(".", entry_digest(root, follow=True))])
    return "missing"


def digest_paths(root: Path, paths: Iterable[str]) -> dict[str, Any]:
    """The per-file digest of the named files under ``root`` (relative paths; a missing one
    counts as deleted), for a tree's changes against a commit."""
    entries = []
    base = os.fspath(root)
    for rel in sorted(set(paths)):
        try:
            digest = entry_digest(os.path.join(base, rel))
        except FileNotFoundError:
            digest = hashlib.sha256(b"deleted").digest()
        entries.append((rel, digest))
    return _digest_value(entries)


def _digest_value(entries: list[tuple[str, bytes]]) -> dict[str, Any]:
    tree = hashlib.sha256()
    for rel, digest in entries:
        tree.update(os.fsencode(rel) + b"\0" + digest)
    value: dict[str, Any] = {"format": FORMAT, "sha256": "sha256:" + tree.hexdigest(), "files": len(entries)}
    if len(entries) <= LISTED_FILES_MAX:
        value["listing"] = encode_listing(entries)
    return value


def is_file_digest(value: Any) -> bool:
    return isinstance(value, dict) and value.get("format") == FORMAT


# -- the listing ------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_listing(entries: list[tuple[str, bytes]]) -> str:
    """Sorted ``(path, short digest)`` pairs as text: the count, every path as the length it
    shares with the previous one plus the rest (front coding), then the digests, xz-compressed
    and base85-encoded (no character JSON escapes)."""
    names, digests = bytearray(_varint(len(entries))), bytearray()
    previous = b""
    for rel, digest in entries:
        name = os.fsencode(rel)
        shared = 0
        limit = min(len(name), len(previous))
        while shared < limit and name[shared] == previous[shared]:
            shared += 1
        names += _varint(shared) + _varint(len(name) - shared) + name[shared:]
        digests += digest[:LISTED_DIGEST_BYTES]
        previous = name
    return base64.b85encode(lzma.compress(bytes(names + digests), preset=3)).decode("ascii")


class _Reader:
    def __init__(self, raw: bytes):
        self.raw, self.at = raw, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.raw):
            raise ValueError("truncated file listing")
        self.at += n
        return self.raw[self.at - n : self.at]

    def varint(self) -> int:
        n = shift = 0
        while True:
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n
            if shift > 63:
                raise ValueError("damaged file listing")


def decode_listing(value: dict[str, Any]) -> dict[str, str]:
    """Relative path -> short hex digest of a per-file digest value. Raises ValueError when the
    listing is damaged or too large: a manifest from a remote is hostile input."""
    try:
        packed = base64.b85decode(value["listing"])
        inflater = lzma.LZMADecompressor()
        raw = inflater.decompress(packed, max_length=MAX_LISTING_BYTES)
    except (KeyError, TypeError, ValueError, lzma.LZMAError) as exc:
        raise ValueError(f"unreadable file listing: {exc}") from None
    if not inflater.eof:
        raise ValueError("file listing too large or truncated")
    reader = _Reader(raw)
    count = reader.varint()
    if count > len(raw):
        raise ValueError("damaged file listing")
    names: list[str] = []
    previous = b""
    for _ in range(count):
        shared, rest = reader.varint(), reader.varint()
        if shared > len(previous):
            raise ValueError("damaged file listing")
        previous = previous[:shared] + reader.take(rest)
        names.append(os.fsdecode(previous))
    out = {name: reader.take(LISTED_DIGEST_BYTES).hex() for name in names}
    if reader.at != len(raw):
        raise ValueError("damaged file listing")
    return out


@dataclasses.dataclass(frozen=True)
class FileChanges:
    added: list[str]
    removed: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("changed", self.changed), ("added", self.added),
                                               ("removed", self.removed)) if v]
        return ", ".join(parts) or "no file differs"


def file_changes(old: dict[str, Any], new: dict[str, Any]) -> FileChanges:
    """Which files differ between two per-file digests of a tree. Raises ValueError when a
    listing is damaged or absent (a tree of more than LISTED_FILES_MAX files)."""
    before, after = decode_listing(old), decode_listing(new)
    return FileChanges(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        changed=sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    )
