"""Relocation: the absolute paths a captured tree embeds, found at capture, rewritten at restore.

A Buildroot out dir holds its own absolute path (and the workspace's, the source
checkout's, the download dir's) in text files, in a few binaries and in links such as
``<out>/staging``. Capture records, while the tar stream passes, which members hold which
*root* (:class:`RootFinder`); a restore at another path plans (:func:`plan_relocation`)
and applies (:func:`apply_relocation`) the rewrite in the extracted staging tree:

- text files (no NUL byte): every occurrence, whatever the length change, in place (the
  inode stays, so hard links follow);
- binaries: only when the new path is no longer than the old one, padded with leading
  ``/`` to the old length (``//////new/root`` is the same directory; Spack does the same);
- symlinks whose text starts with an old root: re-pointed to the new root.

Every rewritten file and link keeps its mtime to the nanosecond: Buildroot decides what to
rebuild from mtimes.

An occurrence of a root is its bytes followed by a boundary byte (``/``, NUL, a quote,
whitespace, ``:;=)``) or the end of the file, so root ``/ws/a`` is not found in
``/ws/ab``. Where several roots match at one position the longest wins; occurrences are
taken leftmost first and never overlap: capture and restore use the same
:class:`RootMatcher`, so they agree on what a file holds (a file read whole is scanned, and
a text file that fits in memory rewritten, by one regex that takes the same occurrences).
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.errors import CheckpointError

#: bytes that may follow a root for it to count as that directory (or end the file)
BOUNDARY = b"/\0\"' \t\n\r\v\f:;=)"
_BOUNDARY_CLASS = b"[" + b"".join(re.escape(bytes([byte])) for byte in BOUNDARY) + b"]"
#: read size when rewriting files; also the size from which a rewrite spools to disk
CHUNK = 1024 * 1024
#: text files up to this size are rewritten in memory, in one substitution
WHOLE_TEXT = 8 * CHUNK
_TEMP_SUFFIX = ".gaia-relocate"
#: roots sharing at least this many leading bytes are searched for as one prefix
_MIN_SHARED_PREFIX = 8
#: pieces from this size on are searched with libc's memmem (see _find)
_MEMMEM_FROM = 64 * 1024


def split_path(path: bytes) -> tuple[bytes, ...]:
    """Path components without empty and ``.`` ones."""
    return tuple(part for part in path.split(b"/") if part and part != b".")


def root_bytes(path: str | os.PathLike, name: str = "") -> bytes:
    """A root as the bytes files embed: absolute, normalised, never ``/`` itself."""
    raw = os.fsencode(os.fspath(path))
    if not raw.startswith(b"/"):
        raise CheckpointError(f"relocation root {name!r} is not absolute: {path}")
    normal = b"/" + posixpath.normpath(raw).lstrip(b"/")
    if normal == b"/":
        raise CheckpointError(f"relocation root {name!r} must not be '/'")
    return normal


def _inside(path: bytes, directory: bytes) -> bool:
    return path == directory or path.startswith(directory + b"/")


# -- matching ----------------------------------------------------------------------------


def _load_memmem():
    """libc's memmem: about three times faster than ``bytes.find`` here, and it runs
    without the GIL (zstd's threads and tar go on meanwhile). None where it is missing."""
    try:
        memmem = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
    )
    return memmem


_MEMMEM = _load_memmem()


def _find(buffer, needle: bytes, start: int, end: int) -> int:
    """``buffer.find(needle, start, end)``, through memmem for large pieces (bytes, bytearray,
    or a view into a bytearray, as large files' chunks are)."""
    if type(buffer) is memoryview and (buffer.readonly or _MEMMEM is None or end - start < _MEMMEM_FROM):
        found = bytes(buffer[start:end]).find(needle)
        return found + start if found >= 0 else -1
    if _MEMMEM is None or end - start < _MEMMEM_FROM:
        return buffer.find(needle, start, end)
    if type(buffer) is bytes:  # immutable: its address stays valid while it is referenced here
        base = ctypes.cast(buffer, ctypes.c_void_p).value or 0
        found = _MEMMEM(base + start, end - start, needle, len(needle))
        return found - base if found else -1
    if type(buffer) not in (bytearray, memoryview):
        return buffer.find(needle, start, end)
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    try:
        base = ctypes.addressof(view)
        found = _MEMMEM(base + start, end - start, needle, len(needle))
        return found - base if found else -1
    finally:
        del view  # releases the buffer export: the bytearray may be resized again


