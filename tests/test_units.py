"""Units in the core (issue 20), with the ``[parts]`` anchor of examples/plugins/gaia-parts: keys that
follow dependencies, unit objects cut from the whole tree's, restore on a miss, hard links
across units, status, list and gc."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
from units_plugin import plugin as parts_plugin

from gaia_core import hookimpl
from gaia_core.checkpoints.packs import DEFAULT_LEVEL, compress
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.plugins import get_plugin_manager

PARTS = {"a": {"value": "1"}, "b": {"value": "1", "deps": ["a"]}, "c": {"value": "1"}}


@pytest.fixture
def pm():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(parts_plugin, name="parts")
    return pm


class Workspace:
    def __init__(self, root: Path, remote: Path):
        self.root = root
        self.remote = remote
        self.build = root / "build.toml"
        self.out = root / "build" / "parts-out"
        self.store = root / "build" / "checkpoints"
        (root / "sources").mkdir(parents=True, exist_ok=True)

    def write(self, parts=None, flavor="plain", units=True, backend=False, **point) -> None:  # type: ignore[no-untyped-def]
        config = {"parts": {"flavor": flavor, "parts": parts or PARTS},
                  "checkpoints": {"enabled": True, "points": [
                      {"id": "base", "anchor_task": "parts.build", "units": units, **point}]}}
        if backend:
            config["checkpoints"]["backends"] = {"dir": {"shared": {"path": str(self.remote)}}}
            config["checkpoints"]["points"][0].update(backend="dir:shared", upload_policy="always")
        self.build.write_text(tomli_w.dumps(config))

    def built(self) -> list[str]:
        log = self.root / "parts.log"
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return sorted(lines)

    def assembled(self) -> str:
        return (self.out / "all.txt").read_text()

    def unit_objects(self) -> list[Path]:
        base = self.store / "units" / "base"
        return sorted(base.iterdir()) if base.is_dir() else []


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "remote").mkdir()
    return Workspace(tmp_path / "ws", tmp_path / "remote")


def run(gaia_cli, pm, ws: Workspace, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = gaia_cli("run", ws.build, *args, pm=pm)
    assert result.exit_code == code, result.output
    return result


@pytest.mark.parametrize("level", [1, 19])
def test_unit_objects_store_their_entry_lists_at_the_compression_level(gaia_cli, pm, ws, level):
    ws.write()
    config = tomllib.loads(ws.build.read_text())
    config["checkpoints"]["compression_level"] = level
    ws.build.write_text(tomli_w.dumps(config))
    run(gaia_cli, pm, ws)
    assert ws.unit_objects()
    packs = PackStore(ws.store)
    stored = []
    try:
        for obj in ws.unit_objects():
            manifest = json.loads(next(obj.glob("manifest*.json")).read_text())
            for part in manifest["tree"]["parts"]:
                chunk = bytes.fromhex(part["id"])
                located = packs.locate([chunk])[chunk]
                stored.append((packs.frame(chunk, located), packs.read(chunk, located, part["size"])))
    finally:
        packs.close()
    assert len(stored) >= 3 and all(frame == compress(data, level) for frame, data in stored)
    assert any(compress(data, level) != compress(data, DEFAULT_LEVEL) for _, data in stored)


def test_a_changed_part_rebuilds_it_and_its_dependants_only(gaia_cli, pm, ws):
    ws.write()
    cold = run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    assert "captured 3 unit(s)" in cold.output
    assert len(ws.unit_objects()) == 3

    ws.write(parts={**PARTS, "c": {"value": "2"}})
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["c"], warm.output
    assert "units: 2 kept, 0 restored, 1 to build" in warm.output
    assert ws.assembled() == "a=1 flavor=plain\nb=1 flavor=plain\nc=2 flavor=plain\n"

    ws.write(parts={**PARTS, "a": {"value": "2"}, "c": {"value": "2"}})
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b"]

    ws.write(parts={**PARTS, "a": {"value": "2"}, "c": {"value": "2"}}, flavor="spicy")
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]


def status(gaia_cli, pm, ws: Workspace, *args: str) -> dict:  # type: ignore[no-untyped-def]
    result = gaia_cli("checkpoints", "status", ws.build, "--json", *args, pm=pm)
    assert result.exit_code == 0, result.output
    return result.json["points"][0]


def inode(path: Path) -> int:
    return path.stat().st_ino


def test_units_restore_into_a_wiped_tree_with_their_hard_links(gaia_cli, pm, ws):
    ws.write()
    run(gaia_cli, pm, ws)
    ws.built()
    cold_b = (ws.out / "parts" / "b" / "value.txt").read_text()
    ws.write(parts={**PARTS, "c": {"value": "2"}})
    import shutil

    shutil.rmtree(ws.out)
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["c"], warm.output
    assert "units: 0 kept, 2 restored, 1 to build (2 from local store)" in warm.output
    assert (ws.out / "parts" / "b" / "value.txt").read_text() == cold_b
    # b's link to a's lib.txt is a hard link again, as the build made it
    assert inode(ws.out / "parts" / "b" / "from-a.txt") == inode(ws.out / "parts" / "a" / "lib.txt")
    assert ws.assembled() == "a=1 flavor=plain\nb=1 flavor=plain\nc=2 flavor=plain\n"


def test_a_fresh_workspace_restores_units_from_the_backend(gaia_cli, pm, ws, tmp_path):
    ws.write(backend=True)
    cold = run(gaia_cli, pm, ws)
    assert "uploaded 3 unit(s) via dir:shared" in cold.output
    other = Workspace(tmp_path / "a-much-longer-path-for-another-checkout", ws.remote)
    other.write(parts={**PARTS, "c": {"value": "2"}}, backend=True)
    before = status(gaia_cli, pm, other)
    assert before["units"]["state"] == "unknown" or (before["units"]["restore"], before["units"]["build"]) == (2, 1)
    warm = run(gaia_cli, pm, other)
    assert other.built() == ["c"], warm.output
    assert "downloaded 2 unit(s) via dir:shared" in warm.output
    assert inode(other.out / "parts" / "b" / "from-a.txt") == inode(other.out / "parts" / "a" / "lib.txt")
    assert "uploaded 1 unit(s) via dir:shared" in warm.output  # c's new unit; a and b are there


def test_status_counts_units_and_explains_the_built_ones(gaia_cli, pm, ws):
    ws.write()
    run(gaia_cli, pm, ws)
    ws.write(parts={**PARTS, "a": {"value": "2"}, "c": {"opaque": True}})
    found = status(gaia_cli, pm, ws)
    assert found["will_rebuild"] is True
    assert (found["units"]["keep"], found["units"]["restore"], found["units"]["build"]) == (0, 0, 3)
    why = {u["name"]: u["why"] for u in found["units"]["units"]}
    assert why["b"] == "its dependency 'a' is built"
    assert why["c"] == "no key: its inputs are opaque"
    text = gaia_cli("checkpoints", "status", ws.build, "--explain", pm=pm).output
    assert "units=keep:0,restore:0,build:3" in text
    assert "inputs.value: \"1\" -> \"2\"" in text, text

    ws.write(parts={**PARTS, "c": {"value": "2"}})
    found = status(gaia_cli, pm, ws)
    assert (found["units"]["keep"], found["units"]["build"]) == (2, 1)


def test_restored_units_stay_built_when_their_sources_are_written_again(gaia_cli, pm, ws):
    """A source checked out again (same content, a newer mtime) is older than the restored
    part's stamp: the mtimes of restored units end after the newest input."""
    (ws.root / "sources" / "a.txt").write_text("from a checkout\n")
    ws.write()
    run(gaia_cli, pm, ws)
    ws.built()
    import shutil
    import time

    shutil.rmtree(ws.out)
    time.sleep(0.01)
    (ws.root / "sources" / "a.txt").write_text("from a checkout\n")  # the same content, written now
    ws.write(parts={**PARTS, "c": {"value": "2"}})
    run(gaia_cli, pm, ws)
    assert ws.built() == ["c"]


