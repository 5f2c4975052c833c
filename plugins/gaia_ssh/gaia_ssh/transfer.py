"""Streaming SFTP transfers: pipelined reads and writes in bounded memory.

paramiko's own ``prefetch`` runs a helper thread that polls every 10 ms and its buffered
file splits requests at 32 KiB; on a fast link both cost more than the network. Here
the calling thread keeps a fixed number of large requests in flight and handles
their answers in order, so memory stays bounded by ``IN_FLIGHT_BYTES`` plus the SSH
channel window, whatever the payload size. It uses paramiko's request/response
primitives (``_async_request`` / ``_read_response``), stable since paramiko 1.x, and
swaps the SFTP channel's receive buffer for one that does not copy on every read.
"""

from __future__ import annotations

import collections
import dataclasses
import posixpath
import secrets
import stat
import threading
from typing import Any, BinaryIO

import paramiko
from paramiko import sftp as proto
from paramiko.buffered_pipe import BufferedPipe

#: SSH channel window and the largest packet we accept (what the server may have in
#: flight towards us)
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
#: AEAD ciphers first: one pass per packet instead of a cipher plus an HMAC
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: every SFTP server accepts requests of this size; used when it states no limits
BASIC_REQUEST_SIZE = 32 * 1024
#: the largest request we send even when the server allows more (OpenSSH: 255 KiB). Each
#: request's buffers then stay under glibc's 128 KiB mmap threshold; bigger ones are
#: mapped and unmapped per request and the page faults cost more than the copies.
MAX_REQUEST_SIZE = 112 * 1024
#: bytes of requests kept in flight in each direction
IN_FLIGHT_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bytes per read and per write request this server accepts."""

    read: int = BASIC_REQUEST_SIZE
    write: int = BASIC_REQUEST_SIZE


def negotiate(sftp: paramiko.SFTPClient) -> Limits:
    """Ask for ``limits@openssh.com``; a server without it gets the basic size."""
    try:
        kind, msg = sftp._request(proto.CMD_EXTENDED, "limits@openssh.com")
    except OSError:  # SSH_FX_OP_UNSUPPORTED
        return Limits()
    if kind != proto.CMD_EXTENDED_REPLY:
        return Limits()
    msg.get_int64()  # max packet length
    max_read, max_write = msg.get_int64(), msg.get_int64()

    def size(limit: int) -> int:  # 0 means "not stated"
        return min(limit, MAX_REQUEST_SIZE) if limit >= BASIC_REQUEST_SIZE else BASIC_REQUEST_SIZE

    return Limits(read=size(max_read), write=size(max_write))


def in_flight(request_size: int) -> int:
    return max(4, IN_FLIGHT_BYTES // request_size)


class _ByteArrayPipe(BufferedPipe):
    """paramiko's channel buffer on a ``bytearray``.

    The stock buffer is an ``array`` whose ``del buf[:n]`` moves everything still
    buffered on every read: with megabytes in flight, that costs more than the
    decryption. CPython deletes from the front of a ``bytearray`` in O(1).
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer += data

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return bytes(self._buffer[:limit])


def open_sftp(transport: paramiko.Transport, timeout: float) -> paramiko.SFTPClient:
    """An SFTP session on a channel with the fast buffer (set before any data arrives).

    paramiko waits for the subsystem reply without a timeout; a watchdog closes the
    transport if the server does not answer in time.
    """
    channel = transport.open_session(timeout=timeout)
    channel.in_buffer = _ByteArrayPipe()
    channel.settimeout(timeout)
    fired = threading.Event()

    def give_up() -> None:
        fired.set()
        transport.close()

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        channel.invoke_subsystem("sftp")
        return paramiko.SFTPClient(channel)
    except paramiko.SSHException:
        if fired.is_set():
            raise TimeoutError("the server did not start the SFTP subsystem in time") from None
        raise
    finally:
        watchdog.cancel()


def temporary_name(remote: str) -> str:
    """A sibling name nobody else uses; renamed over ``remote`` once complete."""
    return f"{remote}.tmp-{secrets.token_hex(8)}"


