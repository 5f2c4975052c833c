"""Time budgets and the one retry loop of remote operations, shared by every backend.

gaia owns the retries of a remote operation. The libraries' own (urllib3, botocore,
s3transfer) are switched off, so that a server that hangs costs one budget and not a
product of every layer's retries. An attempt reports a failure another attempt may fix
by raising :class:`Retryable`; :func:`retrying` decides, inside the operation's
:class:`Deadline`, whether there is another attempt.

Also here: the naming rule of temporary objects, so that every backend flags them the
same way in listings and removes those no live writer can still own (the "litter").
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from gaia_core.errors import BackendError

T = TypeVar("T")

#: an attempt never gets less than this, so a nearly spent deadline still fails cleanly
MIN_ATTEMPT_S = 0.05
#: a temporary object untouched for this long belongs to no live upload: litter
LITTER_AGE_S = 3600.0


class Deadline:
    """The end of an operation's total time budget, on the monotonic clock.

    ``Deadline(None)`` has no end: transfers are bounded by their stall timeout instead.
    """

    def __init__(self, seconds: float | None, *, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float:
        if self._end is None:
            return math.inf
        return max(0.0, self._end - self._clock())

    def cap(self, timeout: float) -> float:
        """``timeout`` cut to what is left of the budget (at least ``MIN_ATTEMPT_S``)."""
        return max(MIN_ATTEMPT_S, min(timeout, self.remaining()))

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    @property
    def spent(self) -> bool:
        """Less than an attempt's minimum is left: a timeout now is the budget's own (name
        it with :func:`probe_timed_out`), not the socket timeout that happened to fire."""
        return self.remaining() < MIN_ATTEMPT_S


class Failure(enum.Enum):
    """Why an attempt failed, which decides whether another one is worth it."""

    #: 429 or 5xx, a connection reset mid-answer: retried with backoff while time is left
    TRANSIENT = "transient"
    #: nothing listens on the port: one more try (a server restarting), then give up
    REFUSED = "refused"
    #: no byte moved for the stall timeout (or the connection could not be made in
    #: time): one more try on a fresh connection
    STALLED = "stalled"


class Retryable(Exception):
    """Raised by an attempt; ``error`` is what the caller gets when no attempt is left."""

    def __init__(self, error: BackendError, failure: Failure = Failure.TRANSIENT):
        super().__init__(str(error))
        self.error = error
        self.failure = failure


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many attempts each kind of failure gets, and the pause between attempts."""

    #: attempts in all while failures are transient (the first one included)
    transient_attempts: int = 3
    refused_retries: int = 1
    stalled_retries: int = 1
    #: first pause in seconds, doubled per attempt, with jitter, capped at ``backoff_max``
    backoff: float = 0.25
    backoff_max: float = 5.0

    def allows(self, failure: Failure, seen: int) -> bool:
        """Whether a ``seen``-th failure of this kind still leaves another attempt."""
        if failure is Failure.TRANSIENT:
            return seen < self.transient_attempts
        if failure is Failure.REFUSED:
            return seen <= self.refused_retries
        return seen <= self.stalled_retries

    def pause(self, retry_number: int) -> float:
        base = min(self.backoff * 2**retry_number, self.backoff_max)
        return base * random.uniform(0.5, 1.0)


def retrying(
    attempt: Callable[[Deadline], T],
    *,
    deadline: Deadline,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[Retryable], None] | None = None,
) -> T:
    """Run ``attempt(deadline)`` until it returns, retrying :class:`Retryable` failures
    as ``policy`` allows and only while ``deadline`` leaves time; then raise the last
    failure's ``error``. Any other exception propagates at once, unchanged.

    ``on_retry(failure)`` runs before each retry (a download starts over there); it may
    raise to end the operation instead.
    """
    seen = dict.fromkeys(Failure, 0)
    retries = 0
    while True:
        try:
            return attempt(deadline)
        except Retryable as exc:
            failure = exc
        # outside the except block: what is raised from here carries no wrapper context
        seen[failure.failure] += 1
        pause = policy.pause(retries)
        if not policy.allows(failure.failure, seen[failure.failure]) or deadline.remaining() < pause + MIN_ATTEMPT_S:
            raise failure.error
        if on_retry is not None:
            on_retry(failure)
        sleep(pause)
        retries += 1


