"""gc by last use: the run records say when each object was last restored (on any host that
shares them), and ``--keep-last``, ``--max-age`` and ``--max-size`` order by that, the
creation time where no use is recorded; never the current object, never one younger than
the grace period."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime

from counter_project import Project, run
from hostile import age, pack_files

SHARED = 'backend = "dir:shared"\nupload_policy = "always"'


def aged(obj, days: float) -> None:  # type: ignore[no-untyped-def]
    """Backdate an object's creation (its manifest, as an old capture wrote it)."""
    manifest = json.loads((obj / "manifest.json").read_text())
    manifest["created_at"] = datetime.fromtimestamp(time.time() - days * 86400, UTC).isoformat()
    (obj / "manifest.json").write_text(json.dumps(manifest))


def versions(gaia_cli, pm, project: Project, values: list[str], **write) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One object per value, created a day apart, oldest first; value -> fingerprint."""
    fps = {}
    for value in values:
        project.write(value=value, **write)
        run(gaia_cli, pm, "run", project.build)
        fps[value] = run(gaia_cli, pm, "checkpoints", "status", project.build, "--json", "--no-remote").json[
            "points"][0]["fingerprint"]
    for i, value in enumerate(values):
        aged(project.store / "points" / "base" / fps[value], days=len(values) - i)
    age(pack_files(project.store).values(), 7200)
    return fps


def use(gaia_cli, pm, project: Project, value: str, **write) -> None:  # type: ignore[no-untyped-def]
    """A run that restores the object of ``value`` from the local store."""
    project.write(value=value, **write)
    shutil.rmtree(project.out)
    assert "restored" in run(gaia_cli, pm, "run", project.build).output


def gc(gaia_cli, pm, project: Project, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return run(gaia_cli, pm, "checkpoints", "gc", project.build, "--json", *args).json


def local_fps(project: Project) -> set[str]:
    return {p.name for p in project.objects() if (p / "manifest.json").exists()}


def test_keep_last_keeps_the_most_recently_used(gaia_cli, pm, project):
    fps = versions(gaia_cli, pm, project, ["a", "b", "c", "d"])
    use(gaia_cli, pm, project, "a")  # the oldest object, used just now
    project.write(value="d")
    report = gc(gaia_cli, pm, project, "--keep-last", "2")
    assert local_fps(project) == {fps["d"], fps["a"]}  # by creation, c would have stayed
    used = {o["fingerprint"]: o["last_used"] for o in report["local"]["objects"]}
    assert used[fps["a"]] is not None and used[fps["a"]] > time.time() - 60
    assert used[fps["b"]] is None and used[fps["c"]] is None


def test_max_age_counts_from_the_last_use(gaia_cli, pm, project):
    fps = versions(gaia_cli, pm, project, ["a", "b", "c"])  # 3, 2 and 1 days old
    use(gaia_cli, pm, project, "a")
    project.write(value="c")
    gc(gaia_cli, pm, project, "--max-age", "36h")
    assert local_fps(project) == {fps["a"], fps["c"]}  # b: created 2 days ago, never used


def test_max_size_removes_the_least_recently_used_first(gaia_cli, pm, project):
    fps = versions(gaia_cli, pm, project, ["a", "b", "c"])
    use(gaia_cli, pm, project, "a")
    project.write(value="c")
    size = json.loads((project.store / "points" / "base" / fps["a"] / "manifest.json").read_text())["tree"]["packed"]
    gc(gaia_cli, pm, project, "--max-size", str(2 * size + size // 2))
    assert local_fps(project) == {fps["a"], fps["c"]}


def test_the_current_object_stays_whatever_its_last_use(gaia_cli, pm, project):
    fps = versions(gaia_cli, pm, project, ["a", "b", "c"])
    use(gaia_cli, pm, project, "c")
    project.write(value="a")  # current: a, never used since its capture 3 days ago
    gc(gaia_cli, pm, project, "--max-age", "1h")
    assert local_fps(project) == {fps["a"], fps["c"]}


def test_remote_gc_orders_by_the_uses_other_hosts_shared(gaia_cli, pm, project, tmp_path):
    """Machine A uploaded a and then b; machine B restored a from the tier (and shared that
    record). A's gc of the tier keeps a, which B uses, and removes b, which nobody used."""
    project.shared.mkdir()
    write = {"backend": True, "point": SHARED, "checkpoints": "share_records = true"}
    fps = versions(gaia_cli, pm, project, ["a", "b"], **write)
    for value in ("a", "b"):
        remote = project.shared / "points" / "base" / fps[value]
        aged(remote, days=3 if value == "a" else 2)
    age([*project.shared.rglob("*.json"), *(project.shared / "packs").iterdir()], 7200)  # past the grace period
    other = Project(tmp_path / "other", shared=project.shared)
    other.write(value="a", **write)
    assert "dir:shared" in run(gaia_cli, pm, "run", other.build).output  # B: a remote hit on a
    project.write(value="c", **write)  # A's current fingerprint has no object yet
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1")
    remote_objects = {p.name for p in project.remote_objects()}
    assert fps["a"] in remote_objects and fps["b"] not in remote_objects
    used = {o["fingerprint"]: o["last_used"] for o in report["remote"]["objects"]}
    assert used[fps["a"]] is not None and used[fps["b"]] is None


def test_remote_gc_spares_objects_younger_than_the_grace_period(gaia_cli, pm, project):
    project.shared.mkdir()
    write = {"backend": True, "point": SHARED, "checkpoints": "share_records = true"}
    fps = versions(gaia_cli, pm, project, ["a", "b"], **write)
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "1h")
    kept = {o["fingerprint"]: o["kept"] for o in report["remote"]["objects"]}
    assert kept[fps["a"]].startswith("younger than the grace period")
    assert {p.name for p in project.remote_objects()} == {fps["a"], fps["b"]}


def test_gc_text_says_when_each_object_was_last_used(gaia_cli, pm, project):
    versions(gaia_cli, pm, project, ["a", "b"])
    use(gaia_cli, pm, project, "a")
    text = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--dry-run", "--keep-last", "1").output
    assert "used 0s ago" in text or "used 1s ago" in text
    assert "no recorded use" in text
