"""The capture's walk runs ahead on a thread of its own (treecapture.ahead)."""

from __future__ import annotations

import threading
import time

import pytest

from gaia_core.checkpoints.treecapture import ahead


def _walk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gaia-walk"]


def test_items_come_in_their_order_across_batches():
    assert list(ahead(iter(range(1000)), batch=7, depth=2)) == list(range(1000))


def test_an_error_of_the_walk_comes_after_the_items_before_it():
    def walk():
        yield from range(10)
        raise FileNotFoundError("gone")

    got = []
    with pytest.raises(FileNotFoundError, match="gone"):
        for item in ahead(walk(), batch=3):
            got.append(item)
    assert got == list(range(10))


def test_a_consumer_that_stops_early_stops_the_walk():
    produced = []

    def endless():
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    items = ahead(endless(), batch=4, depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()  # the capture failed, or ended
    assert not _walk_threads()
    settled = len(produced)
    time.sleep(0.3)
    assert len(produced) == settled  # bounded read-ahead, and nothing after the close
    assert settled <= 4 * (2 + 2)
