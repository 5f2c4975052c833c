"""The newest modification time among the inputs a fingerprint read.

A checkpoint tree is up to date for make against inputs no newer than the time it was placed
or built; an input written since (checked out again with the same content) is found here.
Whatever hashes an input for a fingerprint reports its mtime (``hash_tree``, ``hash_file``,
``digest_files``, or :func:`note_input` for inputs read another way).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import threading
from collections.abc import Callable, Iterator


class _InputTimes:
    """The newest mtime among the files a fingerprint read (None: none was reported), with
    those still being looked for beside the caller (:func:`note_inputs_meanwhile`)."""

    def __init__(self) -> None:
        self._newest: int | None = None
        self._pending: list[_Meanwhile] = []
        self._settling = threading.Lock()  # a fingerprint's tasks may ask at once: all get every answer

    def note(self, mtime_ns: int | None) -> None:
        if mtime_ns is not None and (self._newest is None or mtime_ns > self._newest):
            self._newest = mtime_ns

    @property
    def newest_ns(self) -> int | None:
        """The newest mtime, once every look still under way has ended."""
        with self._settling:
            while self._pending:
                self.note(self._pending[0].result())
                del self._pending[0]
            return self._newest


class _Meanwhile:
    """``find()`` run in a process forked for it while the caller goes on (a fingerprint's
    value never waits for an mtime: a restore asks for the newest one only as it places the
    tree's mtimes, at its end). A thread of the caller's reads the answer and reaps the
    process at once; a process that gives no answer is done again here, in the caller."""

    def __init__(self, find: Callable[[], int | None]):
        self._find = find
        self._answer: bytes | None = None
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            self._reader = None
            return
        if pid == 0:  # the child: finds, answers and ends, with nothing of the caller's run
            code = 0
            try:
                # only its answer's pipe: a pipe of the caller's it held would not end with the caller's end of it
                os.closerange(3, write_end)
                os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.write(write_end, repr(find()).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        self._reader = threading.Thread(target=self._read, args=(pid, read_end), daemon=True,
                                        name="gaia-input-times")
        self._reader.start()

    def _read(self, pid: int, fd: int) -> None:
        try:
            chunks = []
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
        finally:
            os.close(fd)
            _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            self._answer = b"".join(chunks)

    def result(self) -> int | None:
        if self._reader is not None:
            self._reader.join()
        answer = self._answer.decode() if self._answer is not None else ""
        try:
            return None if answer == "None" else int(answer)
        except ValueError:
            return self._find()  # no answer from the process (it failed, or could not start)


_INPUT_TIMES: contextvars.ContextVar[_InputTimes | None] = contextvars.ContextVar("gaia_input_times", default=None)


@contextlib.contextmanager
def _collect_input_times() -> Iterator[_InputTimes]:
    """While a fingerprint is computed: the newest mtime of what its sources read."""
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


def note_inputs_meanwhile(find: Callable[[], int | None]) -> None:
    """Count the mtime ``find()`` returns (the newest of many inputs, None for none) among the
    inputs of the fingerprint being computed, found in a process of its own while the
    computation goes on: for inputs that take a walk to date and whose content the
    fingerprint knows another way (a git checkout by its commit). ``find`` must only read the
    filesystem: it runs in a fork of the caller. Outside a computation it does nothing."""
    times = _INPUT_TIMES.get()
    if times is not None:
        times._pending.append(_Meanwhile(find))


def note_input(path: str | os.PathLike[str]) -> None:
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
