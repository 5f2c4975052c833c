"""The payload of a checkpoint: directories captured into one compressed tar stream.

Capture runs GNU tar once per target (POSIX/pax format: nanosecond mtimes) and, in one
pass over the concatenated streams, validates them with the same
:class:`~gaia_core.checkpoints.tarscan.TarScanner` restore uses (so capture refuses what
restore would), finds the absolute roots the files embed
(:class:`~gaia_core.checkpoints.relocate.RootFinder`), compresses in-process (zstd, all
cores) and hashes the compressed bytes on their way to ``dest``: no copy of the tree.
Extract hashes and decompresses while reading, stops past the expected unpacked size and
entry count, and feeds GNU tar through a TarScanner that strips set-id bits, so tar never
reads a header that was not validated first and never creates a set-id or foreign file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, BinaryIO

import zstandard

from gaia_core.anchors import Target
from gaia_core.checkpoints.relocate import RootFinder
from gaia_core.checkpoints.tarscan import TarMalformed, TarRefused, TarScanner
from gaia_core.errors import CheckpointError

COMPRESSIONS = {"zstd": "payload.tar.zst", "none": "payload.tar"}
DEFAULT_EXCLUDE = (".gaia-checkpoint.json",)
#: read size of pipes and payload files; large reads keep per-call overhead low and let
#: hashing and (de)compression run on big buffers with the GIL released
CHUNK = 1024 * 1024
#: decompressed bytes per step: well under the pipe size, so tar never waits for us
DECOMPRESSED_CHUNK = 256 * 1024
_TARGET_NAME = re.compile(r"[A-Za-z0-9._-]+")
_STDERR_LIMIT = 2000
_NO_ROOTS: Mapping[str, Path] = MappingProxyType({})
#: GNU tar leaves sockets out with this warning (exit status 0); LC_ALL=C keeps it stable
_SOCKET_IGNORED = re.compile(rb"^[^:\n]*tar: (.*): socket ignored$", re.MULTILINE)


class UnsafeArchive(CheckpointError):
    """The payload holds a member that restore refuses (path, type or link rule)."""


class PayloadCorrupt(CheckpointError):
    """The payload does not match its hash or size, or is not a valid stream."""


@dataclass(frozen=True)
class PayloadInfo:
    """What capture wrote: the manifest records all of it."""

    sha256: str  # of the compressed payload bytes
    size: int  # compressed payload bytes
    unpacked_size: int  # bytes of the tar stream
    entries: int  # tar members
    embedded: list[dict]  # {"path", "kind": text|binary|symlink, "roots"}, by path
    external_links: list[str]  # directories outside every target that links point to


@dataclass(frozen=True)
class ExtractInfo:
    unpacked_size: int  # bytes of the tar stream
    entries: int  # tar members
    stripped_setid: list[str]  # members restored without their setuid/setgid bits


def payload_file_name(compression: str) -> str:
    try:
        return COMPRESSIONS[compression]
    except KeyError:
        raise CheckpointError(
            f"unknown compression {compression!r}; allowed: {', '.join(COMPRESSIONS)}"
        ) from None


# -- capture ---------------------------------------------------------------------------


class _HashingWriter:
    """Hashes and counts bytes on their way to the payload file."""

    def __init__(self, dest: BinaryIO):
        self._dest = dest
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._sha.update(data)
        try:
            self._dest.write(data)
        except OSError as error:
            raise self._failed(error) from error
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        try:
            self._dest.flush()
        except OSError as error:
            raise self._failed(error) from error

    def _failed(self, error: OSError) -> CheckpointError:
        """A short write names the file (a full disk's message says which one)."""
        name = getattr(self._dest, "name", None)
        where = f" {name}" if isinstance(name, str) else ""
        return CheckpointError(f"writing the checkpoint payload{where} failed: {error.strerror or error}")

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _Compressor:
    """zstd on all cores into the sink; closed (frame finished) only on success, so an
    exception from ``progress`` is never masked by a flush."""

    def __init__(self, sink: _HashingWriter, level: int):
        compressor = zstandard.ZstdCompressor(
            level=level, threads=-1, write_checksum=True
        )
        self._writer = compressor.stream_writer(sink, closefd=False)

    def write(self, data) -> None:
        try:
            self._writer.write(data)
        except zstandard.ZstdError as error:
            raise CheckpointError(
                f"compressing the checkpoint failed: {error}"
            ) from error

    def close(self) -> None:
        try:
            self._writer.close()
        except zstandard.ZstdError as error:
            raise CheckpointError(
                f"compressing the checkpoint failed: {error}"
            ) from error


def capture(
    targets: Sequence[Target],
    dest: BinaryIO,
    *,
    compression: str = "zstd",
    level: int = 3,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    roots: Mapping[str, Path] = _NO_ROOTS,
    progress: Callable[[int], None] | None = None,
) -> PayloadInfo:
    """Write ``targets`` to ``dest`` as one (compressed) tar stream; return what it holds.

    Members are ``<target name>/<path>``. ``exclude`` holds paths relative to each target
    root that are left out (anchored: only at the root). ``roots`` names the absolute
    directories whose embedding in files and links is recorded for relocation.
    ``progress(n)``: n more bytes of the tar stream were processed; it may raise to cancel
    (the exception propagates; ``dest`` then holds a partial payload for the caller to
    delete). Raises UnsafeArchive, naming the member, for anything restore would refuse.
    """
    payload_file_name(compression)
    _check_targets(targets, must_exist=True)
    excluded = [_exclude_option(path) for path in exclude]
    finder = RootFinder(roots, targets)
    scanner = TarScanner(targets, observer=finder)
    sink = _HashingWriter(dest)
    compressor = _Compressor(sink, level) if compression == "zstd" else None
    write = compressor.write if compressor else sink.write
    try:
        unpacked = sum(
            _tar_create(target, excluded, scanner, write, progress)
            for target in targets
        )
        scanner.finish()
    except TarRefused as error:
        raise UnsafeArchive(f"refusing to capture the checkpoint: {error}") from error
    except TarMalformed as error:
        raise CheckpointError(
            f"tar wrote a stream gaia cannot read: {error}"
        ) from error
    if compressor:
        compressor.close()
    sink.flush()
    return PayloadInfo(
        sha256=sink.hexdigest(),
        size=sink.size,
        unpacked_size=unpacked,
        entries=scanner.members,
        embedded=finder.embedded,
        external_links=finder.external_links,
    )


def _exclude_option(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts or not parts:
        raise CheckpointError(
            f"exclude path {path!r} must be relative to the target root"
        )
    return "--exclude=./" + "/".join(parts)


def _tar_create(
    target: Target,
    excluded: list[str],
    scanner: TarScanner,
    write: Callable[[memoryview], object],
    progress: Callable[[int], None] | None,
) -> int:
    """Stream one target through the scanner into ``write``; return the tar stream's size."""
    command = [
        _tar(), "-C", str(target.path), "-cf", "-",
        # pax: nanosecond mtimes; atime and ctime change on every read, so they would make
        # an unchanged tree produce another payload
        "--format=posix", "--pax-option=delete=atime,delete=ctime",
        "--numeric-owner", "--sort=name", "--anchored", "--no-wildcards", *excluded,
        # "." becomes "<name>", "./x" becomes "<name>/x"; symlink texts stay as they are
        f"--transform=s,^\\.$,{target.name},S", f"--transform=s,^\\./,{target.name}/,S",
        ".",
    ]  # fmt: skip
    total = 0
    with _stderr_file() as stderr, subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        env=_tar_env(), bufsize=0,
    ) as tar:  # fmt: skip
        try:
            _grow_pipe(tar.stdout)
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while count := _fill(tar.stdout, view, target):
                # full chunks go as they are: the root scan searches them without a copy
                scanner.feed(buffer if count == CHUNK else buffer[:count])
                write(view[:count])
                total += count
                if progress is not None:
                    progress(count)
            tar.wait()
        finally:
            _reap(tar)
        if tar.returncode != 0:
            raise CheckpointError(
                f"tar failed to capture target {target.name!r} ({target.path}) "
                f"with exit status {tar.returncode}: {_read_tail(stderr)}"
            )
        _refuse_skipped_sockets(stderr, target)
    return total


def _fill(pipe: IO[bytes], view: memoryview, target: Target) -> int:
    """Read until ``view`` is full or the stream ends: whole chunks keep matches across
    chunk boundaries rare and the per-chunk work low."""
    filled = 0
    try:
        while filled < len(view) and (count := pipe.readinto(view[filled:])):
            filled += count
    except OSError as error:
        raise CheckpointError(
            f"reading tar's output for target {target.name!r} failed: {error}"
        ) from error
    return filled


def _refuse_skipped_sockets(stderr: IO[bytes], target: Target) -> None:
    """GNU tar leaves sockets out with a warning; restore refuses them, so capture does."""
    stderr.seek(0)
    names = [
        match.group(1).decode("utf-8", "replace")
        for match in _SOCKET_IGNORED.finditer(stderr.read())
    ]
    if names:
        members = ", ".join(
            repr(f"{target.name}/{name.removeprefix('./')}") for name in names[:10]
        )
        raise UnsafeArchive(
            f"refusing to capture the checkpoint: member {members}: "
            f"a socket is not allowed"
        )


# -- extract ---------------------------------------------------------------------------


class _HashingReader:
    """Hashes and counts payload bytes as they are read; stops early past the expected size."""

    def __init__(self, source: BinaryIO, expected_size: int | None):
        self._source = source
        self._expected_size = expected_size
        self._sha = hashlib.sha256()
        self.size = 0
        self.eof = False
        self.frames = _ZstdFrameWalker()

    def read(self, size: int = CHUNK) -> bytes:
        data = self._source.read(size if size and size > 0 else CHUNK)
        if not data:
            self.eof = True
            return b""
        self._sha.update(data)
        self.size += len(data)
        if self._expected_size is not None and self.size > self._expected_size:
            raise PayloadCorrupt(
                f"checkpoint payload is larger than the expected {self._expected_size} bytes"
            )
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def mismatch(self, expected_sha256: str | None) -> str | None:
        """Why the bytes read do not match the expectations (None when they do)."""
        if self._expected_size is not None and self.size != self._expected_size:
            return f"payload size is {self.size} bytes, expected {self._expected_size}"
        if (
            expected_sha256 is not None
            and self._sha.hexdigest() != expected_sha256.lower()
        ):
            return (
                f"payload sha256 is {self._sha.hexdigest()}, expected {expected_sha256}"
            )
        return None


@dataclass(frozen=True)
class _Limits:
    """Where extraction stops: the manifest's unpacked size and entry count."""

    unpacked: int | None
    entries: int | None

    def check(self, unpacked: int, entries: int) -> None:
        if self.unpacked is not None and unpacked > self.unpacked:
            raise PayloadCorrupt(
                f"checkpoint payload unpacks to more than the expected {self.unpacked} "
                f"bytes; stopped"
            )
        if self.entries is not None and entries > self.entries:
            raise PayloadCorrupt(
                f"checkpoint payload holds more than the expected {self.entries} "
                f"entries; stopped"
            )


class _TarQuit(Exception):
    """tar closed its input early; its exit status and message explain why."""


def extract(
    source: BinaryIO,
    staging: Path,
    targets: Sequence[Target],
    *,
    compression: str,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    max_unpacked: int | None = None,
    max_entries: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractInfo:
    """Extract a payload into the empty directory ``staging`` (``staging/<name>/`` per target).

    With ``expected_sha256`` the payload's hash and size are verified (trust mode
    ``verify``); without it only the safety checks run (``permissive``). Extraction stops
    as soon as the tar stream grows past ``max_unpacked`` bytes or ``max_entries``
    members (a decompression bomb writes no more than that). Files are owned by the
    running user and never set-id. ``progress(n)``: n more payload bytes were read; it
    may raise to cancel (the exception propagates, tar is stopped). Raises UnsafeArchive
    or PayloadCorrupt; the caller then deletes ``staging``.
    """
    payload_file_name(compression)
    _check_targets(targets, must_exist=False)
    staging = Path(staging)
    if any(staging.iterdir()):
        raise CheckpointError(f"staging directory {staging} is not empty")
    reader = _HashingReader(source, expected_size)
    scanner = TarScanner(targets, strip_setid=True)
    limits = _Limits(max_unpacked, max_entries)
    command = [
        _tar(), "-x", "-f", "-", "-C", str(staging),
        "--ignore-zeros", "--preserve-permissions", "--no-same-owner",
        "--no-xattrs", "--no-acls", "--no-selinux",
    ]  # fmt: skip
    unpacked = 0
    with _stderr_file() as stderr, subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
        env=_tar_env(), bufsize=0,
    ) as tar:  # fmt: skip
        try:
            _grow_pipe(tar.stdin)
            try:
                unpacked = _feed(
                    reader, scanner, compression, tar.stdin.fileno(), limits, progress
                )
            except _TarQuit:
                if expected_sha256 is not None:
                    reader.drain()
            except (
                TarRefused,
                TarMalformed,
                PayloadCorrupt,
                zstandard.ZstdError,
            ) as error:
                _raise_payload_error(error, reader, expected_sha256)
            tar.stdin.close()
            tar.wait()
        finally:
            _reap(tar)
        problem = reader.mismatch(expected_sha256) if reader.eof else None
        if problem:
            raise PayloadCorrupt(f"checkpoint payload is corrupt: {problem}")
        if tar.returncode != 0:
            raise PayloadCorrupt(
                f"tar failed to extract the checkpoint payload (exit status "
                f"{tar.returncode}): {_read_tail(stderr)}"
            )
    for target in targets:
        root = staging / target.name
        if root.is_symlink() or not root.is_dir():
            raise PayloadCorrupt(
                f"checkpoint payload holds no directory for target {target.name!r}"
            )
    return ExtractInfo(unpacked, scanner.members, scanner.stripped_setid)


def _feed(
    reader: _HashingReader,
    scanner: TarScanner,
    compression: str,
    fd: int,
    limits: _Limits,
    progress: Callable[[int], None] | None,
) -> int:
    """Pass the validated stream to tar; return its size. ``progress`` is called here,
    outside zstd's read callbacks, so its exceptions reach the caller unchanged."""
    unpacked = reported = 0
    for chunk in _tar_stream(reader, compression):
        unpacked += len(chunk)
        limits.check(unpacked, scanner.members)  # before tar sees a byte past the limit
        pieces = scanner.feed(chunk)
        limits.check(unpacked, scanner.members)
        for piece in pieces:
            _write_to_tar(fd, piece)
        if progress is not None and reader.size > reported:
            progress(reader.size - reported)
            reported = reader.size
    if reader.read(CHUNK):
        raise PayloadCorrupt(
            "checkpoint payload has trailing data after the end of its stream"
        )
    if compression == "zstd":
        reader.frames.finish()
    scanner.finish()
    if progress is not None and reader.size > reported:
        progress(reader.size - reported)
    return unpacked


def _tar_stream(
    reader: _HashingReader, compression: str
) -> Iterator[memoryview | bytes]:
    if compression == "none":
        while data := reader.read(CHUNK):
            yield data
        return
    frames = reader.frames

    class _WalkingReader:
        def read(self, size: int = CHUNK) -> bytes:
            data = reader.read(size)
            frames.feed(data)
            return data

    decompressor = zstandard.ZstdDecompressor()
    stream = decompressor.stream_reader(
        _WalkingReader(), read_size=CHUNK, read_across_frames=True, closefd=False
    )
    buffer = bytearray(DECOMPRESSED_CHUNK)
    view = memoryview(buffer)
    while count := stream.readinto(buffer):
        yield view[:count]


def _raise_payload_error(
    error: Exception, reader: _HashingReader, expected_sha256
) -> None:
    """A bad hash explains any other failure: check it first when it is known."""
    if expected_sha256 is not None and not isinstance(error, PayloadCorrupt):
        with contextlib.suppress(PayloadCorrupt):
            reader.drain()
        problem = reader.mismatch(expected_sha256)
        if problem:
            raise PayloadCorrupt(f"checkpoint payload is corrupt: {problem}") from error
    if isinstance(error, TarRefused):
        raise UnsafeArchive(f"refusing checkpoint payload: {error}") from error
    if isinstance(error, PayloadCorrupt):
        raise error
    raise PayloadCorrupt(f"checkpoint payload is corrupt: {error}") from error


class _ZstdFrameWalker:
    """Follows zstd frame and block headers, because the decoder stops silently when
    a truncated stream ends; only a walk of the frames tells complete from truncated."""

    _MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self.frames = 0
        self._state, self._need = "magic", 4
        self._unit = bytearray()
        self._skip = 0
        self._checksum = False

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        while pos < len(view):
            if self._skip:
                step = min(self._skip, len(view) - pos)
                pos += step
                self._skip -= step
                continue
            take = min(self._need - len(self._unit), len(view) - pos)
            self._unit += view[pos : pos + take]
            pos += take
            if len(self._unit) == self._need:
                unit = bytes(self._unit)
                self._unit.clear()
                self._step(unit)

    def _step(self, unit: bytes) -> None:
        value = int.from_bytes(unit, "little")
        if self._state == "magic":
            if value == self._MAGIC:
                self._state, self._need = "frame header", 1
            elif 0x184D2A50 <= value <= 0x184D2A5F:
                self._state, self._need = "skippable size", 4
            else:
                raise PayloadCorrupt("checkpoint payload is not a zstd stream")
        elif self._state == "frame header":
            if value & 0x08:
                raise PayloadCorrupt(
                    "checkpoint payload has an invalid zstd frame header"
                )
            single_segment = bool(value & 0x20)
            self._checksum = bool(value & 0x04)
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[value & 3]
            rest += ((1 if single_segment else 0), 2, 4, 8)[value >> 6]
            self._state, self._need = "frame header rest", rest
            if not rest:
                self._state, self._need = "block", 3
        elif self._state == "frame header rest":
            self._state, self._need = "block", 3
        elif self._state == "block":
            block_type = (value >> 1) & 3
            if block_type == 3:
                raise PayloadCorrupt("checkpoint payload has an invalid zstd block")
            self._skip = 1 if block_type == 1 else value >> 3
            if value & 1:  # last block of the frame
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._end_frame()
        elif self._state == "checksum":
            self._end_frame()
        elif self._state == "skippable size":
            self._skip = value
            self._state, self._need = "magic", 4

    def _end_frame(self) -> None:
        self.frames += 1
        self._state, self._need = "magic", 4

    def finish(self) -> None:
        if self._state != "magic" or self._unit or self._skip or not self.frames:
            raise PayloadCorrupt(
                "checkpoint payload is truncated (incomplete zstd stream)"
            )


# -- helpers ---------------------------------------------------------------------------


def _check_targets(targets: Sequence[Target], *, must_exist: bool) -> None:
    if not targets:
        raise CheckpointError("a checkpoint payload needs at least one target")
    names = [target.name for target in targets]
    for target in targets:
        if not _TARGET_NAME.fullmatch(target.name) or target.name in (".", ".."):
            raise CheckpointError(f"invalid checkpoint target name {target.name!r}")
        if names.count(target.name) > 1:
            raise CheckpointError(
                f"checkpoint target name {target.name!r} is used twice"
            )
        if must_exist and not Path(target.path).is_dir():
            raise CheckpointError(
                f"checkpoint target {target.name!r}: {target.path} is not a directory"
            )


def _tar() -> str:
    tar = shutil.which("tar")
    if tar is None:
        raise CheckpointError(
            "GNU tar is required for checkpoints but was not found on PATH"
        )
    return tar


def _tar_env() -> dict[str, str]:
    """C messages; no TAR_OPTIONS, which could turn on --same-owner or --xattrs."""
    env = {key: value for key, value in os.environ.items() if key != "TAR_OPTIONS"}
    return {**env, "LC_ALL": "C"}


def _grow_pipe(pipe: IO[bytes]) -> None:
    """Fewer, larger pipe transfers between tar and us (Linux only; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


def _write_to_tar(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError as error:
        raise _TarQuit() from error


def _reap(process: subprocess.Popen) -> None:
    """Make sure a tar we started is gone, whatever happened."""
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
    with contextlib.suppress(OSError):
        if process.stdin:
            process.stdin.close()
    process.wait()


@contextlib.contextmanager
def _stderr_file() -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as stderr:
        yield stderr


def _read_tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    if len(text) > _STDERR_LIMIT:
        text = "..." + text[-_STDERR_LIMIT:]
    return text or "(no message)"
