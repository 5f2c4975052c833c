"""Small files read, hashed, scanned and compressed (capture), or files and links written
(restore), in batches, on a thread or in a helper process.

A build tree is mostly files of a few KiB, where the cost is the Python around each file
(open, read, hash, scan, compress; or read frames, decompress, check, write, set the mode
and mtime: a dozen calls), not its bytes. On threads all of that waits for one GIL, which
the main thread needs for every entry too: with 50,000 tiny files the two took turns and
kept one CPU busy. A helper process has an interpreter and a GIL of its own; it is started
once a capture or restore has seen :data:`PROCESS_AFTER` small files, or at once by a
restore whose manifest lists that many (a small tree never pays for its start), runs
``python -m`` this module (a capture's) or is this process forked (a restore's, see
:func:`_fork`), and answers one batch at a time over a pipe. It is our own code:
it reads the files the walk named with the same checks, writes the entries the restore
checked with the same flags (new files, links, and the pieces of a large file the restore
created, written at their offsets), checks every chunk against its id as a thread does,
and its answers are trusted like a thread's.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import stat
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import zstandard

from gaia_core.checkpoints import chunking
from gaia_core.checkpoints.packs import (DEFAULT_LEVEL, ChunkCorrupt, IndexEntry, compress, decompressor, open_frame,
                                         read_frame)
from gaia_core.errors import CheckpointError

if TYPE_CHECKING:  # a helper imports it only when it scans (a restore's never does)
    from gaia_core.checkpoints.relocate import FileScanner

#: small files a capture or restore handles on its threads before it starts helper processes
#: (a restore whose manifest lists at least as many files starts them at once)
PROCESS_AFTER = 2000
#: seconds a helper may take to start before the capture goes on without it
START_TIMEOUT = 30
#: what reading a file gave: content digest, content, the indices of the roots it holds,
#: whether it is binary
Read = tuple[bytes, bytes, frozenset[int], bool]
#: what a helper gave for a file it read: as :data:`Read`, with the content's zstd frame in
#: place of the content, or None when the caller did not want it compressed
Framed = tuple[bytes, bytes | None, frozenset[int], bool]
#: a file to read: where it is, its name in the tree (for errors), size and inode at the walk
File = tuple[bytes, bytes, int, int]
#: a file to write: where, its mode, whether it is created with that mode (the umask
#: leaves it whole; otherwise it gets it by ``fchmod``), its mtime, and its chunks as
#: (chunk id, pack file, offset, frame length, plain size)
NewFile = tuple[bytes, int, bool, int, list[tuple[bytes, str, int, int, int]]]
#: a symlink to make: where, its target, its mtime
NewLink = tuple[bytes, bytes, int]
#: a piece of a large file the restore created: where, the file's (device, inode) as
#: created, the piece's offset, and its chunks as :data:`NewFile` gives them
Piece = tuple[bytes, tuple[int, int], int, list[tuple[bytes, str, int, int, int]]]
#: what errors call a helper
_NAME = "gaia's helper process"
_FD_LIMIT = os.sysconf("SC_OPEN_MAX")
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_regular(path: bytes, name: bytes, ino: int) -> int:
    """Open a file the walk saw as regular; refuse what took its place since (a link, a fifo)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CheckpointError(f"cannot read {os.fsdecode(name)!r} for the checkpoint: {exc.strerror or exc}") from None
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or now.st_ino != ino:
        os.close(fd)
        raise CheckpointError(f"refusing to capture {os.fsdecode(name)!r}: it was replaced while captured")
    return fd


def check_size(name: bytes, size: int, walked: int) -> None:
    if size != walked:
        raise CheckpointError(f"refusing to capture {os.fsdecode(name)!r}: it changed while it was read "
                              f"({walked} bytes at the walk, {size} when read)")


def read_files(files: Sequence[File], scanner: FileScanner | None) -> list[Read]:
    """Each file's digest, content and roots (files of at most :data:`chunking.SMALL_FILE`)."""
    read_small, chunk_id = chunking.read_small, chunking.chunk_id
    read = []
    for path, name, size, ino in files:
        fd = open_regular(path, name, ino)
        try:
            data = read_small(fd, size)
        finally:
            os.close(fd)
        if len(data) != size:
            check_size(name, len(data), size)
        if scanner is not None:
            scanner.whole(data)
            read.append((chunk_id(data), data, frozenset(scanner.found), scanner.binary))
        else:
            read.append((chunk_id(data), data, frozenset(), False))
    return read


