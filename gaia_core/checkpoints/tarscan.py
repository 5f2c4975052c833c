"""Streaming tar header validator: every header is checked before GNU tar may read it.

A payload is hostile input. GNU tar would happily extract an absolute path, a ``..``
component, a device node or a file written through a symlink planted by an earlier
member. :class:`TarScanner` parses the stream the way GNU tar does (ustar and GNU
headers, GNU long names ``L``/``K``, pax ``x``/``g`` records), refuses anything it cannot
parse unambiguously, and hands back only the bytes up to the end of the last validated
header (plus that member's data). Member data is skipped by size without being copied.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gaia_core.anchors import Target

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
#: limits on metadata records, which are buffered in memory
MAX_LONG_NAME = 64 * 1024
MAX_PAX_RECORD = 1024 * 1024
#: symlinks followed while resolving one link (Linux's MAXSYMLINKS)
MAX_SYMLINK_HOPS = 40
#: path components walked while resolving one link (bounds the whole-archive check)
MAX_RESOLVE_STEPS = 8192
#: longest symlink text Linux accepts
MAX_SYMLINK_TEXT = 4095
#: GNU tar rejects sizes beyond off_t; accepting one would put us out of step with it
MAX_SIZE = (1 << 63) - 1

_REGULAR = frozenset(b"07\0")
_HARDLINK, _SYMLINK, _DIRECTORY = ord("1"), ord("2"), ord("5")
_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL = ord("L"), ord("K"), ord("x"), ord("g")
_TYPE_NAMES = {
    ord("3"): "character device",
    ord("4"): "block device",
    ord("6"): "FIFO",
    ord("S"): "GNU sparse file",
    ord("D"): "GNU dump directory",
    ord("M"): "multi-volume continuation",
    ord("V"): "volume label",
    ord("N"): "old GNU long name",
    ord("X"): "Solaris extended header",
}
#: pax keywords with no effect on where or what tar writes (tar ignores xattrs/ACLs
#: unless asked to restore them)
_PAX_HARMLESS = frozenset(
    b"atime ctime mtime comment charset hdrcharset uid gid uname gname".split()
)
_PAX_HARMLESS_PREFIXES = (b"SCHILY.xattr.", b"LIBARCHIVE.xattr.", b"SCHILY.acl.")
_WHITESPACE = b" \t\n\v\f\r"


class TarRefused(Exception):
    """A member breaks a safety rule."""


class TarMalformed(Exception):
    """The stream is not a well-formed tar stream (corrupt or truncated)."""


def _show(path: bytes) -> str:
    return os.fsdecode(path) if len(path) < 300 else os.fsdecode(path[:300]) + "..."


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def parse_number(field: bytes, what: str) -> int:
    """Parse a numeric header field exactly as GNU tar's ``from_header`` (a strict subset)."""
    if field[:1] == b"\x80":  # GNU base-256, positive
        value = int.from_bytes(field[1:], "big")
        if value > MAX_SIZE:
            raise TarMalformed(f"{what} out of range in a tar header")
        return value
    if field[:1] == b"\xff":
        raise TarMalformed(f"negative {what} in a tar header")
    i, end = 0, len(field)
    if field[:1] == b"\0":  # a buggy tar wrote a leading NUL after an overflowing field
        i = 1
    while i < end and field[i] in _WHITESPACE:
        i += 1
    j = i
    while j < end and 0x30 <= field[j] <= 0x37:
        j += 1
    if field[j:].strip(b"\0" + _WHITESPACE):
        raise TarMalformed(f"invalid {what} field {field!r} in a tar header")
    return int(field[i:j], 8) if j > i else 0


