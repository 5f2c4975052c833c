"""``gaia checkpoints stats``: from the records of real runs of the counter project, on one
machine and on two that share their records through a ``dir`` tier."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from counter_project import Project, run

from gaia_core.checkpoints.journal import Journal

SHARED = 'backend = "dir:shared"\nupload_policy = "always"'


def stats(gaia_cli, pm, project: Project, *args: str, code: int = 0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return run(gaia_cli, pm, "checkpoints", "stats", project.build, "--json", *args, code=code).json


def test_per_point_runs_hits_misses_by_reason_hosts_and_tiers(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)  # miss: missing
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)  # hit from the local store
    project.write(value="b")
    run(gaia_cli, pm, "run", project.build)  # miss: inputs_changed
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)  # hit (a restore in place)
    result = stats(gaia_cli, pm, project)
    base = result["points"]["base"]
    assert (base["runs"], base["hits"], base["misses"], base["refused"]) == (4, 2, 2, 0)
    assert base["misses_by_reason"] == {"missing": 1, "inputs_changed:counter.value": 1}
    assert base["hit_rate"] == 0.5 and result["hit_rate"] == 0.5
    [host] = result["hosts"].values()
    assert host["runs"] == 4 and host["system"]
    assert result["tiers"]["local"]["bytes"] > 0 and result["tiers"]["local"]["growth"] > 0
    assert [r["decision"] for r in result["slowest_restores"]] == ["hit", "hit"]
    assert result["slowest_restores"][0]["seconds"] >= result["slowest_restores"][1]["seconds"]
    text = run(gaia_cli, pm, "checkpoints", "stats", project.build).output
    assert "- point base: 4 runs, 2 hits (50%" in text and "miss inputs_changed:counter.value: 1" in text


def test_since_leaves_older_records_out(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    run(gaia_cli, pm, "run", project.build)
    journal = Journal(project.store)
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    lines[0]["at"] = (datetime.now(UTC) - timedelta(days=20)).isoformat()  # the miss was 20 days ago
    journal.path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert stats(gaia_cli, pm, project)["points"]["base"]["runs"] == 1  # --since 14d by default
    assert stats(gaia_cli, pm, project, "--since", "30d")["points"]["base"]["runs"] == 2
    run(gaia_cli, pm, "checkpoints", "stats", project.build, "--since", "soon", code=2)


def test_a_miss_after_gc_removed_the_object_counts_as_evicted(gaia_cli, pm, project):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    project.write(value="b")
    run(gaia_cli, pm, "run", project.build)
    run(gaia_cli, pm, "checkpoints", "gc", project.build, "--keep-last", "1")  # a's object goes
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)  # a again: seen before, object gone
    result = stats(gaia_cli, pm, project)
    assert result["points"]["base"]["evicted_misses"] == 1
    [evicted] = result["evicted"]
    assert evicted["reason"] == "inputs_changed:counter.value" and evicted["decision"] == "miss"


def machines(project: Project, tmp_path, **write) -> Project:  # type: ignore[no-untyped-def]
    """``project`` and a second machine's workspace sharing its ``dir`` tier and its records."""
    project.shared.mkdir(exist_ok=True)
    other = Project(tmp_path / "other", shared=project.shared)
    for p in (project, other):
        p.write(value="a", backend=True, point=SHARED, checkpoints="share_records = true", **write)
    return other


def test_shared_records_give_the_team_view_and_are_fetched_once(gaia_cli, pm, project, tmp_path):
    other = machines(project, tmp_path)
    run(gaia_cli, pm, "run", project.build)  # miss, captured, uploaded
    run(gaia_cli, pm, "run", other.build)  # a remote hit on the other machine
    published = sorted((project.shared / "records").rglob("*.json"))
    assert len(published) == 2
    assert stats(gaia_cli, pm, project)["points"]["base"]["runs"] == 1  # its own journal only
    result = stats(gaia_cli, pm, project, "--remote")
    base = result["points"]["base"]
    assert (base["runs"], base["hits"], base["remote_hits"]) == (2, 1, 1)
    assert result["tiers"]["dir:shared"]["bytes"] > 0 and result["tiers"]["dir:shared"]["measured"]
    for path in published:  # what was fetched is cached: the tier's copy is not read again
        path.write_text("garbage")
    assert stats(gaia_cli, pm, project, "--remote")["points"]["base"]["runs"] == 2
    assert stats(gaia_cli, pm, project)["points"]["base"]["runs"] == 2  # the cache, without --remote
    run(gaia_cli, pm, "run", other.build)  # a new run: only it is fetched
    assert stats(gaia_cli, pm, project, "--remote")["points"]["base"]["runs"] == 3


