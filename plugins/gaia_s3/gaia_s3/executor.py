"""The threads s3transfer runs its requests on: daemon threads that never hold up an exit.

s3transfer's default executor is a ``concurrent.futures.ThreadPoolExecutor``, whose
workers Python joins when the process exits. A transfer frozen in a socket call keeps its
worker until the stall timeout, so a run stopped by SIGTERM or Ctrl-C waited up to that
long (25-30 s) after it had finished. These workers are daemon threads that nothing joins
at exit: the run ends as soon as gaia is done, and a transfer cut short is resumed or
replaced by the next run, like any other interrupted one.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

from s3transfer.futures import BaseExecutor

_STOP = None


class DaemonExecutor(BaseExecutor):
    """s3transfer's ``executor_cls``: up to ``max_workers`` daemon threads, started as
    work arrives."""

    def __init__(self, max_workers: int | None = None):
        super().__init__(max_workers)
        self._max_workers = max(1, max_workers or 1)
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to an executor that was shut down")
            self._work.put((future, fn, args, kwargs))
            if len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._run, name="gaia-s3-transfer", daemon=True)
                thread.start()
                self._threads.append(thread)
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not _STOP:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 -- handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._work.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()