def parse_pax_records(data: bytes) -> dict[bytes, bytes]:
    """Decode ``"<len> <key>=<value>\\n"`` records; later records override earlier ones."""
    records: dict[bytes, bytes] = {}
    i = 0
    while i < len(data):
        space = data.find(b" ", i, i + 20)
        digits = data[i:space] if space > 0 else b""
        if not digits.isdigit():
            raise TarMalformed("malformed pax record length")
        end = i + int(digits)
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise TarMalformed("malformed pax record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise TarMalformed("malformed pax record: no keyword")
        records[key] = value
        i = end
    return records


def split_path(path: bytes) -> tuple[bytes, ...]:
    """Path components without empty and ``.`` ones, as GNU tar normalises them."""
    return tuple(part for part in path.split(b"/") if part and part != b".")


@dataclass(frozen=True)
class _TargetRules:
    name: bytes
    #: components of the absolute paths the target will live at (given and resolved)
    final_paths: tuple[tuple[bytes, ...], ...]
    #: component-wise glob patterns of rootfs dirs, relative to the target root
    rootfs_patterns: tuple[tuple[bytes, ...], ...]

    @classmethod
    def of(cls, target: Target) -> _TargetRules:
        given = os.path.abspath(os.fsencode(target.path))
        finals = {split_path(given), split_path(os.path.realpath(given))}
        patterns = tuple(split_path(os.fsencode(p)) for p in target.rootfs_dirs)
        return cls(os.fsencode(target.name), tuple(sorted(finals)), patterns)

    def rootfs_of(self, directory: Sequence[bytes]) -> tuple[bytes, ...] | None:
        """The deepest rootfs dir that contains ``directory`` (relative to the target root;
        the pattern ``"."`` makes the whole target a root filesystem)."""
        for depth in range(len(directory), -1, -1):
            prefix = tuple(directory[:depth])
            for pattern in self.rootfs_patterns:
                if len(pattern) == depth and all(
                    fnmatch.fnmatchcase(part, pat) for part, pat in zip(prefix, pattern)
                ):
                    return prefix
        return None

    def strip_final_path(
        self, components: tuple[bytes, ...]
    ) -> tuple[bytes, ...] | None:
        """The rest of an absolute path below the target's final path, or None."""
        for final in self.final_paths:
            if components[: len(final)] == final:
                return components[len(final) :]
        return None


class TarScanner:
    """Validates a tar stream fed in chunks; returns the bytes that may go on to tar."""

    def __init__(self, targets: Iterable[Target]):
        self._targets = {rules.name: rules for rules in map(_TargetRules.of, targets)}
        self._symlinks: dict[tuple[bytes, ...], bytes] = {}
        self._dirs: set[tuple[bytes, ...]] = set()
        self.members = 0
        self._offset = 0  # stream offset of the next byte fed
        self._safe = 0  # bytes before this offset may reach tar
        self._emitted = 0  # bytes before this offset were handed out
        self._held = bytearray()  # bytes [_emitted, _offset) not handed out yet
        self._skip = 0  # member data (with padding) still to pass through
        self._unit = bytearray()  # a header or metadata record split across chunks
        self._need = BLOCK
        self._meta_kind: int | None = None  # L/K/x/g record whose data is being read
        self._meta_size = 0
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._pax: dict[bytes, bytes] | None = None
        self._ended_with_zero_block = False

    # -- stream ------------------------------------------------------------------------

    def feed(self, data: memoryview | bytes) -> list[memoryview | bytes]:
        """Validate ``data``; return the pieces (in order) that tar may now read."""
        data = memoryview(data)
        start, size, pos = self._offset, len(data), 0
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                pos += step
                self._skip -= step
                self._safe = start + pos
                continue
            if self._unit or size - pos < self._need:
                take = min(self._need - len(self._unit), size - pos)
                self._unit += data[pos : pos + take]
                pos += take
                if len(self._unit) < self._need:
                    break
                unit = bytes(self._unit)
                self._unit.clear()
            else:
                unit = bytes(data[pos : pos + self._need])
                pos += self._need
            self._handle(unit, start + pos)
        self._offset = start + size
        return self._release(data, start)

    def _release(self, data: memoryview, start: int) -> list[memoryview | bytes]:
        pieces: list[memoryview | bytes] = []
        if self._held and self._safe > self._emitted:
            count = min(self._safe, start) - self._emitted
            pieces.append(bytes(self._held[:count]))
            del self._held[:count]
            self._emitted += count
        if self._safe > start:
            pieces.append(data[self._emitted - start : self._safe - start])
            self._emitted = self._safe
        unsent = max(self._emitted, start) - start
        if unsent < len(data):
            self._held += data[unsent:]
        return pieces

    def finish(self) -> None:
        """Check that the stream ended cleanly, then re-check every symlink."""
        if (
            self._skip
            or self._unit
            or self._meta_kind is not None
            or self._offset % BLOCK
        ):
            raise TarMalformed(f"tar stream truncated at offset {self._offset}")
        if self._pending_metadata():
            raise TarMalformed(
                "tar stream ends after an extended header, before its member"
            )
        if not self._ended_with_zero_block:
            raise TarMalformed("tar stream truncated: no end-of-archive block")
        self.check_symlink_chains()

    # -- records -------------------------------------------------------------------------

    def _handle(self, unit: bytes, end: int) -> None:
        if self._meta_kind is not None:
            kind, self._meta_kind, self._need = self._meta_kind, None, BLOCK
            self._take_metadata(kind, unit[: self._meta_size])
            if kind == _PAX_GLOBAL and not self._pending_metadata():
                self._safe = end
            return
        if unit == _ZERO_BLOCK:
            if self._pending_metadata():
                raise TarRefused(
                    f"extended header at offset {end - BLOCK} has no member"
                )
            self._ended_with_zero_block = True
            self._safe = end
            return
        self._ended_with_zero_block = False
        self._check_checksum(unit, end - BLOCK)
        typeflag = unit[156]
        size = parse_number(unit[124:136], "size")
        if typeflag in (_LONG_NAME, _LONG_LINK, _PAX, _PAX_GLOBAL):
            limit = (
                MAX_LONG_NAME
                if typeflag in (_LONG_NAME, _LONG_LINK)
                else MAX_PAX_RECORD
            )
            if size > limit:
                raise TarRefused(
                    f"{chr(typeflag)!r} record of {size} bytes at offset {end - BLOCK}"
                )
            if size == 0:
                self._take_metadata(typeflag, b"")
                if typeflag == _PAX_GLOBAL and not self._pending_metadata():
                    self._safe = end
            else:
                self._meta_kind, self._meta_size = typeflag, size
                self._need = -(-size // BLOCK) * BLOCK
            return
        self._member(unit, typeflag, size, end)

    def _pending_metadata(self) -> bool:
        return (
            self._long_name is not None
            or self._long_link is not None
            or self._pax is not None
        )

    @staticmethod
    def _check_checksum(block: bytes, offset: int) -> None:
        recorded = parse_number(block[148:156], "checksum")
        unsigned = sum(block) - sum(block[148:156]) + 8 * 32
        if recorded == unsigned:
            return
        signed = unsigned - 256 * sum(1 for b in block if b >= 128)
        signed += 256 * sum(1 for b in block[148:156] if b >= 128)
        if recorded != signed:
            raise TarMalformed(f"tar header checksum mismatch at offset {offset}")

    def _take_metadata(self, kind: int, data: bytes) -> None:
        if kind == _PAX_GLOBAL:
            for key in parse_pax_records(data):
                if not self._harmless_pax_key(key):
                    raise TarRefused(f"global pax header sets {os.fsdecode(key)!r}")
            return
        if kind == _PAX:
            if self._pax is not None:
                raise TarRefused("two pax headers for one member")
            records = parse_pax_records(data)
            for key, value in records.items():
                if key in (b"path", b"linkpath", b"size"):
                    if not value or b"\0" in value:
                        raise TarRefused(
                            f"pax {os.fsdecode(key)!r} is empty or holds NUL"
                        )
                elif not self._harmless_pax_key(key):
                    raise TarRefused(
                        f"pax header sets unsupported {os.fsdecode(key)!r}"
                    )
            self._pax = records
            return
        name = _cstring(data)
        if not name:
            raise TarRefused("empty GNU long name")
        if kind == _LONG_NAME:
            if self._long_name is not None:
                raise TarRefused("two GNU long names for one member")
            self._long_name = name
        else:
            if self._long_link is not None:
                raise TarRefused("two GNU long link names for one member")
            self._long_link = name

    @staticmethod
    def _harmless_pax_key(key: bytes) -> bool:
        return (
            key in _PAX_HARMLESS
            or key.startswith(_PAX_HARMLESS_PREFIXES)
            or (key == b"RHT.security.selinux")
        )

    # -- members -------------------------------------------------------------------------

    def _member(self, header: bytes, typeflag: int, size: int, end: int) -> None:
        pax = self._pax or {}
        name = self._choose(pax.get(b"path"), self._long_name, b"path", "long name")
        if name is None:
            name = _cstring(header[0:100])
            if header[257:263] == b"ustar\0" and header[345]:
                name = _cstring(header[345:500]) + b"/" + name
        link = self._choose(
            pax.get(b"linkpath"), self._long_link, b"linkpath", "long link"
        )
        if link is None:
            link = _cstring(header[157:257])
        if b"size" in pax:
            if not pax[b"size"].isdigit() or int(pax[b"size"]) > MAX_SIZE:
                raise TarMalformed("invalid pax size")
            size = int(pax[b"size"])
        self._long_name = self._long_link = self._pax = None

        if typeflag in _REGULAR:
            kind = "directory" if name.endswith(b"/") else "file"
        elif typeflag == _DIRECTORY:
            kind = "directory"
        elif typeflag == _SYMLINK:
            kind = "symlink"
        elif typeflag == _HARDLINK:
            kind = "hard link"
        else:
            what = _TYPE_NAMES.get(typeflag, f"unknown type {bytes([typeflag])!r}")
            raise TarRefused(f"member {_show(name)!r}: {what} is not allowed")
        if kind != "file" and size:
            raise TarRefused(f"member {_show(name)!r}: a {kind} must not carry data")

        parts = self._check_path(name, name, "name")
        self._check_not_through_symlink(parts, name, "path")
        if len(parts) == 1 and kind != "directory":
            raise TarRefused(
                f"member {_show(name)!r}: a target root must be a directory"
            )
        if parts in self._symlinks:
            raise TarRefused(f"member {_show(name)!r} replaces an earlier symlink")
        if kind == "directory":
            self._dirs.add(parts)
        elif kind == "symlink":
            self._add_symlink(parts, link, name)
        elif kind == "hard link":
            self._check_hard_link(parts, link, name)
        self.members += 1
        self._safe = end
        self._skip = -(-size // BLOCK) * BLOCK

    def _choose(self, pax_value, gnu_value, key: bytes, gnu_what: str):
        if pax_value is not None and gnu_value is not None:
            raise TarRefused(
                f"member has both a pax {os.fsdecode(key)} and a GNU {gnu_what}"
            )
        return pax_value if pax_value is not None else gnu_value

    def _check_path(self, path: bytes, member: bytes, what: str) -> tuple[bytes, ...]:
        if path.startswith(b"/"):
            raise TarRefused(
                f"member {_show(member)!r}: absolute {what} {_show(path)!r}"
            )
        parts = split_path(path)
        if b".." in parts:
            raise TarRefused(
                f"member {_show(member)!r}: {what} {_show(path)!r} contains '..'"
            )
        if not parts or parts[0] not in self._targets:
            raise TarRefused(
                f"member {_show(member)!r}: {what} {_show(path)!r} is not inside a target "
                f"({', '.join(sorted(map(os.fsdecode, self._targets)))})"
            )
        return parts

    def _check_not_through_symlink(self, parts, member: bytes, what: str) -> None:
        if not self._symlinks:
            return
        for depth in range(2, len(parts)):
            if parts[:depth] in self._symlinks:
                raise TarRefused(
                    f"member {_show(member)!r}: {what} goes through the symlink "
                    f"{_show(b'/'.join(parts[:depth]))!r}"
                )

    def _check_hard_link(self, parts, link: bytes, member: bytes) -> None:
        link_parts = self._check_path(link, member, "hard link target")
        if link_parts[0] != parts[0]:
            raise TarRefused(
                f"member {_show(member)!r}: hard link target {_show(link)!r} is in another target"
            )
        self._check_not_through_symlink(link_parts, member, "hard link target")
        if link_parts in self._dirs:
            raise TarRefused(f"member {_show(member)!r}: hard link to a directory")
        if link_parts in self._symlinks:  # link(2) on a symlink makes another symlink
            self._add_symlink(parts, self._symlinks[link_parts], member)

    def _add_symlink(self, parts, text: bytes, member: bytes) -> None:
        if parts in self._dirs:
            raise TarRefused(f"member {_show(member)!r}: symlink replaces a directory")
        if not text or len(text) > MAX_SYMLINK_TEXT:
            raise TarRefused(
                f"member {_show(member)!r}: empty or overlong symlink target"
            )
        rules = self._targets[parts[0]]
        inside = parts[1:]
        if text.startswith(b"/"):
            rootfs = rules.rootfs_of(inside[:-1])
            if rootfs is not None:
                if not _stays_within(rootfs, split_path(text), floor=len(rootfs)):
                    raise TarRefused(
                        f"member {_show(member)!r}: absolute symlink {_show(text)!r} leaves "
                        f"the root filesystem {_show(b'/'.join(parts[:1] + rootfs))!r}"
                    )
            elif rules.strip_final_path(split_path(posixpath.normpath(text))) is None:
                raise TarRefused(
                    f"member {_show(member)!r}: absolute symlink {_show(text)!r} points outside "
                    f"the target's path"
                )
        elif not _stays_within(inside[:-1], split_path(text), floor=0):
            raise TarRefused(
                f"member {_show(member)!r}: symlink {_show(text)!r} escapes its target"
            )
        self._symlinks[parts] = text

    # -- whole-archive symlink check -----------------------------------------------------

    def check_symlink_chains(self) -> None:
        """Resolve every symlink over all symlinks seen; lexical checks miss chains."""
        for parts in self._symlinks:
            self._resolve(parts)

    def _resolve(self, link_parts: tuple[bytes, ...]) -> None:
        name, rules = link_parts[0], self._targets[link_parts[0]]
        current = list(link_parts[1:])
        pending: deque[bytes] = deque()
        hops = steps = 0
        while True:
            text = self._symlinks.get((name, *current))
            if text is not None:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise TarRefused(
                        f"symlink {_show(b'/'.join(link_parts))!r}: too many levels of symlinks"
                    )
                current, rest = self._expand(rules, current, text, link_parts)
                pending.extendleft(reversed(rest))
            if not pending:
                return
            steps += 1
            if steps > MAX_RESOLVE_STEPS:
                raise TarRefused(
                    f"symlink {_show(b'/'.join(link_parts))!r}: resolution too long"
                )
            part = pending.popleft()
            if part != b"..":
                current.append(part)
            elif current:
                current.pop()
            else:
                raise TarRefused(
                    f"symlink {_show(b'/'.join(link_parts))!r} escapes its target "
                    f"through a chain of symlinks"
                )

    @staticmethod
    def _expand(
        rules: _TargetRules, at: list[bytes], text: bytes, origin
    ) -> tuple[list, tuple]:
        """Where resolving the link at ``at`` continues: a directory and components to walk."""
        directory, parts = at[:-1], split_path(text)
        if not text.startswith(b"/"):
            return directory, parts
        rootfs = rules.rootfs_of(directory)
        if rootfs is not None:  # chroot semantics inside a target root filesystem
            return list(rootfs), parts
        rest = rules.strip_final_path(parts)
        if rest is None:
            raise TarRefused(
                f"symlink {_show(b'/'.join(origin))!r} resolves through the absolute link "
                f"{_show(text)!r} outside the target"
            )
        return [], rest


def _stays_within(base: Sequence[bytes], parts: Sequence[bytes], floor: int) -> bool:
    depth = len(base)
    for part in parts:
        if part == b"..":
            depth -= 1
            if depth < floor:
                return False
        else:
            depth += 1
    return True