def _shared_prefixes(needles: Sequence[bytes]) -> list[tuple[bytes, list[int]]]:
    """Group roots by a common prefix (``/home/a/ws`` and ``/home/a/dl`` share
    ``/home/a/``): one search per group instead of one per root. Indices longest first."""
    groups: list[tuple[bytes, list[int]]] = []
    for index in sorted(range(len(needles)), key=lambda i: needles[i]):
        needle = needles[index]
        if groups:
            prefix, members = groups[-1]
            shared = os.path.commonprefix([prefix, needle])
            if len(shared) >= _MIN_SHARED_PREFIX or shared == prefix:
                groups[-1] = (shared, [*members, index])
                continue
        groups.append((needle, [index]))
    return [
        (prefix, sorted(members, key=lambda i: -len(needles[i])))
        for prefix, members in groups
    ]


def _roots_regex(needles: Sequence[bytes]) -> re.Pattern[bytes]:
    """Every root as one alternative, longest first, followed by a boundary: at each position
    the regex takes the longest root that ends there, leftmost first and never overlapping,
    as :meth:`RootMatcher.scan` does, in C (no capturing group: one would cost the regex its
    fast search; the matched bytes name the root)."""
    return re.compile(b"(?:" + b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True))
                      + b")(?=" + _BOUNDARY_CLASS + rb"|\Z)")


class RootMatcher:
    """Finds roots in a byte stream fed in pieces of any size, matches across pieces too.

    One fast search per group of roots over whole pieces keeps this cheap on multi-GB
    trees; only the last few bytes of a piece (less than the longest root plus one) wait
    for the next one.
    """

    def __init__(self, needles: Sequence[bytes]):
        if not needles or not all(needles):
            raise ValueError("a root matcher needs non-empty roots")
        self.needles = list(needles)
        self._groups = _shared_prefixes(self.needles)
        self._lookahead = max(map(len, needles)) + 1
        #: the roots in one regex (:func:`_roots_regex`): for a file read whole, and relocation's rewrite
        self.regex = _roots_regex(self.needles)
        self._index = {needle: index for index, needle in reversed(list(enumerate(self.needles)))}
        self.reset()

    def may_hold(self, data: bytes) -> bool:
        """Whether ``data`` holds the common start of some group of roots."""
        return any(_find(data, prefix, 0, len(data)) >= 0 for prefix, _ in self._groups)

    def found_in(self, data: bytes) -> set[int]:
        """The roots (indices) a file read whole holds: what :meth:`scan` finds in it, in one
        regex pass (a text file of a Buildroot tree holds its roots hundreds of times)."""
        index = self._index
        return {index[match] for match in set(self.regex.findall(data))}

    def reset(self) -> None:
        """Start a new file."""
        self._carry = b""
        self._offset = 0

    def scan(self, buffer, start: int, end: int, final: bool, stop: int | None = None):
        """Matches ``(position, needle index)`` in ``buffer[start:end]`` and the first
        position still undecided (more bytes could change what matches there).

        ``final`` says the file ends at ``end``; ``stop`` limits matches to those that
        start before it.
        """
        decided = end if final else end - self._lookahead + 1
        if stop is not None:
            decided = min(decided, stop)
        if decided <= start:
            return [], start
        hits = []
        for prefix, members in self._groups:
            at = _find(buffer, prefix, start, end)
            while 0 <= at < decided:
                for index in members:
                    needle = self.needles[index]
                    if at + len(needle) <= end and buffer[at:at + len(needle)] == needle:
                        hits.append((at, -len(needle), index))  # leftmost, longest
                at = _find(buffer, prefix, at + 1, end)
        if not hits:
            return [], decided
        hits.sort()
        matches, consumed = [], start
        for at, _, index in hits:
            if at < consumed:
                continue
            after = at + len(self.needles[index])
            if after == end or buffer[after] in BOUNDARY:
                matches.append((at, index))
                consumed = after
        return matches, max(consumed, decided)

    def feed(self, buffer, start: int, end: int, final: bool) -> list[tuple[int, int]]:
        """Matches ``(file offset, needle index)`` decided by the next piece of the file."""
        base = self._offset - start  # file offset of buffer[0]
        matches: list[tuple[int, int]] = []
        scan_from = start
        if self._carry:
            carry = self._carry
            head_end = min(end, start + self._lookahead)
            window = carry + bytes(buffer[start:head_end])
            found, undecided = self.scan(
                window, 0, len(window), final and head_end == end, stop=len(carry)
            )
            window_base = self._offset - len(carry)
            matches = [(window_base + at, index) for at, index in found]
            if undecided < len(carry):  # a piece too short to decide the carried bytes
                self._carry = window[undecided:]
                self._offset += end - start
                return matches
            scan_from = start + undecided - len(carry)
        found, undecided = self.scan(buffer, scan_from, end, final)
        matches += [(base + at, index) for at, index in found]
        self._carry = b"" if final else bytes(buffer[undecided:end])
        self._offset += end - start
        return matches


