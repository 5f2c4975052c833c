"""FIFOs for tests of what must never wait on one: a watchdog unblocks their readers after
a deadline and records it, so a regression fails its test instead of hanging the suite."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

#: far above what any run in these tests takes; only a run that waits on a FIFO gets there
WATCHDOG_S = 60.0


class FifoWatchdog:
    """Makes FIFOs; once ``WATCHDOG_S`` passed, opens each for writing (which succeeds only
    while a reader waits in ``open``) and closes it, so the reader gets EOF, and says so."""

    def __init__(self) -> None:
        self.fifos: list[Path] = []
        self.fired: list[Path] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def make(self, path: Path) -> Path:
        if path.exists() or path.is_symlink():
            path.unlink()
        os.mkfifo(path)
        self.fifos.append(path)
        if not self._thread.is_alive():
            self._thread.start()
        return path

    def _watch(self) -> None:
        deadline = time.monotonic() + WATCHDOG_S
        while not self._stop.wait(0.2):
            if time.monotonic() < deadline:
                continue
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    self.fired.append(fifo)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def watchdog():
    dog = FifoWatchdog()
    yield dog
    dog.stop()
