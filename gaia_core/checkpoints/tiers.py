"""A point's store tiers: one lookup across all of them, the first hit in the user's order,
and backfills of a hit into the faster tiers.

A point names its tiers fastest first (``backends = ["dir:runner", "http:office",
"s3:cloud"]``). A lookup asks every tier at once, each on a thread of its own with its own
connection, and reads the answers in the user's order: the first hit wins as soon as every
tier before it has answered, so a slow or dead tier after the winner costs nothing, and one
before it costs at most its probe budget (after which it is remembered as down,
:mod:`.downtiers`). Trust rules hold per object whatever tier serves it: each tier's
answer is judged (shape, signature, expansion, prerequisites, relocation) as a single
backend's was, and the chunks are checked against their ids as they arrive.

After a restore from a slower tier, the writable tiers before it that answered get the
object too (a backfill): the same upload as any other (only the chunks a tier lacks move;
each tier its own entry in the upload queue), on a thread of its own while the build goes
on. The run waits for its backfills before it exits, at most ``backfill_timeout``; one that
has not finished by then stays queued for ``gaia checkpoints retry``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gaia_core.checkpoints.engine import Checkpoints, Log, NotUsedOffline
from gaia_core.checkpoints.manifest import OldFormat
from gaia_core.checkpoints.portability import assess
from gaia_core.errors import BackendError, BackendUnavailable, CheckpointError

if TYPE_CHECKING:
    from gaia_core.backends import Progress
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.remote import Found
    from gaia_core.checkpoints.store import LocalObject

#: what a tier answered: a usable object; none; one this run may not use (not signed by a
#: trusted key; not usable at this path; malformed); or no answer (down: timed out or
#: refused; error: failed otherwise; offline: not asked)
HIT, MISSING, UNTRUSTED, UNUSABLE, INVALID, DOWN, ERROR, OFFLINE = (
    "hit", "missing", "untrusted", "unusable", "invalid", "down", "error", "offline")
#: answers that say the tier holds an object under the fingerprint
HOLDS = (HIT, UNTRUSTED, UNUSABLE, INVALID)
#: answers that come from the tier (a backfill may write to it)
ANSWERED = (HIT, MISSING, UNTRUSTED, UNUSABLE, INVALID)

#: called while a caller waits; raises to stop waiting (a cancelled run)
Check = Callable[[], None]


@dataclasses.dataclass
class Answer:
    """One tier's answer to a lookup."""

    ref: str
    state: str
    #: the object, for a hit
    found: Found | None = None
    #: why the object is not used (``untrusted:unsigned``, ``not_relocatable:<file>``,
    #: ``format_changed``, ``remote_invalid``); None for a hit or no object
    reason: str | None = None
    #: the backend's failure (down, error) or what was wrong with the object (invalid), redacted
    error: str | None = None
    #: who signed the object looked at (``-`` when there is none)
    signer: str = "-"
    seconds: float = 0.0

    @property
    def holds(self) -> bool:
        return self.state in HOLDS


def ask(cp: Checkpoints, point: Point, fp: str, ref: str) -> Answer:
    """What tier ``ref`` holds under ``fp``, judged by this run's trust rules, from its manifests."""
    from gaia_core.checkpoints.remote import Unusable, check_expansion, find

    started = time.monotonic()

    def answer(state: str, **fields: object) -> Answer:
        return Answer(ref, state, seconds=time.monotonic() - started, **fields)  # type: ignore[arg-type]

    try:
        with cp.session(ref) as backend:
            found, seen = find(cp, backend, point, fp)
    except OldFormat:
        return answer(UNUSABLE, reason="format_changed")
    except NotUsedOffline:
        return answer(OFFLINE)
    except BackendUnavailable as exc:
        return answer(DOWN, error=str(exc))
    except BackendError as exc:
        return answer(ERROR, error=cp.redact(ref, str(exc)))
    except CheckpointError as exc:  # only objects nobody can use are there
        return answer(INVALID, reason="remote_invalid", error=str(exc))
    if found is None:
        if seen:
            return answer(UNTRUSTED, reason=seen[0].verdict.reason(), signer=seen[0].verdict.signer)
        return answer(MISSING)
    verdict = found.verdict
    if point.trust_mode == "verify" and not verdict.usable:
        return answer(UNTRUSTED, reason=verdict.reason(), signer=verdict.signer)
    try:
        if verdict.state != "trusted":
            check_expansion(cp, found.manifest, f"{ref}:{point.id}/{fp[:12]}")
    except Unusable as exc:
        return answer(UNUSABLE, reason=exc.reason, signer=verdict.signer)
    portability = assess(found.manifest, cp.anchor(point))
    if not portability.usable:
        return answer(UNUSABLE, reason=str(portability.problem), signer=verdict.signer)
    return answer(HIT, found=found, signer=verdict.signer)