def makedirs(sftp: paramiko.SFTPClient, path: str, known: set[str]) -> None:
    """``mkdir -p`` over SFTP; ``known`` caches directories seen to exist."""
    if path in known or path in ("", "/", "."):
        return
    try:
        attrs = sftp.stat(path)
    except FileNotFoundError:
        makedirs(sftp, posixpath.dirname(path), known)
        try:
            sftp.mkdir(path)
        except OSError:
            attrs = sftp.stat(path)  # created concurrently by another writer?
            if not stat.S_ISDIR(attrs.st_mode or 0):
                raise
    else:
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise NotADirectoryError(f"{path} exists and is not a directory")
    known.add(path)


class _Pipeline:
    """Requests on one open file, answered in order; early answers are parked here."""

    def __init__(self, sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile):
        self.sftp = sftp
        self.handle = handle.handle
        self.pending: collections.deque[tuple[int, Any]] = collections.deque()
        self.early: dict[int, tuple[int, paramiko.Message]] = {}

    # called by paramiko for an answer that arrives while we wait for another one
    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.early[num] = (kind, msg)

    def send(self, command: int, *args: Any, tag: Any = None) -> None:
        self.pending.append((self.sftp._async_request(self, command, self.handle, *args), tag))

    def receive(self) -> tuple[int, paramiko.Message, Any]:
        """The oldest request's answer; an error status raises (ENOENT, EOF, ...)."""
        num, tag = self.pending.popleft()
        answer = self.early.pop(num, None)
        try:
            if answer is None:
                kind, msg = self.sftp._read_response(num)
            else:
                kind, msg = answer
                if kind == proto.CMD_STATUS:
                    self.sftp._convert_status(msg)
        except EOFError:  # the SFTP status EOF; a dropped connection is an SSHException
            raise OSError("the remote file ended before its stated size") from None
        return kind, msg, tag


def put(sftp: paramiko.SFTPClient, source: BinaryIO, remote: str, limits: Limits) -> int:
    """Write ``source`` to ``remote`` with pipelined writes; check the size it ends up with."""
    sent = 0
    window = in_flight(limits.write)
    with sftp.open(remote, "wb") as handle:
        pipeline = _Pipeline(sftp, handle)
        while chunk := source.read(limits.write):
            if len(pipeline.pending) >= window:
                pipeline.receive()
            pipeline.send(proto.CMD_WRITE, proto.int64(sent), chunk)
            sent += len(chunk)
        while pipeline.pending:
            pipeline.receive()
    size = sftp.stat(remote).st_size
    if size != sent:
        raise OSError(f"size mismatch after upload: sent {sent} bytes, server has {size}")
    return sent


def get(sftp: paramiko.SFTPClient, remote: str, dest: BinaryIO, limits: Limits) -> int:
    """Stream ``remote`` into ``dest`` with read-ahead; a file shorter than its stat is an error."""
    size = sftp.stat(remote).st_size or 0
    received = requested = 0
    window = in_flight(limits.read)
    with sftp.open(remote, "rb") as handle:
        pipeline = _Pipeline(sftp, handle)
        while received < size:
            while requested < size and len(pipeline.pending) < window:
                length = min(limits.read, size - requested)
                pipeline.send(proto.CMD_READ, proto.int64(requested), length, tag=(requested, length))
                requested += length
            kind, msg, (offset, length) = pipeline.receive()
            if kind != proto.CMD_DATA:
                raise OSError(f"unexpected SFTP answer {kind} to a read")
            data = msg.get_string()
            if len(data) < length:  # a short read: fetch the rest before going on
                data += _read_exactly(sftp, handle, offset + len(data), length - len(data))
            dest.write(data)
            received += len(data)
    return received


def _read_exactly(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        try:
            kind, msg = sftp._request(proto.CMD_READ, handle.handle, proto.int64(offset), length)
        except EOFError:
            raise OSError(f"the remote file ended at byte {offset}, before its stated size") from None
        if kind != proto.CMD_DATA:
            raise OSError(f"unexpected SFTP answer {kind} to a read")
        data = msg.get_string()
        if not data:
            raise OSError(f"the remote file ended at byte {offset}, before its stated size")
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)
