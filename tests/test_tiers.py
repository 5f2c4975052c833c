"""Store tiers with stores on this machine: an ordered chain per point, the first hit in
the user's order, backfills into faster tiers, read-only tiers, dead tiers remembered on
disk, the offline mode and gc tier by tier. ``dir`` stores stand in for every tier, and
``netdir`` (tier_backends.py) for one reached over the network; the remote suite runs the
same behaviour against real servers (integration/tiers_contract.py, run from
integration/test_http.py, test_s3.py and test_ssh.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from counter_project import Project, run, status
from tier_backends import NetDirBackend, TierBackendsPlugin

from gaia_core.checkpoints.downtiers import DownTiers, state_file

#: tier name -> kind (``dir`` or ``netdir``), a ``+ro`` suffix for a read-only table
Tiers = dict[str, str]


@pytest.fixture
def tier_pm(pm):
    NetDirBackend.reset()
    pm.register(TierBackendsPlugin(), name="tier-backends")
    yield pm
    NetDirBackend.reset()


def tier_dir(root: Path, name: str) -> Path:
    return root / "stores" / name


def write(project: Project, tiers: Tiers, chain: list[str] | None, *, stores: Path,  # type: ignore[no-untyped-def]
          value: str = "a", upload: str = "always", checkpoints: str = "", point: str = "", **counter) -> None:
    """A build whose point has the tiers ``chain`` (None: no ``backends`` key) over the
    stores in ``stores``."""
    tables = ""
    for name, kind in tiers.items():
        kind, _, flag = kind.partition("+")
        tier_dir(stores, name).mkdir(parents=True, exist_ok=True)
        tables += f'[checkpoints.backends.{kind}.{name}]\npath = "{tier_dir(stores, name)}"\n'
        tables += "read_only = true\n" if flag == "ro" else ""
    chain_line = f"backends = {json.dumps(chain)}\n" if chain is not None else ""
    project.write(value=value, checkpoints=f"{checkpoints}\n{tables}",
                  point=f'{chain_line}upload_policy = "{upload}"\n{point}', **counter)


def objects_in(stores: Path, name: str) -> list[str]:
    base = tier_dir(stores, name) / "points" / "base"
    return sorted(p.name for p in base.iterdir() if any(p.glob("manifest*.json"))) if base.is_dir() else []


def packs_in(stores: Path, name: str) -> dict[str, int]:
    packs = tier_dir(stores, name) / "packs"
    return {p.name: p.stat().st_size for p in packs.glob("*.pack")} if packs.is_dir() else {}


def queue(project: Project) -> dict[str, str]:
    """Backend ref -> state of the upload queue's entries."""
    data = json.loads((project.store / "upload-queue.json").read_text())
    return {e["backend_ref"]: e["state"] for e in data["entries"]}


def fresh(tmp_path: Path, name: str) -> Project:
    """Another workspace (another CI job) on the same machine, with an empty local store."""
    return Project(tmp_path / name)


def produce(gaia_cli, pm, tmp_path: Path, tiers: Tiers, chain: list[str],  # type: ignore[no-untyped-def]
            **kw) -> Project:
    producer = fresh(tmp_path, "producer")
    write(producer, tiers, chain, stores=tmp_path, **kw)
    run(gaia_cli, pm, "run", producer.build)
    return producer


# -- configuration -------------------------------------------------------------------------


def test_a_chain_and_its_problems_are_all_reported_with_their_keys(gaia_cli, tier_pm, tmp_path):
    project = fresh(tmp_path, "ws")
    tables = {"runner": "dir", "cloud": "dir", "mirror": "dir+ro"}
    write(project, tables, ["runner", "cloud"], stores=tmp_path)
    st = status(gaia_cli, tier_pm, project)
    assert st["backends"] == ["dir:runner", "dir:cloud"] and st["backend"] == "dir:runner"
    assert [t["ref"] for t in st["tiers"]] == ["dir:runner", "dir:cloud"]

    text = project.build.read_text()
    text = text.replace('backends = ["runner", "cloud"]',
                        'backends = ["runner", "nowhere", "runner"]\nbackend = "cloud"')
    text = text.replace("enabled = true\n", 'enabled = true\ndefault_backends = ["gone"]\ndown_for = "soon"\n', 1)
    project.build.write_text(text)
    err = run(gaia_cli, tier_pm, "checkpoints", "status", project.build, code=2).output
    assert "checkpoints.points[0].backends: set backend (one store) or backends (a chain of tiers), not both" in err
    assert "checkpoints.default_backends[0]: backend 'gone' is not configured" in err
    assert "checkpoints.down_for" in err and "is not a duration" in err

    text = text.replace('\nbackend = "cloud"', "")
    project.build.write_text(text)
    err = run(gaia_cli, tier_pm, "checkpoints", "status", project.build, code=2).output
    assert "checkpoints.points[0].backends[1]: backend 'nowhere' is not configured" in err
    assert "checkpoints.points[0].backends[2]: backend 'dir:runner' is already in the chain" in err

    write(project, tables, ["mirror"], stores=tmp_path)
    err = run(gaia_cli, tier_pm, "checkpoints", "status", project.build, code=2).output
    assert "upload_policy 'always' (from upload_policy) needs a writable tier" in err