class Lookup:
    """The answers of every tier of a point to one fingerprint, asked all at once."""

    def __init__(self, cp: Checkpoints, point: Point, fp: str):
        self.point, self.fp = point, fp
        self.tiers = list(point.backends)
        self._answers: list[Answer | None] = [None] * len(self.tiers)
        self._done = [threading.Event() for _ in self.tiers]
        for i, ref in enumerate(self.tiers):
            if ref in cp.down or cp.down_until(ref) is not None:
                # known down: answered here and now, without a connection, so that what the
                # run says of it (why, and until when it is skipped) never depends on
                # whether a faster tier's hit came in first
                self._ask(cp, i, ref)
            else:
                threading.Thread(target=self._ask, args=(cp, i, ref), name=f"gaia-lookup-{ref}", daemon=True).start()

    def _ask(self, cp: Checkpoints, i: int, ref: str) -> None:
        try:
            self._answers[i] = ask(cp, self.point, self.fp, ref)
        except BaseException as exc:  # noqa: BLE001 -- a bug or an odd failure is this tier's answer
            self._answers[i] = Answer(ref, ERROR, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._done[i].set()

    def answer(self, i: int, check: Check | None = None) -> Answer:
        """The answer of tier ``i``, waited for."""
        while not self._done[i].wait(0.1):
            if check is not None:
                check()
        answer = self._answers[i]
        assert answer is not None
        return answer

    def ready(self, i: int) -> Answer | None:
        """The answer of tier ``i`` if it is in, else None (not waited for)."""
        return self._answers[i] if self._done[i].is_set() else None

    def in_order(self, check: Check | None = None) -> Iterator[Answer]:
        """Every answer in the user's order, each waited for."""
        for i in range(len(self.tiers)):
            yield self.answer(i, check)

    def decided(self, check: Check | None = None) -> list[Answer | None]:
        """The answers up to the first hit (waited for) and the later ones already in (None
        for those still asked: their answer does not change the outcome)."""
        found: list[Answer | None] = []
        for i in range(len(self.tiers)):
            if winner(found) is not None:
                found.append(self.ready(i))
            else:
                found.append(self.answer(i, check))
        return found


def winner(answers: list[Answer | None]) -> Answer | None:
    return next((a for a in answers if a is not None and a.state == HIT), None)


@dataclasses.dataclass
class Fetched:
    """What :func:`fetch` did: the object and its tier (None when no tier gave one)."""

    obj: LocalObject | None
    ref: str | None
    #: every answer looked at, in order (None: still asked when the fetch was done)
    answers: list[Answer | None]
    #: (tier, why) of hits whose download failed
    failures: list[tuple[str, str]]
    #: the writable tiers before ``ref`` that answered: what a backfill copies the object into
    backfill: list[str]


def fetch(cp: Checkpoints, point: Point, fp: str, log: Log,
          progress_factory: Callable[[int], Progress | None] | None = None, check: Check | None = None, *,
          fresh: bool = False) -> Fetched:
    """The object of ``fp`` from the first tier (in the user's order) whose download
    succeeds, published into the local store; a hit whose download fails gives way to the
    next (the failures are returned, for the caller to say). Cancelling (``check``
    raising) and the caller's own exceptions pass through."""
    from gaia_core.checkpoints.remote import download_found

    lookup = cp.lookup(point, fp, fresh=fresh)
    answers: list[Answer | None] = []
    failures: list[tuple[str, str]] = []
    for i, answer in enumerate(lookup.in_order(check)):
        answers.append(answer)
        if answer.state != HIT or answer.found is None:
            continue
        try:
            obj = download_found(cp, point, fp, answer.ref, answer.found, log, progress_factory)
        except (BackendError, CheckpointError, OSError) as exc:
            message = cp.redact(answer.ref, str(exc))
            if not isinstance(exc, BackendError):
                message = f"remote fetch via {answer.ref} failed: {message}"
            failures.append((answer.ref, message))
            continue
        answers += [lookup.ready(j) for j in range(i + 1, len(lookup.tiers))]
        return Fetched(obj, answer.ref, answers, failures, backfill_targets(cp, point, answers, answer.ref))
    return Fetched(None, None, answers, failures, [])


def backfill_targets(cp: Checkpoints, point: Point, answers: list[Answer | None], source: str) -> list[str]:
    """The writable tiers before ``source`` that answered (down, failed or offline ones are left alone)."""
    writable = cp.writable_tiers(point)
    targets = []
    for answer in answers:
        if answer is None or answer.ref == source:
            break
        if answer.ref in writable and answer.state in ANSWERED:
            targets.append(answer.ref)
    return targets


def copy_into(cp: Checkpoints, point: Point, fp: str, refs: list[str], log: Log) -> dict[str, bool]:
    """Upload the local object of ``fp`` into each of ``refs`` in turn (only what each
    lacks moves); per tier, whether it now holds it."""
    from gaia_core.checkpoints.remote import upload

    return {ref: upload(cp, point.id, fp, ref, point.anchor_task, log) for ref in refs}


@dataclasses.dataclass
class _Backfill:
    point: Point
    fp: str
    refs: list[str]
    lines: list[str] = dataclasses.field(default_factory=list)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    results: dict[str, bool] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


class Backfills:
    """The backfills of a run: each on a daemon thread; :meth:`wait` before the run exits."""

    def __init__(self, cp: Checkpoints):
        self.cp = cp
        self._jobs: list[_Backfill] = []

    def start(self, point: Point, fp: str, refs: list[str]) -> None:
        """Copy the local object of ``fp`` into ``refs`` while the run goes on; each tier is
        in the upload queue (pending) before this returns, so a run killed meanwhile leaves
        it to ``gaia checkpoints retry``."""
        for ref in refs:
            self.cp.store.update_queue(point.id, fp, ref, point.anchor_task, state="pending")
        job = _Backfill(point, fp, list(refs))
        self._jobs.append(job)
        threading.Thread(target=self._run, args=(job,), name=f"gaia-backfill-{point.id}", daemon=True).start()

    def _run(self, job: _Backfill) -> None:
        started = time.monotonic()
        try:
            job.results = copy_into(self.cp, job.point, job.fp, job.refs, job.lines.append)
        except BaseException as exc:  # noqa: BLE001 -- reported by wait(); the queue keeps the entry
            job.lines.append(f"WARN: checkpoint:{job.point.id} backfill failed: {type(exc).__name__}: {exc}")
        finally:
            job.seconds = time.monotonic() - started
            job.done.set()

    @property
    def started(self) -> bool:
        """Whether a backfill was started and not yet waited for."""
        return bool(self._jobs)

    @property
    def pending(self) -> bool:
        return any(not job.done.is_set() for job in self._jobs)

    def wait(self, timeout: float, *, interrupted: bool = False) -> list[str]:
        """Wait for every backfill, at most ``timeout`` seconds in all (not at all when the
        run was ``interrupted``); the lines they logged, and a warning for each one still running."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        for job in self._jobs:
            while not interrupted and not job.done.wait(0.1):
                if time.monotonic() >= deadline:
                    break
            lines += job.lines
            tag = f"checkpoint:{job.point.id}"
            if not job.done.is_set():
                why = "the run was interrupted" if interrupted else \
                    f"it did not finish within {timeout:.0f}s ([checkpoints] backfill_timeout)"
                lines.append(f"WARN: {tag} backfill of {job.fp[:12]} into {', '.join(job.refs)} stopped: {why}; "
                             "it stays queued for `gaia checkpoints retry`")
                continue
            copied = [ref for ref, ok in job.results.items() if ok]
            if copied:
                lines.append(f"{tag} backfilled {job.fp[:12]} into {', '.join(copied)} "
                             f"in the background ({job.seconds:.1f}s)")
        self._jobs = [job for job in self._jobs if not job.done.is_set()]
        return lines


__all__ = ["Answer", "Backfills", "Fetched", "Lookup", "ask", "backfill_targets", "copy_into", "fetch", "winner"]
