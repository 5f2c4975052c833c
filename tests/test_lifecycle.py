"""gc with retention, push and pull, progress, and a miss explained against the remote."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from counter_project import Project, run, status


def build_versions(gaia_cli, pm, project: Project, values: list[str], **write) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One object per value, oldest first (their created_at one second apart); value -> fingerprint."""
    fps = {}
    for i, value in enumerate(values):
        project.write(value=value, **write)
        run(gaia_cli, pm, "run", project.build)
        fps[value] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
        _age_object(project.store / "points" / "base" / fps[value], seconds=(len(values) - i) * 86400)
    return fps


def _age_object(obj, seconds: float) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    manifest = Project.manifest(obj)
    manifest["created_at"] = datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat()
    Project.write_manifest(obj, manifest)


def local_fps(project: Project) -> set[str]:
    return {p.name for p in project.objects() if (p / "manifest.json").exists()}


def gc(gaia_cli, pm, project, *args, code=0):  # type: ignore[no-untyped-def]
    return run(gaia_cli, pm, "checkpoints", "gc", project.build, *args, "--json", code=code).json


def test_keep_last_keeps_the_newest_and_always_the_current(gaia_cli, pm, project):
    fps = build_versions(gaia_cli, pm, project, ["a", "b", "c", "d"])
    project.write(value="a")  # the current fingerprint is the oldest object
    report = gc(gaia_cli, pm, project, "--keep-last", "2")
    assert local_fps(project) == {fps["a"], fps["d"]}
    assert report["local"]["freed"] > 0
    kept = {o["fingerprint"]: o["kept"] for o in report["local"]["objects"]}
    assert kept[fps["a"]] == "current fingerprint" and kept[fps["b"]] == ""


def test_max_age_counts_from_creation(gaia_cli, pm, project):
    fps = build_versions(gaia_cli, pm, project, ["a", "b", "c"])  # 3, 2 and 1 days old
    gc(gaia_cli, pm, project, "--max-age", "36h")
    assert local_fps(project) == {fps["c"]}  # c is current and younger anyway