def test_default_backends_is_the_chain_of_points_without_their_own(gaia_cli, tier_pm, tmp_path):
    project = fresh(tmp_path, "ws")
    write(project, {"runner": "dir", "cloud": "dir"}, None, stores=tmp_path,
          checkpoints='default_backends = ["runner", "dir:cloud"]')
    assert status(gaia_cli, tier_pm, project)["backends"] == ["dir:runner", "dir:cloud"]
    write(project, {"runner": "dir", "cloud": "dir"}, [], stores=tmp_path, upload="off",
          checkpoints='default_backends = ["runner", "dir:cloud"]')
    assert status(gaia_cli, tier_pm, project)["backends"] == []


def test_the_seeds_single_backend_is_a_chain_of_one(gaia_cli, tier_pm, tmp_path):
    project = fresh(tmp_path, "ws")
    write(project, {"cloud": "dir"}, None, stores=tmp_path, point='backend = "cloud"')
    run(gaia_cli, tier_pm, "run", project.build)
    assert status(gaia_cli, tier_pm, project)["backends"] == ["dir:cloud"]
    assert len(objects_in(tmp_path, "cloud")) == 1


# -- order, uploads and backfill -------------------------------------------------------


def test_uploads_go_to_every_writable_tier_each_its_own_queue_entry(gaia_cli, tier_pm, tmp_path):
    producer = produce(gaia_cli, tier_pm, tmp_path, {"runner": "dir", "mirror": "dir+ro", "cloud": "dir"},
                       ["runner", "mirror", "cloud"])
    assert len(objects_in(tmp_path, "runner")) == len(objects_in(tmp_path, "cloud")) == 1
    assert objects_in(tmp_path, "mirror") == [] and packs_in(tmp_path, "mirror") == {}
    assert queue(producer) == {"dir:runner": "uploaded", "dir:cloud": "uploaded"}


def test_the_first_hit_in_the_users_order_wins_not_the_first_answer(gaia_cli, tier_pm, tmp_path):
    """Both tiers hold the object; the runner answers 0.5 s after the cloud on every
    request, and still serves it, because it comes first in the chain."""
    tiers = {"runner": "netdir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["runner", "cloud"])
    NetDirBackend.delay["runner"] = 0.5
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path)
    result = run(gaia_cli, tier_pm, "run", consumer.build)
    assert "downloaded" in result.output and "via netdir:runner" in result.output, result.output
    assert consumer.builds() == 0

    other = fresh(tmp_path, "other")
    write(other, tiers, ["cloud", "runner"], stores=tmp_path)
    result = run(gaia_cli, tier_pm, "run", other.build)
    assert "via dir:cloud" in result.output and "backfill" not in result.output, result.output


def test_a_lookup_asks_every_tier_at_once(gaia_cli, tier_pm, tmp_path):
    """Two far tiers take 2.5 s each to answer, the first misses and the second hits: the
    lookup costs one wait, not the sum (5 s one after the other). The bound on the whole
    command leaves 1.5 s for the rest of it on a loaded machine."""
    wait_s, bound_s = 2.5, 4.0
    tiers = {"office": "netdir", "cloud": "netdir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"])
    NetDirBackend.connect_delay.update(office=wait_s, cloud=wait_s)
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["office", "cloud"], stores=tmp_path)
    started = time.monotonic()
    st = status(gaia_cli, tier_pm, consumer)
    took = time.monotonic() - started
    assert [(t["ref"], t["state"]) for t in st["tiers"]] == [("netdir:office", "missing"), ("netdir:cloud", "hit")]
    assert all(t["seconds"] >= wait_s - 0.1 for t in st["tiers"]), st["tiers"]
    assert took < bound_s, f"the lookup took {took:.1f}s: the tiers were asked one after the other"