def create_new(path: bytes, mode: int, whole: bool) -> int:
    """A new file at ``path``, never through a link nor over what is there; created with
    ``mode`` when the umask leaves it ``whole`` (else owner-only until :func:`settle_new`)."""
    return os.open(path, _OPEN_NEW, mode if whole else 0o600)


def write_all(fd: int, data: bytes | memoryview) -> None:
    done = os.write(fd, data)
    if done < len(data):
        rest = memoryview(data)[done:]
        while rest:
            rest = rest[os.write(fd, rest):]


def settle_new(fd: int, mode: int, whole: bool, mtime_ns: int) -> None:
    """Give a file :func:`create_new` made its mode (unless it has it) and its mtime."""
    if not whole:
        os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def make_link(path: bytes, target: bytes, mtime_ns: int) -> None:
    """A new symlink at ``path`` (never over what is there), with its own mtime."""
    os.symlink(target, path)
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def write_files(files: Sequence[NewFile], links: Sequence[NewLink], packs: dict[str, int]) -> int:
    """Write each new file from its chunks, each checked against its id, and make each
    link; the bytes written. ``packs`` keeps the pack files open (path -> descriptor) from
    batch to batch."""
    written = 0
    for path, mode, whole, mtime_ns, chunks in files:
        fd = create_new(path, mode, whole)
        try:
            for chunk, pack, offset, clen, plen in chunks:
                write_all(fd, _chunk(packs, chunk, pack, offset, clen, plen))
                written += plen
            settle_new(fd, mode, whole, mtime_ns)
        finally:
            os.close(fd)
    for path, target, mtime_ns in links:
        make_link(path, target, mtime_ns)
    return written


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def write_piece(piece: Piece, packs: dict[str, int]) -> int:
    """Write a piece of a large file at its offset, each chunk checked against its id; the
    bytes written. The file is opened by its name, never through a link, and must be the
    one the restore created (its device and inode), not what took its place since."""
    path, created, offset, chunks = piece
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != created:
            raise CheckpointError(f"refusing to restore {os.fsdecode(path)!r}: it was replaced while written")
        written = 0
        for chunk, pack, at, clen, plen in chunks:
            pwrite_all(fd, _chunk(packs, chunk, pack, at, clen, plen), offset + written)
            written += plen
        return written
    finally:
        os.close(fd)


def _chunk(packs: dict[str, int], chunk: bytes, pack: str, offset: int, clen: int, plen: int) -> bytes:
    """A chunk's plain bytes from its pack, checked against its id: the checks of
    :func:`~gaia_core.checkpoints.packs.open_frame` (the frame's declared size before it is
    decompressed, then its size and id), made here without a call each for the tens of
    thousands of chunks that pass them; one that fails any is read again by
    :func:`_checked_chunk`, which says what is wrong."""
    fd = packs.get(pack)
    if fd is not None:
        frame = os.pread(fd, clen, offset)
        try:
            if len(frame) == clen and zstandard.frame_content_size(frame) == plen:
                data = decompressor().decompress(frame)
                if len(data) == plen and chunking.chunk_id(data) == chunk:
                    return data
        except zstandard.ZstdError:
            pass
    return _checked_chunk(packs, IndexEntry(chunk, offset, clen, plen), pack)


