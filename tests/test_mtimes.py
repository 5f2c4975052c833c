"""The mtime step of a restore: order kept to the ns, compressed to end at the filesystem's
present, links never followed, memory bounded by 8 bytes an entry."""

from __future__ import annotations

import os
import time
import tracemalloc
from array import array
from pathlib import Path

import pytest
from mtime_order import filesystem_now, mtimes, ranks

from gaia_core.checkpoints import mtimes as step
from gaia_core.checkpoints.mtimes import STEP_NS, distinct_sorted, place_mtimes, plan_placement

T0 = 1_600_000_000_000_000_000


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A build-like tree: stamps 1 ns apart, equal times, an hour-long build, links, a hard link."""
    root = tmp_path / "staging" / "out"
    (root / "build" / "pkg").mkdir(parents=True)
    (root / "host" / "bin").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("not in the tree")
    set_mtime(outside, T0 + 5)
    times = {
        "build/pkg/.stamp_configured": T0 + 10,
        "build/pkg/.stamp_built": T0 + 11,  # 1 ns after: must stay after
        "build/pkg/.stamp_installed": T0 + 3_600_000_000_000,  # an hour later
        "host/bin/tool": T0 + 11,  # equal to .stamp_built: must stay equal
    }
    for rel, ns in times.items():
        (root / rel).write_text(rel)
    os.link(root / "host" / "bin" / "tool", root / "host" / "bin" / "tool-hardlink")
    os.symlink("tool", root / "host" / "bin" / "cc")
    os.symlink(str(outside), root / "host" / "bin" / "outside-link")
    os.symlink(str(tmp_path), root / "host" / "dir-link")  # a link to a directory: never entered
    for rel, ns in times.items():
        set_mtime(root / rel, ns)
    set_mtime(root / "host" / "bin" / "cc", T0 + 2)
    set_mtime(root / "host" / "bin" / "outside-link", T0 + 2)
    set_mtime(root / "host" / "dir-link", T0 + 1)
    for i, rel in enumerate(["build/pkg", "build", "host/bin", "host", "."]):
        set_mtime(root / rel, T0 + 20 + i)
    return root


def test_the_order_is_kept_to_the_ns_and_ends_at_the_filesystem_present(tree: Path):
    before = mtimes(tree)
    outside = (tree.parent.parent / "outside.txt").lstat().st_mtime_ns
    parent_before = tree.parent.parent.lstat().st_mtime_ns
    earliest = filesystem_now(tree.parent)
    placement = place_mtimes([tree], clock_dir=tree.parent)
    latest = filesystem_now(tree.parent)
    after = mtimes(tree)

    assert ranks(after) == ranks(before)  # equal stays equal, older stays older
    assert earliest <= placement.at_ns <= latest
    assert max(after.values()) == placement.at_ns  # nothing in the future
    distinct = sorted(set(after.values()))
    assert [b - a for a, b in zip(distinct, distinct[1:])] == [STEP_NS] * (len(distinct) - 1)
    assert placement.oldest_ns == distinct[0] and placement.distinct == len(distinct)
    assert placement.entries == len(before)  # every name, the hard link's two included
    assert after["build/pkg/.stamp_built"] - after["build/pkg/.stamp_configured"] == STEP_NS
    assert after["host/bin/tool"] == after["build/pkg/.stamp_built"] == after["host/bin/tool-hardlink"]
    # what the links point to is not touched, nor is anything outside the tree
    assert (tree.parent.parent / "outside.txt").lstat().st_mtime_ns == outside
    assert tree.parent.parent.lstat().st_mtime_ns == parent_before
    assert not list(tree.parent.glob(".gaia-clock-*"))


def test_every_entry_is_set_to_what_a_plan_from_the_captured_times_says(tree: Path):
    before = mtimes(tree)
    earliest = filesystem_now(tree.parent)
    planned = plan_placement(before.values(), clock_dir=tree.parent)
    placement = place_mtimes([tree], clock_dir=tree.parent)
    assert earliest <= planned.at_ns <= placement.at_ns  # it ends at the present too
    assert (planned.distinct, planned.entries) == (placement.distinct, placement.entries)
    after = mtimes(tree)
    shift = placement.at_ns - planned.at_ns  # the same placement, a moment later
    assert {rel: planned.placed_ns(ns) + shift for rel, ns in before.items()} == after
    assert {rel: placement.placed_ns(ns) for rel, ns in before.items()} == after
    with pytest.raises(KeyError):
        placement.placed_ns(T0 + 12)  # not a captured time


def test_several_roots_share_one_ranking(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "early").write_text("")
    (b / "late").write_text("")
    set_mtime(a / "early", T0)
    set_mtime(b / "late", T0 + 1)
    set_mtime(a, T0 + 2)
    set_mtime(b, T0 + 2)
    place_mtimes([a, b], clock_dir=tmp_path)
    assert (b / "late").lstat().st_mtime_ns - (a / "early").lstat().st_mtime_ns == STEP_NS
    assert a.lstat().st_mtime_ns == b.lstat().st_mtime_ns


def test_placement_waits_past_the_newest_input(tree: Path):
    newest_input = filesystem_now(tree.parent) + 300_000_000  # written "0.3 s from now" (a coarse clock)
    placement = place_mtimes([tree], clock_dir=tree.parent, not_before_ns=newest_input)
    assert placement.oldest_ns > newest_input
    assert max(mtimes(tree).values()) <= filesystem_now(tree.parent)


def test_a_plan_waits_past_the_newest_input_as_a_walk_does(tree: Path):
    newest_input = filesystem_now(tree.parent) + 300_000_000
    planned = plan_placement(mtimes(tree).values(), clock_dir=tree.parent, not_before_ns=newest_input)
    assert planned.oldest_ns > newest_input
    assert planned.at_ns <= filesystem_now(tree.parent)


def test_an_input_far_in_the_future_is_not_waited_for(tree: Path):
    future = time.time_ns() + 3600 * 10**9  # clock skew: waiting would not help
    started = time.monotonic()
    placement = place_mtimes([tree], clock_dir=tree.parent, not_before_ns=future)
    assert time.monotonic() - started < step.MAX_WAIT_S
    assert placement.oldest_ns <= future  # the caller sees it and warns
    assert max(mtimes(tree).values()) <= filesystem_now(tree.parent)


def test_a_cancelled_placement_stops(tree: Path):
    with pytest.raises(InterruptedError):
        place_mtimes([tree], clock_dir=tree.parent, cancelled=lambda: True)


def test_distinct_sorted_merges_runs(monkeypatch):
    monkeypatch.setattr(step, "SORT_RUN", 3)
    values = array("q", [5, 1, 5, 9, 2, 2, 7, 1, 9, 0])
    assert list(distinct_sorted(values)) == [0, 1, 2, 5, 7, 9]
    assert list(distinct_sorted(array("q"))) == []


def test_memory_is_bounded_by_the_entries_not_their_paths(tmp_path: Path, monkeypatch):
    """20,000 entries with 200-character names: the paths alone would take 4 MB."""
    monkeypatch.setattr(step, "SORT_RUN", 4096)
    root = tmp_path / "big"
    for d in range(50):
        directory = root / f"{d:03d}-{'d' * 200}"
        directory.mkdir(parents=True)
        for f in range(400):
            path = directory / f"{f:04d}-{'f' * 200}"
            path.touch()
            set_mtime(path, T0 + d * 1000 + f)
    tracemalloc.start()
    try:
        placement = place_mtimes([root], clock_dir=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert placement.entries == 20_051 and placement.distinct >= 20_000
    assert peak < 1_500_000, peak


# -- placement around mtimes already placed (an update in place) ------------------------


def fit(mtimes_: list[int], pinned: list[tuple[int, int]], tmp_path: Path, **kw):
    return step.fit_placement(array("q", mtimes_), pinned, clock_dir=tmp_path, **kw)


def test_a_fitted_placement_keeps_the_pinned_mtimes_and_places_the_rest_in_order(tmp_path):
    captured = [T0 + 1, T0 + 2, T0 + 2, T0 + 50, T0 + 60, T0 + 900, T0 + 901]
    placed_before = filesystem_now(tmp_path) - 10 * STEP_NS  # where an earlier placement put T0+2 and T0+60
    pinned = [(T0 + 2, placed_before), (T0 + 60, placed_before + 5 * STEP_NS)]
    placement = fit(captured, pinned, tmp_path)
    values = [placement.placed_ns(c) for c in captured]
    assert values[1] == values[2] == placed_before and values[4] == placed_before + 5 * STEP_NS
    assert values[0] == placed_before - STEP_NS  # before the first pin, one step apart
    assert values[3] == placed_before + STEP_NS  # between two pins, one step after the first
    assert placed_before + 5 * STEP_NS < values[5] < values[6] <= filesystem_now(tmp_path)  # after them: up to now
    assert values[6] - values[5] == STEP_NS and placement.at_ns == values[6]
    assert placement.oldest_ns == values[0] and placement.distinct == 6 and placement.entries == 7


@pytest.mark.parametrize(("pinned", "why"), [
    ([(T0 + 2, T0 + 100), (T0 + 2, T0 + 101)], "one captured mtime, two on disk"),
    ([(T0 + 2, T0 + 200), (T0 + 50, T0 + 100)], "an order the pins do not keep"),
    ([(T0 + 2, T0 + 200), (T0 + 60, T0 + 200 + STEP_NS)], "no room for T0+50 between them"),
    ([(T0 + 7, T0 + 100)], "a captured mtime the tree does not have"),
])
def test_a_placement_that_cannot_keep_the_pins_is_refused(tmp_path, pinned, why):
    assert fit([T0 + 1, T0 + 2, T0 + 50, T0 + 60], pinned, tmp_path) is None, why


def test_a_fitted_placement_refuses_pins_not_newer_than_an_input(tmp_path):
    now = filesystem_now(tmp_path)
    pinned = [(T0 + 2, now - 100 * STEP_NS)]
    assert fit([T0 + 1, T0 + 2], pinned, tmp_path, not_before_ns=now - 101 * STEP_NS - 1) is not None
    # the entry before the pin would land on the input's mtime
    assert fit([T0 + 1, T0 + 2], pinned, tmp_path, not_before_ns=now - 101 * STEP_NS) is None
    assert fit([T0 + 1, T0 + 2], pinned, tmp_path, not_before_ns=now) is None


def test_a_fitted_placement_without_pins_is_a_placement_ending_now(tmp_path):
    captured = [T0 + 5, T0 + 1, T0 + 5, T0 + 3]
    before = filesystem_now(tmp_path)
    placement = fit(captured, [], tmp_path, not_before_ns=before)
    assert before < placement.placed_ns(T0 + 1) < placement.placed_ns(T0 + 3) < placement.placed_ns(T0 + 5)
    assert placement.placed_ns(T0 + 5) - placement.placed_ns(T0 + 1) == 2 * STEP_NS
