"""How the core reads a pack back: ranged reads over parallel backend instances.

Store format 4 restores through ``Backend.read_range``: ``parallel`` worker threads, each
with a backend instance of its own, each asking for ranges of at most 16 MiB
(``gaia_core.checkpoints.transfer.RANGE_MAX``). The backend benches time that path too,
against the same baseline download as a whole-object ``download()``; each range is
written to its place in the destination file so that the copy can be checked.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable
from pathlib import Path

from gaia_core.backends import Backend, pack_key
from gaia_core.checkpoints.transfer import RANGE_MAX

#: the bench's object, named like a pack of store format 4
KEY = pack_key("0123456789abcdef" * 4 + ".pack")
PARALLEL = 4


def read_in_ranges(make: Callable[[], Backend], key: str, size: int, dest: Path, *,
                   parallel: int = PARALLEL, range_size: int = RANGE_MAX) -> None:
    """Read ``key`` (``size`` bytes) into ``dest`` with ``parallel`` backends in threads."""
    local = threading.local()
    opened: list[Backend] = []
    lock = threading.Lock()

    def backend() -> Backend:
        if getattr(local, "backend", None) is None:
            local.backend = make()
            with lock:
                opened.append(local.backend)
        return local.backend

    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def read(offset: int) -> None:
            data = backend().read_range(key, offset, min(range_size, size - offset))
            if len(data) != min(range_size, size - offset):
                raise OSError(f"range at {offset}: {len(data)} bytes")
            os.pwrite(fd, data, offset)

        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            for done in pool.map(read, range(0, size, range_size)):
                del done
    finally:
        os.close(fd)
        for each in opened:
            each.close()
