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
import weakref
from collections.abc import Callable, Iterator
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
from gaia_core.errors import BackendError, BackendUnavailable, CheckpointError

if TYPE_CHECKING:
    from gaia_core.anchors import Anchor, Target
    from gaia_core.backends import Backend
    from gaia_core.build import Build
    from gaia_core.checkpoints.signing import SigningKey

#: written into each target after a capture or restore; left out of checkpoints
MARKER = ".gaia-checkpoint.json"
#: which units (and keys) the tree holds, in the first target (:mod:`.unitrestore`)
UNITS_MARKER = ".gaia-units.json"

Log = Callable[[str], None]

_ENGINES: weakref.WeakKeyDictionary[Any, Checkpoints] = weakref.WeakKeyDictionary()


class Checkpoints:
    def __init__(self, build: Build):
        self.build = build
        self.settings: CheckpointSettings = checkpoint_settings(build)
        queue = build.workspace.resolve(self.settings.queue_file) if self.settings.queue_file else None
        self.store = Store(build.workspace.checkpoints_dir, queue)
        self._fingerprints: dict[str, Fingerprint] = {}
        #: backend ref -> why it is skipped for the rest of this run
        self.down: dict[str, str] = {}
        #: (backend ref, point id, fingerprint, manifest file) -> why the object in that slot is
        #: bad (an upload into that slot replaces it)
        self.bad_remote: dict[tuple[str, str, str, str], str] = {}
        #: (backend ref, pack id) of remote packs that served a corrupt chunk in this run
        self.bad_packs: set[tuple[str, str]] = set()
        self._warned: set[str] = set()
        self._signing_key: SigningKey | None | bool = False  # False: not loaded yet
        self._signing_problem: str | None = None

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

    def point(self, point_id: str) -> Point:
        for p in self.points:
            if p.id == point_id:
                return p
        raise CheckpointError(f"no checkpoint point '{point_id}'")

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
        """A connected backend; one that timed out or refused is skipped for the rest of the run."""
        if ref in self.down:
            raise BackendUnavailable(f"{ref} is skipped for the rest of this run: {self.down[ref]}")
        backend = self.backend(ref)
        try:
            with backend:
                yield backend
        except BackendUnavailable as exc:
            self.down[ref] = backend.redact(str(exc))
            raise BackendUnavailable(backend.redact(str(exc))) from None
        except BackendError as exc:
            raise type(exc)(backend.redact(str(exc))) from None

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

    def pack_limit(self, point: Point) -> int:
        """The largest pack this point's stores take (``max_object_size``), at most the default."""
        from gaia_core.checkpoints.packs import DEFAULT_PACK_LIMIT

        limits = [self.settings.backend_configs[ref][1].max_object_size for ref in point.backends
                  if ref in self.settings.backend_configs]
        return min([DEFAULT_PACK_LIMIT, *(parse_size(v) for v in limits if v)])

    @staticmethod
    def materialized(targets: list[Target], fp: str) -> bool:
        """Whether every target already holds the output of this fingerprint."""
        for t in targets:
            if t.link is not None and not os.path.islink(t.link):
                return False  # the user removed the path they know: the run starts it over
            try:
                marker = json.loads((t.path / MARKER).read_bytes())
            except (OSError, ValueError):
                return False
            if not isinstance(marker, dict) or marker.get("fingerprint") != fp:
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