def test_a_hit_in_a_slower_tier_is_copied_into_the_faster_writable_tiers_before_the_run_ends(
        gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "dir", "office": "dir+ro", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"])
    [fp] = objects_in(tmp_path, "cloud")
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "office", "cloud"], stores=tmp_path)
    st = status(gaia_cli, tier_pm, consumer)
    assert (st["reason"], st["tier"]) == ("remote_hit", "dir:cloud")
    assert [t["state"] for t in st["tiers"]] == ["missing", "missing", "hit"]
    assert [t["writable"] for t in st["tiers"]] == [True, False, True]

    result = run(gaia_cli, tier_pm, "run", consumer.build)
    out = result.output
    assert consumer.builds() == 0
    assert "via dir:cloud" in out and "copying" in out and "(backfill) while the build goes on" in out, out
    assert f"backfilled {fp[:12]} into dir:runner" in out, out
    assert out.index("SUMMARY:") < out.index(f"backfilled {fp[:12]}"), "the run waits for it before it exits"
    assert objects_in(tmp_path, "runner") == [fp] and objects_in(tmp_path, "office") == []
    assert queue(consumer) == {"dir:runner": "uploaded"}

    shutil.rmtree(tier_dir(tmp_path, "cloud"))  # the cloud is gone: the runner serves the next job
    tier_dir(tmp_path, "cloud").mkdir()
    second = fresh(tmp_path, "second")
    write(second, tiers, ["runner", "office", "cloud"], stores=tmp_path)
    assert "via dir:runner" in run(gaia_cli, tier_pm, "run", second.build).output
    assert second.builds() == 0


def test_a_backfill_sends_only_what_the_faster_tier_lacks(gaia_cli, tier_pm, tmp_path):
    """The runner holds the object's packs but not its manifest (a backfill a kill cut
    short): the next backfill sends no pack again, only the manifest."""
    tiers = {"runner": "dir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["runner", "cloud"], bulk=1 << 20)
    packs = packs_in(tmp_path, "runner")
    [fp] = objects_in(tmp_path, "runner")
    shutil.rmtree(tier_dir(tmp_path, "runner") / "points")
    mtimes = {p: (tier_dir(tmp_path, "runner") / "packs" / p).stat().st_mtime_ns for p in packs}
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path, bulk=1 << 20)
    out = run(gaia_cli, tier_pm, "run", consumer.build).output
    assert "via dir:cloud" in out and f"backfilled {fp[:12]} into dir:runner" in out, out
    assert "is already in dir:runner" not in out
    assert objects_in(tmp_path, "runner") == [fp] and packs_in(tmp_path, "runner") == packs
    assert {p: (tier_dir(tmp_path, "runner") / "packs" / p).stat().st_mtime_ns for p in packs} == mtimes
    assert "uploaded" in out and "(0 B of" in out, out


def test_a_backfill_that_outlasts_its_bound_stays_queued_and_the_run_exits(gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "netdir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"])
    NetDirBackend.slow["runner"] = 4.0
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path, checkpoints='backfill_timeout = "1s"')
    started = time.monotonic()
    out = run(gaia_cli, tier_pm, "run", consumer.build).output
    assert time.monotonic() - started < 4.0, "the run waited for the backfill beyond its bound"
    assert "waiting for the backfills into faster tiers (at most 1s" in out, out
    assert "backfill of" in out and "stopped: it did not finish within 1s" in out, out
    assert queue(consumer)["netdir:runner"] in ("pending", "failed")
    NetDirBackend.slow.clear()
    retried = run(gaia_cli, tier_pm, "checkpoints", "retry", consumer.build, "--json")
    assert retried.json["uploaded"] >= 1 and len(objects_in(tmp_path, "runner")) == 1


def test_a_local_hit_reaches_every_writable_tier_that_lacks_it(gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "dir", "cloud": "dir"}
    project = fresh(tmp_path, "ws")
    write(project, tiers, ["runner"], stores=tmp_path)
    run(gaia_cli, tier_pm, "run", project.build)
    write(project, tiers, ["runner", "cloud"], stores=tmp_path)
    out = run(gaia_cli, tier_pm, "run", project.build).output
    assert "uploaded" in out and "via dir:cloud" in out and "via dir:runner" not in out, out
    assert len(objects_in(tmp_path, "cloud")) == 1
    assert queue(project) == {"dir:runner": "uploaded", "dir:cloud": "uploaded"}


