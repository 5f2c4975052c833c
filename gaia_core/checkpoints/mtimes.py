"""Move a restored tree's modification times to the time of the restore, in their order.

make decides from mtimes alone. A tree restored where the inputs around it (a fresh clone
of Buildroot, the user's external trees) were written a minute ago is older than them, and
a uniform shift that puts the newest entry at "now" is not enough: a build spans minutes to
hours, so the stamps made early in it stay older than a file cloned a moment ago. This step
keeps the *order* of every mtime in the tree (equal stays equal, older stays older, to the
nanosecond) and compresses them into a short span that ends at the filesystem's present:
the i-th of n distinct mtimes becomes ``now - (n - 1 - i) * step``. With a step of 1 µs the
order survives filesystems that keep microseconds, 100,000 distinct times span 0.1 s, and
nothing lies in the future.

It never follows a link (directories opened with ``O_NOFOLLOW``, each entry ``lstat``-ed and
set with ``utime(..., follow_symlinks=False)`` relative to its directory's descriptor) and
holds 8 bytes per entry plus one sorted run of :data:`SORT_RUN` values at a time, not the
tree's paths.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import os
import stat
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: the gap between two consecutive distinct mtimes after placement: 1 µs keeps the order on
#: filesystems with microsecond timestamps (NFSv3, some FUSE), ns ones keep it anyway
STEP_NS = 1_000
#: values sorted at once while ranking; the runs are merged afterwards
SORT_RUN = 1 << 16
#: how long placement waits for the filesystem clock to pass ``not_before_ns`` (a longer wait
#: means an input's mtime lies in the future: clock skew, which waiting would not fix)
MAX_WAIT_S = 2.0


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the tree's mtimes went: the i-th distinct captured mtime is now
    ``at_ns - (distinct - 1 - i) * step_ns``.

    ``ranking`` holds the distinct captured mtimes in order (8 bytes each), so that
    :meth:`placed_ns` maps any of them; the marker keeps the rest (:meth:`marker`).
    """

    at_ns: int
    step_ns: int
    entries: int
    distinct: int
    ranking: array = dataclasses.field(repr=False, compare=False)
    seconds: float = dataclasses.field(default=0.0, compare=False)
    #: the placed mtime of each ranked one, when it is not the formula's (:func:`fit_placement`)
    placed: array | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def oldest_ns(self) -> int:
        """The mtime of the oldest entry after placement (``at_ns`` for an empty tree)."""
        if self.placed:
            return self.placed[0]
        return self.at_ns - max(self.distinct - 1, 0) * self.step_ns

    def placed_ns(self, captured_ns: int) -> int:
        """The mtime an entry captured with ``captured_ns`` gets; KeyError for a time not ranked."""
        rank = bisect.bisect_left(self.ranking, captured_ns)
        if rank == len(self.ranking) or self.ranking[rank] != captured_ns:
            raise KeyError(captured_ns)
        if self.placed is not None:
            return self.placed[rank]
        return self.at_ns - (self.distinct - 1 - rank) * self.step_ns

    def marker(self) -> dict[str, int]:
        """The JSON the tree's marker records under ``mtimes.placed``."""
        return {"at_ns": self.at_ns, "oldest_ns": self.oldest_ns, "step_ns": self.step_ns,
                "entries": self.entries, "distinct": self.distinct}


def plan_placement(mtimes: Iterable[int], *, clock_dir: Path, not_before_ns: int | None = None,
                   step_ns: int = STEP_NS) -> Placement:
    """The placement :func:`place_mtimes` would give a tree whose entries have ``mtimes`` (one
    per entry, any order), ending at the filesystem's present as that does.

    For a writer that knows every entry's captured mtime up front (from its entry list), so
    that it writes each entry with its placed mtime at once, and no walk follows.
    """
    started = time.monotonic()
    values = array("q", mtimes)
    ranking = distinct_sorted(values)
    at_ns = _now_past(clock_dir, not_before_ns, max(len(ranking) - 1, 0) * step_ns)
    return Placement(at_ns=at_ns, step_ns=step_ns, entries=len(values), distinct=len(ranking), ranking=ranking,
                     seconds=time.monotonic() - started)