# -- capture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _TargetPaths:
    """Where a target lives at capture, to tell links into it from links out of it."""

    path: bytes  # as given: relative links are resolved from here
    paths: tuple[bytes, ...]  # as given and resolved
    rootfs_patterns: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, target: Target) -> _TargetPaths:
        given = os.path.abspath(os.fsencode(target.path))
        paths = tuple(sorted({given, os.path.realpath(given)}))
        patterns = tuple(split_path(os.fsencode(p)) for p in target.rootfs_dirs)
        return cls(given, paths, patterns)

    def in_rootfs(self, directory: Sequence[bytes]) -> bool:
        """Whether ``directory`` (relative to the target root) is in a rootfs dir, where
        absolute links are read relative to that dir (``"."``: the whole target)."""
        for pattern in self.rootfs_patterns:
            if len(pattern) <= len(directory) and all(
                fnmatch.fnmatchcase(part, pat) for part, pat in zip(directory, pattern)
            ):
                return True
        return False


class RootFinder:
    """Capture's observer of the tar stream: which members embed which root, and which
    directories outside every target the links need."""

    def __init__(
        self, roots: Mapping[str, str | os.PathLike], targets: Sequence[Target]
    ):
        by_path: dict[bytes, list[str]] = {}
        for name, path in roots.items():
            by_path.setdefault(root_bytes(path, name), []).append(name)
        self._needles = list(by_path)
        self._names = [sorted(by_path[needle]) for needle in self._needles]
        self._matcher = RootMatcher(self._needles) if self._needles else None
        self._targets = {os.fsencode(t.name): _TargetPaths.of(t) for t in targets}
        self._embedded: list[dict] = []
        self._external: set[bytes] = set()
        self._file: bytes | None = None  # the regular file whose data is passing
        self._found: set[int] = set()
        self._binary = False
        self._remaining = 0

    # -- observer ----------------------------------------------------------------------

    def member(self, name: bytes, kind: str, link: bytes, size: int) -> None:
        self._file = None
        if kind == "file" and size and self._matcher is not None:
            self._file, self._remaining = name, size
            self._found, self._binary = set(), False
            self._matcher.reset()
        elif kind == "symlink":
            self._symlink(name, link)

    def data(self, buffer, start: int, end: int) -> None:
        if self._file is None:
            return
        if not isinstance(buffer, (bytes, bytearray)):
            buffer, start, end = bytes(buffer[start:end]), 0, end - start
        self._remaining -= end - start
        final = self._remaining == 0
        if not self._binary and buffer.find(b"\0", start, end) >= 0:
            self._binary = True
        for _, index in self._matcher.feed(buffer, start, end, final):
            self._found.add(index)
        if final:
            if self._found:
                kind = "binary" if self._binary else "text"
                self._add(self._file, kind, self._found)
            self._file = None

    # -- files scanned elsewhere ---------------------------------------------------------

    @property
    def needles(self) -> list[bytes]:
        """The roots' paths searched for in files."""
        return list(self._needles)

    def scanner(self) -> FileScanner | None:
        """A scanner of one file at a time, for a thread that reads files on its own (None:
        no roots to look for)."""
        return FileScanner(RootMatcher(self._needles)) if self._needles else None

    def record_file(self, name: bytes, found: Iterable[int], binary: bool) -> dict | None:
        """What a :class:`FileScanner` found in the file ``name``; the record added, if any."""
        found = set(found)
        if not found:
            return None
        self._add(name, "binary" if binary else "text", found)
        return self._embedded[-1]

    def record_embedded(self, name: bytes, kind: str, roots: Iterable[str]) -> None:
        """A file known to hold these roots (by name) without reading it again."""
        self._embedded.append({"path": os.fsdecode(b"/".join(split_path(name))), "kind": kind,
                               "roots": sorted(roots)})

    # -- results -----------------------------------------------------------------------

    @property
    def embedded(self) -> list[dict]:
        """``{"path", "kind", "roots"}`` per member that holds a root, sorted by path."""
        return sorted(self._embedded, key=lambda record: record["path"])

    @property
    def external_links(self) -> list[str]:
        """Directories outside every target (and every root) that links point into."""
        return sorted(os.fsdecode(path) for path in self._external)

    # -- links -------------------------------------------------------------------------

    def _symlink(self, name: bytes, text: bytes) -> None:
        parts = split_path(name)
        rules = self._targets[parts[0]]
        if rules.in_rootfs(parts[1:-1]):
            return  # read inside that root filesystem: neither relocated nor external
        index = self._root_prefix(text)
        if index is not None:
            self._add(name, "symlink", {index})
            return
        if text.startswith(b"/"):
            resolved = text
        else:
            resolved = posixpath.join(rules.path, *parts[1:-1], text)
        resolved = b"/" + posixpath.normpath(resolved).lstrip(b"/")
        if self._root_prefix(resolved) is not None or any(
            _inside(resolved, path) for t in self._targets.values() for path in t.paths
        ):
            return
        self._external.add(posixpath.dirname(resolved))

    def _root_prefix(self, text: bytes) -> int | None:
        """The longest root a link text starts with (as a whole directory)."""
        best = None
        for index, needle in enumerate(self._needles):
            if _inside(text, needle) and (
                best is None or len(needle) > len(self._needles[best])
            ):
                best = index
        return best

    def _add(self, name: bytes, kind: str, found: Iterable[int]) -> None:
        roots = sorted({root for index in found for root in self._names[index]})
        path = os.fsdecode(b"/".join(split_path(name)))
        self._embedded.append({"path": path, "kind": kind, "roots": roots})