def _checked_chunk(packs: dict[str, int], entry: IndexEntry, pack: str) -> bytes:
    """:func:`_chunk` by PackStore.read's checks, each with its message (opening the pack
    on its first chunk)."""
    where = f"local pack {os.path.basename(pack)[:16]}"
    try:
        if pack not in packs:
            try:
                packs[pack] = os.open(pack, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise ChunkCorrupt(f"{where} cannot be read: {exc.strerror or exc}") from None
        return open_frame(read_frame(packs[pack], entry, where), entry.chunk, entry.plen, where)
    except ChunkCorrupt as exc:
        raise ChunkCorruptIn(str(exc), entry.chunk) from None


class ChunkCorruptIn(ChunkCorrupt):
    """A chunk a helper found damaged: which one, so that the store forgets it."""

    def __init__(self, message: str, chunk: bytes):
        super().__init__(message)
        self.chunk = chunk


class _Pipe:
    """One end of a pipe that carries pickled messages, each after its length (as
    multiprocessing's ``Connection`` does: importing that took a tenth of a helper's start)."""

    _LENGTH = struct.Struct("<Q")

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        head = self._LENGTH.pack(len(data))
        for part in ((head + data,) if len(data) < 1 << 14 else (head, data)):  # a large one is not copied
            view = memoryview(part)
            while view:
                view = view[os.write(self.fd, view):]

    def recv(self) -> Any:
        (length,) = self._LENGTH.unpack(self._read(self._LENGTH.size))
        return pickle.loads(self._read(length))

    def poll(self, timeout: float) -> bool:
        """Whether a message (or the end of the pipe) is there within ``timeout`` seconds."""
        waiting = select.poll()
        waiting.register(self.fd, select.POLLIN)
        return bool(waiting.poll(timeout * 1000))

    def _read(self, size: int) -> bytes:
        parts, left = [], size
        while left:
            data = os.read(self.fd, left)
            if not data:
                raise EOFError(f"{_NAME}'s pipe ended")
            parts.append(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _Helper:
    """One helper process and its pipe."""

    def __init__(self, needles: Sequence[bytes], fork: bool):
        to_child, self._requests = os.pipe()
        self._replies, from_child = os.pipe()
        try:
            self.process = _fork(to_child, from_child) if fork else _spawn(to_child, from_child)
        except BaseException:
            os.close(self._requests)
            os.close(self._replies)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        self._out = _Pipe(self._requests)
        self._in = _Pipe(self._replies)
        self._needles = list(needles)
        #: requests sent and answers taken, in order: each caller takes the answer to its own
        self._sending, self._turns = threading.Lock(), threading.Condition()
        self._sent = self._answered = 0
        self.waiting = 0  # requests sent or about to be, not yet answered (HelperProcesses's lock)

    def ready(self) -> None:
        """Give the process the roots to look for; wait until it has imported what it needs."""
        self._send(self._needles)
        if not self._in.poll(START_TIMEOUT):
            raise CheckpointError(f"{_NAME} did not start within {START_TIMEOUT} s")
        self._receive()

    def call(self, kind: str, batch: Sequence) -> object:
        """The answer to a request; several callers may have theirs on the way at once (the
        process reads the next as soon as it has answered one)."""
        failed: BaseException | None = None
        with self._sending:
            ticket, self._sent = self._sent, self._sent + 1
            try:
                self._send((kind, batch))
            except BaseException as exc:  # raised in its turn: the requests after it get their answers
                failed = exc
        with self._turns:
            while self._answered != ticket:
                self._turns.wait()
            try:
                if failed is not None:
                    raise failed
                return self._receive()
            finally:
                self._answered += 1
                self._turns.notify_all()

    def _send(self, message: object) -> None:
        try:
            self._out.send(message)
        except OSError:
            raise self._ended() from None

    def _receive(self):
        try:
            kind, value = self._in.recv()
        except (EOFError, OSError):
            raise self._ended() from None
        if kind == "error":
            raise CheckpointError(value)
        if kind == "corrupt":
            raise ChunkCorruptIn(*value)
        if kind == "oserror":
            raise OSError(*value)
        return value

    def _ended(self) -> CheckpointError:
        import subprocess

        try:
            status = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            status = None
        return CheckpointError(f"{_NAME} ended unexpectedly (exit status {status})")

    def close(self) -> None:
        self.end()
        self.reap()

    def end(self) -> None:
        """Close the pipe: the process ends once it has answered what it holds."""
        for end in (self._out, self._in):
            end.close()

    def reap(self) -> None:
        """Wait for the process that :meth:`end` ended (stopped after 2 s)."""
        import subprocess

        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _spawn(to_child: int, from_child: int) -> Any:
    """A helper: ``python -m`` this module, serving the pipe's requests until it ends (a
    capture's: see :func:`_fork`)."""
    import subprocess  # here: a helper's own start does without it

    # -P: the working directory (a build tree) is not put on the module path. A session of
    # its own: a Ctrl-C at the terminal reaches the capture, which then closes the pipe,
    # not the helper too (no traceback of an interrupted helper).
    return subprocess.Popen(
        [sys.executable, "-P", "-m", __name__, str(to_child), str(from_child)],
        pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})


class _Forked:
    """A helper forked from this process: what ``subprocess.Popen`` gives of one, for ours."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it has ended (``subprocess.TimeoutExpired`` if it runs
        ``timeout`` seconds on)."""
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline, pause = time.monotonic() + timeout, 0.0005
        while self.poll() is None:  # it ends within a ms of its pipe's end: look often at first
            left = deadline - time.monotonic()
            if left <= 0:
                import subprocess

                raise subprocess.TimeoutExpired(_NAME, timeout)
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.05)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def _fork(to_child: int, from_child: int) -> _Forked:
    """A helper: this process forked, serving the pipe's requests until it ends (a restore's).

    A fork, not a new interpreter: a new one takes a twentieth of a CPU second to start and
    import what it needs, which a restore of a few seconds feels (two helpers: 90 ms of
    the bench corpus's 1.35 s). A capture spawns its helpers all the same: after a fork
    every page the two processes share is copied when either writes it first, and the
    capture, which makes and drops objects all along, took 0.4 s more CPU for it. The
    child runs only this module's code on what is imported already (no import, no lock
    another thread of this process may hold: those threads do not exist in it), keeps no
    descriptor but its two pipes (another helper's pipe held open would never end), has a
    session of its own (a Ctrl-C at the terminal reaches the caller, which then closes the
    pipe) and the default signal handlers, and ends by ``os._exit``: nothing of the
    caller's runs in it.
    """
    with warnings.catch_warnings():  # Python 3.12 warns of a fork beside threads: see above
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid:
        return _Forked(pid)
    try:
        os.setsid()
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        low, high = sorted((to_child, from_child))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, _FD_LIMIT)
        _serve(_Pipe(to_child), _Pipe(from_child))
    except BaseException as exc:  # the caller sees its pipe end and says so; this says why
        os.write(2, f"{_NAME} {os.getpid()} failed: {exc!r}\n".encode(errors="replace"))
    finally:
        os._exit(70)  # _serve ends the process itself; anything raised ends it here