def fit_placement(mtimes: array, pinned: Iterable[tuple[int, int]], *, clock_dir: Path,
                  not_before_ns: int | None = None, step_ns: int = STEP_NS) -> Placement | None:
    """A placement of a tree some of whose entries already hold placed mtimes; None if none fits.

    ``mtimes``: the captured mtime of every entry; ``pinned``: (captured mtime, mtime on
    disk) of the entries an update in place left alone, which keep theirs. The others get
    mtimes around them, so that the whole tree keeps the captured order as a placement
    does: equal stays equal, older stays older (at least ``step_ns`` apart where a value is
    added between two kept ones), everything newer than ``not_before_ns``, what is newer
    than every kept entry ending at the filesystem's present. None when the kept mtimes
    do not allow that (two kept entries of one captured mtime that differ, an order they
    do not keep, no room between two of them, or one not newer than an input): the
    caller then places every entry.
    """
    started = time.monotonic()
    ranking = distinct_sorted(mtimes)
    unset = -1 << 63
    placed = array("q", [unset]) * len(ranking)
    for captured, on_disk in pinned:
        rank = bisect.bisect_left(ranking, captured)
        if rank == len(ranking) or ranking[rank] != captured:
            return None
        if placed[rank] == unset:
            placed[rank] = on_disk
        elif placed[rank] != on_disk:
            return None
    last_rank, last = -1, None
    for rank, value in enumerate(placed):
        if value == unset:
            continue
        between = rank - last_rank - 1
        if last is None:
            if not_before_ns is not None and value - between * step_ns <= not_before_ns:
                return None
            for i in range(between):
                placed[last_rank + 1 + i] = value - (between - i) * step_ns
        else:
            if value <= last or (between and value - last < (between + 1) * step_ns):
                return None
            for i in range(between):
                placed[last_rank + 1 + i] = last + (i + 1) * step_ns
        last_rank, last = rank, value
    after = len(ranking) - last_rank - 1
    if after:
        floor = last if last is not None else not_before_ns
        at_ns = _now_past(clock_dir, floor, (after - 1) * step_ns)
        start = at_ns - (after - 1) * step_ns
        if floor is not None and start <= floor:
            return None
        for i in range(after):
            placed[last_rank + 1 + i] = start + i * step_ns
    return Placement(at_ns=placed[-1] if placed else filesystem_now_ns(clock_dir), step_ns=step_ns,
                     entries=len(mtimes), distinct=len(ranking), ranking=ranking, placed=placed,
                     seconds=time.monotonic() - started)


def _now_past(clock_dir: Path, floor_ns: int | None, span: int) -> int:
    """The filesystem's present, waited for (up to :data:`MAX_WAIT_S`) until ``span`` after
    ``floor_ns`` has passed."""
    at_ns = filesystem_now_ns(clock_dir)
    give_up = time.monotonic() + MAX_WAIT_S
    while floor_ns is not None and at_ns - span <= floor_ns:
        wait_s = max((floor_ns + span + 1 - at_ns) / 1e9, 0.001)  # the clock may be coarse
        if time.monotonic() + wait_s > give_up:
            break
        time.sleep(wait_s)
        at_ns = filesystem_now_ns(clock_dir)
    return at_ns


