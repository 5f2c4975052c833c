"""Streaming SFTP transfers: pipelined reads and writes in bounded memory.

paramiko's own ``prefetch`` runs a helper thread that polls every 10 ms and its buffered
file splits requests at 32 KiB; on a fast link both cost more than the network. Here
the calling thread keeps a fixed number of large requests in flight, so memory stays
bounded by ``IN_FLIGHT_BYTES`` plus the SSH channel window, whatever the payload size.

Uploads use paramiko's request/response primitives (``_async_request`` /
``_read_response``), stable since paramiko 1.x. Downloads, where a Python client spends
its time, speak the few bytes of SFTP framing themselves: READ requests go out in
batches (one SSH packet for several), and DATA replies are cut out of the channel's
received packets without copying, straight into large writes to the destination.
The SFTP channel's receive buffer is swapped for one that queues the received packets
instead of copying them into one growing buffer.
"""

from __future__ import annotations

import collections
import dataclasses
import posixpath
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import paramiko
from paramiko import sftp as proto
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from gaia_core import retry

Progress = Callable[[int], None]

#: SSH channel window and the largest packet we accept (what the server may have in
#: flight towards us)
WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
#: AEAD ciphers first: one pass per packet instead of a cipher plus an HMAC
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: every SFTP server accepts requests of this size; used when it states no limits
BASIC_REQUEST_SIZE = 32 * 1024
#: the largest request we send even when the server allows more (OpenSSH: 255 KiB). Each
#: request's buffers then stay under glibc's 128 KiB mmap threshold; bigger ones are
#: mapped and unmapped per request and the page faults cost more than the copies.
MAX_REQUEST_SIZE = 112 * 1024
#: bytes of requests kept in flight in each direction. Measured against OpenSSH over
#: loopback: 4 MiB left both ends idle half the time (~360 MB/s down), 8 MiB keeps the
#: server busy (~700 MB/s); the window above stays larger so it never limits the server
IN_FLIGHT_BYTES = 8 * 1024 * 1024
#: READ requests sent together, as one SSH packet
REQUEST_BATCH = 8
#: bytes gathered before each write to a download's destination
WRITE_BATCH = 1024 * 1024
#: the most a download asks the channel buffer for at once (it hands out whole packets)
RECV_LIMIT = 1024 * 1024


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


class _PacketQueue:
    """Received packets, queued as they came: appending copies nothing, and taking a
    whole packet out hands back the very ``bytes`` object that went in."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._head = 0  # bytes of the first chunk already taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def take(self, limit: int) -> bytes:
        """At most ``limit`` bytes, from one packet only (as ``recv`` may)."""
        first = self._chunks[0]
        available = len(first) - self._head
        if available <= limit:
            out = first if self._head == 0 else first[self._head :]
            self._chunks.popleft()
            self._head = 0
        else:
            out = first[self._head : self._head + limit]
            self._head += limit
        self._size -= len(out)
        return out

    def take_all(self) -> bytes:
        out = b"".join(self._chunks)[self._head :]
        self._chunks.clear()
        self._head = self._size = 0
        return out


class _PacketPipe(BufferedPipe):
    """paramiko's channel buffer on a :class:`_PacketQueue`.

    The stock buffer is an ``array`` that copies every packet in, copies every read
    out and moves what is left on each read; at hundreds of MB/s those copies cost
    more than the decryption. Same locking and timeout behaviour as the stock one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _PacketQueue()  # type: ignore[assignment]

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer.append(data)

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not len(self._buffer):
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not len(self._buffer) and not self._closed:
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
                if not len(self._buffer):
                    return b""
            out = self._buffer.take(nbytes)
            if not len(self._buffer) and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def empty(self) -> bytes:
        with self._lock:
            out = self._buffer.take_all()
            if self._event is not None and not self._closed:
                self._event.clear()
            return out


def open_sftp(transport: paramiko.Transport, timeout: float) -> paramiko.SFTPClient:
    """An SFTP session on a channel with the fast buffer (set before any data arrives).

    paramiko waits for the subsystem reply without a timeout; a watchdog closes the
    transport if the server does not answer in time.
    """
    channel = transport.open_session(timeout=timeout)
    channel.in_buffer = _PacketPipe()
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
    """A sibling name nobody else uses (``<file>.tmp-<host>-<pid>-<random>``); renamed
    over ``remote`` once complete."""
    directory, name = posixpath.split(remote)
    return posixpath.join(directory, retry.temporary_name(name))


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


