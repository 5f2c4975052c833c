"""gc with retention, push and pull, progress, and a miss explained against the remote."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from counter_project import Project, run, status
from hostile import age, chunks_of_pack, object_dirs, pack_files, packs_holding, read_manifest, slots

from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.packs import PACK_MAGIC


def build_versions(gaia_cli, pm, project: Project, values: list[str], **write) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One object per value, oldest first (their created_at one second apart); value -> fingerprint."""
    fps = {}
    for i, value in enumerate(values):
        project.write(value=value, **write)
        run(gaia_cli, pm, "run", project.build)
        fps[value] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
        _age_object(project.store / "points" / "base" / fps[value], seconds=(len(values) - i) * 86400)
    age(pack_files(project.store).values(), 7200)  # older than gc's grace period: dead ones may go
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
    assert_every_local_object_restores(gaia_cli, pm, project)


def assert_every_local_object_restores(gaia_cli, pm, project: Project) -> None:  # type: ignore[no-untyped-def]
    """Every object left verifies (each chunk read and checked), and the current one restores."""
    report = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--json").json
    assert report["bad"] == 0 and report["ok"] == len(local_fps(project))
    builds = project.builds()
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == builds


def test_max_age_counts_from_creation(gaia_cli, pm, project):
    fps = build_versions(gaia_cli, pm, project, ["a", "b", "c"])  # 3, 2 and 1 days old
    gc(gaia_cli, pm, project, "--max-age", "36h")
    assert local_fps(project) == {fps["c"]}  # c is current and younger anyway