def test_pull_takes_the_first_hit_and_backfills_before_it_ends(gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "dir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"])
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path)
    pulled = run(gaia_cli, tier_pm, "checkpoints", "pull", consumer.build, "--json").json["results"][0]
    assert pulled["pulled"] and pulled["tier"] == "dir:cloud" and pulled["backfilled"] == ["dir:runner"]
    assert len(objects_in(tmp_path, "runner")) == 1


# -- read-only tiers ---------------------------------------------------------------------


def test_a_read_only_tier_serves_and_is_never_written(gaia_cli, tier_pm, tmp_path):
    tiers = {"mirror": "dir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["mirror"])  # the mirror is filled by someone else
    [fp] = objects_in(tmp_path, "mirror")
    ro = {"mirror": "dir+ro", "cloud": "dir"}
    consumer = fresh(tmp_path, "consumer")
    write(consumer, ro, ["mirror", "cloud"], stores=tmp_path)
    assert "via dir:mirror" in run(gaia_cli, tier_pm, "run", consumer.build).output
    before = sorted(p.relative_to(tmp_path) for p in tier_dir(tmp_path, "mirror").rglob("*"))

    write(consumer, ro, ["mirror", "cloud"], stores=tmp_path, value="b")  # a miss: built and uploaded
    run(gaia_cli, tier_pm, "run", consumer.build)
    pushed = run(gaia_cli, tier_pm, "checkpoints", "push", consumer.build, "--all", "--json").json
    assert {r["tier"] for r in pushed["results"]} == {"dir:cloud"}
    gc = run(gaia_cli, tier_pm, "checkpoints", "gc", consumer.build, "--remote", "--keep-last", "1",
             "--grace", "0s")
    assert "checkpoint gc (dir:mirror): skipped, read_only" in gc.output, gc.output
    assert sorted(p.relative_to(tmp_path) for p in tier_dir(tmp_path, "mirror").rglob("*")) == before
    assert objects_in(tmp_path, "mirror") == [fp] and len(objects_in(tmp_path, "cloud")) == 1


# -- dead tiers --------------------------------------------------------------------------


def test_a_tier_that_timed_out_is_skipped_by_later_runs_on_this_host(gaia_cli, tier_pm, tmp_path):
    """The office times out; the first job pays for it once, the next job on the same
    machine (a fresh workspace) does not contact it at all, and both build or restore."""
    tiers = {"runner": "dir", "office": "netdir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, {"cloud": "dir"}, ["cloud"])
    NetDirBackend.down.add("office")
    first = fresh(tmp_path, "first")
    write(first, tiers, ["runner", "office", "cloud"], stores=tmp_path, checkpoints='down_for = "1h"')
    out = run(gaia_cli, tier_pm, "run", first.build).output
    assert first.builds() == 0 and "via dir:cloud" in out
    assert "backend netdir:office is unavailable: " in out and "probe_timeout" in out
    contacted = NetDirBackend.calls["office"]
    assert contacted >= 1
    memory = json.loads(state_file().read_text())
    [(where, entry)] = memory["tiers"].items()
    assert entry["ref"] == "netdir:office" and "probe_timeout" in entry["reason"]
    assert 3590 < entry["until"] - time.time() <= 3600

    second = fresh(tmp_path, "second")
    write(second, tiers, ["runner", "office", "cloud"], stores=tmp_path, checkpoints='down_for = "1h"')
    out = run(gaia_cli, tier_pm, "run", second.build).output
    assert NetDirBackend.calls["office"] == contacted, "a later run contacted the tier remembered down"
    assert "not contacted again until" in out and second.builds() == 0

    local_hit = run(gaia_cli, tier_pm, "checkpoints", "status", second.build, "--json").json["points"][0]
    assert local_hit["tier"] == "local" and local_hit["tiers"][1]["down_until"], "shown, although not needed"
    third = fresh(tmp_path, "third")  # a lookup: the tier is needed and down (exit 5)
    write(third, tiers, ["runner", "office", "cloud"], stores=tmp_path, checkpoints='down_for = "1h"')
    checked = run(gaia_cli, tier_pm, "checkpoints", "status", third.build, "--json", code=5).json["points"][0]
    office = checked["tiers"][1]
    assert office["ref"] == "netdir:office" and office["state"] == "down" and office["down_until"]
    assert [t["down_until"] for t in checked["tiers"]][::2] == [None, None]
    text = run(gaia_cli, tier_pm, "checkpoints", "status", third.build, code=5).output
    assert "tier netdir:office: down, not contacted until " in text, text
    assert NetDirBackend.calls["office"] == contacted

    NetDirBackend.down.clear()  # the office is back: --recheck asks it, and forgets it was down
    rechecked = run(gaia_cli, tier_pm, "checkpoints", "status", third.build, "--recheck", "--json")
    assert rechecked.json["points"][0]["tiers"][1]["down_until"] is None
    assert NetDirBackend.calls["office"] > contacted
    assert json.loads(state_file().read_text())["tiers"] == {}


def test_a_run_says_why_a_tier_remembered_down_is_skipped_even_when_a_faster_tier_hits(
        gaia_cli, tier_pm, tmp_path):
    """The runner holds the object and answers at once; the office is remembered down, and
    its lookup is slow to get going. What the run says of the office does not depend on
    which answer came in first."""
    tiers = {"runner": "dir", "office": "netdir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, {"runner": "dir", "cloud": "dir"}, ["runner", "cloud"])
    NetDirBackend.down.add("office")
    first = fresh(tmp_path, "first")
    write(first, {"office": "netdir", "cloud": "dir"}, ["office", "cloud"], stores=tmp_path,
          checkpoints='down_for = "1h"')
    run(gaia_cli, tier_pm, "run", first.build)
    contacted = NetDirBackend.calls["office"]
    NetDirBackend.describe_delay["office"] = 0.5
    second = fresh(tmp_path, "second")
    write(second, tiers, ["runner", "office", "cloud"], stores=tmp_path, checkpoints='down_for = "1h"')
    out = run(gaia_cli, tier_pm, "run", second.build).output
    assert "via dir:runner" in out and second.builds() == 0, out
    assert "netdir:office is unavailable" in out and "not contacted again until" in out, out
    assert NetDirBackend.calls["office"] == contacted


def test_a_tier_remembered_down_is_tried_again_once_its_time_is_up(gaia_cli, tier_pm, tmp_path):
    tiers = {"office": "netdir", "cloud": "dir"}
    NetDirBackend.down.add("office")
    project = fresh(tmp_path, "ws")
    write(project, tiers, ["office", "cloud"], stores=tmp_path, checkpoints='down_for = "1s"')
    run(gaia_cli, tier_pm, "run", project.build)
    assert DownTiers().read()
    time.sleep(1.2)
    NetDirBackend.down.clear()
    calls = NetDirBackend.calls["office"]
    write(project, tiers, ["office", "cloud"], stores=tmp_path, checkpoints='down_for = "1s"', value="b")
    run(gaia_cli, tier_pm, "run", project.build)
    assert NetDirBackend.calls["office"] > calls and len(objects_in(tmp_path, "office")) == 1
    assert DownTiers().read() == {}, "a tier that answered is forgotten"


def test_down_for_0s_keeps_a_tier_down_for_the_run_only(gaia_cli, tier_pm, tmp_path):
    NetDirBackend.down.add("office")
    project = fresh(tmp_path, "ws")
    write(project, {"office": "netdir"}, ["office"], stores=tmp_path, checkpoints='down_for = "0s"')
    out = run(gaia_cli, tier_pm, "run", project.build).output
    assert "skipped for the rest of this run" in out or "queued for retry" in out
    assert DownTiers().read() == {}


def test_a_missing_variable_or_mount_is_not_remembered_as_a_dead_tier(gaia_cli, tier_pm, tmp_path):
    project = fresh(tmp_path, "ws")
    write(project, {"cloud": "dir"}, ["cloud"], stores=tmp_path)
    shutil.rmtree(tier_dir(tmp_path, "cloud"))
    out = run(gaia_cli, tier_pm, "run", project.build).output
    assert "backend dir:cloud is unavailable" in out
    assert DownTiers().read() == {}


def test_the_memory_of_down_tiers_lives_per_user_and_host_and_survives_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = state_file()
    assert path.parent == tmp_path / "cache" / "gaia" and path.name.startswith("down-tiers-")
    assert os.uname().nodename.split(".")[0][:10] in path.name
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the spec says
    assert state_file().parent == Path.home() / ".cache" / "gaia"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    memory = DownTiers()
    for garbage in (b"{not json", b"[]", b'{"version": 1, "tiers": {"x": {"ref": 1}}}', b"\xff\xfe"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(garbage)
        assert memory.read() == {} and memory.get("x") is None
    assert memory.mark_down("http:office", "office-url", "timed out", 60) is not None
    assert memory.get("office-url").reason == "timed out"
    clock = [time.time() + 120]
    later = DownTiers(path, clock=lambda: clock[0])
    assert later.get("office-url") is None, "an entry past its time does not hold"
    later.mark_down("s3:cloud", "cloud-url", "refused", 60)
    assert set(later.read()) == {"cloud-url"}, "expired entries are dropped when the file changes"


def test_concurrent_runs_lose_no_entry_of_the_memory(tmp_path):
    """Sixteen processes mark a tier each at the same time: every entry is kept."""
    path = tmp_path / "down-tiers.json"
    code = ("import sys; from pathlib import Path; from gaia_core.checkpoints.downtiers import DownTiers; "
            "n = sys.argv[2]; DownTiers(Path(sys.argv[1])).mark_down(f'http:t{n}', f'where-{n}', 'timed out', 600)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)]) for n in range(16)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 16
    assert set(DownTiers(path).read()) == {f"where-{n}" for n in range(16)}


# -- offline -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["--offline", "GAIA_OFFLINE=1"])
def test_offline_uses_the_local_store_and_dir_tiers_and_queues_the_rest(gaia_cli, tier_pm, tmp_path, monkeypatch,
                                                                       how):
    tiers = {"runner": "dir", "cloud": "netdir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"])  # only the cloud has it
    NetDirBackend.calls.clear()
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path)
    args = ["run", consumer.build]
    if how == "--offline":
        args.append("--offline")
    else:
        monkeypatch.setenv("GAIA_OFFLINE", "1")
    out = run(gaia_cli, tier_pm, *args).output
    assert NetDirBackend.calls["cloud"] == 0, "an offline run contacted a store that needs the network"
    assert consumer.builds() == 1, "the cloud's object cannot be had offline: built"
    assert out.count(f"offline ({how}): only the local store and mounted dir tiers are used") == 1, out
    assert "netdir:cloud are not contacted, and uploads to them are queued" in out
    assert "unavailable" not in out
    assert len(objects_in(tmp_path, "runner")) == 1, "the dir tier is used offline"
    entries = {e["backend_ref"]: e for e in json.loads((consumer.store / "upload-queue.json").read_text())["entries"]}
    assert entries["dir:runner"]["state"] == "uploaded"
    assert entries["netdir:cloud"]["state"] == "pending" and "offline" in entries["netdir:cloud"]["last_error"]

    again = fresh(tmp_path, "again")  # offline, the runner's copy is a hit
    write(again, tiers, ["runner", "cloud"], stores=tmp_path)
    assert "via dir:runner" in run(gaia_cli, tier_pm, *[again.build if a == consumer.build else a for a in args]).output
    assert again.builds() == 0 and NetDirBackend.calls["cloud"] == 0

    if how != "--offline":
        st = run(gaia_cli, tier_pm, "checkpoints", "status", consumer.build, "--json").json
        assert st["offline"] == "GAIA_OFFLINE=1" and st["points"][0]["tiers"][1]["state"] in (None, "offline")
        kept = run(gaia_cli, tier_pm, "checkpoints", "retry", consumer.build)
        assert "1 upload(s) to tiers that need the network stay queued" in kept.output
        monkeypatch.delenv("GAIA_OFFLINE")
    retried = run(gaia_cli, tier_pm, "checkpoints", "retry", consumer.build, "--json").json
    assert retried["uploaded"] == 1 and queue(consumer)["netdir:cloud"] == "uploaded"


def test_a_malformed_gaia_offline_is_a_config_error(gaia_cli, tier_pm, tmp_path, monkeypatch):
    project = fresh(tmp_path, "ws")
    write(project, {"runner": "dir"}, ["runner"], stores=tmp_path)
    monkeypatch.setenv("GAIA_OFFLINE", "sometimes")
    assert "GAIA_OFFLINE='sometimes' must be 1 or 0" in run(gaia_cli, tier_pm, "run", project.build, code=2).output


# -- gc tier by tier ----------------------------------------------------------------------


def test_gc_works_tier_by_tier_and_a_dry_run_says_what_each_would_free(gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "dir", "cloud": "dir"}
    project = fresh(tmp_path, "ws")
    for value in ("a", "b", "c"):
        write(project, tiers, ["runner", "cloud"], stores=tmp_path, value=value, bulk=64 << 10)
        run(gaia_cli, tier_pm, "run", project.build)
    assert len(objects_in(tmp_path, "runner")) == len(objects_in(tmp_path, "cloud")) == 3
    rules = ["--keep-last", "1", "--grace", "0s"]

    dry = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--remote", *rules, "--dry-run", "--json").json
    assert list(dry["tiers"]) == ["local", "dir:runner", "dir:cloud"]
    for part in dry["tiers"].values():
        assert part["freed"] > 2 * (64 << 10), part
        assert sum(not o["kept"] for o in part["objects"]) == 2
    text = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--remote", *rules, "--dry-run").output
    for where in ("local", "dir:runner", "dir:cloud"):
        assert f"checkpoint gc ({where}): would remove 2 object(s), would free " in text, text
    assert len(objects_in(tmp_path, "runner")) == 3

    one = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--tier", "runner", *rules, "--json").json
    assert list(one["tiers"]) == ["dir:runner"]
    assert len(objects_in(tmp_path, "runner")) == 1 and len(objects_in(tmp_path, "cloud")) == 3
    assert len(project.objects()) == 3, "--tier without 'local' leaves the local store alone"
    run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--tier", "local", "--tier", "dir:cloud", *rules)
    assert len(objects_in(tmp_path, "cloud")) == 1 and len(project.objects()) == 1
    bad = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--tier", "office", code=2)
    assert "backend 'office' is no tier of these points" in bad.output


def test_gc_reports_a_tier_that_is_down_and_collects_the_next_one_all_the_same(gaia_cli, tier_pm, tmp_path):
    """The office, first in the chain, times out: its part of the report has the error,
    the runner after it is collected, and the command exits 5 (a backend unavailable)."""
    tiers = {"office": "netdir", "runner": "dir"}
    project = fresh(tmp_path, "ws")
    for value in ("a", "b", "c"):
        write(project, tiers, ["office", "runner"], stores=tmp_path, value=value)
        run(gaia_cli, tier_pm, "run", project.build)
    assert len(objects_in(tmp_path, "office")) == len(objects_in(tmp_path, "runner")) == 3
    NetDirBackend.down.add("office")
    rules = ["--keep-last", "1", "--grace", "0s"]

    dry = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--remote", *rules, "--dry-run", code=5).output
    assert "checkpoint gc (netdir:office): not collected" in dry, dry
    assert "backend netdir:office is unavailable: " in dry and "probe_timeout" in dry, dry
    assert "checkpoint gc (dir:runner): would remove 2 object(s)" in dry, dry

    gc = run(gaia_cli, tier_pm, "checkpoints", "gc", project.build, "--remote", *rules, "--json", code=5).json
    assert list(gc["tiers"]) == ["local", "netdir:office", "dir:runner"]
    office, runner = gc["tiers"]["netdir:office"], gc["tiers"]["dir:runner"]
    assert "probe_timeout" in office["error"] and office["objects"] == [] and office["freed"] == 0, office
    assert runner["error"] is None and sum(not o["kept"] for o in runner["objects"]) == 2, runner
    assert gc["remote"]["errors"] == [f"netdir:office: {office['error']}"]
    assert len(objects_in(tmp_path, "runner")) == 1 and len(objects_in(tmp_path, "office")) == 3
    assert len(project.objects()) == 1, "the local store is collected too"


# -- trust per object ---------------------------------------------------------------------


def test_trust_holds_per_object_whatever_tier_serves_it(gaia_cli, tier_pm, tmp_path, monkeypatch):
    """The runner holds an unsigned object (anyone who can write the runner's disk can put
    one there), the cloud one signed by the trusted key: the runner's is refused, the cloud's
    restored, and the backfill publishes it in its signer's slot beside the other."""
    run(gaia_cli, tier_pm, "checkpoints", "keygen", "ci-main", "--dir", tmp_path / "keys")
    public = (tmp_path / "keys" / "ci-main.public").read_text().strip()
    trusted = f'trusted_public_keys = ["{public}"]\nsigning_key_file_env = "GAIA_TEST_SIGNING_KEY"'
    tiers = {"runner": "dir", "cloud": "dir"}
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["runner"])  # unsigned: no keys configured
    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(tmp_path / "keys" / "ci-main.secret"))
    signer = fresh(tmp_path, "signer")
    write(signer, tiers, ["cloud"], stores=tmp_path, checkpoints=trusted)
    run(gaia_cli, tier_pm, "run", signer.build)
    monkeypatch.delenv("GAIA_TEST_SIGNING_KEY")
    [fp] = objects_in(tmp_path, "runner")
    assert objects_in(tmp_path, "cloud") == [fp]

    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "cloud"], stores=tmp_path, checkpoints=trusted)
    st = status(gaia_cli, tier_pm, consumer)
    assert [(t["state"], t["reason"]) for t in st["tiers"]] == [("untrusted", "untrusted:unsigned"), ("hit", None)]
    out = run(gaia_cli, tier_pm, "run", consumer.build).output
    assert "the object in dir:runner is not used: untrusted:unsigned" in out and "via dir:cloud" in out, out
    assert "signer: ci-main" in out and consumer.builds() == 0
    slots = sorted(p.name for p in (tier_dir(tmp_path, "runner") / "points" / "base" / fp).iterdir())
    assert slots == ["manifest.json", "manifest.key.ci-main.json"]

    last = fresh(tmp_path, "last")
    write(last, tiers, ["runner", "cloud"], stores=tmp_path, checkpoints=trusted)
    assert "via dir:runner" in run(gaia_cli, tier_pm, "run", last.build).output