def test_max_size_removes_the_oldest_until_the_rest_fit(gaia_cli, pm, project):
    fps = build_versions(gaia_cli, pm, project, ["a", "b", "c"])
    size = json.loads((project.objects()[0] / "manifest.json").read_text())["payload"]["size"]
    gc(gaia_cli, pm, project, "--max-size", str(2 * size + size // 2))
    assert local_fps(project) == {fps["b"], fps["c"]}


def test_dry_run_lists_what_would_go_and_removes_nothing(gaia_cli, pm, project):
    build_versions(gaia_cli, pm, project, ["a", "b", "c"])
    before = local_fps(project)
    report = gc(gaia_cli, pm, project, "--keep-last", "1", "--dry-run")
    assert local_fps(project) == before
    assert report["dry_run"] and sum(not o["kept"] for o in report["local"]["objects"]) == 2
    assert report["local"]["freed"] > 0
    text = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--keep-last", "1", "--dry-run").output
    assert "would remove 2 object(s)" in text


def test_gc_never_removes_an_object_a_concurrent_run_holds(gaia_cli, pm, project):
    from gaia_core.checkpoints.store import LocalObject, Store

    fps = build_versions(gaia_cli, pm, project, ["a", "b"])
    store = Store(project.store)
    held = store.get("base", fps["a"])
    assert isinstance(held, LocalObject)
    with store.hold(held):
        report = gc(gaia_cli, pm, project, "--keep-last", "1")
    assert fps["a"] in local_fps(project)
    assert {o["fingerprint"]: o["kept"] for o in report["local"]["objects"]}[fps["a"]] == "in use by a concurrent run"


def test_gc_acts_on_the_points_of_the_given_build_only(gaia_cli, pm, project):
    build_versions(gaia_cli, pm, project, ["a", "b"])
    other = project.store / "points" / "other-point" / ("f" * 64)
    other.mkdir(parents=True)
    (other / "manifest.json").write_text("{}")
    gc(gaia_cli, pm, project, "--keep-last", "1")
    assert other.exists()


def test_gc_removes_litter(gaia_cli, pm, project):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    litter = project.store / "tmp" / "base-0123-killed"
    litter.mkdir(parents=True)
    (litter / ".gaia-owner.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 11}))
    report = gc(gaia_cli, pm, project)
    assert str(litter) in report["local"]["litter"] and not litter.exists()


def test_retention_in_config_applies_after_each_capture(gaia_cli, pm, project):
    build_versions(gaia_cli, pm, project, ["a", "b", "c"], checkpoints="keep_last = 2")
    assert len(local_fps(project)) == 2


def test_retention_values_are_validated(gaia_cli, pm, project):
    project.write(checkpoints='max_age = "soon"\nmax_size = "big"\nkeep_last = 0')
    result = run(gaia_cli, pm, "checkpoints", "status", project.build, code=2)
    assert "checkpoints.max_age" in result.output and "checkpoints.max_size" in result.output
    assert "checkpoints.keep_last" in result.output


# -- remote gc ---------------------------------------------------------------------------------


def remote_versions(gaia_cli, pm, project, values):  # type: ignore[no-untyped-def]
    project.shared.mkdir(exist_ok=True)
    fps = build_versions(gaia_cli, pm, project, values, backend=True,
                         point='backend = "dir:shared"\nupload_policy = "always"')
    return fps


def age_remote(project: Project, fp: str, seconds: float) -> None:
    for f in (project.shared / "base" / fp).iterdir():
        t = time.time() - seconds
        os.utime(f, (t, t))


def test_remote_gc_respects_the_grace_period(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a", "b", "c"])
    age_remote(project, fps["a"], 7200)  # a is old; b was written just now (a reader may be downloading it)
    gc(gaia_cli, pm, project, "--remote", "--keep-last", "1")
    remote = {p.name for p in project.remote_objects()}
    assert remote == {fps["b"], fps["c"]}
    gone = project.shared / "base" / fps["a"]
    assert not gone.exists() or list(gone.iterdir()) == []  # manifest and payload


def test_remote_gc_with_a_short_grace_and_dry_run(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a", "b", "c"])
    before = {p.name for p in project.remote_objects()}
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s", "--dry-run")
    assert {p.name for p in project.remote_objects()} == before
    assert report["remote"]["freed"] > 0
    gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert {p.name for p in project.remote_objects()} == {fps["c"]}


def test_remote_gc_removes_old_temporaries_and_unnamed_payloads(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a"])
    obj = project.shared / "base" / fps["a"]
    stale_tmp, orphan = obj / ".payload.tmp-host-1-abc", obj / ("payload-" + "0" * 64 + ".tar.zst")
    stale_tmp.write_bytes(b"x")
    orphan.write_bytes(b"y")
    young = obj / ".manifest.json.tmp-host-2-def"
    young.write_bytes(b"z")
    for f in (stale_tmp, orphan):
        t = time.time() - 7200
        os.utime(f, (t, t))
    report = gc(gaia_cli, pm, project, "--remote")
    assert not stale_tmp.exists() and not orphan.exists() and young.exists()
    assert len(report["remote"]["litter"]) == 2
    assert (obj / "manifest.json").exists()


def test_remote_gc_is_refused_in_read_only_mode(gaia_cli, pm, project, monkeypatch):
    remote_versions(gaia_cli, pm, project, ["a"])
    monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", "1")
    result = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--remote", code=2)
    assert "read-only" in result.output


# -- push and pull --------------------------------------------------------------------------------


def test_push_then_pull_round_trip(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"')  # upload_policy off: nothing goes up by itself
    run(gaia_cli, pm, "run", project.build)
    assert project.remote_objects() == []
    pushed = run(gaia_cli, pm, "checkpoints", "push", project.build, "--json").json
    assert [r["pushed"] for r in pushed["results"]] == [True]
    [remote] = project.remote_objects()
    shutil.rmtree(project.store)
    pulled = run(gaia_cli, pm, "checkpoints", "pull", project.build, "--json").json
    assert pulled["results"][0]["pulled"] is True
    assert [p.name for p in project.objects()] == [remote.name]
    assert project.builds() == 1  # pull builds nothing
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == 1


def test_push_all_uploads_every_local_object(gaia_cli, pm, project):
    project.shared.mkdir()
    build_versions(gaia_cli, pm, project, ["a", "b"], backend=True, point='backend = "dir:shared"')
    run(gaia_cli, pm, "checkpoints", "push", project.build)
    assert len(project.remote_objects()) == 1
    run(gaia_cli, pm, "checkpoints", "push", project.build, "--all")
    assert len(project.remote_objects()) == 2


def test_push_is_refused_in_read_only_mode_and_pull_obeys_signatures(gaia_cli, pm, project, monkeypatch, tmp_path):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    run(gaia_cli, pm, "checkpoints", "keygen", "k", "--dir", tmp_path / "keys")
    public = (tmp_path / "keys" / "k.public").read_text().strip()
    project.write(backend=True, point='backend = "dir:shared"', checkpoints=f'trusted_public_keys = ["{public}"]')
    shutil.rmtree(project.store)
    pulled = run(gaia_cli, pm, "checkpoints", "pull", project.build, "--json", code=1).json
    assert pulled["results"][0]["why"] == "untrusted:unsigned"
    monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", "1")
    assert "read-only" in run(gaia_cli, pm, "checkpoints", "push", project.build, code=2).output


# -- a miss explained against the remote ---------------------------------------------------------


def test_status_explain_diffs_against_the_nearest_remote_object(gaia_cli, pm, project, tmp_path):
    project.shared.mkdir()
    project.write(value="a", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    [remote] = project.remote_objects()
    fresh = Project(tmp_path / "fresh-runner", shared=project.shared)  # nothing local
    fresh.write(value="b", backend=True, point='backend = "dir:shared"')
    st = status(gaia_cli, pm, fresh, "--explain")
    assert st["reason"] == "remote_missing"
    explain = st["explain"]
    assert explain["nearest"]["where"] == "remote" and explain["nearest"]["fingerprint"] == remote.name
    text = run(gaia_cli, pm, "checkpoints", "status", fresh.build, "--explain").output
    assert f'counter.value: "a" -> "b" (remote {remote.name[:12]})' in text


def test_the_run_preamble_explains_against_local_objects_only(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(value="a", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    project.write(value="b", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    result = run(gaia_cli, pm, "run", project.build)
    assert "reason=inputs_changed:counter.value" in result.output


# -- progress ----------------------------------------------------------------------------------


def test_plain_progress_lines_every_few_seconds_when_not_a_tty(monkeypatch):
    from gaia_core.checkpoints import progress

    lines: list[str] = []
    clock = iter([0.0, 1.0, 6.0, 7.0, 12.5])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    report = progress.reporter("upload base", 100 << 20, lines.append, stream=open(os.devnull, "w"))
    for _ in range(4):
        report(25 << 20)
    assert len(lines) == 2
    assert lines[0].startswith("upload base: 50.0 MiB / 100.0 MiB (50%)") and "ETA" in lines[0]


def test_quiet_silences_progress():
    from gaia_core.checkpoints import progress

    lines: list[str] = []
    report = progress.reporter("x", 10, lines.append, quiet=True)
    report(10)
    assert lines == []


def test_a_progress_bar_on_a_terminal(tmp_path):
    import pty
    import subprocess
    import sys

    script = (
        "import time\n"
        "from gaia_core.checkpoints import progress\n"
        "r = progress.reporter('download base', 1 << 30)\n"
        "for _ in range(8):\n"
        "    r(1 << 27); time.sleep(0.15)\n"
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    shown = b"".join(chunks).decode(errors="replace")
    assert "download base" in shown and ("MB" in shown or "GB" in shown)
    assert "\x1b[" in shown  # drawn with terminal control sequences, not plain lines


def test_json_output_carries_no_progress(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"')
    run(gaia_cli, pm, "run", project.build)
    result = run(gaia_cli, pm, "checkpoints", "push", project.build, "--json")
    json.loads(result.stdout)  # nothing but JSON on stdout


@pytest.mark.parametrize("command", ["gc", "push", "pull"])
def test_lifecycle_commands_reject_an_unknown_point(gaia_cli, pm, project, command):
    project.write()
    result = run(gaia_cli, pm, "checkpoints", command, project.build, "--id", "nope", code=2)
    assert "no checkpoint point 'nope'" in result.output