class FileScanner:
    """The roots one file holds, and whether it is binary, fed piece by piece."""

    def __init__(self, matcher: RootMatcher):
        self._matcher = matcher
        self.found: set[int] = set()
        self.binary = False

    def start(self) -> None:
        self._matcher.reset()
        self.found, self.binary = set(), False

    def feed(self, data: bytes, final: bool) -> None:
        if not self.binary and _find(data, b"\0", 0, len(data)) >= 0:
            self.binary = True
        for _, index in self._matcher.feed(data, 0, len(data), final):
            self.found.add(index)

    def whole(self, data: bytes) -> None:
        """:meth:`start` and :meth:`feed` of a file read in one piece; a file holding no root's
        first bytes (nearly all of them) costs one search per group of roots."""
        self._matcher.reset()
        self.binary = _find(data, b"\0", 0, len(data)) >= 0
        self.found = self._matcher.found_in(data) if self._matcher.may_hold(data) else set()


# -- plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rewrite:
    """A member of the staging tree that relocation rewrites."""

    path: str  # "<target name>/<path>"
    kind: str  # text | binary | symlink
    roots: tuple[str, ...]


@dataclass(frozen=True)
class RelocationPlan:
    rewrite: list[Rewrite]
    unrewritable: list[tuple[str, str]]  # (member, reason): kept as they are
    #: (old, new) per root path known on both sides, unchanged ones too: the longest
    #: match must still win when a nested root stays where it was
    roots: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rewrite and not self.unrewritable