def test_shared_records_are_untrusted_input(gaia_cli, pm, project, tmp_path):
    other = machines(project, tmp_path)
    run(gaia_cli, pm, "run", other.build)
    [good] = (project.shared / "records").rglob("*.json")
    day = good.parent
    body = json.loads(good.read_text())
    record = body["records"][0]
    forged = [{**record, "id": "1" * 32, "host": {"name": "x" * 1000, "system": "s"}},
              {**record, "id": "2" * 32, "bytes": {"downloaded": "lots"}},
              {**record, "id": "3" * 32, "decision": "hit; DROP TABLE"},
              "not a record"]
    (day / ("a" * 32 + ".json")).write_text(json.dumps({"v": 1, "records": forged}))
    (day / ("b" * 32 + ".json")).write_text("{" * 100)
    (day / ("c" * 32 + ".json")).write_text(json.dumps({"v": 1, "records": [record] * 2000}))  # too many
    (day / ("d" * 32 + ".json")).write_bytes(b" " * (300 << 10))  # too large
    (day / "notes.txt").write_text("hello")
    result = stats(gaia_cli, pm, project, "--remote")
    assert result["points"]["base"]["runs"] == 1  # the one real record
    assert result["ignored"] >= 4
    assert "x" * 1000 not in json.dumps(result)


def test_an_unavailable_tier_still_gives_what_is_known_and_exits_5(gaia_cli, pm, project, tmp_path):
    machines(project, tmp_path)
    run(gaia_cli, pm, "run", project.build)
    shutil.rmtree(project.shared)
    result = run(gaia_cli, pm, "checkpoints", "stats", project.build, "--remote", code=5)
    assert "- point base: 1 runs" in result.output
    assert "backend dir:shared is unavailable" in result.output


@pytest.mark.parametrize("since", ["1d", "30d"])
def test_json_shape_per_point(gaia_cli, pm, project, since):
    project.write(value="a")
    run(gaia_cli, pm, "run", project.build)
    base = stats(gaia_cli, pm, project, "--since", since)["points"]["base"]
    assert {"runs", "hits", "misses", "misses_by_reason"} <= set(base)


def engine(pm, project: Project):  # type: ignore[no-untyped-def]
    from gaia_core.checkpoints.engine import Checkpoints
    from gaia_core.config.loader import load_build
    from gaia_core.plugins import Registry

    return Checkpoints(load_build(project.build, (), registry=Registry(pm)))


def test_a_day_listed_after_it_was_over_is_not_listed_again(gaia_cli, pm, project, tmp_path):
    from gaia_core.checkpoints.shared import refresh

    other = machines(project, tmp_path)
    run(gaia_cli, pm, "run", other.build)
    [today] = (project.shared / "records").iterdir()
    old = project.shared / "records" / (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    today.rename(old)
    cp = engine(pm, project)
    first = refresh(cp, "dir:shared", 0.0)
    assert (first.fetched, first.days_listed) == (1, 1)
    [published] = old.iterdir()
    shutil.copy(published, old / ("9" * 32 + ".json"))  # a late writer with a wrong clock
    again = refresh(cp, "dir:shared", 0.0)
    assert (again.fetched, again.days_listed) == (0, 0)


def test_the_cache_keeps_a_bounded_number_of_days(tmp_path):
    from gaia_core.checkpoints.shared import Cache

    cache = Cache(tmp_path, "dir:shared")
    for day in ("2020-01-01", "2024-06-01", "2025-01-01"):
        cache.add(day, [(f"{'1' * 32}.json", [])])
    cache.prune("2024-06-01")
    assert cache.days() == ["2024-06-01", "2025-01-01"]