def put(
    sftp: paramiko.SFTPClient,
    source: BinaryIO,
    remote: str,
    limits: Limits,
    progress: Progress | None = None,
    activity: Callable[[], None] | None = None,
) -> int:
    """Write ``source`` to ``remote`` with pipelined writes; check the size it ends up with.

    ``progress`` hears of every chunk the channel took, ``activity`` of every chunk
    sent and every answer. After a failure of the connection itself the handle is not closed politely:
    a frozen server would only make that wait too (the backend drops the session).
    """
    sent = 0
    window = in_flight(limits.write)
    moved = progress or (lambda count: None)
    heard = activity or (lambda: None)
    handle = sftp.open(remote, "wb")
    try:
        pipeline = _Pipeline(sftp, handle)
        while chunk := source.read(limits.write):
            if len(pipeline.pending) >= window:
                pipeline.receive()
                heard()
            # handed to the channel, which takes it only within the server's window
            pipeline.send(proto.CMD_WRITE, proto.int64(sent), chunk)
            heard()
            sent += len(chunk)
            moved(len(chunk))
        while pipeline.pending:
            pipeline.receive()
            heard()
    except (TimeoutError, EOFError, paramiko.SSHException, ConnectionError):
        raise
    except BaseException:
        handle.close()  # the session is fine (a local read error, a cancel): tidy up
        raise
    handle.close()
    size = sftp.stat(remote).st_size
    if size != sent:
        raise OSError(f"size mismatch after upload: sent {sent} bytes, server has {size}")
    return sent


def get(
    sftp: paramiko.SFTPClient,
    remote: str,
    dest: BinaryIO,
    limits: Limits,
    progress: Progress | None = None,
    activity: Callable[[], None] | None = None,
) -> int:
    """Stream ``remote`` into ``dest`` with read-ahead; a file shorter than its stat is an error.

    Any failure once requests are in flight closes the SFTP channel: replies still on
    their way would otherwise be read as answers to the next command (the backend then
    opens a new session). ``activity`` hears of every reply.
    """
    size = sftp.stat(remote).st_size or 0
    with sftp.open(remote, "rb") as handle:
        try:
            writer = _BatchWriter(dest, progress)
            return _Download(sftp, handle.handle, 0, size, writer, limits.read, activity).run()
        except BaseException:
            sftp.get_channel().close()
            raise


def read_range(
    sftp: paramiko.SFTPClient,
    remote: str,
    offset: int,
    length: int,
    limits: Limits,
    activity: Callable[[], None] | None = None,
) -> bytearray:
    """``length`` bytes of ``remote`` from ``offset`` (fewer where the file ends first),
    read with the same pipelined requests as :func:`get` straight into one buffer of the
    range's size."""
    with sftp.open(remote, "rb") as handle:
        size = handle.stat().st_size or 0
        end = min(offset + length, size)
        buffer = bytearray(max(0, end - offset))
        if not buffer:
            return buffer
        try:
            _Download(sftp, handle.handle, offset, end, _IntoBuffer(buffer), limits.read, activity).run()
        except BaseException:
            sftp.get_channel().close()
            raise
        return buffer


_HEADER = struct.Struct(">IBI")  # SFTP packet length, type, request id
_UINT32 = struct.Struct(">I")
_READ_ARGS = struct.Struct(">QI")  # offset, length


class _ReplyReader:
    """The SFTP byte stream of a channel, consumed in place from the received packets."""

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self.view = memoryview(b"")

    def _fill(self) -> None:
        data = self.channel.recv(RECV_LIMIT)
        if not data:
            raise EOFError("the server closed the SFTP channel")
        self.view = memoryview(data)

    def exactly(self, count: int) -> bytes | memoryview:
        """The next ``count`` bytes (framing fields and parked replies)."""
        if len(self.view) >= count:
            out, self.view = self.view[:count], self.view[count:]
            return out
        parts = bytearray()
        for piece in self.pieces(count):
            parts += piece
        return bytes(parts)

    def pieces(self, count: int) -> Iterator[memoryview]:
        """The next ``count`` bytes as views of the received packets (no copies)."""
        while count:
            if not self.view:
                self._fill()
            piece = self.view[:count]
            self.view = self.view[len(piece) :]
            count -= len(piece)
            yield piece


class _BatchWriter:
    """Gathers small pieces into ``WRITE_BATCH``-byte writes; big pieces go straight
    through. ``progress`` hears of every write."""

    def __init__(self, dest: BinaryIO, progress: Progress | None = None):
        self.dest = dest
        self.progress = progress
        self.buffer = bytearray(WRITE_BATCH)
        self.filled = 0

    def write(self, piece: memoryview | bytes) -> None:
        size = len(piece)
        if self.filled + size > WRITE_BATCH:
            self.flush()
        if size >= WRITE_BATCH:
            self._out(piece)
        else:
            self.buffer[self.filled : self.filled + size] = piece
            self.filled += size

    def flush(self) -> None:
        if self.filled:
            filled, self.filled = self.filled, 0
            self._out(memoryview(self.buffer)[:filled])

    def _out(self, data: memoryview | bytes) -> None:
        self.dest.write(data)
        if self.progress is not None:
            self.progress(len(data))