def test_units_need_an_anchor_that_declares_them(gaia_cli, tmp_path):
    from checkpoint_plugin import CounterPlugin

    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(CounterPlugin(), name="counter")
    build = tmp_path / "build.toml"
    build.write_text('[counter]\nvalue = "a"\n[checkpoints]\nenabled = true\n[[checkpoints.points]]\n'
                     'id = "base"\nanchor_task = "counter.build"\nunits = true\n')
    result = gaia_cli("plan", build, pm=pm)
    assert result.exit_code == 2
    assert "checkpoints.points[0].units: anchor 'counter.build' declares no units" in result.output


def test_list_shows_units_and_gc_keeps_those_of_kept_checkpoints(gaia_cli, pm, ws):
    ws.write()
    run(gaia_cli, pm, ws)
    ws.write(parts={**PARTS, "c": {"value": "2"}})
    run(gaia_cli, pm, ws)
    assert len(ws.unit_objects()) == 4  # a, b, c=1, c=2
    listed = gaia_cli("checkpoints", "list", ws.build, "--json", pm=pm).json["points"][0]
    assert sorted(u["name"] for u in listed["local_units"]) == ["a", "b", "c", "c"]
    assert all(o["units"] == 3 for o in listed["local"])
    text = gaia_cli("checkpoints", "list", ws.build, pm=pm).output
    assert "    unit   c 2  " in text

    result = gaia_cli("checkpoints", "gc", ws.build, "--keep-last", "1", "--grace", "0s", pm=pm)
    assert result.exit_code == 0, result.output
    assert len(ws.unit_objects()) == 3  # the old c went with the checkpoint that listed it
    names = {json.loads((obj / "manifest.json").read_text())["unit"]["label"] for obj in ws.unit_objects()}
    assert names == {"1", "2"}
    assert "(no checkpoint kept lists it)" in result.output
    # what stays is whole: restore every unit into a wiped tree
    import shutil

    shutil.rmtree(ws.out)
    ws.built()
    ws.write(parts={**PARTS, "c": {"value": "3"}})
    run(gaia_cli, pm, ws)
    assert ws.built() == ["c"]