def test_max_size_removes_the_oldest_until_the_rest_fit(gaia_cli, pm, project):
    fps = build_versions(gaia_cli, pm, project, ["a", "b", "c"])
    size = json.loads((project.objects()[0] / "manifest.json").read_text())["tree"]["packed"]
    gc(gaia_cli, pm, project, "--max-size", str(2 * size + size // 2))
    assert local_fps(project) == {fps["b"], fps["c"]}


def objects_and_packs(project: Project) -> dict:  # type: ignore[type-arg]
    """Every file of the local store's objects and packs, with its size and mtime."""
    files = [*(project.store / "points").rglob("*"), *(project.store / "packs").iterdir()]
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()}


def test_dry_run_lists_what_would_go_and_removes_nothing(gaia_cli, pm, project):
    build_versions(gaia_cli, pm, project, ["a", "b", "c"])
    before = objects_and_packs(project)
    report = gc(gaia_cli, pm, project, "--keep-last", "1", "--dry-run")
    assert objects_and_packs(project) == before  # no object, no pack
    assert report["dry_run"] and sum(not o["kept"] for o in report["local"]["objects"]) == 2
    assert report["local"]["freed"] > 0 and report["local"]["packs"]["packs_removed"] > 0
    text = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--keep-last", "1", "--dry-run").output
    assert "would remove 2 object(s)" in text
    packs_before = sum(p.stat().st_size for p in pack_files(project.store).values())
    real = gc(gaia_cli, pm, project, "--keep-last", "1")
    assert real["local"]["freed"] == report["local"]["freed"]  # the dry run said what the real one frees
    packs_after = sum(p.stat().st_size for p in pack_files(project.store).values())
    assert packs_after < packs_before
    assert_every_local_object_restores(gaia_cli, pm, project)


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


def _versions_sharing_a_pack(gaia_cli, pm, project: Project) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """a, b and c, one after the other in one tree: a large file that appears before b is
    captured into b's pack, and c (which still holds it) uses that pack too."""
    fps = {}
    for value in ("a", "b", "c"):
        if value == "b":
            (project.out / "shared.bin").write_bytes(os.urandom(512 << 10))
        project.write(value=value)
        run(gaia_cli, pm, "run", project.build)
        fps[value] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    return fps


def local_packs_of(project: Project, fp: str) -> set[str]:
    return packs_holding(project.store, read_manifest(project.store / "points" / "base" / fp))


def test_gc_frees_dead_packs_and_keeps_those_a_retained_object_shares(gaia_cli, pm, project):
    fps = _versions_sharing_a_pack(gaia_cli, pm, project)
    packs = {v: local_packs_of(project, fp) for v, fp in fps.items()}
    shared = packs["b"] & packs["c"]
    only_a = packs["a"] - packs["b"] - packs["c"]
    assert shared and only_a
    age(pack_files(project.store).values(), 7200)
    report = gc(gaia_cli, pm, project, "--keep-last", "1")
    assert local_fps(project) == {fps["c"]}
    left = set(pack_files(project.store))
    assert not only_a & left  # dead and old: gone
    assert shared <= left  # mostly live (the large file c still needs): kept as it is
    assert local_packs_of(project, fps["c"]) <= left
    assert report["local"]["packs"]["packs_removed"] >= len(only_a) and report["local"]["freed"] > 0
    assert_every_local_object_restores(gaia_cli, pm, project)


def test_the_grace_period_spares_young_dead_packs_and_applies_locally(gaia_cli, pm, project):
    fps = _versions_sharing_a_pack(gaia_cli, pm, project)
    only_a = local_packs_of(project, fps["a"]) - local_packs_of(project, fps["b"]) - local_packs_of(project, fps["c"])
    report = gc(gaia_cli, pm, project, "--keep-last", "1")  # the packs were written just now
    assert local_fps(project) == {fps["c"]}
    assert only_a <= set(pack_files(project.store))  # dead, but younger than the default grace (1h)
    assert report["local"]["packs"]["young_packs_kept"] >= len(only_a) and report["local"]["freed"] == 0
    gc(gaia_cli, pm, project, "--grace", "0s")  # --grace is gc's grace for local packs too
    assert not only_a & set(pack_files(project.store))
    assert_every_local_object_restores(gaia_cli, pm, project)


def test_gc_keeps_what_other_build_files_points_need(gaia_cli, pm, project):
    """Another build file's point shares the store: gc of this one leaves its objects whole."""
    other_build = project.root / "other.toml"
    project.write(value="z")
    other_build.write_text(project.build.read_text().replace('id = "base"', 'id = "other"'))
    run(gaia_cli, pm, "run", other_build)
    other_fp = [p.name for p in (project.store / "points" / "other").iterdir()]
    build_versions(gaia_cli, pm, project, ["a", "b"])
    age(pack_files(project.store).values(), 7200)
    gc(gaia_cli, pm, project, "--keep-last", "1", "--grace", "0s")
    assert [p.name for p in (project.store / "points" / "other").iterdir()] == other_fp
    verified = run(gaia_cli, pm, "checkpoints", "verify", other_build, "--json").json
    assert verified["bad"] == 0 and verified["ok"] == 1
    builds = project.builds()
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", other_build)
    assert project.builds() == builds and (project.out / "value.txt").read_text() == "z"


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


def remote_object(project: Project, fp: str):  # type: ignore[no-untyped-def]
    return project.shared / "points" / "base" / fp


def remote_fps(project: Project) -> set[str]:
    return {p.name for p in object_dirs(project.shared)}


def remote_packs_of(project: Project, fp: str) -> set[str]:
    return packs_holding(project.shared, read_manifest(remote_object(project, fp)))


def age_remote(project: Project, fp: str, seconds: float) -> None:
    """The object's manifest, and the packs it uploaded, written ``seconds`` ago."""
    packs = pack_files(project.shared)
    age(remote_object(project, fp).iterdir(), seconds)
    for pack in remote_packs_of(project, fp):
        age([packs[pack], packs[pack].with_suffix(".idx")], seconds)


def assert_restorable_from_the_backend(gaia_cli, pm, project: Project) -> None:  # type: ignore[no-untyped-def]
    """The current object comes back from the backend alone, and restores."""
    builds = project.builds()
    shutil.rmtree(project.store)
    shutil.rmtree(project.out)
    run(gaia_cli, pm, "run", project.build)
    assert project.builds() == builds and (project.out / "value.txt").is_file()


def test_remote_gc_respects_the_grace_period(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a", "b", "c"])
    age_remote(project, fps["a"], 7200)  # a is old; b was written just now (a reader may be downloading it)
    only_a = remote_packs_of(project, fps["a"]) - remote_packs_of(project, fps["b"]) - \
        remote_packs_of(project, fps["c"])
    assert only_a
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1")
    assert remote_fps(project) == {fps["b"], fps["c"]}
    gone = remote_object(project, fps["a"])
    assert not gone.exists() or list(gone.iterdir()) == []  # every slot's manifest
    assert not only_a & set(pack_files(project.shared))  # a's packs were old and dead: gone
    assert report["remote"]["freed"] > 0
    for fp in (fps["b"], fps["c"]):  # the young ones keep every pack they need
        assert remote_packs_of(project, fp) <= set(pack_files(project.shared))
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_remote_gc_with_a_short_grace_and_dry_run(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a", "b", "c"])
    before = {p.relative_to(project.shared) for p in project.shared.rglob("*")}
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s", "--dry-run")
    assert {p.relative_to(project.shared) for p in project.shared.rglob("*")} == before  # nothing at all
    dead = set(pack_files(project.shared)) - remote_packs_of(project, fps["c"])
    assert dead and report["remote"]["freed"] == sum(pack_files(project.shared)[p].stat().st_size for p in dead)
    gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert remote_fps(project) == {fps["c"]}
    assert set(pack_files(project.shared)) == remote_packs_of(project, fps["c"])
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_remote_gc_removes_old_temporaries_and_orphan_packs(gaia_cli, pm, project):
    fps = remote_versions(gaia_cli, pm, project, ["a"])
    obj = remote_object(project, fps["a"])
    packs = project.shared / "packs"
    stale_tmp = obj / "manifest.json.tmp-host-1-abc"
    stale_pack_tmp = packs / (("0" * 64) + ".pack.tmp-host-1-abc")
    young = obj / "manifest.json.tmp-host-2-def"
    orphan, young_orphan = "1" * 64, "2" * 64  # packs of killed uploads: no manifest names their chunks
    for pack in (orphan, young_orphan):
        (packs / f"{pack}.pack").write_bytes(b"GAIAPK1\n")
        (packs / f"{pack}.idx").write_bytes(b"GAIAIX1\n" + bytes(4))
    for path in (stale_tmp, stale_pack_tmp, young):
        path.write_bytes(b"x")
    age([stale_tmp, stale_pack_tmp, packs / f"{orphan}.pack", packs / f"{orphan}.idx"], 7200)
    report = gc(gaia_cli, pm, project, "--remote")
    assert not stale_tmp.exists() and not stale_pack_tmp.exists() and young.exists()
    assert len(report["remote"]["litter"]) == 2
    assert orphan not in pack_files(project.shared) and not (packs / f"{orphan}.idx").exists()
    assert young_orphan in pack_files(project.shared)
    assert slots(obj) == ["manifest.json"] and remote_packs_of(project, fps["a"]) <= set(pack_files(project.shared))
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_remote_gc_is_refused_in_read_only_mode(gaia_cli, pm, project, monkeypatch):
    remote_versions(gaia_cli, pm, project, ["a"])
    monkeypatch.setenv("GAIA_CHECKPOINTS_READ_ONLY", "1")
    result = run(gaia_cli, pm, "checkpoints", "gc", project.build, "--remote", code=2)
    assert "read-only" in result.output



# -- remote repacking ------------------------------------------------------------------------------

REMOTE_POINT = 'backend = "dir:shared"\nupload_policy = "always"'


def mostly_dead_remote_pack(gaia_cli, pm, project: Project, *, kept: int, dropped: int):  # type: ignore[no-untyped-def]
    """a holds keep.bin (``kept`` bytes) and gone.bin (``dropped``), b keeps only keep.bin:
    once a goes, the one pack a uploaded holds b's keep.bin and a's dead rest. (fps, that
    pack, keep.bin's bytes); nothing in the backend is older than the grace period yet."""
    project.shared.mkdir(exist_ok=True)
    project.out.mkdir(parents=True, exist_ok=True)
    keep = os.urandom(kept)
    (project.out / "keep.bin").write_bytes(keep)
    (project.out / "gone.bin").write_bytes(os.urandom(dropped))
    fps = {}
    for value in ("a", "b"):
        if value == "b":
            (project.out / "gone.bin").unlink()
        project.write(value=value, backend=True, point=REMOTE_POINT)
        run(gaia_cli, pm, "run", project.build)
        fps[value] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    (old,) = remote_packs_of(project, fps["a"])
    assert old in remote_packs_of(project, fps["b"])
    return fps, old, keep


def holders(root, chunk: bytes) -> set[str]:  # type: ignore[no-untyped-def]
    """The packs of the store at ``root`` whose index lists ``chunk``."""
    return {p for p in pack_files(root) if chunk in {e.chunk for e in chunks_of_pack(root, p)}}


def age_shared(project: Project, seconds: float) -> None:
    age((p for p in project.shared.rglob("*") if p.is_file()), seconds)


def swept(report, ref: str = "dir:shared"):  # type: ignore[no-untyped-def]
    return report["remote"]["backends"][ref]


def test_remote_gc_repacks_a_mostly_dead_pack(gaia_cli, pm, project):
    fps, old, keep = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    before = {p: path.stat().st_size for p, path in pack_files(project.shared).items()}
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert remote_fps(project) == {fps["b"]}
    assert swept(report)["packs_repacked"] == 1 and swept(report)["packs_removed"] == 0
    after = {p: path.stat().st_size for p, path in pack_files(project.shared).items()}
    assert old not in after and not (project.shared / "packs" / f"{old}.idx").exists()
    (new,) = set(after) - set(before)
    assert holders(project.shared, chunk_id(keep)) == {new}  # the live chunk, and nothing dead with it
    assert remote_packs_of(project, fps["b"]) == set(after) and new in remote_packs_of(project, fps["b"])
    freed = report["remote"]["freed"]
    assert freed > 1 << 20  # gone.bin's megabyte, at least
    assert sum(after.values()) == sum(before.values()) - freed + len(PACK_MAGIC)
    builds = project.builds()
    assert_restorable_from_the_backend(gaia_cli, pm, project)
    assert project.builds() == builds and (project.out / "keep.bin").read_bytes() == keep


def test_remote_gc_repacks_only_packs_less_than_half_live(gaia_cli, pm, project):
    fps, dead_mostly, _ = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    (project.out / "big.bin").write_bytes(os.urandom(1 << 20))  # c: in one pack with a small file ...
    (project.out / "small.bin").write_bytes(os.urandom(64 << 10))
    project.write(value="c", backend=True, point=REMOTE_POINT)
    run(gaia_cli, pm, "run", project.build)
    fps["c"] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    (project.out / "small.bin").unlink()  # ... that d drops: that pack stays mostly live
    project.write(value="d", backend=True, point=REMOTE_POINT)
    run(gaia_cli, pm, "run", project.build)
    fps["d"] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    live_mostly = remote_packs_of(project, fps["c"]) - remote_packs_of(project, fps["b"])
    assert len(live_mostly) == 1 and live_mostly <= remote_packs_of(project, fps["d"])
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert remote_fps(project) == {fps["d"]}
    left = set(pack_files(project.shared))
    assert swept(report)["packs_repacked"] == 1 and dead_mostly not in left  # 64 KiB of 1.1 MiB live
    assert live_mostly <= left  # 1 MiB of 1.1 MiB live: kept as it is
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_remote_repacks_stay_within_the_backends_pack_limit(gaia_cli, pm, project):
    """The store took 32 MiB packs when a was uploaded, 8 MiB ones now: the 9 MiB a's pack
    keeps alive go into two new packs."""
    project.shared.mkdir()
    project.out.mkdir(parents=True)
    for n in range(20):
        (project.out / f"f{n:02}.bin").write_bytes(os.urandom(1 << 20))  # one chunk each
    project.write(value="a", backend=True, point=REMOTE_POINT)
    run(gaia_cli, pm, "run", project.build)
    fp_a = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    (old,) = remote_packs_of(project, fp_a)
    for n in range(9, 20):
        (project.out / f"f{n:02}.bin").unlink()
    project.write(value="b", backend=True, point=REMOTE_POINT)
    limit = f'path = "{project.shared}"\nmax_object_size = "8MiB"\n'
    project.build.write_text(project.build.read_text().replace(f'path = "{project.shared}"\n', limit))
    run(gaia_cli, pm, "run", project.build)
    before = set(pack_files(project.shared))
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert swept(report)["packs_repacked"] == 1 and old not in pack_files(project.shared)
    new = {p: path.stat().st_size for p, path in pack_files(project.shared).items() if p not in before}
    assert len(new) == 2 and max(new.values()) <= 8 << 20 and sum(new.values()) > 9 << 20
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_a_repack_whose_upload_fails_deletes_nothing(gaia_cli, pm, project, monkeypatch):
    from gaia_core.builtin.dir_backend import DirBackend
    from gaia_core.errors import BackendError

    fps, old, keep = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    age_shared(project, 7200)

    def refused(self, key, source, *, progress=None):  # type: ignore[no-untyped-def]
        raise BackendError(f"{key}: the store is full")

    monkeypatch.setattr(DirBackend, "upload", refused)
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", code=5)  # a backend failed
    assert "the store is full" in report["tiers"]["dir:shared"]["error"]
    assert old in pack_files(project.shared) and (project.shared / "packs" / f"{old}.idx").exists()
    monkeypatch.undo()
    assert holders(project.shared, chunk_id(keep)) == {old}
    assert_restorable_from_the_backend(gaia_cli, pm, project)


def test_remote_gc_repacks_no_pack_younger_than_the_grace_period(gaia_cli, pm, project):
    fps, old, _ = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    age(remote_object(project, fps["a"]).iterdir(), 7200)  # a's manifest is old, its pack just written
    before = set(pack_files(project.shared))
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1")
    assert remote_fps(project) == {fps["b"]}  # a went ...
    assert swept(report)["packs_repacked"] == 0 and set(pack_files(project.shared)) == before  # ... its pack stays
    age_shared(project, 7200)
    report = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1")
    assert swept(report)["packs_repacked"] == 1 and old not in pack_files(project.shared)


def test_remote_gc_dry_run_reports_a_repack_and_changes_nothing(gaia_cli, pm, project):
    mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)

    def snapshot() -> dict:  # type: ignore[type-arg]
        return {p.relative_to(project.shared): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in project.shared.rglob("*")}

    before = snapshot()
    dry = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s", "--dry-run")
    assert snapshot() == before
    assert swept(dry)["packs_repacked"] == 1 and dry["remote"]["freed"] > 1 << 20
    done = gc(gaia_cli, pm, project, "--remote", "--keep-last", "1", "--grace", "0s")
    assert swept(done)["packs_repacked"] == 1 and done["remote"]["freed"] == dry["remote"]["freed"]


def gc_once_before(monkeypatch, method: str, gaia_cli, pm, project: Project) -> list:  # type: ignore[no-untyped-def,type-arg]
    """The first call of ``Transfers.<method>`` runs ``gc --remote`` of ``project``'s tier
    first (another machine's gc, between the caller's listing and its reads or its check);
    the gc's report lands in the returned list."""
    from gaia_core.checkpoints.transfer import Transfers

    original = getattr(Transfers, method)
    reports: list = []  # type: ignore[type-arg]

    def wrapped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not reports:
            reports.append(None)
            reports[0] = gc(gaia_cli, pm, project, "--remote", "--tier", "dir:shared", "--keep-last", "1",
                            "--grace", "0s")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Transfers, method, wrapped)
    return reports


def test_a_restore_that_listed_before_a_repack_reads_the_chunks_from_the_new_pack(gaia_cli, pm, project, tmp_path,
                                                                                   monkeypatch):
    fps, old, keep = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    age_shared(project, 7200)
    consumer = Project(tmp_path / "consumer", shared=project.shared)
    consumer.write(value="b", backend=True, point=REMOTE_POINT)
    reports = gc_once_before(monkeypatch, "fetch", gaia_cli, pm, project)
    run(gaia_cli, pm, "run", consumer.build)  # lists the packs, then the gc, then the reads
    assert swept(reports[0])["packs_repacked"] == 1 and old not in pack_files(project.shared)
    assert consumer.builds() == 0  # restored, not built again
    assert (consumer.out / "keep.bin").read_bytes() == keep and (consumer.out / "value.txt").read_text() == "b"


def test_an_upload_that_listed_before_a_repack_publishes_a_manifest_whose_chunks_all_exist(gaia_cli, pm, project,
                                                                                          monkeypatch):
    fps, old, keep = mostly_dead_remote_pack(gaia_cli, pm, project, kept=64 << 10, dropped=1 << 20)
    age_shared(project, 7200)
    project.write(value="c", backend=True, point='backend = "dir:shared"')  # c needs keep.bin too; not uploaded yet
    run(gaia_cli, pm, "run", project.build)
    fps["c"] = status(gaia_cli, pm, project, "--no-remote")["fingerprint"]
    reports = gc_once_before(monkeypatch, "send", gaia_cli, pm, project)
    pushed = run(gaia_cli, pm, "checkpoints", "push", project.build, "--json").json
    assert [r["pushed"] for r in pushed["results"]] == [True]
    assert swept(reports[0])["packs_repacked"] == 1 and old not in pack_files(project.shared)
    assert remote_fps(project) == {fps["b"], fps["c"]}
    (new,) = holders(project.shared, chunk_id(keep))  # found in the new pack on the check: not sent again
    assert new in remote_packs_of(project, fps["c"])
    verified = run(gaia_cli, pm, "checkpoints", "verify", project.build, "--remote", "--json").json
    assert verified["bad"] == 0, verified
    assert_restorable_from_the_backend(gaia_cli, pm, project)


# -- push and pull --------------------------------------------------------------------------------


def test_push_then_pull_round_trip(gaia_cli, pm, project):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"')  # upload_policy off: nothing goes up by itself
    run(gaia_cli, pm, "run", project.build)
    assert object_dirs(project.shared) == []
    pushed = run(gaia_cli, pm, "checkpoints", "push", project.build, "--json").json
    assert [r["pushed"] for r in pushed["results"]] == [True]
    [remote] = object_dirs(project.shared)
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
    assert len(object_dirs(project.shared)) == 1
    run(gaia_cli, pm, "checkpoints", "push", project.build, "--all")
    assert len(object_dirs(project.shared)) == 2


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
    [remote] = object_dirs(project.shared)
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
    # a terminal that draws (under TERM=dumb no bar is drawn, rightly, whatever runs the tests)
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=follower, stdout=follower, stderr=follower, env=env)
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
