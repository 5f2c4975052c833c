"""Relocation: a checkpoint captured in one workspace restores in another at a different path."""

from __future__ import annotations

import os
import shutil

import pytest
from counter_project import Project, run, status
from hostile import object_dirs, read_manifest
from mtime_order import filesystem_now, mtimes, ranks


def captured(gaia_cli, pm, tmp_path, name: str, **options) -> Project:  # type: ignore[no-untyped-def]
    """A workspace at ``tmp_path/name`` that captured and uploaded to ``tmp_path/shared``."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    project = Project(tmp_path / name, shared=shared)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', embed_root=True, **options)
    run(gaia_cli, pm, "run", project.build)
    return project


def elsewhere(tmp_path, source: Project, name: str) -> Project:  # type: ignore[no-untyped-def]
    """A checkout of the same build file at another path, with nothing built yet."""
    other = Project(tmp_path / name, shared=source.shared)
    shutil.copy(source.build, other.build)
    return other


@pytest.mark.parametrize("name", ["w", "a-much-longer-workspace-name"])
def test_a_checkpoint_restores_in_a_workspace_at_another_path(gaia_cli, pm, tmp_path, name):
    first = captured(gaia_cli, pm, tmp_path, "ws-original", binary_in_scratch=True)
    second = elsewhere(tmp_path, first, name)
    assert status(gaia_cli, pm, second)["fingerprint"] == status(gaia_cli, pm, first)["fingerprint"]
    result = run(gaia_cli, pm, "run", second.build)
    assert second.builds() == 0, result.output  # restored, not built
    assert (second.out / "config.mk").read_text() == f"OUT := {second.out}\nROOT := {second.root}\n"
    assert os.readlink(second.out / "abs-link") == f"{second.out}/value.txt"
    assert os.readlink(second.out / "link") == "value.txt"  # relative links stay as they are
    tool = (second.out / "scratch" / "tool.bin").read_bytes()
    if len(str(second.root)) <= len(str(first.root)):
        assert str(first.root).encode() not in tool and tool.count(b"/") > 0
        assert os.fsencode(second.out).lstrip(b"/") in tool
    else:
        assert str(first.root).encode() in tool  # cannot grow a binary: kept, said without a WARN
        [kept] = [line for line in result.output.splitlines() if "as captured" in line]
        assert "kept 1 file(s) as captured" in kept and kept.endswith("counter_out/scratch/tool.bin")
        assert "WARN" not in kept


#: gaia's marker and receipt of the tree, and what a later task wrote into it
NOT_CAPTURED = (".gaia-checkpoint.json", ".gaia-receipt.jsonl.zst", "consumed.txt")


def test_relocated_files_keep_the_order_of_their_mtimes_to_the_nanosecond(gaia_cli, pm, tmp_path):
    first = captured(gaia_cli, pm, tmp_path, "ws-original")
    skip = NOT_CAPTURED
    before = mtimes(first.out, skip)
    assert any(m % 1_000_000_000 for m in before.values()), "the test tree needs sub-second mtimes"
    second = elsewhere(tmp_path, first, "ws-moved")
    run(gaia_cli, pm, "run", second.build)
    after = mtimes(second.out, skip)
    assert ranks(after) == ranks(before)
    assert max(after.values()) <= filesystem_now(second.out)


def test_a_binary_that_must_move_but_cannot_is_built_once_there_and_stored_as_a_variant(gaia_cli, pm, tmp_path):
    first = captured(gaia_cli, pm, tmp_path, "ws")  # tool.bin under sub/: relocation required
    second = elsewhere(tmp_path, first, "ws-with-a-longer-path")
    st = status(gaia_cli, pm, second)
    assert st["reason"] == "not_relocatable:counter_out/sub/tool.bin" and st["will_rebuild"] is True
    assert st["signer"] == "unsigned" and st["variant"]  # the refused object's signer; the variant to store
    result = run(gaia_cli, pm, "run", second.build)
    assert second.builds() == 1
    said = result.output
    assert "in dir:shared cannot be used at this path (not_relocatable:counter_out/sub/tool.bin)" in said
    assert f"stored as {st['variant'][:12]}, the variant of {st['fingerprint'][:12]} for this path" in said
    assert not [line for line in said.splitlines() if "WARN" in line and "checkpoint:base" in line], said
    variants = [m for m in map(read_manifest, object_dirs(first.shared)) if m.get("variant_of")]
    assert [m["fingerprint"] for m in variants] == [st["variant"]]  # uploaded beside the first object
    assert variants[0]["variant_of"] == {"fingerprint": st["fingerprint"], "parent": st["fingerprint"],
                                         "reason": "not_relocatable:counter_out/sub/tool.bin"}

    # a fresh checkout at that path (a CI runner's next job) hits the variant in the shared store
    shutil.rmtree(second.root)
    again = elsewhere(tmp_path, first, "ws-with-a-longer-path")
    st = status(gaia_cli, pm, again)
    assert (st["will_use"], st["will_download"], st["tier"], st["reason"]) == (True, True, "dir:shared", "remote_hit")
    result = run(gaia_cli, pm, "run", again.build)
    assert again.builds() == 0, result.output
    assert "looking for the variant built for it" in result.output and "restored" in result.output
    # and the workspace where the first object was built still uses that one
    shutil.rmtree(first.out)
    shutil.rmtree(first.store)
    run(gaia_cli, pm, "run", first.build)
    assert first.builds() == 1 and status(gaia_cli, pm, first)["variant"] is None
    # later runs at the longer path know the variant in place without asking a store about the
    # first object (gone from the shared store here)
    shutil.rmtree(first.shared)
    first.shared.mkdir()
    st = status(gaia_cli, pm, again)
    assert (st["will_use"], st["will_rebuild"], st["reason"]) == (True, False, "hit") and st["variant"], st
    result = run(gaia_cli, pm, "run", again.build)
    assert again.builds() == 0 and f"already holds {st['fingerprint'][:12]}" not in result.output
    assert "already holds" in result.output and "looking for the variant" not in result.output, result.output


def test_a_local_object_unusable_after_the_workspace_moved_leads_to_a_variant_for_the_new_path(
        gaia_cli, pm, tmp_path):
    first = captured(gaia_cli, pm, tmp_path, "ws")
    moved = Project(tmp_path / "ws-moved-to-a-longer-path", shared=first.shared)
    first.root.rename(moved.root)  # its local store moves along
    shutil.rmtree(moved.out)
    result = run(gaia_cli, pm, "run", moved.build)
    assert moved.builds() == 2, result.output  # built again: the local object cannot move here
    assert "in local store cannot be used at this path (not_relocatable:counter_out/sub/tool.bin)" in result.output
    assert "the variant of" in result.output and "runs here use it from now on" in result.output
    run(gaia_cli, pm, "run", moved.build)
    assert moved.builds() == 2  # in place
    shutil.rmtree(moved.out)
    result = run(gaia_cli, pm, "run", moved.build)
    assert moved.builds() == 2, result.output  # restored from the local store: the variant
    assert "restored" in result.output


def test_a_restore_at_the_same_path_rewrites_nothing(gaia_cli, pm, tmp_path):
    first = captured(gaia_cli, pm, tmp_path, "ws")
    shutil.rmtree(first.store)
    shutil.rmtree(first.out)
    result = run(gaia_cli, pm, "run", first.build)
    assert first.builds() == 1 and "relocated" not in result.output


def test_paths_a_symlinked_workspace_embeds_in_resolved_form_are_relocated(gaia_cli, pm, tmp_path):
    real = tmp_path / "disk" / "ws-real"
    real.mkdir(parents=True)
    (tmp_path / "ws-link").symlink_to(real)
    shared = tmp_path / "shared"
    shared.mkdir()
    first = Project(tmp_path / "ws-link", shared=shared)
    first.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"', embed_root=True,
                binary_in_scratch=True)
    run(gaia_cli, pm, "run", first.build)
    [remote] = object_dirs(shared)
    roots = read_manifest(remote)["roots"]
    assert roots["workspace"] == str(tmp_path / "ws-link") and roots["workspace:real"] == str(real)
    second = elsewhere(tmp_path, first, "plain-ws")
    run(gaia_cli, pm, "run", second.build)
    assert second.builds() == 0
    assert (second.out / "canonical.mk").read_text() == f"BASE_DIR := {second.out}\n"
    assert (second.out / "config.mk").read_text() == f"OUT := {second.out}\nROOT := {second.root}\n"


def test_retention_keeps_the_variant_of_the_current_fingerprint_beside_it(gaia_cli, pm, tmp_path):
    first = captured(gaia_cli, pm, tmp_path, "ws")
    moved = Project(tmp_path / "ws-moved-to-a-longer-path", shared=first.shared)
    first.root.rename(moved.root)
    shutil.rmtree(moved.out)
    run(gaia_cli, pm, "run", moved.build)  # builds, stores the variant for this path
    result = gaia_cli("checkpoints", "gc", moved.build, "--keep-last", "1", "--remote", "--grace", "0s", pm=pm)
    assert result.exit_code == 0, result.output
    assert len(object_dirs(moved.store)) == 2 and len(object_dirs(moved.shared)) == 2, result.output
    listed = gaia_cli("checkpoints", "list", moved.build, pm=pm).output
    assert len([line for line in listed.splitlines() if line.endswith("(current)")]) == 2, listed
    assert "(variant of " in listed
    shutil.rmtree(moved.out)
    run(gaia_cli, pm, "run", moved.build)
    assert moved.builds() == 2  # the variant, kept by gc as current, restored
