"""Variant keys and the manifest field that names what a variant stands in for."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaia_core.anchors import Target
from gaia_core.checkpoints.chunking import HASH
from gaia_core.checkpoints.manifest import check_shape
from gaia_core.checkpoints.variants import path_bound, root_fingerprint, variant_field, variant_key
from gaia_core.errors import CheckpointError

FP = "a" * 64
REASON = "not_relocatable:out/bin/tool"


def targets(root: str) -> list[Target]:
    return [Target("out", Path(root) / "out")]


def test_a_relocation_variant_is_one_per_path_and_a_missing_prerequisite_one_per_reason():
    here, there = targets("/builds/a"), targets("/builds/bb")
    assert variant_key(FP, REASON, here) == variant_key(FP, REASON, targets("/builds/a"))
    assert variant_key(FP, REASON, here) != variant_key(FP, REASON, there)
    missing = "missing_prerequisite:/opt/toolchain"
    assert variant_key(FP, missing, here) == variant_key(FP, missing, there)
    assert variant_key(FP, missing, here) != variant_key("b" * 64, missing, here)


@pytest.mark.parametrize("reason, bound", [(REASON, True), ("missing_prerequisite:/opt/x", True),
                                           ("untrusted:unsigned", False), ("format_changed", False), (None, False)])
def test_only_reasons_bound_to_the_path_or_host_lead_to_a_variant(reason, bound):
    assert path_bound(reason) is bound


def test_a_variant_serves_the_fingerprint_it_stands_in_for():
    key = variant_key(FP, REASON, targets("/x"))
    assert root_fingerprint({"fingerprint": key, "variant_of": variant_field(FP, FP, REASON)}) == FP
    assert root_fingerprint({"fingerprint": FP}) == FP


def manifest(**fields):  # type: ignore[no-untyped-def]
    return {"format": 4, "id": "base", "anchor_task": "t.build", "fingerprint": FP, "lineage": FP,
            "created_at": "2026-01-01T00:00:00+00:00", "targets": [{"name": "out"}], "roots": {},
            "prerequisites": [], "embedded": [], "fingerprint_inputs": {},
            "tree": {"hash": HASH, "entries": 1, "files": 1, "size": 1, "packed": 1, "chunks": 1,
                     "parts": [{"id": FP, "size": 10, "entries": 1}]}, **fields}


@pytest.mark.parametrize("bad", ["x", {"fingerprint": FP, "reason": REASON},
                                 {"fingerprint": "nothex", "parent": FP, "reason": REASON},
                                 {"fingerprint": FP, "parent": FP, "reason": 3}])
def test_a_malformed_variant_of_is_an_invalid_manifest(bad):
    check_shape(manifest(), "m")
    with pytest.raises(CheckpointError, match="variant_of"):
        check_shape(manifest(variant_of=bad), "m")
    check_shape(manifest(variant_of=variant_field(FP, FP, REASON)), "m")


def test_a_hit_on_a_variant_is_a_use_of_the_variant_for_gc():
    from gaia_core.checkpoints.history import last_uses

    key = variant_key(FP, REASON, targets("/x"))
    records = [{"point": "base", "fingerprint": FP, "decision": "hit", "t": 100.0, "object": {"fingerprint": key}},
               {"point": "base", "fingerprint": FP, "decision": "remote_hit", "t": 50.0, "object": {"fingerprint": FP}},
               {"point": "base", "fingerprint": FP, "decision": "miss", "t": 200.0, "object": None}]
    assert last_uses(records) == {("base", key): 100.0, ("base", FP): 50.0}
