"""Run records: one per run and point, from real runs of the counter project, kept in a
bounded journal written atomically, shared through the stores and read as untrusted input."""

from __future__ import annotations

import multiprocessing
import shutil
import socket
from pathlib import Path

import pytest
from counter_project import Project, run

from gaia_core.checkpoints.journal import KEEP_ROTATED, Journal
from gaia_core.checkpoints.records import check_record
from gaia_core.hostinfo import host_system


def records(project: Project) -> list[dict]:  # type: ignore[type-arg]
    found, bad = Journal(project.store).read()
    assert bad == 0
    return found


def test_each_run_records_each_point_decision_tier_bytes_and_seconds(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)  # a miss: built and captured
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)  # a hit from the local store
    run(gaia_cli, pm, "run", project.build)  # the tree is in place
    project.write(value="b")
    run(gaia_cli, pm, "run", project.build)  # a miss: an input changed
    miss, hit, in_place, changed = records(project)
    assert [r["decision"] for r in (miss, hit, in_place, changed)] == ["miss", "hit", "hit", "miss"]
    assert miss["reason"] == "missing" and miss["tier"] is None
    assert miss["build_seconds"] is not None and miss["build_seconds"] >= 0
    assert miss["bytes"]["captured"] > 0 and "capture" in miss["seconds"]
    assert miss["object"]["fingerprint"] == miss["fingerprint"]  # what the capture made
    assert hit["tier"] == "local" and hit["fingerprint"] == miss["fingerprint"]
    assert hit["object"]["build_seconds"] == pytest.approx(miss["build_seconds"], abs=0.01)
    assert hit["saved_seconds"] == pytest.approx(max(0.0, miss["build_seconds"] - hit["seconds"]["restore"]), abs=0.01)
    assert hit["build_seconds"] is None  # the anchor did not run
    assert in_place["tier"] == "workspace" and in_place["saved_seconds"] is None
    assert changed["reason"] == "inputs_changed:counter.value"
    assert changed["explain"] == "counter.value changed"  # the key, never the value
    for r in (miss, hit, in_place, changed):
        assert r["host"] == {"name": socket.gethostname(), "system": host_system()}
        assert r["point"] == "base" and r["anchor"] == "counter.build" and r["result"] == "ok"
        assert r["stored"]["local"] > 0
        assert "counter.value" in r["inputs"] and all(len(d) == 16 for d in r["inputs"].values())
    assert len({r["run"] for r in (miss, hit, in_place, changed)}) == 4
    assert len({r["id"] for r in (miss, hit, in_place, changed)}) == 4


