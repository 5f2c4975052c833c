"""The checkpoint machinery of one build: settings, store, anchors, fingerprints, backends.

One engine serves a whole ``gaia run`` (the status preamble and every checkpoint task), so
that a backend found down by the preamble is skipped by the tasks too and warnings are
printed once. Capture, restore and transfers live in :mod:`.capture`, :mod:`.restore` and
:mod:`.remote`; this module holds what they share.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaia_core import atomic
from gaia_core.checkpoints.config import CheckpointSettings, Point, checkpoint_settings
from gaia_core.checkpoints.fingerprint import (
    Fingerprint,
    changed_inputs,
    compute,
    lineage,
    miss_reason,
)
from gaia_core.checkpoints.manifest import FORMAT_VERSION, now
from gaia_core.checkpoints.receipt import RECEIPT, RECEIPT_PARTIAL, read_header
from gaia_core.checkpoints.portability import current_roots
from gaia_core.checkpoints.store import LocalObject, Store, store_faults, warn
from gaia_core.checkpoints.units import parse_size
from gaia_core.errors import (
    BackendError,
    BackendUnavailable,
    CheckpointError,
    ObjectExists,
    ObjectNotFound,
    UnavailableHere,
)

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.backends import Backend
    from gaia_core.build import Build
    from gaia_core.checkpoints.records import Tally
    from gaia_core.checkpoints.downtiers import Down, DownTiers
    from gaia_core.checkpoints.entries import Entry
    from gaia_core.checkpoints.signing import SigningKey
    from gaia_core.checkpoints.tiers import Backfills, Lookup

#: written into each target after a capture or restore; left out of checkpoints
MARKER = ".gaia-checkpoint.json"
#: which units (and keys) the tree holds, in the first target (:mod:`.unitrestore`)
UNITS_MARKER = ".gaia-units.json"

Log = Callable[[str], None]

_ENGINES: weakref.WeakKeyDictionary[Any, Checkpoints] = weakref.WeakKeyDictionary()


def read_marker(target: Target) -> dict[str, Any]:
    """The target's checkpoint marker; empty when there is none or it is not a JSON object."""
    try:
        data = json.loads((target.path / MARKER).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def unavailable(ref: str, reason: str) -> str:
    """The one wording of a backend that could not be used, in every command and in runs."""
    return f"backend {ref} is unavailable: {reason}"


class NotUsedOffline(BackendError):
    """A store that needs the network, in an offline run: not contacted, and not unavailable
    either (nothing is wrong with it; uploads to it are queued)."""


def offline_notice(cp: Checkpoints) -> str:
    """The one line that says a command is offline, and what that means."""
    network = sorted({ref for p in cp.points for ref in p.backends if cp.backend(ref).needs_network})
    skipped = f"; {', '.join(network)} are not contacted, and uploads to them are queued for " \
              "`gaia checkpoints retry`" if network else ""
    return (f"  offline ({cp.offline_source}): only the local store and mounted dir tiers are used"
            f"{skipped}")


def clock(epoch: float) -> str:
    """A time of day for messages (``14:05:09``), local time."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


class Checkpoints:
    def __init__(self, build: Build):
        self.build = build
        self.settings: CheckpointSettings = checkpoint_settings(build)
        queue = build.workspace.resolve(self.settings.queue_file) if self.settings.queue_file else None
        self.store = Store(build.workspace.checkpoints_dir, queue)
        self._fingerprints: dict[str, Fingerprint] = {}
        #: backend ref -> why it is skipped for the rest of this run
        self.down: dict[str, str] = {}
        #: backend ref -> why it could not be used (a command that needed it exits 5)
        self.unavailable: dict[str, str] = {}
        #: (backend ref, point id, fingerprint, manifest file) -> why the object in that slot is
        #: bad (an upload into that slot replaces it)
        self.bad_remote: dict[tuple[str, str, str, str], str] = {}
        #: (backend ref, pack id) of remote packs that served a corrupt chunk in this run
        self.bad_packs: set[tuple[str, str]] = set()
        #: entry lists (:func:`.tree.list_key`) whose every chunk this run brought into the
        #: local store: a restore of them need not look every chunk up again; the last one
        #: with its checked entries when they were held (:func:`.tree.entry_list`), so the
        #: restore need not read the list again either
        self.fetched: dict[str, list[Entry] | None] = {}
        self._warned: set[str] = set()
        self._signing_key: SigningKey | None | bool = False  # False: not loaded yet
        self._signing_problem: str | None = None
        #: point id -> what this run's tasks noted about it (its record, when the run ends)
        self.tallies: dict[str, Tally] = {}
        #: why the run uses no store that needs the network (``--offline``, ``GAIA_OFFLINE=1``); empty: online
        self.offline_source = "--offline" if build.offline else self.settings.offline_source
        #: backend ref -> the memory of its being down: found so by an earlier run (and so not
        #: contacted) or by this one
        self.down_entries: dict[str, Down] = {}
        self._down_tiers: DownTiers | None = None
        self._memory: dict[str, Down] | None = None
        self._answered_refs: set[str] = set()
        self._lookups: dict[tuple[str, str], Lookup] = {}
        self._backfills: Backfills | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, build: Build) -> Checkpoints:
        """The engine of this build, created once and shared by the preamble and the tasks."""
        engine = _ENGINES.get(build)
        if engine is None:
            engine = _ENGINES[build] = cls(build)
        return engine

    @property
    def points(self) -> list[Point]:
        return self.settings.points

    @property
    def read_only(self) -> bool:
        return self.settings.read_only

    @property
    def offline(self) -> bool:
        return bool(self.offline_source)

    def point(self, point_id: str) -> Point:
        for p in self.points:
            if p.id == point_id:
                return p
        raise CheckpointError(f"no checkpoint point '{point_id}'")

    def tally(self, point_id: str) -> Tally:
        """What this run noted about a point so far (:mod:`.records`)."""
        from gaia_core.checkpoints.records import Tally

        return self.tallies.setdefault(point_id, Tally())

    def anchor(self, point: Point) -> Anchor:
        return self.build.registry.anchors[point.anchor_task].make(self.build)

    def fingerprint(self, point: Point, *, fresh: bool = False) -> Fingerprint:
        """The point's fingerprint; ``fresh`` recomputes it (the restore task, after fetch)."""
        cached = self._fingerprints.get(point.id)
        if cached is None or fresh or not cached.known:
            cached = self._fingerprints[point.id] = compute(self.build, point, self.anchor(point))
        return cached

    def warn_once(self, key: str, message: str, log: Log | None = None) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if log is None:
            warn(message)  # stderr, prefixed by warn()
        else:
            log(f"WARN: {message}")

    # -- backends -------------------------------------------------------------------------

    def backend(self, ref: str) -> Backend:
        if ref not in self.settings.backend_configs:
            raise BackendError(f"backend '{ref}' is not configured any more")
        return self.settings.backend(ref)

    @contextlib.contextmanager
    def session(self, ref: str) -> Iterator[Backend]:
        """A connected backend. Its failures are worded by :func:`unavailable` and kept in
        ``self.unavailable``; one that timed out or refused is skipped for the rest of the run,
        and remembered on disk as down for ``down_for`` (:mod:`.downtiers`): the next runs on
        this host skip it without a connection. Offline, a store that needs the network
        raises :class:`NotUsedOffline`."""
        if ref in self.down:
            raise BackendUnavailable(f"{unavailable(ref, self.down[ref])} (skipped for the rest of this run)")
        backend = self.backend(ref)
        if self.offline and backend.needs_network:
            raise NotUsedOffline(f"{ref} is not used offline ({self.offline_source})")
        where = _where(backend)
        remembered = self._remembered(where)
        if remembered is not None:
            reason = (f"{remembered.reason} (found down at {clock(remembered.since)}; not contacted again "
                      f"until {clock(remembered.until)})")
            self.down_entries[ref] = remembered
            self.unavailable.setdefault(ref, reason)
            self.down[ref] = reason
            raise BackendUnavailable(unavailable(ref, reason))
        try:
            with backend:
                yield backend
        except (ObjectNotFound, ObjectExists) as exc:  # answers, not failures
            self._answered(ref, where)
            raise type(exc)(backend.redact(str(exc))) from None
        except BackendError as exc:
            reason = backend.redact(str(exc)).removeprefix(f"{ref}: ")
            self.unavailable.setdefault(ref, reason)
            if isinstance(exc, BackendUnavailable):
                self.down[ref] = reason
                if not isinstance(exc, UnavailableHere):
                    self._remember_down(ref, where, reason)
            raise type(exc)(unavailable(ref, reason)) from None
        except CheckpointError:  # what it holds is bad: it answered
            self._answered(ref, where)
            raise
        else:
            self._answered(ref, where)

    @property
    def down_tiers(self) -> DownTiers:
        """This host's memory of down tiers (:mod:`.downtiers`)."""
        if self._down_tiers is None:
            from gaia_core.checkpoints.downtiers import DownTiers

            self._down_tiers = DownTiers()
        return self._down_tiers

    def _remembered(self, where: str) -> Down | None:
        """The memory's entry of ``where`` while it holds (read once per engine)."""
        if self._memory is None:
            self._memory = self.down_tiers.read()
        down = self._memory.get(where)
        return down if down is not None and down.until > time.time() else None

    def _remember_down(self, ref: str, where: str, reason: str) -> None:
        if self.settings.down_for <= 0 or ref in self.down_entries:
            return
        down = self.down_tiers.mark_down(ref, where, reason, self.settings.down_for)
        if down is not None:
            self.down_entries[ref] = down

    def _answered(self, ref: str, where: str) -> None:
        """The tier answered: an earlier run's memory of its being down goes (once per run)."""
        with self._lock:
            if ref in self._answered_refs:
                return
            self._answered_refs.add(ref)
        self.down_tiers.mark_up(where)

    def contact_down_tiers(self) -> None:
        """Contact the tiers an earlier run found down, in this command (``retry``, ``push``,
        ``status --recheck``, ...): the memory of those that answer goes, those that fail
        again are remembered anew."""
        self._memory = {}  # nothing remembered: every tier is contacted

    def down_until(self, ref: str) -> float | None:
        """Until when ``ref`` is skipped as down (found so in this run or an earlier one), else None."""
        entry = self.down_entries.get(ref)
        if entry is None and ref in self.settings.backend_configs:
            entry = self._remembered(_where(self.backend(ref)))
        return entry.until if entry is not None and entry.until > time.time() else None

    # -- tiers ----------------------------------------------------------------------------

    def lookup(self, point: Point, fp: str, *, fresh: bool = False) -> Lookup:
        """The lookup of ``fp`` across the point's tiers, started once per engine (the run's
        status preamble starts it, the restore reads its answers); ``fresh`` starts anew."""
        from gaia_core.checkpoints.tiers import Lookup

        with self._lock:
            found = self._lookups.get((point.id, fp))
            if found is None or fresh:
                found = self._lookups[(point.id, fp)] = Lookup(self, point, fp)
            return found

    @property
    def backfills(self) -> Backfills:
        """Copies of hits into faster tiers running in the background of this run."""
        from gaia_core.checkpoints.tiers import Backfills

        with self._lock:
            if self._backfills is None:
                self._backfills = Backfills(self)
            return self._backfills

    def redact(self, ref: str | None, message: str) -> str:
        if ref and ref in self.settings.backend_configs:
            return self.backend(ref).redact(message)
        return message

    # -- signing --------------------------------------------------------------------------

    def signing_key(self, log: Log) -> SigningKey | None:
        """The key captures are signed with; None (with one warning) when none is usable."""
        key, problem = self._load_signing_key()
        if problem and self.settings.signing_key_file_env and not self.read_only:
            self.warn_once("signing", f"{problem}: checkpoints are captured unsigned", log)
        return key

    def _load_signing_key(self) -> tuple[SigningKey | None, str | None]:
        """The signing key, or why there is none; loaded once, nothing printed."""
        if self._signing_key is False:
            self._signing_key, self._signing_problem = None, None
            env = self.settings.signing_key_file_env
            path = os.environ.get(env, "").strip() if env else ""
            if not env:
                self._signing_problem = "[checkpoints] signing_key_file_env is not set"
            elif self.read_only:
                self._signing_problem = f"read-only ({self.settings.read_only_source})"
            elif not path:
                self._signing_problem = f"{env} is not set"
            else:
                from pathlib import Path

                from gaia_core.checkpoints.signing import load_signing_key

                try:
                    self._signing_key = load_signing_key(Path(path).expanduser(), f"from {env}")
                except (CheckpointError, ValueError) as exc:
                    self._signing_problem = str(exc)
        return self._signing_key or None, self._signing_problem

    def upload_blocked(self, point: Point, manifest: dict[str, Any] | None = None) -> str | None:
        """Why uploading would serve no consumer; None when an upload may go.

        Under ``trust_mode = "verify"`` with ``trusted_public_keys`` set, every consumer that
        trusts those keys refuses an unsigned object. ``manifest`` is the object's; None asks
        about what a capture here would make.
        """
        if point.trust_mode != "verify" or not self.settings.trusted_keys:
            return None
        if manifest is not None:
            if isinstance(manifest.get("signature"), dict):
                return None
            what = "the object is unsigned"
        else:
            key, problem = self._load_signing_key()
            if key is not None:
                return None
            what = f"a capture here is unsigned ({problem})"
        return (f"unsigned: {what} and trusted_public_keys is set, so no consumer that trusts those keys "
                "could use it")

    # -- local state ----------------------------------------------------------------------

    def local_object(self, point: Point, fp: str, *, discard: bool = True) -> LocalObject | None:
        """The local object of ``fp`` if it belongs to this point; a stray one is discarded."""
        obj = self.store.get(point.id, fp, quiet=not discard)
        if obj is None:
            return None
        problem = self.manifest_problem(obj.manifest, point, fp)
        if problem:
            if discard:
                self.store.discard(point.id, fp, problem)
            return None
        return obj

    def manifest_problem(self, manifest: dict[str, Any], point: Point, fp: str) -> str | None:
        """Why a manifest does not belong to this point and fingerprint (None when it does)."""
        if manifest.get("id") != point.id or manifest.get("anchor_task") != point.anchor_task:
            return "manifest names another point or anchor"
        if "unit" in manifest:
            return "manifest is a unit's, not a whole tree's"
        if manifest.get("fingerprint") != fp:
            return "manifest names another fingerprint"
        if manifest.get("lineage") != lineage(point.anchor_task, fp):
            return "lineage mismatch"
        anchor = self.anchor(point)
        anchor_targets = {t.name for t in anchor.targets()}
        names = {t["name"] for t in manifest.get("targets", [])}
        if names != anchor_targets:
            return f"targets {sorted(names)} differ from the anchor's {sorted(anchor_targets)}"
        foreign = sorted(set(manifest.get("roots") or {}) - set(current_roots(anchor)))
        if foreign:
            return f"relocation roots {foreign} are not among the anchor's"
        return None

    def nearest(self, point: Point, fp: Fingerprint, manifests: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The manifest of another fingerprint with the most inputs in common (newest on a tie)."""
        best, best_score = None, -1
        for manifest in manifests:
            inputs = manifest.get("fingerprint_inputs")
            if manifest.get("fingerprint") == fp.value or not isinstance(inputs, dict):
                continue
            score = len(set(inputs) | set(fp.inputs)) - len(changed_inputs(inputs, fp.inputs))
            if score > best_score:
                best, best_score = manifest, score
        return best

    def miss_reason(self, point: Point, fp: Fingerprint) -> str:
        """``missing``, ``format_changed`` or ``inputs_changed:<keys>`` against the local objects."""
        objects = [o for o in self.store.objects(point.id) if o.fingerprint != fp.value]
        if not objects:
            return "missing"
        if all(o.manifest.get("format") != FORMAT_VERSION for o in objects):
            return "format_changed"
        current = [o.manifest for o in objects if o.manifest.get("format") == FORMAT_VERSION]
        nearest = self.nearest(point, fp, current)
        if nearest is None:
            return "fingerprint_changed"
        return miss_reason(changed_inputs(nearest["fingerprint_inputs"], fp.inputs))

    # -- trees --------------------------------------------------------------------------

    #: files at each target's root that are gaia's, never part of a checkpoint
    excluded = (MARKER, RECEIPT, RECEIPT_PARTIAL, UNITS_MARKER)

    @staticmethod
    def receipt_header(point: Point, fp: str, how: str, anchor: Anchor) -> dict[str, Any]:
        from gaia_core.checkpoints.portability import current_roots

        return {"point": point.id, "fingerprint": fp, "how": how, "roots": current_roots(anchor), "at": now()}

    @staticmethod
    def receipts(targets: list[Target], anchor: Anchor) -> dict[str, Path | None]:
        """Each target's receipt, when it was written with the roots the tree has here
        (a tree moved by hand holds other paths than its receipt says)."""
        from gaia_core.checkpoints.portability import current_roots

        roots = current_roots(anchor)
        found: dict[str, Path | None] = {}
        for t in targets:
            header = read_header(t.path / RECEIPT)
            found[t.name] = t.path / RECEIPT if header and header.get("roots") == roots else None
        return found

    def writable_tiers(self, point: Point) -> list[str]:
        """The point's backends this run may write to, in the point's order: none when the
        run is read-only, never a tier whose table says ``read_only = true``. Offline, the
        tiers that need the network are among them (uploads to them are queued)."""
        if self.read_only:
            return []
        return [ref for ref in point.backends if not self.settings.tier_read_only(ref)]

    def pack_limit(self, refs: Iterable[str]) -> int:
        """The largest pack the stores ``refs`` all take (``max_object_size``), at most the default."""
        from gaia_core.checkpoints.packs import DEFAULT_PACK_LIMIT

        limits = [self.settings.backend_configs[ref][1].max_object_size for ref in refs
                  if ref in self.settings.backend_configs]
        return min([DEFAULT_PACK_LIMIT, *(parse_size(v) for v in limits if v)])

    @staticmethod
    def materialized(targets: list[Target], fp: str) -> bool:
        """Whether every target already holds the output of this fingerprint."""
        for t in targets:
            if t.link is not None and not os.path.islink(t.link):
                return False  # the user removed the path they know: the run starts it over
            if read_marker(t).get("fingerprint") != fp:
                return False
        return bool(targets)

    @staticmethod
    def write_markers(targets: list[Target], point: Point, fp: str, how: str,
                      extra: dict[str, Any] | None = None) -> None:
        """``extra``: more fields (the tree's mtimes, :func:`.freshness.marker_fields`)."""
        with store_faults("writing the checkpoint marker"):
            for t in targets:
                atomic.write_json(t.path / MARKER, {
                    "point": point.id, "anchor_task": point.anchor_task, "fingerprint": fp, "how": how,
                    "at": now(), **(extra or {}),
                })

    @staticmethod
    def clear_markers(targets: list[Target]) -> None:
        with store_faults("removing the checkpoint marker"):
            for t in targets:
                (t.path / MARKER).unlink(missing_ok=True)


def _where(backend: Backend) -> str:
    """What identifies the store of ``backend`` in the memory of down tiers (no secret)."""
    try:
        return backend.describe()
    except BackendError:
        return backend.ref