class HelperProcesses:
    """Up to ``count`` helper processes that read (capture) or write (restore) batches of
    small files for the threads; they start in the background when :meth:`start` is first
    called."""

    def __init__(self, needles: Sequence[bytes], count: int, depth: int = 1, *, fork: bool = False):
        if fork and needles:  # what a helper scans with, imported here: a forked one imports nothing
            import gaia_core.checkpoints.relocate  # noqa: F401
        self._needles = list(needles)
        self._fork = fork  # forked (a restore's) or spawned (a capture's): see _fork
        self._count = count
        self._depth = depth  # requests a helper holds at once (the next one waits in its pipe)
        self._all: list[_Helper] = []
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._starting: threading.Thread | None = None
        self._start_ended = False  # every helper is ready, or failed to start
        self._closed = False
        #: batches the helpers read (a capture's statistics; tests check the helpers ran)
        self.batches = 0
        #: chunks the helpers compressed for a capture
        self.frames = 0

    def start(self) -> None:
        with self._lock:
            if self._starting is not None or self._closed:
                return
            self._starting = threading.Thread(target=self._start_all, name="gaia-helpers", daemon=True)
            self._starting.start()

    @property
    def running(self) -> bool:
        return bool(self._all)

    def wait_running(self, deadline: float) -> None:
        """Wait until a helper runs (the others may still be starting) or none will, at
        most until ``deadline`` (a ``time.monotonic()``)."""
        with self._free:
            while not self._all and self._starting is not None and not self._start_ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._free.wait(left)

    def _start_all(self) -> None:
        try:
            self._start_each()
        finally:
            with self._free:
                self._start_ended = True
                self._free.notify_all()

    def _start_each(self) -> None:
        """Start every process, then take each into service once it is ready (spawned ones
        start side by side: each takes a twentieth of a second to import what it needs)."""
        started: list[_Helper] = []
        for _ in range(self._count):
            try:
                started.append(_Helper(self._needles, self._fork))
            except OSError:
                break  # the threads go on on their own, or with those started
        for number, helper in enumerate(started):
            try:
                helper.ready()
            except CheckpointError:
                for other in started[number:]:
                    other.close()
                return
            with self._lock:
                if self._closed:
                    for other in started[number:]:
                        other.close()
                    return
                self._all.append(helper)
                self._free.notify_all()

    def read(self, files: Sequence[File], wanted: Callable[[list[bytes]], Sequence[int]],
             level: int = DEFAULT_LEVEL) -> list[Framed] | None:
        """The files read by a helper; None when none has started (yet). The helper reads,
        hashes and scans them, then compresses (at zstd's ``level``) only those ``wanted``
        picks (positions in ``files``) given their digests: not a chunk the store or this
        capture holds already, nor a second file of the same content (a clean rebuild
        captures a tree whose chunks the store mostly has; Buildroot's out dirs hold many
        copies of a file)."""
        if self._depth != 1:  # another request in the pipe would come between the two of a read
            raise ValueError("helpers that read files take one request at a time")

        def compressed(helper: _Helper, read: list[tuple[bytes, frozenset[int], bool]]) -> list[Framed]:
            picked = list(wanted([digest for digest, _, _ in read]))
            answered = helper.call("frames", (level, picked)) if picked else ()
            frames = dict(zip(picked, answered))  # type: ignore[call-overload]
            with self._lock:
                self.frames += len(frames)
            return [(digest, frames.get(i), found, binary) for i, (digest, found, binary) in enumerate(read)]

        return self._call("read", files, compressed)  # type: ignore[return-value]

    def write(self, files: Sequence[NewFile], links: Sequence[NewLink] = ()) -> int | None:
        """The files written and links made by a helper (the bytes written); None
        when none has started (yet). A damaged chunk raises :class:`ChunkCorruptIn`, a
        failed write the ``OSError``."""
        return self._call("write", (files, links))  # type: ignore[return-value]

    def write_piece(self, piece: Piece) -> int | None:
        """A piece of a large file written by a helper (its bytes), as :meth:`write`."""
        return self._call("piece", piece)  # type: ignore[return-value]

    def _call(self, kind: str, batch: Sequence, then: Callable[[_Helper, Any], object] | None = None) -> object:
        """The answer of the helper with the fewest requests on hand, once it has room
        (``then``: what the caller asks of the same helper next, given the answer)."""
        if not self._all:
            return None
        with self._free:
            while (helper := min(self._all, key=lambda h: h.waiting)).waiting >= self._depth:
                self._free.wait()
            helper.waiting += 1
        try:
            answer = helper.call(kind, batch)
            if then is not None:
                answer = then(helper, answer)
        finally:
            with self._free:
                helper.waiting -= 1
                self._free.notify()
        with self._lock:
            self.batches += 1
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            starting = self._starting
        if starting is not None:
            starting.join()
        for helper in self._all:  # all told first: they end side by side
            helper.end()
        for helper in self._all:
            helper.reap()


