"""Checkpoints end to end on a small anchor that only the tests define (not Buildroot)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from counter_project import run, status

from gaia_core.checkpoints import archive
from gaia_core.checkpoints.manifest import FORMAT_VERSION


def test_plan_puts_restore_before_anchor_and_capture_before_consumers(gaia_cli, pm, project):
    project.write()
    plan = run(gaia_cli, pm, "plan", project.build, "--json").json
    order = [t["id"] for t in plan["tasks"]]
    assert order.index("checkpoints.restore.counter-build") < order.index("counter.build")
    assert order.index("counter.build") < order.index("checkpoints.capture.counter-build")
    assert order.index("checkpoints.capture.counter-build") < order.index("counter.consume")


def test_cold_run_captures_and_warm_run_restores(gaia_cli, pm, project):
    project.write()
    cold = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    assert "checkpoints status:" in cold.output and "reason=missing" in cold.output
    [obj] = project.objects()
    manifest = json.loads((obj / "manifest.json").read_text())
    assert (obj / manifest["payload"]["file"]).stat().st_size == manifest["payload"]["size"]
    assert manifest["fingerprint"] == obj.name and manifest["format"] == FORMAT_VERSION
    assert manifest["fingerprint_inputs"]["counter.value"] == "a"
    # the capture ran before consume wrote into the output
    assert "consumed.txt" not in _payload_names(obj / manifest["payload"]["file"])
    index = json.loads((project.store / "index.json").read_text())
    assert index["points"]["base"]["latest_fingerprint"] == obj.name

    shutil.rmtree(project.out)
    warm = run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1, "the anchor ran again although a checkpoint existed"
    assert "SKIP: counter.build" in warm.output and "restored" in warm.output
    assert (project.out / "value.txt").read_text() == "a"
    assert (project.out / "link").is_symlink()
    assert (project.root / "out" / "build" / "result.txt").read_text() == "a+"


def test_tree_that_already_holds_the_fingerprint_is_left_alone(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    sentinel = project.out / "sentinel"
    sentinel.write_text("kept")
    result = run(gaia_cli, pm, "run", project.build)
    assert "nothing to restore" in result.output
    assert sentinel.read_text() == "kept" and project.builds() == 1


def test_fingerprint_change_explains_the_miss_and_rebuilds(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    project.write(value="b")
    st = status(gaia_cli, pm, project)
    assert st["exists"] is False and st["will_rebuild"] is True
    assert st["reason"] == "inputs_changed:counter.value"
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and len(project.objects()) == 2


def test_unfingerprinted_change_still_hits(gaia_cli, pm, project):
    project.write(extra="one")
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    project.write(extra="two")
    assert status(gaia_cli, pm, project)["will_use"] is True
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1
    assert (project.root / "out" / "build" / "result.txt").read_text() == "a+two"


def test_required_with_empty_store_fails(gaia_cli, pm, project):
    project.write(point='use_policy = "required"')
    st = status(gaia_cli, pm, project)
    assert st["will_fail"] is True and st["reason"].startswith("required_missing")
    result = run(gaia_cli, pm, "run", project.build, code=1)
    assert "required checkpoint 'base'" in result.output
    assert project.builds() == 0


def test_off_never_restores_but_captures(gaia_cli, pm, project):
    project.write(point='use_policy = "off"')
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2
    assert len(project.objects()) == 1
    assert status(gaia_cli, pm, project)["reason"] == "policy_off"


def test_corrupt_payload_is_refused_in_verify_mode_and_rebuilt(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    payload = next(obj.glob("payload*"))
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert "could not be restored" in result.output
    assert project.builds() == 2, "a corrupt checkpoint must not be restored; the anchor must run"
    assert (project.out / "value.txt").read_text() == "a"


def test_crash_in_the_middle_of_capture_leaves_no_visible_object(gaia_cli, pm, project, monkeypatch):
    real_capture = archive.capture

    def crashing_capture(targets, dest, **kwargs):
        dest.write(b"partial payload")
        raise KeyboardInterrupt  # as a Ctrl-C or a kill would interrupt it

    project.write()
    monkeypatch.setattr(archive, "capture", crashing_capture)
    gaia_cli("run", project.build, pm=pm)
    assert project.objects() == []
    assert not any((project.store / "tmp").iterdir()) if (project.store / "tmp").exists() else True
    monkeypatch.setattr(archive, "capture", real_capture)
    run(gaia_cli, pm, "run", project.build)
    assert len(project.objects()) == 1


def test_dir_backend_round_trip_restores_from_a_wiped_store(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    remote = project.shared / "base" / obj.name
    payload_name = json.loads((obj / "manifest.json").read_text())["payload"]["file"]
    assert payload_name.startswith("payload-") and payload_name.endswith(".tar.zst")
    assert sorted(p.name for p in remote.iterdir()) == ["manifest.json", payload_name]
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", "--json").json["points"][0]
    assert listed["remote"] == [obj.name]

    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    st = status(gaia_cli, pm, project)
    assert st["remote_exists"] is True and st["will_download"] is True and st["reason"] == "remote_hit"
    result = run(gaia_cli, pm, "run", project.build)
    assert "downloaded" in result.output
    assert project.builds() == 1
    assert (project.out / "value.txt").read_text() == "a"
    assert [p.name for p in project.objects()] == [obj.name]


def test_partial_remote_object_is_not_downloaded(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    payload_name = json.loads((obj / "manifest.json").read_text())["payload"]["file"]
    (project.shared / "base" / obj.name / payload_name).write_bytes(b"truncated")
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert "remote fetch via dir:shared failed" in result.output
    assert project.builds() == 2
    assert [p.name for p in project.objects()] == [obj.name]  # rebuilt and captured, not the partial one


def test_always_uploads_even_when_a_later_task_fails(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', fail_consume=True)
    run(gaia_cli, pm, "run", project.build, code=1)
    assert list((project.shared / "base").glob("*/manifest.json"))


def test_on_success_uploads_nothing_when_the_run_fails(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"', fail_consume=True)
    run(gaia_cli, pm, "run", project.build, code=1)
    assert not (project.shared / "base").exists()
    assert len(project.objects()) == 1  # captured locally all the same
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"')
    run(gaia_cli, pm, "run", project.build)
    assert list((project.shared / "base").glob("*/manifest.json"))


def test_failed_upload_is_queued_and_retry_replays_it(gaia_cli, pm, project):
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    result = run(gaia_cli, pm, "run", project.build)  # the shared dir does not exist: backend down
    assert "queued for retry" in result.output
    st = status(gaia_cli, pm, project)
    assert st["pending_upload"] is True and st["upload_queue"]["current"]["state"] == "failed"
    assert "not available" in st["upload_queue"]["current"]["last_error"]
    failed = run(gaia_cli, pm, "checkpoints", "retry", project.build, code=5)
    assert "failed=1" in failed.output
    project.shared.mkdir()  # the backend comes back
    ok = run(gaia_cli, pm, "checkpoints", "retry", project.build, "--json")
    assert ok.json["uploaded"] == 1 and ok.json["failed"] == 0
    assert list((project.shared / "base").glob("*/manifest.json"))
    assert status(gaia_cli, pm, project)["pending_upload"] is False


def test_backend_down_falls_back_to_building(gaia_cli, pm, project):
    project.write(backend=True, point='backend = "dir:shared"')
    checked = run(gaia_cli, pm, "checkpoints", "status", project.build, "--json", code=5)
    st = json.loads(checked.stdout)["points"][0]
    assert st["reason"] == "remote_probe_error" and "not available" in st["remote_error"]
    assert st["remote_unavailable"] is True and st["will_rebuild"] is True
    result = run(gaia_cli, pm, "run", project.build)
    assert "backend dir:shared is unavailable: " in result.output and "building instead" in result.output
    assert project.builds() == 1


def test_corrupt_index_and_queue_degrade_with_a_warning(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    (project.store / "index.json").write_text("{not json")
    (project.store / "upload-queue.json").write_text("[[[")
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert "corrupt" in result.output
    assert project.builds() == 1
    assert list(project.store.glob("upload-queue.json.corrupt-*"))


def test_status_shows_the_lock_holder(gaia_cli, pm, project):
    from gaia_core.checkpoints.lock import StoreLock

    project.write()
    run(gaia_cli, pm, "run", project.build)
    with StoreLock(project.store).held("test holds it"):
        out = run(gaia_cli, pm, "checkpoints", "status", project.build).output
    assert "store lock held by pid" in out and "test holds it" in out


def test_list_shows_local_fingerprints_with_size_and_age(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    text = run(gaia_cli, pm, "checkpoints", "list", project.build).output
    [obj] = project.objects()
    assert obj.name in text and "(current)" in text and "ago" in text
    run(gaia_cli, pm, "checkpoints", "list", project.build, "--id", "nope", code=2)


def test_invalid_checkpoint_config_reports_every_problem(gaia_cli, pm, tmp_path):
    build = tmp_path / "build.toml"
    build.write_text(
        '[counter]\n[checkpoints]\nenabled = true\ndefault_use_policy = "sometimes"\n'
        '[checkpoints.backends.s3.cache]\nbucket = "b"\n'
        '[[checkpoints.points]]\nid = ".."\nanchor_task = "counter.build"\n'
        '[[checkpoints.points]]\nid = "x"\nanchor_task = "nothing.build"\nupload_policy = "always"\n'
    )
    result = run(gaia_cli, pm, "checkpoints", "status", build, code=2)
    err = result.stderr
    assert "default_use_policy" in err
    assert "gaia-s3" in err
    assert "'..' is not a valid id" in err or "not a valid id" in err
    assert "nothing.build" in err
    assert "needs a backend" in err


def test_dry_run_touches_nothing_and_probes_nothing(gaia_cli, pm, project):
    project.write(backend=True, point='backend = "dir:shared"')
    result = run(gaia_cli, pm, "run", project.build, "--dry-run")
    assert "not probed (dry run)" in result.output
    assert not (project.root / "build").exists() and not (project.root / "out").exists()


def _payload_names(payload: Path) -> set[str]:
    import tarfile

    import zstandard

    with open(payload, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            return {Path(m.name).name for m in tar}


@pytest.mark.parametrize(("trust_mode", "builds"), [("verify", 2), ("permissive", 1)])
def test_permissive_skips_only_the_hash_check(gaia_cli, pm, project, trust_mode, builds):
    project.write(checkpoints=f'trust_mode = "{trust_mode}"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    manifest = json.loads((obj / "manifest.json").read_text())
    manifest["payload"]["sha256"] = "0" * 64  # the payload is intact, its recorded hash is not
    (obj / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == builds


def test_permissive_still_refuses_an_unsafe_payload(gaia_cli, pm, project):
    import io
    import tarfile

    import zstandard

    project.write(checkpoints='trust_mode = "permissive"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        evil = tarfile.TarInfo("counter_out/../../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    payload = zstandard.ZstdCompressor().compress(raw.getvalue())
    manifest = json.loads((obj / "manifest.json").read_text())
    (obj / manifest["payload"]["file"]).write_bytes(payload)
    manifest["payload"]["size"] = len(payload)
    (obj / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert "could not be restored" in result.output
    assert not (project.root / "escaped.txt").exists() and not (project.store.parent / "escaped.txt").exists()
    assert project.builds() == 2


def test_queue_file_is_resolved_against_the_workspace_root(gaia_cli, pm, project):
    project.write(backend=True, checkpoints='queue_file = "state/uploads.json"',
                  point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)  # the shared dir is missing: the upload fails and is queued
    queue = json.loads((project.root / "state" / "uploads.json").read_text())
    [entry] = queue["entries"]
    assert entry["state"] == "failed" and entry["attempts"] == 1
    assert not (project.store / "upload-queue.json").exists()