def test_a_unit_without_key_is_built_with_everything_that_depends_on_it(gaia_cli, pm, ws):
    ws.write(parts={**PARTS, "a": {"opaque": True}})
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    assert len(ws.unit_objects()) == 1  # only c has a key
    ws.write(parts={**PARTS, "a": {"opaque": True}, "c": {"value": "2"}})
    import shutil

    shutil.rmtree(ws.out)
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    assert "unit a v1 will be built: no key: its inputs are opaque" in warm.output


def remote_units(ws: Workspace) -> dict[str, list[str]]:
    """Unit key -> the manifest slots the shared store holds for it."""
    base = ws.remote / "units" / "base"
    found = {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(base.iterdir())} if base.is_dir() else {}
    return {key: slots for key, slots in found.items() if slots}  # gc leaves an emptied directory


def test_each_unit_object_is_trusted_on_its_own(gaia_cli, pm, ws, tmp_path, monkeypatch):
    result = gaia_cli("checkpoints", "keygen", "ci-main", "--dir", tmp_path / "keys", pm=pm)
    assert result.exit_code == 0, result.output
    public = (tmp_path / "keys" / "ci-main.public").read_text().strip()
    monkeypatch.setenv("GAIA_TEST_SIGNING_KEY", str(tmp_path / "keys" / "ci-main.secret"))
    parts = {**PARTS, "d": {"value": "1"}}

    def write(workspace: Workspace, **changed) -> None:  # type: ignore[no-untyped-def]
        workspace.write(parts={**parts, **changed}, backend=True)
        config = json.loads(json.dumps(__import__("tomllib").loads(workspace.build.read_text())))
        config["checkpoints"].update(trusted_public_keys=[public], signing_key_file_env="GAIA_TEST_SIGNING_KEY")
        workspace.build.write_text(tomli_w.dumps(config))

    write(ws)
    run(gaia_cli, pm, ws)
    assert all(slots == ["manifest.key.ci-main.json"] for slots in remote_units(ws).values())
    # an attacker with write access to the store edits c's unit after it was signed
    listed = {json.loads((ws.store / "units" / "base" / key / "manifest.json").read_text())["unit"]["name"]: key
              for key in remote_units(ws)}
    slot = ws.remote / "units" / "base" / listed["c"] / "manifest.key.ci-main.json"
    manifest = json.loads(slot.read_text())
    manifest["unit"]["label"] = "trust me"
    slot.write_text(json.dumps(manifest))

    other = Workspace(tmp_path / "ci", ws.remote)
    write(other, d={"value": "2"})
    warm = run(gaia_cli, pm, other)
    assert other.built() == ["c", "d"], warm.output
    assert "unit c 1 will be built: dir:shared: untrusted:bad_signature:ci-main" in warm.output
    assert "units: 0 kept, 2 restored, 2 to build" in warm.output