def plan_relocation(
    embedded: Iterable[Mapping],
    old_roots: Mapping[str, str | os.PathLike],
    new_roots: Mapping[str, str | os.PathLike],
) -> RelocationPlan:
    """Which members a restore at ``new_roots`` rewrites and which it cannot (no I/O).

    A member whose roots include one with no new path, or a binary whose root got a
    longer path, is unrewritable: it is kept as it is, and the caller decides whether
    the checkpoint is still usable (``Anchor.relocation_required``).
    """
    old = {name: root_bytes(path, name) for name, path in old_roots.items()}
    new = {
        name: root_bytes(path, name) for name, path in new_roots.items() if name in old
    }
    moved = {name for name in new if new[name] != old[name]}
    if not moved and len(new) == len(old):
        return RelocationPlan([], [])
    targets: dict[bytes, set[bytes]] = {}  # old path -> new paths
    for name, path in new.items():
        targets.setdefault(old[name], set()).add(path)
    for path in old.values():
        targets.setdefault(path, {path})  # no new path: matched, never rewritten
    rewrite, unrewritable = [], []
    for record in embedded:
        names = tuple(record["roots"])
        if not any(name in moved or name not in new for name in names):
            continue
        problem = _unrewritable_reason(record["kind"], names, old, new, targets)
        if problem:
            unrewritable.append((record["path"], problem))
        else:
            rewrite.append(Rewrite(record["path"], record["kind"], names))
    roots = sorted((path, min(paths)) for path, paths in targets.items())
    return RelocationPlan(rewrite, unrewritable, roots)


def _unrewritable_reason(kind, names, old, new, targets) -> str | None:
    for name in names:
        if name not in old:
            return f"holds root {name!r}, whose old path is unknown"
        if name not in new:
            return f"holds root {name!r}, which has no path here"
        if len(targets[old[name]]) > 1:
            return f"holds root {name!r}, whose old path now maps to several paths"
        if kind == "binary" and len(new[name]) > len(old[name]):
            return (
                f"binary file holds root {name!r}, whose new path "
                f"{os.fsdecode(new[name])!r} is longer than the old "
                f"{os.fsdecode(old[name])!r}"
            )
    return None


# -- apply -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelocationResult:
    rewritten: list[str]
    failed: list[tuple[str, str]]  # (member, reason)


class _CannotRewrite(Exception):
    pass


