"""A backend kind for the offline tests of store tiers: ``netdir``, a ``dir`` store that
gaia treats as reached over the network (``needs_network``), so that offline runs leave it
alone, and that can be made to time out the way a black-holed server does (every operation
raises ``BackendUnavailable``), to answer late (a far store: a wait per connection or per
operation) or to upload slowly. Every operation is counted per store
name, so a test can tell that a tier was not contacted at all.

The remote suite (integration/) checks the same behaviour against real servers on
loopback: a black hole that accepts connections and never answers, for every backend kind.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from gaia_core import hookimpl
from gaia_core.builtin.dir_backend import DirBackend
from gaia_core.errors import BackendUnavailable
from gaia_core.retry import probe_timed_out


class NetDirBackend(DirBackend):
    kind = "netdir"
    needs_network = True
    #: store name -> operations asked of it
    calls: collections.Counter[str] = collections.Counter()
    #: names of the stores that time out
    down: set[str] = set()
    #: store name -> seconds each upload takes
    slow: dict[str, float] = {}
    #: store name -> seconds each operation waits before it starts (a far store)
    delay: dict[str, float] = {}
    #: store name -> seconds each connection takes before its first operation (a far store)
    connect_delay: dict[str, float] = {}
    #: store name -> seconds naming the store takes the first time (what a run does before it
    #: checks its memory of down tiers: a lookup thread that is slow to get going)
    describe_delay: dict[str, float] = {}

    def __enter__(self) -> NetDirBackend:
        time.sleep(type(self).connect_delay.get(self.name, 0.0))
        return self

    def describe(self) -> str:
        time.sleep(type(self).describe_delay.pop(self.name, 0.0))
        return super().describe()

    @contextlib.contextmanager
    def _store(self, operation, key, caller=None) -> Iterator:  # type: ignore[no-untyped-def,override]
        type(self).calls[self.name] += 1
        time.sleep(type(self).delay.get(self.name, 0.0))
        if self.name in type(self).down:
            raise BackendUnavailable(f"{self.ref}: {operation} of {key}: {probe_timed_out(self.probe_timeout)}")
        with super()._store(operation, key, caller) as root:
            yield root

    def upload(self, key: str, source: Path, *, progress=None) -> None:  # type: ignore[no-untyped-def]
        time.sleep(type(self).slow.get(self.name, 0.0))
        super().upload(key, source, progress=progress)

    @classmethod
    def reset(cls) -> None:
        cls.calls.clear()
        cls.down.clear()
        cls.slow.clear()
        cls.delay.clear()
        cls.connect_delay.clear()
        cls.describe_delay.clear()


class TierBackendsPlugin:
    @hookimpl
    def gaia_register_backends(self):  # type: ignore[no-untyped-def]
        return [NetDirBackend]