def probe_timed_out(seconds: float) -> str:
    """The words of every backend for a probe (``exists``, a listing, ``read_small``) whose
    ``probe_timeout`` ran out (``deadline.spent``): the budget is named, never the socket
    timeout that fired at its end."""
    return f"no answer within {seconds:g}s (probe_timeout, retries included)"


def rewind(dest: Any) -> bool:
    """``dest.seek(0); dest.truncate()``: whether a download may start over into ``dest``."""
    try:
        dest.seek(0)
        dest.truncate()
    except (AttributeError, OSError, ValueError):
        return False
    return True


class CallerCode:
    """The caller's callables (``dest.write``, ``progress``) as a transfer loop calls them.

    Libraries wrap or retry what goes wrong below them. Calling the caller's code through
    here records its first exception so that the backend can re-raise exactly that
    object, unretried (:meth:`reraise`). Progress calls are serialised: a concurrent
    transfer (s3transfer threads) may report from several threads.
    """

    def __init__(self, dest: BinaryIO | None = None, progress: Callable[[int], None] | None = None):
        self._dest = dest
        self._progress = progress
        self._lock = threading.Lock()
        self.raised: BaseException | None = None
        #: bytes written into ``dest`` since the transfer (re)started
        self.written = 0

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.raised is not None:
            raise self.raised
        try:
            return function(*args)
        except BaseException as exc:
            if self.raised is None:
                self.raised = exc
            raise

    def write(self, data: Any) -> Any:
        assert self._dest is not None
        result = self._run(self._dest.write, data)
        self.written += len(data)
        return result

    def start_over(self, failure: Retryable) -> None:
        """An ``on_retry`` for downloads: the next attempt writes into ``dest`` from its
        start, or, when ``dest`` cannot start over, there is no next attempt."""
        if self.written:
            if self._dest is None or not rewind(self._dest):
                raise failure.error
            self.written = 0

    def progress(self, count: int) -> None:
        """Report ``count`` bytes moved (no call at all when the caller gave no callback)."""
        if self._progress is None or count <= 0:
            return
        with self._lock:
            self._run(self._progress, count)

    def heartbeat(self) -> None:
        """``progress(0)`` while a transfer waits, so that the caller may cancel it even when
        no byte moves (a frozen server); nothing when the caller gave no callback."""
        if self._progress is None:
            return
        with self._lock:
            self._run(self._progress, 0)

    @property
    def wants_progress(self) -> bool:
        return self._progress is not None

    def reraise(self) -> None:
        """Raise the caller's own exception if it raised one; else return."""
        if self.raised is not None:
            raise self.raised


def run_caller_aware(work: Callable[[], T], caller: CallerCode) -> T:
    """``work()``; when it fails because the caller's code raised, raise that exception."""
    own: BaseException | None = None
    try:
        return work()
    except BaseException:
        if caller.raised is None:
            raise
        own = caller.raised
    raise own  # outside the except block: the caller's exception keeps its own context


# -- temporaries ---------------------------------------------------------------------

_TEMPORARY = re.compile(r"\.tmp-[A-Za-z0-9-]+$")
_HOST_CHARS = re.compile(r"[^A-Za-z0-9-]+")


def temporary_name(file_name: str) -> str:
    """``<file>.tmp-<host>-<pid>-<random>``: unique, and recognisable in any listing
    (no leading dot: nginx's autoindex hides dot files)."""
    host = _HOST_CHARS.sub("-", socket.gethostname()).strip("-")[:32] or "host"
    return f"{file_name}.tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}"


def is_temporary(file_name: str) -> bool:
    return bool(_TEMPORARY.search(file_name))


def temporary_of(file_name: str, temporary: str) -> bool:
    """Whether ``temporary`` is a temporary of an upload of ``file_name``."""
    return temporary.startswith(f"{file_name}.tmp-") and is_temporary(temporary)


def is_litter(mtime: float | None, now: float | None = None) -> bool:
    """A temporary untouched for :data:`LITTER_AGE_S`; one of unknown age is kept."""
    if mtime is None:
        return False
    return (time.time() if now is None else now) - mtime > LITTER_AGE_S