def place_mtimes(roots: Sequence[Path], *, clock_dir: Path, not_before_ns: int | None = None,
                 step_ns: int = STEP_NS, cancelled: Callable[[], bool] | None = None,
                 exclude: Sequence[str] = ()) -> Placement:
    """Give every entry under ``roots`` (the roots included) its placed mtime, in place.

    One ranking covers all roots, so the order between them is kept too. ``clock_dir`` is a
    directory outside the roots on the same filesystem: a probe file created there tells
    the filesystem's own present, the time make compares a file written next against.
    ``not_before_ns`` (the newest input's mtime) is waited past, up to :data:`MAX_WAIT_S`,
    so that every placed mtime is newer than it; check ``oldest_ns`` to see whether it was.
    Atime is set to the same value. ``cancelled`` is polled between directories.
    ``exclude`` names files at each root's top that are left alone (gaia's own: the marker,
    the receipt).
    """
    started = time.monotonic()
    values = array("q")
    for st in _walk(roots, cancelled, exclude):
        values.append(st.st_mtime_ns)
    entries = len(values)
    ranking = distinct_sorted(values)
    del values
    at_ns = _now_past(clock_dir, not_before_ns, max(len(ranking) - 1, 0) * step_ns)
    placement = Placement(at_ns=at_ns, step_ns=step_ns, entries=entries, distinct=len(ranking), ranking=ranking)
    _apply(roots, placement, cancelled, exclude)
    return dataclasses.replace(placement, seconds=time.monotonic() - started)


def filesystem_now_ns(directory: Path) -> int:
    """The mtime a file created in ``directory`` gets now (the kernel's coarse clock, or an
    NFS server's), which can lag ``time.time_ns()`` by a few milliseconds."""
    fd, name = tempfile.mkstemp(prefix=".gaia-clock-", dir=directory)
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
        os.unlink(name)


def distinct_sorted(values: array) -> array:
    """The distinct values of ``values`` in ascending order, as an ``array('q')``.

    Sorted in runs of :data:`SORT_RUN` and merged, so that no list of every value exists.
    """
    if len(values) <= SORT_RUN:
        return array("q", sorted(set(values)))  # one run: no merge
    runs = [array("q", sorted(values[i:i + SORT_RUN])) for i in range(0, len(values), SORT_RUN)]
    out = array("q")
    for value in heapq.merge(*runs):
        if not out or out[-1] != value:
            out.append(value)
    return out


def _apply(roots: Sequence[Path], placement: Placement, cancelled: Callable[[], bool] | None,
           exclude: Sequence[str] = ()) -> None:
    linked: set[tuple[int, int]] = set()  # inodes with several names, set once
    for root in roots:
        root_st = os.lstat(root)
        _set(placement, root_st, str(root), None)
        if not stat.S_ISDIR(root_st.st_mode):
            continue
        for dir_fd, name, st in _entries(root, cancelled, exclude):
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in linked:
                    continue
                linked.add(key)
            _set(placement, st, name, dir_fd)


def _set(placement: Placement, st: os.stat_result, name: str, dir_fd: int | None) -> None:
    new = placement.placed_ns(st.st_mtime_ns)
    if new != st.st_mtime_ns or st.st_atime_ns != new:
        os.utime(name, ns=(new, new), dir_fd=dir_fd, follow_symlinks=False)


def _walk(roots: Sequence[Path], cancelled: Callable[[], bool] | None,
          exclude: Sequence[str] = ()) -> Iterator[os.stat_result]:
    for root in roots:
        root_st = os.lstat(root)
        yield root_st
        if stat.S_ISDIR(root_st.st_mode):
            for _fd, _name, st in _entries(root, cancelled, exclude):
                yield st


def _entries(root: Path, cancelled: Callable[[], bool] | None,
             exclude: Sequence[str] = ()) -> Iterator[tuple[int, str, os.stat_result]]:
    """(parent dir fd, name, lstat) of every entry below ``root``; links are never followed.

    Each entry is yielded before the directory it is (if any) is entered, so a directory's
    own mtime is handled before its children's; utime on a child never changes a parent.
    """
    top = os.fsencode(root)
    stack = [top]
    while stack:
        if cancelled is not None and cancelled():
            raise InterruptedError("cancelled while placing mtimes")
        directory = stack.pop()
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            with os.scandir(dir_fd) as it:
                names = [e.name for e in it if not (directory == top and e.name in exclude)]
            for name in names:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                yield dir_fd, name, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(os.path.join(directory, os.fsencode(name)))
        finally:
            os.close(dir_fd)
