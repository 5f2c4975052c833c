"""Checkpoints end to end on a small anchor that only the tests define (not Buildroot)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blake3
import pytest
from counter_project import run, status
from hostile import corrupt_chunk, craft_tree, d, f, forge, object_dirs, pack_files, read_manifest

from gaia_core.checkpoints import store as store_module
from gaia_core.checkpoints import treecapture
from gaia_core.checkpoints.manifest import FORMAT_VERSION
from gaia_core.checkpoints.packs import DEFAULT_LEVEL, compress
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.tree import raw_entries


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
    assert sorted(p.name for p in obj.iterdir()) == ["manifest.json"]  # the chunks are in the shared packs
    assert manifest["fingerprint"] == obj.name and manifest["format"] == FORMAT_VERSION
    assert manifest["fingerprint_inputs"]["counter.value"] == "a"
    names = _entry_names(project.store, manifest)
    assert {"value.txt", "data.bin", "link"} <= names
    # the capture ran before consume wrote into the output, and gaia's own files stay out
    assert not names & {"consumed.txt", ".gaia-checkpoint.json", ".gaia-receipt.jsonl.zst"}
    assert (project.out / ".gaia-checkpoint.json").is_file() and (project.out / ".gaia-receipt.jsonl.zst").is_file()
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


@pytest.mark.parametrize("which", ["content", "entry list"])
def test_corrupt_chunk_is_refused_and_rebuilt_into_a_good_object(gaia_cli, pm, project, which):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    manifest = read_manifest(obj)
    part = bytes.fromhex(manifest["tree"]["parts"][0]["id"])
    value = next(e for e in _entries(project.store, manifest) if e.path == "counter_out/value.txt")
    corrupt_chunk(project.store, value.digest if which == "content" else part)
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert "could not be restored" in result.output
    assert project.builds() == 2, "a corrupt checkpoint must not be restored; the anchor must run"
    assert (project.out / "value.txt").read_text() == "a"
    # the object captured by the rebuild is whole: it neither reuses the corrupt chunk nor fails to restore
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json["bad"] == 0
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and (project.out / "value.txt").read_text() == "a"


def _crash_in_capture_tree(monkeypatch, project) -> list[bool]:  # type: ignore[no-untyped-def]
    """capture_tree dies (as a Ctrl-C or a kill would end it) right after it wrote its packs
    into staging; the list says, per call, whether it had."""
    from gaia_core.checkpoints import capture as capture_module

    real, wrote = treecapture.capture_tree, []

    def crashing(targets, packs, staging, **kwargs):  # type: ignore[no-untyped-def]
        real(targets, packs, staging, **kwargs)
        wrote.append(bool(list(staging.glob("*.pack"))))
        raise KeyboardInterrupt

    monkeypatch.setattr(capture_module, "capture_tree", crashing)
    return wrote


def _crash_in_publish(monkeypatch, project) -> list[bool]:  # type: ignore[no-untyped-def]
    """The store's publish dies after it moved the packs in, as it writes the manifest; the
    list says, per call, whether the packs were in."""
    real, moved = store_module.atomic.write_json, []

    def crashing(path, data):  # type: ignore[no-untyped-def]
        if path.name == "manifest.json":
            moved.append(bool(list((project.store / "packs").glob("*.pack"))))
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(store_module.atomic, "write_json", crashing)
    return moved


@pytest.mark.parametrize("crash", [_crash_in_capture_tree, _crash_in_publish])
def test_crash_in_the_middle_of_capture_leaves_no_visible_object(gaia_cli, pm, project, monkeypatch, crash):
    project.write()
    with monkeypatch.context() as patched:
        reached = crash(patched, project)
        gaia_cli("run", project.build, pm=pm)
    assert reached == [True], "the crash did not come where it should"
    assert not any((o / "manifest.json").exists() for o in project.objects())
    st = status(gaia_cli, pm, project)
    assert st["exists"] is False and st["will_rebuild"] is True
    assert not any((project.store / "tmp").iterdir()) if (project.store / "tmp").exists() else True
    assert not list(project.store.rglob("*.partial"))
    run(gaia_cli, pm, "run", project.build)
    assert len([o for o in project.objects() if (o / "manifest.json").exists()]) == 1
    assert run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json["bad"] == 0
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 2 and (project.out / "value.txt").read_text() == "a"


def test_dir_backend_round_trip_restores_from_a_wiped_store(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    [remote] = object_dirs(project.shared)
    assert remote == project.shared / "points" / "base" / obj.name
    assert sorted(p.name for p in remote.iterdir()) == ["manifest.json"]  # unsigned: the unsigned slot
    assert read_manifest(remote) == read_manifest(obj)
    # the packs went up too, each with its index, under names that hash their bytes
    assert sorted(p.name for p in (project.shared / "packs").iterdir()) == \
        sorted(p.name for p in (project.store / "packs").iterdir())
    for pack_id, pack in pack_files(project.shared).items():
        assert (pack.with_suffix(".idx")).is_file() and blake3.blake3(pack.read_bytes()).hexdigest() == pack_id
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--remote", "--json").json["points"][0]
    assert [item["fingerprint"] for item in listed["remote"]] == [obj.name]
    assert listed["remote"][0]["signer"] == "unsigned" and listed["remote"][0]["current"] is True

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
    for pack in (project.shared / "packs").glob("*.pack"):
        pack.write_bytes(pack.read_bytes()[:40])  # truncated
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
    assert object_dirs(project.shared)


def test_on_success_uploads_nothing_when_the_run_fails(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"', fail_consume=True)
    run(gaia_cli, pm, "run", project.build, code=1)
    assert not object_dirs(project.shared) and not (project.shared / "packs").exists()
    assert len(project.objects()) == 1  # captured locally all the same
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "on_success"')
    run(gaia_cli, pm, "run", project.build)
    assert object_dirs(project.shared)


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
    assert object_dirs(project.shared)
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


@pytest.mark.parametrize("level", [1, 19])
def test_a_capture_stores_its_chunks_at_the_configured_compression_level(gaia_cli, pm, project, level):
    """``[checkpoints] compression_level`` reaches every frame a run stores; a restore reads
    them whatever the level."""
    value = " ".join(f"word{(i * i) % 251}" for i in range(3000))  # compressible: the levels differ
    project.write(value=value, checkpoints=f"compression_level = {level}")
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    manifest = read_manifest(obj)
    packs = PackStore(project.store)
    try:
        listed = [(bytes.fromhex(p["id"]), p["size"]) for p in manifest["tree"]["parts"]]
        listed += [c for e in raw_entries(packs, manifest) for c in e.chunk_list()]
        located = packs.locate([c for c, _ in listed])
        stored = {c: (packs.frame(c, located[c]), packs.read(c, located[c], n)) for c, n in listed}
    finally:
        packs.close()
    assert all(frame == compress(data, level) for frame, data in stored.values())
    assert any(compress(data, level) != compress(data, DEFAULT_LEVEL) for _, data in stored.values())
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1 and (project.out / "value.txt").read_text() == value


@pytest.mark.parametrize("level", ["0", "20", '"fast"'])
def test_a_compression_level_zstd_does_not_have_is_refused(gaia_cli, pm, project, level):
    project.write(checkpoints=f"compression_level = {level}")
    err = run(gaia_cli, pm, "checkpoints", "status", project.build, code=2).stderr
    assert "compression_level" in err


def test_dry_run_touches_nothing_and_probes_nothing(gaia_cli, pm, project):
    project.write(backend=True, point='backend = "dir:shared"')
    result = run(gaia_cli, pm, "run", project.build, "--dry-run")
    assert "not probed (dry run)" in result.output
    assert not (project.root / "build").exists() and not (project.root / "out").exists()


def _entries(store: Path, manifest: dict) -> list:  # type: ignore[type-arg]
    packs = PackStore(store)
    try:
        return list(raw_entries(packs, manifest))
    finally:
        packs.close()


def _entry_names(store: Path, manifest: dict) -> set[str]:  # type: ignore[type-arg]
    return {Path(e.path).name for e in _entries(store, manifest)}


@pytest.mark.parametrize("trust_mode", ["verify", "permissive"])
def test_every_chunk_is_checked_whatever_the_trust_mode(gaia_cli, pm, project, trust_mode):
    """Format 4 has no separate payload hash for permissive to skip: a chunk is checked
    against its id whenever it is read, so a corrupt one is never restored."""
    project.write(checkpoints=f'trust_mode = "{trust_mode}"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    value = next(e for e in _entries(project.store, read_manifest(obj)) if e.path == "counter_out/value.txt")
    corrupt_chunk(project.store, value.digest)
    shutil.rmtree(project.out)
    result = run(gaia_cli, pm, "run", project.build)
    assert f"chunk {value.digest.hex()[:16]}" in result.output, result.output  # named as what failed
    assert project.builds() == 2 and (project.out / "value.txt").read_text() == "a"


def test_permissive_still_refuses_an_unsafe_payload(gaia_cli, pm, project):
    project.write(checkpoints='trust_mode = "permissive"')
    run(gaia_cli, pm, "run", project.build)
    [obj] = project.objects()
    tree = craft_tree(project.store, [d("counter_out"), f("counter_out/../../escaped.txt", b"evil")], [b"evil"],
                      sort=False)
    forge(obj, read_manifest(obj), tree, name="manifest.json")
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
