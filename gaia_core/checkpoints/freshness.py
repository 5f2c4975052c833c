"""A checkpoint tree stays up to date for make, wherever and whenever it is in place.

The fingerprint covers the *content* of the anchor's inputs, never their mtimes; make reads
only mtimes. So gaia makes the tree newer than every input the fingerprint covers:

- **after a restore** the staged tree's mtimes are placed: their order kept to the ns,
  compressed to end at the restore, past the newest input the fingerprint read (each entry
  written with its placed mtime, :func:`.mtimes.plan_placement`, when the restore holds the
  entry list; else a walk afterwards, :func:`.mtimes.place_mtimes`);
- **in place** (the tree already holds the fingerprint) nothing is done unless an input
  the fingerprint read was written after the tree was placed or built (a checkout again,
  same content: same fingerprint, newer mtime). Then the tree's mtimes are placed again,
  in place, with its marker cleared meanwhile so that a placement cut short is restored
  over on the next run instead of being taken for a tree in place.

The marker of each target records it under ``mtimes``: ``placed`` (what the last
placement did, see :meth:`.mtimes.Placement.marker`; None for a tree as its build left it)
and ``inputs_ok_ns`` (inputs whose mtime is at most this are older than every entry that
may depend on them: the oldest placed mtime, or for a captured tree the newest input the
build read).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core.checkpoints.engine import Checkpoints, Log, read_marker
from gaia_core.checkpoints.mtimes import Placement, place_mtimes

if TYPE_CHECKING:
    from gaia_core.anchors import Target
    from gaia_core.checkpoints.config import Point
    from gaia_core.checkpoints.fingerprint import Fingerprint

#: the marker's key
FIELD = "mtimes"


def marker_fields(placement: Placement | None, inputs_ok_ns: int | None) -> dict[str, Any]:
    """What the marker records about the tree's mtimes (merged into it by ``write_markers``)."""
    return {FIELD: {"placed": placement.marker() if placement else None, "inputs_ok_ns": inputs_ok_ns}}


def place_restored(trees: Sequence[Path], clock_dir: Path, fingerprint: Fingerprint, point: Point,
                   log: Log, exclude: Sequence[str] = (),
                   place: Callable[[Path, int | None], Placement] | None = None) -> dict[str, Any]:
    """Place the mtimes of a restored tree (staged, before the swap, or updated in place:
    ``exclude`` then names gaia's own files at its top; ``place(clock_dir, not_before_ns)``
    places them instead of a walk, as an update does); returns the marker fields."""
    placement = place(clock_dir, fingerprint.newest_input_ns) if place is not None else \
        place_mtimes(trees, clock_dir=clock_dir, not_before_ns=fingerprint.newest_input_ns, exclude=exclude)
    log(f"checkpoint:{point.id} placed the mtimes of {placement.entries} entries to end at the restore, in "
        f"their order ({placement.seconds:.2f}s)")
    _report(placement, fingerprint, point, log, "restored tree")
    return marker_fields(placement, placement.oldest_ns)


def captured_fields(fingerprint: Fingerprint) -> dict[str, Any]:
    """The marker fields of a tree as its build left it: up to date for the inputs it read."""
    return marker_fields(None, fingerprint.newest_input_ns)


def keep_up_to_date(cp: Checkpoints, point: Point, targets: list[Target], fingerprint: Fingerprint,
                    log: Log) -> Placement | None:
    """A tree in place: place its mtimes again when an input was written after it was made.

    Costs nothing (one marker read) unless that happened. Returns the new placement, or
    None when the tree was left as it is.
    """
    newest = fingerprint.newest_input_ns
    if newest is None or not targets:
        return None
    markers = [read_marker(t) for t in targets]
    known = [m.get(FIELD, {}).get("inputs_ok_ns") if isinstance(m.get(FIELD), dict) else None for m in markers]
    if all(isinstance(ok, int) and newest <= ok for ok in known):
        return None
    how = markers[0].get("how") if isinstance(markers[0].get("how"), str) else "restored"
    cp.clear_markers(targets)
    from gaia_core.checkpoints.receipt import keep_across

    # the receipt stays true across the placement: only mtimes change
    placement = keep_across(targets, cp.excluded, lambda: place_mtimes(
        [t.path for t in targets], clock_dir=targets[0].path.parent, not_before_ns=newest, exclude=cp.excluded))
    cp.write_markers(targets, point, fingerprint.value or "", how, extra=marker_fields(placement, placement.oldest_ns))
    log(f"checkpoint:{point.id} an input was written at {_iso(newest)}, after this tree was made: its mtimes "
        f"now end at {_iso(placement.at_ns)}, in their order ({placement.entries} entries, {placement.seconds:.2f}s)")
    _report(placement, fingerprint, point, log, "tree in place")
    return placement


def _report(placement: Placement, fingerprint: Fingerprint, point: Point, log: Log, what: str) -> None:
    newest = fingerprint.newest_input_ns
    if newest is not None and placement.oldest_ns <= newest:
        log(f"WARN: checkpoint:{point.id} an input's mtime ({_iso(newest)}) lies in the future of this "
            f"filesystem's clock ({_iso(placement.at_ns)}); make may rebuild parts of the {what} (clock skew?)")


def _iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat(timespec="milliseconds")