def apply_relocation(staging: Path, plan: RelocationPlan, *, tops: Mapping[str, Path] | None = None,
                     only: Iterable[str] | None = None) -> RelocationResult:
    """Rewrite the plan's members in the extracted tree ``staging/<target name>/...``.

    ``tops`` maps target names to their directories instead (a tree updated in place);
    ``only`` limits the rewrite to these members. Members are reached without following
    any link (a manifest is input too). Returns what was rewritten and what failed, with
    reasons; a failure leaves that member as it was or half rewritten, so the caller
    discards the tree or keeps it knowingly.
    """
    result = RelocationResult([], [])
    wanted = None if only is None else set(only)
    items = [item for item in plan.rewrite if wanted is None or item.path in wanted]
    if not items:
        return result
    rewriter = _Rewriter(Path(staging), plan.roots)
    staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    top_fds: dict[str, int] = {}
    try:
        for name, path in (tops or {}).items():
            top_fds[name] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for item in items:
            top, _, rest = item.path.partition("/")
            base, member = (top_fds[top], f"./{rest}") if top in top_fds else (staging_fd, item.path)
            try:
                changed = rewriter.rewrite(base, Rewrite(member, item.kind, item.roots))
            except (OSError, _CannotRewrite) as error:
                result.failed.append((item.path, _reason(error)))
            else:
                if changed:
                    result.rewritten.append(item.path)
    finally:
        os.close(staging_fd)
        for fd in top_fds.values():
            os.close(fd)
    return result



def _reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


class _Rewriter:
    def __init__(self, staging: Path, roots: Sequence[tuple[bytes, bytes]]):
        self._staging = staging
        self._old = [old for old, _ in roots]
        self._new = [new for _, new in roots]
        self._matcher = RootMatcher(self._old)
        #: binary replacements: the new path padded to the old length with leading "/"
        self._padded = {
            index: b"/" * (len(old) - len(new)) + new
            for index, (old, new) in enumerate(roots)
            if new != old and len(new) <= len(old)
        }
        self._longer = {i for i, (old, new) in enumerate(roots) if len(new) > len(old)}
        new_of = dict(zip(self._old, self._new)).__getitem__
        self._substitute = lambda match: new_of(match.group())

    def rewrite(self, staging_fd: int, item: Rewrite) -> bool:
        with _parent_of(staging_fd, item.path) as (parent, name):
            if item.kind == "symlink":
                return self._repoint(parent, name)
            with _open_for_rewrite(parent, name) as fd:
                before = os.fstat(fd)
                if item.kind == "binary":
                    changed = self._rewrite_binary(fd)
                elif before.st_size <= WHOLE_TEXT:
                    changed = self._rewrite_whole_text(fd)
                else:
                    changed = self._rewrite_text(fd)
                if changed:
                    os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
                return changed

    # -- links -------------------------------------------------------------------------

    def _repoint(self, parent: int, name: str) -> bool:
        """Replace the link by one into the new root, keeping its and its directory's times."""
        link = os.lstat(name, dir_fd=parent)
        if not stat.S_ISLNK(link.st_mode):
            raise _CannotRewrite("is no longer a symlink")
        text = os.fsencode(os.readlink(name, dir_fd=parent))
        best = None
        for index, old in enumerate(self._old):
            if _inside(text, old) and (best is None or len(old) > len(self._old[best])):
                best = index
        if best is None or self._new[best] == self._old[best]:
            return False
        new_text = self._new[best] + text[len(self._old[best]) :]
        directory = os.fstat(parent)
        temporary = _free_name(parent, name)
        os.symlink(new_text, temporary, dir_fd=parent)
        try:
            os.utime(
                temporary,
                ns=(link.st_atime_ns, link.st_mtime_ns),
                dir_fd=parent,
                follow_symlinks=False,
            )
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            raise
        os.utime(parent, ns=(directory.st_atime_ns, directory.st_mtime_ns))
        return True

    # -- files -------------------------------------------------------------------------

    def _matches(self, fd: int) -> Iterator[tuple[bytearray, int, list, int]]:
        """Stream the file: (pending bytes, their file offset, matches in them, how many
        of them are final); bounded memory whatever the file size."""
        os.lseek(fd, 0, os.SEEK_SET)
        pending, base = bytearray(), 0
        while True:
            chunk = os.read(fd, CHUNK)
            pending += chunk
            matches, undecided = self._matcher.scan(pending, 0, len(pending), not chunk)
            yield pending, base, matches, undecided
            del pending[:undecided]
            base += undecided
            if not chunk:
                return

    def _rewrite_binary(self, fd: int) -> bool:
        """Same-length rewrite in place: only the bytes of each occurrence are written."""
        if self._longer:  # a root that cannot go into a binary: check before writing
            for _, _, matches, _ in self._matches(fd):
                for _, index in matches:
                    if index in self._longer:
                        raise _CannotRewrite(
                            f"binary file holds {os.fsdecode(self._old[index])!r}, "
                            f"whose new path is longer"
                        )
        changed = False
        for _, base, matches, _ in self._matches(fd):
            for at, index in matches:
                if index in self._padded:
                    os.pwrite(fd, self._padded[index], base + at)
                    changed = True
        return changed

    def _rewrite_whole_text(self, fd: int) -> bool:
        """:meth:`_rewrite_text` of a file that fits in memory: read, substituted and written
        back at once (a text file of a Buildroot tree holds its roots hundreds of times)."""
        pieces, offset = [], 0
        while offset <= WHOLE_TEXT and (piece := os.pread(fd, CHUNK, offset)):
            pieces.append(piece)
            offset += len(piece)
        if offset > WHOLE_TEXT:  # it grew since its size was taken
            return self._rewrite_text(fd)
        data = b"".join(pieces)
        text = self._matcher.regex.sub(self._substitute, data)  # every occurrence, in C
        if text == data:
            return False
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, text)
        os.ftruncate(fd, len(text))
        return True

    def _rewrite_text(self, fd: int) -> bool:
        """Any-length rewrite: the new text is spooled, then written back into the inode."""
        with tempfile.SpooledTemporaryFile(
            max_size=8 * CHUNK, dir=self._staging
        ) as out:
            changed = False
            for pending, _, matches, undecided in self._matches(fd):
                cursor = 0
                for at, index in matches:
                    if self._new[index] == self._old[index]:
                        continue
                    out.write(pending[cursor:at])
                    out.write(self._new[index])
                    cursor = at + len(self._old[index])
                    changed = True
                out.write(pending[cursor:undecided])
            if not changed:
                return False
            out.seek(0)
            os.lseek(fd, 0, os.SEEK_SET)
            length = 0
            while block := out.read(CHUNK):
                _write_all(fd, block)
                length += len(block)
            os.ftruncate(fd, length)
            return True