def test_the_build_time_is_signed_into_the_manifest(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    manifest = Project.manifest(project.objects()[0])
    assert manifest["build_seconds"] == pytest.approx(records(project)[0]["build_seconds"], abs=0.01)


def test_a_failed_run_is_recorded_as_failed(gaia_cli, pm, project):
    project.write(value="a", fail_consume=True)
    run(gaia_cli, pm, "run", project.build, code=1)
    (record,) = records(project)
    assert record["result"] == "failed" and record["decision"] == "miss"


def test_a_dry_run_records_nothing(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build, "--dry-run")
    assert not (project.store / "records").exists()


def test_remote_hits_name_their_tier_and_bytes(gaia_cli, pm, project, tmp_path):
    project.shared.mkdir()
    project.write(value="a", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    other = Project(tmp_path / "other", shared=project.shared)  # a fresh machine, same remote
    other.write(value="a", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", other.build)
    (first,) = records(project)
    (remote,) = records(other)
    assert first["bytes"]["uploaded"] > 0 and "upload" in first["seconds"]
    assert first["stored"]["dir:shared"] > 0
    assert remote["decision"] == "remote_hit" and remote["tier"] == "dir:shared"
    assert remote["bytes"]["downloaded"] > 0 and "download" in remote["seconds"]
    assert remote["stored"]["dir:shared"] == first["stored"]["dir:shared"]


def test_an_untrusted_object_is_recorded_as_refused(gaia_cli, pm, project, tmp_path):
    from gaia_core.checkpoints.signing import generate

    project.shared.mkdir()
    point = 'backend = "dir:shared"\nupload_policy = "always"'
    project.write(value="a", backend=True, point=point)
    run(gaia_cli, pm, "run", project.build)  # an unsigned object in the remote
    key = generate("ci")
    other = Project(tmp_path / "other", shared=project.shared)
    other.write(value="a", backend=True, point='backend = "dir:shared"',
                checkpoints=f'trusted_public_keys = ["{key.public_line()}"]')
    run(gaia_cli, pm, "run", other.build)
    (refused,) = records(other)
    assert refused["decision"] == "refused" and refused["reason"].startswith("untrusted:")
    assert refused["tier"] == "dir:shared"


def test_the_journal_is_rotated_by_size_and_stays_bounded(tmp_path, monkeypatch):
    from gaia_core.checkpoints import journal

    monkeypatch.setattr(journal, "ROTATE_BYTES", 4096)
    record = sample_record()
    j = Journal(tmp_path)
    for i in range(200):
        j.append([{**record, "id": f"{i:032x}"}])
    files = j.files()
    assert len(files) == KEEP_ROTATED + 1
    assert all(f.stat().st_size <= 4096 for f in files)
    kept, bad = j.read()
    assert bad == 0 and kept[-1]["id"] == f"{199:032x}"  # the newest are kept, oldest first
    assert [int(r["id"], 16) for r in kept] == sorted(int(r["id"], 16) for r in kept)


def sample_record() -> dict:  # type: ignore[type-arg]
    from gaia_core.checkpoints.records import new_id, now_iso

    return {"v": 1, "id": new_id(), "run": new_id(), "at": now_iso(), "host": {"name": "h", "system": "s"},
            "point": "base", "anchor": "counter.build", "fingerprint": "a" * 64, "decision": "miss",
            "reason": "missing", "explain": "", "tier": None, "object": None,
            "bytes": {"downloaded": 0, "uploaded": 0, "captured": 0}, "seconds": {}, "build_seconds": 1.5,
            "saved_seconds": None, "stored": {"local": 10}, "inputs": {}, "result": "ok", "gaia": "0.2.0"}


def _append_many(root: str, worker: int) -> None:
    record = sample_record()
    journal = Journal(Path(root))
    for i in range(50):
        journal.append([{**record, "id": f"{worker:08x}{i:024x}", "explain": "x" * 900}] * 3)


def test_concurrent_runs_never_interleave_or_tear_lines(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    kept, bad = Journal(tmp_path).read()
    assert bad == 0 and len(kept) == 4 * 50 * 3


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_new_line(tmp_path):
    j = Journal(tmp_path)
    j.append([sample_record()])
    with open(j.path, "ab") as f:
        f.write(b'{"v": 1, "id": "cut sho')  # a writer killed mid-line
    j.append([sample_record()])
    kept, bad = j.read()
    assert len(kept) == 2 and bad == 1


@pytest.mark.parametrize("change", [
    {"host": {"name": "x" * 300, "system": "s"}},
    {"host": {"name": "a\nb", "system": "s"}},
    {"decision": "jackpot"},
    {"bytes": {"downloaded": -1, "uploaded": 0, "captured": 0}},
    {"seconds": {"restore": float("inf")}},
    {"seconds": {"restore": 1e12}},
    {"fingerprint": "../../etc"},
    {"point": "../x"},
    {"at": "yesterday"},
    {"stored": {f"t{i}": 1 for i in range(100)}},
    {"object": {"fingerprint": "a" * 64, "build_seconds": "10"}},
    {"explain": "y" * 5000},
    {"v": 2},
])
def test_malformed_records_are_refused_whole(change):
    assert check_record(sample_record()) is not None
    assert check_record({**sample_record(), **change}) is None


def test_a_record_keeps_only_the_fields_it_knows():
    checked = check_record({**sample_record(), "password": "hunter2"})
    assert checked is not None and "password" not in checked


def test_no_secret_reaches_a_record(gaia_cli, pm, project, monkeypatch):
    """The inputs go in as digests and the explanation names keys: a value in the build file
    (here a fingerprinted one, the kind a careless user could put a token in) is not in the journal."""
    secret = "tok-3f9a8c7d2b1e"
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    project.write(value=secret)
    run(gaia_cli, pm, "run", project.build)
    text = b"".join(p.read_bytes() for p in Journal(project.store).files())
    assert secret.encode() not in text and b"counter.value" in text


def test_share_records_must_be_a_boolean(gaia_cli, pm, project):
    project.write(value="a", checkpoints='share_records = "yes"')
    result = gaia_cli("run", project.build, pm=pm)
    assert result.exit_code == 2 and "checkpoints.share_records" in result.output
