"""The cyclic collector paused for a capture: back on after it, nested pauses counted."""

from __future__ import annotations

import gc
import threading

import pytest
from tree_store import Store

from gaia_core.anchors import Target
from gaia_core.checkpoints import collector, treecapture
from gaia_core.errors import CheckpointError


def test_pauses_nest_and_the_last_one_turns_the_collector_back_on():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pauses_on_two_threads_overlap(tmp_path):
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector.paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    with collector.paused():
        pass
    assert not gc.isenabled()  # the other thread's pause goes on
    leave.set()
    thread.join()
    assert gc.isenabled()


def test_a_capture_runs_without_the_collector_and_turns_it_back_on(tmp_path, monkeypatch):
    seen = []
    original = treecapture._entry

    def entry(*args):
        seen.append(gc.isenabled())
        return original(*args)

    monkeypatch.setattr(treecapture, "_entry", entry)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    Store(tmp_path / "store").capture([Target("t", tmp_path / "t")])
    assert seen and not any(seen)
    assert gc.isenabled()
    with pytest.raises(CheckpointError):
        Store(tmp_path / "store2").capture([Target("t", tmp_path / "missing")])
    assert gc.isenabled()