@contextlib.contextmanager
def _parent_of(staging_fd: int, member: str) -> Iterator[tuple[int, str]]:
    """The directory holding ``member`` and its name there, reached without links."""
    parts = member.split("/")
    if parts[0] == "." and len(parts) > 1:  # relative to a target's own directory
        parts = parts[1:]
        if not parts[0]:
            raise _CannotRewrite(f"invalid member path {member!r}")
    elif len(parts) < 2:
        raise _CannotRewrite(f"invalid member path {member!r}")
    if any(part in ("", ".", "..") for part in parts):
        raise _CannotRewrite(f"invalid member path {member!r}")
    fd = os.dup(staging_fd)
    try:
        for part in parts[:-1]:
            child = os.open(
                part,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=fd,
            )
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_for_rewrite(parent: int, name: str) -> Iterator[int]:
    """The regular file, open for writing; a read-only one is made writable meanwhile."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, os.O_RDONLY | flags, dir_fd=parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _CannotRewrite("is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        try:
            writable = os.open(name, os.O_RDWR | flags, dir_fd=parent)
        except PermissionError:
            os.fchmod(fd, mode | stat.S_IWUSR)
            try:
                writable = os.open(name, os.O_RDWR | flags, dir_fd=parent)
            finally:
                os.fchmod(fd, mode)
        try:
            yield writable
        finally:
            os.close(writable)
    finally:
        os.close(fd)


def _free_name(parent: int, name: str) -> str:
    for attempt in range(100):
        candidate = f".{name}{_TEMP_SUFFIX}{attempt or ''}"
        try:
            os.lstat(candidate, dir_fd=parent)
        except FileNotFoundError:
            return candidate
    raise _CannotRewrite("no free temporary name beside it")


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