def test_commands_that_talk_to_the_stores_contact_a_tier_remembered_down(gaia_cli, tier_pm, tmp_path):
    """status says what the next run does, so it skips the tier; list, retry, push, pull,
    verify and gc exist to talk to it, so they ask it, and the memory follows the answer."""
    tiers = {"office": "netdir", "cloud": "dir"}
    NetDirBackend.down.add("office")
    project = fresh(tmp_path, "ws")
    write(project, tiers, ["office", "cloud"], stores=tmp_path)
    run(gaia_cli, tier_pm, "run", project.build)
    assert queue(project)["netdir:office"] == "failed" and DownTiers().read()
    NetDirBackend.down.clear()
    calls = NetDirBackend.calls["office"]
    st = run(gaia_cli, tier_pm, "checkpoints", "status", project.build, "--json").json["points"][0]
    assert st["tiers"][0]["down_until"] and NetDirBackend.calls["office"] == calls
    retried = run(gaia_cli, tier_pm, "checkpoints", "retry", project.build, "--json").json
    assert retried["uploaded"] == 1 and NetDirBackend.calls["office"] > calls
    assert DownTiers().read() == {} and len(objects_in(tmp_path, "office")) == 1


# -- run records with several tiers ------------------------------------------------------


def test_run_records_go_to_every_writable_tier_and_count_once(gaia_cli, tier_pm, tmp_path):
    tiers = {"runner": "dir", "office": "dir+ro", "cloud": "dir"}
    share = 'share_records = true'
    produce(gaia_cli, tier_pm, tmp_path, tiers, ["cloud"], checkpoints=share)
    consumer = fresh(tmp_path, "consumer")
    write(consumer, tiers, ["runner", "office", "cloud"], stores=tmp_path, checkpoints=share)
    run(gaia_cli, tier_pm, "run", consumer.build)  # a hit in the cloud, backfilled into the runner

    def shared(name: str) -> list[Path]:
        return sorted((tier_dir(tmp_path, name) / "records").glob("*/*.json"))

    assert len(shared("cloud")) == 2 and len(shared("runner")) == 1 and shared("office") == []
    [record] = json.loads(shared("runner")[0].read_text())["records"]
    assert (record["decision"], record["tier"]) == ("remote_hit", "dir:cloud"), record
    assert record["bytes"]["uploaded"] > 0, "the backfill into the runner is the run's upload"

    stats = run(gaia_cli, tier_pm, "checkpoints", "stats", consumer.build, "--remote", "--json").json
    point = stats["points"]["base"]
    assert (point["runs"], point["remote_hits"], point["misses"]) == (2, 1, 1), point