class _IntoBuffer:
    """The destination of a ranged read: consecutive pieces copied into one buffer."""

    def __init__(self, buffer: bytearray):
        self.view = memoryview(buffer)
        self.filled = 0

    def write(self, piece: memoryview | bytes) -> None:
        size = len(piece)
        if self.filled + size > len(self.view):
            raise OSError("the SFTP server sent more than the range asked for")
        self.view[self.filled : self.filled + size] = piece
        self.filled += size

    def flush(self) -> None:
        self.view.release()


class _Download:
    """One pipelined read of bytes ``start`` to ``size`` of a file; replies may come in
    any order and any length up to the one asked for (a short one gets a follow-up
    request for the rest). ``writer`` gets the bytes in order, then ``flush()``."""

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        handle: bytes,
        start: int,
        size: int,
        writer: _BatchWriter | _IntoBuffer,
        request_size: int,
        activity: Callable[[], None] | None = None,
    ):
        self.activity = activity or (lambda: None)
        self.sftp = sftp
        self.channel = sftp.get_channel()
        self.handle = handle
        self.size = size
        self.request_size = request_size
        self.window = in_flight(request_size)
        self.reader = _ReplyReader(self.channel)
        self.writer = writer
        self.outstanding: dict[int, tuple[int, int]] = {}  # request id -> (offset, length)
        self.refetch: collections.deque[tuple[int, int]] = collections.deque()  # short reads' rest
        self.parked: dict[int, bytes] = {}  # offset -> data that arrived ahead of its turn
        self.requested = start  # offset up to which reads have been asked for
        self.written = start  # offset of the next byte the destination needs
        self.start = start

    def run(self) -> int:
        while self.written < self.size:
            if len(self.outstanding) <= self.window - REQUEST_BATCH or not self.outstanding:
                self._request_more()
            self._receive()
        self.writer.flush()
        return self.written - self.start

    def _request_more(self) -> None:
        batch = []
        while len(self.outstanding) < self.window and (self.refetch or self.requested < self.size):
            if self.refetch:
                offset, length = self.refetch.popleft()
            else:
                offset, length = self.requested, min(self.request_size, self.size - self.requested)
                self.requested += length
            batch.append(self._read_request(offset, length))
        if batch:
            self.channel.sendall(b"".join(batch))

    def _read_request(self, offset: int, length: int) -> bytes:
        with self.sftp._lock:  # paramiko numbers its own requests from the same counter
            number = self.sftp.request_number
            self.sftp.request_number += 1
        self.outstanding[number] = (offset, length)
        body = _UINT32.pack(len(self.handle)) + self.handle + _READ_ARGS.pack(offset, length)
        return _HEADER.pack(5 + len(body), proto.CMD_READ, number) + body

    def _receive(self) -> None:
        packet_length, kind, number = _HEADER.unpack(self.reader.exactly(_HEADER.size))
        if number not in self.outstanding or packet_length < 5:
            raise OSError(f"the SFTP server answered a request that was not made (#{number})")
        offset, length = self.outstanding.pop(number)
        self.activity()
        rest = packet_length - 5
        if kind == proto.CMD_DATA:
            (count,) = _UINT32.unpack(self.reader.exactly(4))
            if count != rest - 4 or not 0 < count <= length:
                raise OSError(f"malformed SFTP data reply: {count} bytes for a read of {length}")
            if count < length:
                self.refetch.append((offset + count, length - count))
            if offset == self.written:
                for piece in self.reader.pieces(count):
                    self.writer.write(piece)
                self.written += count
                while self.written in self.parked:
                    data = self.parked.pop(self.written)
                    self.writer.write(data)
                    self.written += len(data)
            else:
                self.parked[offset] = bytes(self.reader.exactly(count))
            return
        body = bytes(self.reader.exactly(rest))
        if kind != proto.CMD_STATUS:
            raise OSError(f"unexpected SFTP answer {kind} to a read")
        try:
            self.sftp._convert_status(paramiko.Message(body))
        except EOFError:  # the SFTP status EOF; a dropped connection is an SSHException
            raise OSError("the remote file ended before its stated size") from None
        raise OSError("the SFTP server answered a read with a status but no data")
