"""Offline: s3transfer's threads are daemons, so a transfer frozen in a socket call never
holds up the end of the process (Python joins a ThreadPoolExecutor's workers at exit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from gaia_s3.executor import DaemonExecutor

FROZEN_WORKER = textwrap.dedent("""
    import threading, sys
    from concurrent.futures import ThreadPoolExecutor
    from gaia_s3.executor import DaemonExecutor
    executor = {cls}(max_workers=2)
    executor.submit(threading.Event().wait, 20)  # a read that never returns
    print("submitted", flush=True)
""")


@pytest.mark.parametrize(("cls", "ends"), [("DaemonExecutor", True), ("ThreadPoolExecutor", False)])
def test_a_frozen_worker_does_not_keep_the_process_alive(cls: str, ends: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FROZEN_WORKER.format(cls=cls)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "submitted"
        started = time.monotonic()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        assert (proc.poll() is not None) is ends, f"{cls}: exit after {time.monotonic() - started:.1f}s"
    finally:
        proc.kill()
        proc.wait()


def test_results_and_errors_reach_the_future_and_shutdown_waits() -> None:
    executor = DaemonExecutor(max_workers=3)
    done = threading.Event()
    futures = [executor.submit(pow, 2, n) for n in range(10)]
    failing = executor.submit(int, "not a number")
    late = executor.submit(done.set)
    executor.shutdown(wait=True)
    assert [f.result() for f in futures] == [2**n for n in range(10)]
    with pytest.raises(ValueError):
        failing.result()
    assert late.done() and done.is_set()
    with pytest.raises(RuntimeError):
        executor.submit(pow, 2, 2)