def test_gc_in_the_backend_removes_units_no_kept_checkpoint_lists(gaia_cli, pm, ws):
    ws.write(backend=True)
    run(gaia_cli, pm, ws)
    ws.write(parts={**PARTS, "c": {"value": "2"}}, backend=True)
    run(gaia_cli, pm, ws)
    assert len(remote_units(ws)) == 4
    result = gaia_cli("checkpoints", "gc", ws.build, "--remote", "--keep-last", "1", "--grace", "0s", "--json",
                      pm=pm)
    assert result.exit_code == 0, result.output
    assert len(result.json["remote"]["backends"]["dir:shared"]["units_removed"]) == 1
    assert len(remote_units(ws)) == 3
    listed = gaia_cli("checkpoints", "list", ws.build, "--remote", "--json", pm=pm).json["points"][0]
    assert sorted((u["name"], u["label"], u["trust"]) for u in listed["remote_units"]) == [
        ("a", "1", "unsigned"), ("b", "1", "unsigned"), ("c", "2", "unsigned")]


def test_a_remote_repack_keeps_the_units_restorable(gaia_cli, pm, ws, tmp_path):
    """c's 2 MiB of v1 die with v1; the pack v1 wrote keeps only a's and b's files (v2's and
    their unit objects'): gc repacks it, and another checkout still restores those units."""
    source = ws.root / "sources" / "c.txt"
    source.write_text(os.urandom(1 << 20).hex() + "\n")
    ws.write(backend=True)
    run(gaia_cli, pm, ws)
    v1_whole = max((ws.remote / "packs").glob("*.pack"), key=lambda p: p.stat().st_size)  # (the units' own
    # pack holds their entry lists, which stay)
    v2 = {**PARTS, "c": {"value": "2"}}
    source.write_text(os.urandom(1 << 20).hex() + "\n")
    shutil.rmtree(ws.out)  # a fresh all.txt: v1's is dead too
    ws.write(parts=v2, backend=True)
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c", "c"]  # v1's three, then c again (a and b restored)
    result = gaia_cli("checkpoints", "gc", ws.build, "--remote", "--keep-last", "1", "--grace", "0s", "--json",
                      pm=pm)
    assert result.exit_code == 0, result.output
    assert result.json["remote"]["backends"]["dir:shared"]["packs_repacked"] >= 1
    assert not v1_whole.exists()
    other = Workspace(tmp_path / "other", ws.remote)
    (other.root / "sources" / "c.txt").write_text(source.read_text())
    other.write(parts={**v2, "c": {"value": "3"}}, backend=True)
    warm = run(gaia_cli, pm, other)
    assert other.built() == ["c"], warm.output  # a and b came from the backend
    assert "downloaded 2 unit(s) via dir:shared" in warm.output
    assert inode(other.out / "parts" / "b" / "from-a.txt") == inode(other.out / "parts" / "a" / "lib.txt")