def _serve(requests: _Pipe, replies: _Pipe) -> None:
    gc.disable()  # what a batch makes holds no cycles, and the process ends with its caller
    try:
        needles = requests.recv()
    except EOFError:
        os._exit(0)  # closed before it was needed (a run that ended or failed meanwhile)
    scanner = None
    if needles:
        from gaia_core.checkpoints.relocate import FileScanner, RootMatcher
        scanner = FileScanner(RootMatcher(needles))
    packs: dict[str, int] = {}
    held: list[bytes] = []  # the content of the files last read, until the caller says which to compress
    replies.send(("ready", None))
    while True:
        try:
            kind, batch = requests.recv()
        except EOFError:
            os._exit(0)  # nothing to flush or tidy: the caller waits for this exit
        try:
            if kind == "frames":
                level, picked = batch
                answer: object = [compress(held[i], level) for i in picked]
                held = []
            elif kind == "read":
                held = []
                read = read_files(batch, scanner)
                held = [data for _, data, _, _ in read]
                answer = [(digest, found, binary) for digest, _, found, binary in read]
            elif kind == "piece":
                answer = write_piece(batch, packs)
            else:
                answer = write_files(*batch, packs)
        except ChunkCorruptIn as exc:
            replies.send(("corrupt", (str(exc), exc.chunk)))
        except CheckpointError as exc:
            replies.send(("error", str(exc)))
        except OSError as exc:
            replies.send(("oserror", (exc.errno, exc.strerror, exc.filename)))
        else:
            replies.send(("done", answer))


__all__ = ["PROCESS_AFTER", "ChunkCorruptIn", "Framed", "HelperProcesses", "NewFile", "NewLink", "Piece",
           "check_size", "create_new", "make_link", "open_regular", "pwrite_all", "read_files", "settle_new",
           "write_all", "write_files", "write_piece"]


if __name__ == "__main__":
    _serve(_Pipe(int(sys.argv[1])), _Pipe(int(sys.argv[2])))
