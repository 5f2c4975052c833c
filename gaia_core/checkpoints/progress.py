"""Progress of long transfers: a bar on a terminal, one plain line every few seconds in CI logs.

A 5 GB checkpoint takes minutes to capture, upload or download; silence looks like a hang.
On a TTY stderr gets a rich progress bar (bytes, rate, ETA); otherwise a plain line goes to
the task's log every :data:`PLAIN_INTERVAL` seconds. ``--quiet`` turns both off, and JSON
output never carries a bar (bars go to stderr only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from gaia_core.checkpoints.units import human_size

#: seconds between two plain progress lines
PLAIN_INTERVAL = 5.0

_settings: dict[str, Any] = {"quiet": False, "force_plain": False}

Report = Callable[[int], None]


def configure(*, quiet: bool | None = None, force_plain: bool | None = None) -> None:
    if quiet is not None:
        _settings["quiet"] = quiet
    if force_plain is not None:
        _settings["force_plain"] = force_plain


def reporter(what: str, total: int | None, log: Callable[[str], None] | None = None,
             stream: Any = None, *, quiet: bool = False) -> Report:
    """A callback taking byte counts; ``close()``-free: the last call past ``total`` ends a bar."""
    if quiet or _settings["quiet"]:
        return _nothing
    stream = stream if stream is not None else sys.stderr
    if not _settings["force_plain"] and getattr(stream, "isatty", lambda: False)():
        return _RichBar(what, total, stream)
    return _PlainLines(what, total, log or (lambda line: print(line, file=stream, flush=True)))


def _nothing(n: int) -> None:
    pass


def describe(what: str, done: int, total: int | None, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        eta = (total - done) / rate if rate > 0 else None
        eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
        return (f"{what}: {human_size(done)} / {human_size(total)} ({100 * done / total:.0f}%), "
                f"{human_size(rate)}/s{eta_text}")
    return f"{what}: {human_size(done)}, {human_size(rate)}/s"


class _PlainLines:
    def __init__(self, what: str, total: int | None, log: Callable[[str], None]):
        self.what, self.total, self.log = what, total, log
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PLAIN_INTERVAL:
            self.last = now
            self.log(describe(self.what, self.done, self.total, now - self.started))


class _RichBar:
    def __init__(self, what: str, total: int | None, stream: Any):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(file=stream), transient=True)
        self.task = self.progress.add_task(what, total=total)
        self.total = total
        self.done = 0
        self.progress.start()

    def __call__(self, n: int) -> None:
        self.done += n
        self.progress.update(self.task, advance=n)
        if self.total is not None and self.done >= self.total:
            self.progress.stop()

    def __del__(self) -> None:
        try:
            self.progress.stop()
        except Exception:
            pass