def test_use_policy_off_restores_no_unit_but_still_rebuilds_what_changed(gaia_cli, pm, ws):
    ws.write(use_policy="off")
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    ws.write(parts={**PARTS, "c": {"value": "2"}}, use_policy="off")
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["c"], warm.output  # c's directory held another key: it is removed
    import shutil

    shutil.rmtree(ws.out)
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]  # nothing restored


# -- a restore of units that fails leaves the tree as a clean build finds it ---------------------


def tree_of(root: Path) -> dict[str, str]:
    """Every file below ``root`` (relative path -> content), gaia's own markers left out."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".gaia")}


def cold_tree(gaia_cli, pm, root: Path, parts) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The tree of a build in a fresh workspace with these parts, checkpoints off."""
    cold = Workspace(root, root.parent / "unused-remote")
    cold.write(parts=parts, use_policy="off")
    run(gaia_cli, pm, cold)
    return tree_of(cold.out)


def corrupt_chunk(store: Path, chunk: bytes) -> None:
    from gaia_core.checkpoints.packstore import PackStore

    packs = PackStore(store)
    location = packs.locate([chunk])[chunk]
    path = packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[location.offset + location.clen // 2] ^= 0x20
    path.write_bytes(raw)


def test_a_unit_object_corrupt_mid_restore_leads_to_a_full_build(gaia_cli, pm, ws, tmp_path):
    ws.write()
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    keys = {json.loads((obj / "manifest.json").read_text())["unit"]["name"]: obj for obj in ws.unit_objects()}
    part = json.loads((keys["b"] / "manifest.json").read_text())["tree"]["parts"][0]["id"]
    corrupt_chunk(ws.store, bytes.fromhex(part))  # b's entry list, read once a and c are in place
    shutil.rmtree(ws.out / "parts" / "b")  # b is restored, a and c are kept
    changed = {**PARTS, "c": {"value": "2"}}
    ws.write(parts=changed)
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"], warm.output  # a, kept before the failure, is built too
    assert "units could not be restored: local pack" in warm.output and "builds every unit" in warm.output
    assert tree_of(ws.out) == cold_tree(gaia_cli, pm, tmp_path / "cold", changed)
    # b's damaged object is captured again: the next miss restores it
    assert "captured 2 unit(s)" in warm.output, warm.output
    shutil.rmtree(ws.out)
    ws.write(parts={**PARTS, "c": {"value": "3"}})
    run(gaia_cli, pm, ws)
    assert ws.built() == ["c"]


class UnreadableParts(parts_plugin.PartsAnchor):
    """The parts anchor whose units cannot be read while ``units-unreadable`` is in the
    workspace (as Buildroot's when ``make show-info`` fails); the build itself works."""

    def units(self):  # type: ignore[no-untyped-def]
        from gaia_core.errors import CheckpointError

        if (self.build.workspace.root / "units-unreadable").exists():
            raise CheckpointError("the unit list could not be read")
        return super().units()


class UnreadablePartsPlugin:
    @staticmethod
    @hookimpl
    def gaia_register_modules():  # type: ignore[no-untyped-def]
        return [parts_plugin.PartsModule]

    @staticmethod
    @hookimpl
    def gaia_register_anchors():  # type: ignore[no-untyped-def]
        return [UnreadableParts]


def test_units_that_cannot_be_read_leave_no_stale_part_for_the_build(gaia_cli, ws, tmp_path):
    """parts.build, like make, takes a part whose stamp is in place as built: a changed value
    would stay stale if the tree kept it."""
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(UnreadablePartsPlugin(), name="parts")
    ws.write()
    run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"]
    changed = {**PARTS, "c": {"value": "2"}}
    ws.write(parts=changed)
    (ws.root / "units-unreadable").write_text("")
    warm = run(gaia_cli, pm, ws)
    assert ws.built() == ["a", "b", "c"], warm.output
    assert ("units could not be restored: the unit list could not be read; removed what a clean build does not "
            "find") in warm.output
    assert tree_of(ws.out) == cold_tree(gaia_cli, pm, tmp_path / "cold", changed)
    assert not (ws.out / ".gaia-units.json").exists()


def test_unit_objects_reuse_the_whole_trees_chunks(gaia_cli, pm, ws):
    """A unit costs its entry list: every chunk of its files is one the whole checkpoint
    stored, in the packs it wrote, and the units' capture writes only their entry lists."""
    from gaia_core.checkpoints import tree
    from gaia_core.checkpoints.packstore import PackStore

    (ws.root / "sources" / "a.txt").write_text(os.urandom(1 << 20).hex() + "\n")  # 2 MiB in a's value.txt
    ws.write()
    run(gaia_cli, pm, ws)
    packs = PackStore(ws.store)
    try:
        [whole_dir] = (ws.store / "points" / "base").iterdir()
        whole = json.loads((whole_dir / "manifest.json").read_text())
        whole_chunks = {chunk for chunk, _ in tree.chunks(packs, whole)}
        whole_packs = {location.pack for location in packs.locate(list(whole_chunks)).values()}
        units = [json.loads((obj / "manifest.json").read_text()) for obj in ws.unit_objects()]
        assert len(units) == 3
        entry_lists = set()
        for unit in units:
            parts = {chunk for chunk, _ in tree.parts(unit)}
            data = {chunk for chunk, _ in tree.chunks(packs, unit)} - parts
            assert data and data <= whole_chunks, unit["unit"]["name"]
            assert {location.pack for location in packs.locate(list(data)).values()} <= whole_packs
            entry_lists |= parts
        written = set(packs.local_packs()) - whole_packs  # by the units' capture
        assert written == {location.pack for location in packs.locate(list(entry_lists)).values()} - whole_packs
        new_bytes = sum(packs.local_packs()[pack] for pack in written)
        files_bytes = sum(unit["tree"]["size"] for unit in units)
        assert files_bytes > 2 << 20
        assert 0 < new_bytes < files_bytes / 1000, (new_bytes, files_bytes)
    finally:
        packs.close()


def test_a_tree_that_cannot_be_cleared_after_a_failed_restore_of_units_stops_the_run(gaia_cli, pm, ws):
    """Correct, or not used: building on parts of other inputs is no option."""
    ws.write()
    run(gaia_cli, pm, ws)
    ws.built()
    marker = ws.out / ".gaia-units.json"
    marker.unlink()
    marker.mkdir()  # neither written (the restore fails) nor removed (the clearing fails)
    ws.write(parts={**PARTS, "c": {"value": "2"}})
    result = gaia_cli("run", ws.build, pm=pm)
    assert result.exit_code != 0, result.output
    assert "and the tree could not be cleared for a full build" in result.output, result.output
    assert ws.built() == []


def test_a_restore_of_units_starts_its_helpers_at_once_from_the_files_its_units_list(
        gaia_cli, pm, ws, restore_helpers):
    from gaia_core.checkpoints import treewrite

    ws.write()
    run(gaia_cli, pm, ws)
    ws.write(parts={**PARTS, "c": {"value": "2"}})
    shutil.rmtree(ws.out)
    warm = run(gaia_cli, pm, ws)
    assert "2 restored" in warm.output
    assert [h._depth for h in restore_helpers] == [treewrite._DEPTH] and restore_helpers[0].batches > 0
    assert ws.assembled() == "a=1 flavor=plain\nb=1 flavor=plain\nc=2 flavor=plain\n"
