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
from collections.abc import Iterator


class _InputTimes:
    """The newest mtime among the files a fingerprint read (None: none was reported)."""

    def __init__(self) -> None:
        self.newest_ns: int | None = None

    def note(self, mtime_ns: int) -> None:
        if self.newest_ns is None or mtime_ns > self.newest_ns:
            self.newest_ns = mtime_ns


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
