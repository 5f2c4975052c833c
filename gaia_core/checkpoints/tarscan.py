"""Streaming tar header validator: every header is checked before GNU tar may read it.

A payload is hostile input. GNU tar would happily extract an absolute path, a ``..``
component, a device node or a file written through a symlink planted by an earlier
member. :class:`TarScanner` parses the stream the way GNU tar does (ustar and GNU
headers, GNU long names ``L``/``K``, pax ``x``/``g`` records), refuses anything it cannot
parse unambiguously, and hands back only the bytes up to the end of the last validated
header (plus that member's data). Member data is skipped by size without being copied.

Links are data: a symlink is kept with its text, wherever it points. What is refused is
writing *through* a link: a member below an earlier symlink, a member at the path of an
earlier symlink, a hard link to anything but an earlier file (or symlink) of its target.
Capture runs the same scanner over the stream it produces, so what restore would refuse
is refused before anything is published.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from gaia_core.anchors import Target

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
#: limits on metadata records, which are buffered in memory
MAX_LONG_NAME = 64 * 1024
MAX_PAX_RECORD = 1024 * 1024
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
_SETID = 0o6000


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


class MemberObserver(Protocol):
    """Sees each validated member and its data as the stream passes (capture's root scan)."""

    def member(self, name: bytes, kind: str, link: bytes, size: int) -> None:
        """A member: ``kind`` is file, directory, symlink (also a hard link to one, with
        the symlink's text as ``link``) or hard link; ``size`` bytes of data follow."""

    def data(self, buffer, start: int, end: int) -> None:
        """``buffer[start:end]`` is the next piece of the current member's data."""


class TarScanner:
    """Validates a tar stream fed in chunks; returns the bytes that may go on to tar."""

    def __init__(
        self,
        targets: Iterable[Target],
        *,
        strip_setid: bool = False,
        observer: MemberObserver | None = None,
    ):
        """``strip_setid`` rewrites headers so that tar never creates a set-id file
        (restore); ``observer`` is told every member and handed its data (capture)."""
        self._targets = frozenset(os.fsencode(target.name) for target in targets)
        self._strip_setid = strip_setid
        self._observer = observer
        #: what the latest member at each path is: symlinks (with their text), files
        self._symlinks: dict[tuple[bytes, ...], bytes] = {}
        self._dirs: set[tuple[bytes, ...]] = set()
        self._files: set[tuple[bytes, ...]] = set()
        self.members = 0
        #: names of members whose set-id bits were stripped
        self.stripped_setid: list[str] = []
        self._offset = 0  # stream offset of the next byte fed
        self._safe = 0  # bytes before this offset may reach tar
        self._emitted = 0  # bytes before this offset were handed out
        self._held = bytearray()  # bytes [_emitted, _offset) not handed out yet
        self._patches: deque[tuple[int, bytes]] = (
            deque()
        )  # rewritten headers, by offset
        self._skip = 0  # member data (with padding) still to pass through
        self._data_left = 0  # of which member data the observer has not seen yet
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
        raw, data = data, memoryview(data)
        start, size, pos = self._offset, len(data), 0
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                if self._data_left:
                    seen = min(self._data_left, step)
                    self._data_left -= seen
                    self._observer.data(raw, pos, pos + seen)
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
        pieces: list[tuple[int, memoryview | bytes]] = []  # (stream offset, bytes)
        if self._held and self._safe > self._emitted:
            count = min(self._safe, start) - self._emitted
            pieces.append((self._emitted, bytes(self._held[:count])))
            del self._held[:count]
            self._emitted += count
        if self._safe > start:
            pieces.append(
                (self._emitted, data[self._emitted - start : self._safe - start])
            )
            self._emitted = self._safe
        unsent = max(self._emitted, start) - start
        if unsent < len(data):
            self._held += data[unsent:]
        if self._patches:
            return self._patched(pieces)
        return [piece for _, piece in pieces]

    def _patched(self, pieces) -> list[memoryview | bytes]:
        """The pieces with rewritten headers spliced in (a header may span two pieces)."""
        out: list[memoryview | bytes] = []
        for offset, piece in pieces:
            end, cursor = offset + len(piece), offset
            while self._patches and self._patches[0][0] < end:
                at, block = self._patches[0]
                low, high = max(at, cursor), min(at + len(block), end)
                if low > cursor:
                    out.append(piece[cursor - offset : low - offset])
                out.append(block[low - at : high - at])
                cursor = high
                if at + len(block) > end:
                    break
                self._patches.popleft()
            if cursor < end:
                out.append(piece[cursor - offset :])
        return out

    def finish(self) -> None:
        """Check that the stream ended cleanly."""
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
        if kind == "hard link":
            kind, link = self._hard_link_kind(parts, link, name)
        self._record(parts, kind, link, name)
        if self._strip_setid:
            self._strip_setid_bits(header, parts, end)
        self.members += 1
        self._safe = end
        self._skip = -(-size // BLOCK) * BLOCK
        if self._observer is not None:
            self._observer.member(name, kind, link, size)
            self._data_left = size

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

    def _hard_link_kind(self, parts, link: bytes, member: bytes) -> tuple[str, bytes]:
        """A hard link names an earlier file; link(2) on an earlier symlink makes another
        symlink with the same text (GNU tar writes those for hard-linked symlinks)."""
        link_parts = self._check_path(link, member, "hard link target")
        if link_parts[0] != parts[0]:
            raise TarRefused(
                f"member {_show(member)!r}: hard link target {_show(link)!r} is in another target"
            )
        self._check_not_through_symlink(link_parts, member, "hard link target")
        if link_parts in self._symlinks:
            return "symlink", self._symlinks[link_parts]
        if link_parts not in self._files:
            what = "a directory" if link_parts in self._dirs else "no earlier file"
            raise TarRefused(
                f"member {_show(member)!r}: hard link target {_show(link)!r} is {what}"
            )
        return "hard link", link

    def _record(self, parts, kind: str, link: bytes, member: bytes) -> None:
        """Remember what now lives at ``parts``: later members must not write through it."""
        if kind == "symlink":
            if parts in self._dirs:
                raise TarRefused(
                    f"member {_show(member)!r}: symlink replaces a directory"
                )
            if not link or len(link) > MAX_SYMLINK_TEXT:
                raise TarRefused(
                    f"member {_show(member)!r}: empty or overlong symlink target"
                )
            self._files.discard(parts)
            self._symlinks[parts] = link
        elif kind == "directory":
            self._files.discard(parts)
            self._dirs.add(parts)
        else:
            self._dirs.discard(parts)
            self._files.add(parts)

    def _strip_setid_bits(self, header: bytes, parts, end: int) -> None:
        """Queue a copy of the header without set-id bits, to go to tar in its place.

        GNU tar takes the mode from the header's mode field only (pax has no mode
        keyword, and unknown keywords are refused), so rewriting that field is enough.
        """
        mode = parse_number(header[100:108], "mode")
        if not mode & _SETID:
            return
        block = bytearray(header)
        block[100:108] = b"%07o\0" % (mode & 0o7777 & ~_SETID)
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
        self._patches.append((end - BLOCK, bytes(block)))
        self.stripped_setid.append(os.fsdecode(b"/".join(parts)))
