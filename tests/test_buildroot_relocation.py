"""The quickstart's test tree with an external toolchain, checkpointed into a ``dir`` backend
and restored in a workspace at another path: relocated, up to date for ``make``, and its
compiler wrapper works with the first workspace gone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from buildroot_repo import make_external_toolchain
from hostile import object_dirs, read_manifest, slots
from test_buildroot_checkpoints import QUICKSTART, Quickstart, gaia, status

PREFIX = "x86_64-linux"


def workspace(root: Path, toolchain: Path, shared: Path) -> Quickstart:
    shutil.copytree(QUICKSTART, root, symlinks=True, ignore=shutil.ignore_patterns("build", "out"))
    (root / "layers" / "toolchain.toml").write_text(
        "[buildroot.symbols]\nTOOLCHAIN_EXTERNAL = true\nTOOLCHAIN_EXTERNAL_CUSTOM = true\n"
        f'TOOLCHAIN_EXTERNAL_PREINSTALLED = true\nTOOLCHAIN_EXTERNAL_PATH = "{toolchain}"\n'
        f'TOOLCHAIN_EXTERNAL_CUSTOM_PREFIX = "{PREFIX}"\n'
        f'\n[checkpoints.backends.dir.team]\npath = "{shared}"\n'
        '\n[[checkpoints.points]]\nid = "base-os"\nanchor_task = "buildroot.build"\nbackend = "dir:team"\n'
        'upload_policy = "always"\n'
    )
    build = root / "build.toml"
    text = build.read_text().replace('"layers/checkpoints.toml"]', '"layers/toolchain.toml"]')
    text = text.replace("[checkpoints]\nenabled = true\n", "")
    build.write_text(text.replace("imports = [", 'imports = ["layers/checkpoints-on.toml", ', 1))
    (root / "layers" / "checkpoints-on.toml").write_text("[checkpoints]\nenabled = true\n")
    return Quickstart(root)


@pytest.fixture
def team(tmp_path: Path):  # type: ignore[no-untyped-def]
    toolchain = make_external_toolchain(tmp_path / "opt" / "vendor-toolchain", prefix=PREFIX)
    shared = tmp_path / "team-cache"
    shared.mkdir()
    return toolchain, shared


def make(qs: Quickstart, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(qs.root / "buildroot-tree"), f"O={qs.out}", target],
                          capture_output=True, text=True, check=True)


@pytest.mark.parametrize("name", ["ci", "builds/ci-runner-with-a-much-longer-checkout-path"])
def test_a_checkpoint_restores_up_to_date_in_a_workspace_at_another_path(gaia_cli, tmp_path, team, name):
    toolchain, shared = team
    laptop = workspace(tmp_path / "home" / "dev" / "laptop-ws", toolchain, shared)
    gaia(gaia_cli, "run", laptop.build)
    built = laptop.compile_log()
    assert built, "the first workspace builds"
    [obj] = object_dirs(shared, "base-os")
    assert slots(obj) == ["manifest.json"] and (shared / "packs").is_dir()
    manifest = read_manifest(obj)
    assert manifest["prerequisites"] == [str(toolchain / "bin")]
    assert {e["kind"] for e in manifest["embedded"]} >= {"text", "binary"}

    runner = workspace(tmp_path / name, toolchain, shared)
    st = status(gaia_cli, runner)
    assert st["fingerprint"] == manifest["fingerprint"] and st["reason"] == "remote_hit"
    parked = laptop.root.with_name("parked")
    laptop.root.rename(parked)  # nothing may fall back to the first workspace
    try:
        result = gaia(gaia_cli, "run", runner.build)
        assert "restored" in result.output and "relocated" in result.output
        assert runner.compile_log() == built  # restored, not rebuilt: the log came with the tree
        finalize = make(runner, "target-finalize")
        assert runner.compile_log() == built, finalize.stdout  # make runs no package step
        wrapper = runner.out / "host" / "bin" / f"{PREFIX}-gcc"
        assert os.readlink(wrapper) == "toolchain-wrapper"
        assert os.readlink(runner.out / "host" / "bin" / f"{PREFIX}-ar") == f"{toolchain}/bin/{PREFIX}-ar"
        (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("hello");return 0;}\n')
        subprocess.run([str(wrapper), str(tmp_path / "hello.c"), "-o", str(tmp_path / "hello")], check=True)
        assert subprocess.run([str(tmp_path / "hello")], capture_output=True, text=True).stdout == "hello\n"
        old = str(tmp_path / "home" / "dev" / "laptop-ws").encode()
        leftovers = [p for p in runner.out.rglob("*") if p.is_file() and not p.is_symlink() and old in p.read_bytes()]
        # the out dir is padded to one length in every workspace: binaries are rewritten too
        assert leftovers == []
        assert "as captured" not in result.output
        captured_out = manifest["roots"]["buildroot.out_dir"]
        assert len(captured_out) == len(str(runner.out.resolve())) == 192
        binaries = [e["path"] for e in manifest["embedded"] if e["kind"] == "binary"]
        assert binaries
        for member in binaries:
            data = (runner.out / member.split("/", 1)[1]).read_bytes()
            assert str(runner.out.resolve()).encode() in data and captured_out.encode() not in data
    finally:
        parked.rename(laptop.root)


def test_a_missing_toolchain_is_a_missing_prerequisite(gaia_cli, tmp_path, team):
    toolchain, shared = team
    laptop = workspace(tmp_path / "laptop", toolchain, shared)
    gaia(gaia_cli, "run", laptop.build)
    runner = workspace(tmp_path / "runner", toolchain, shared)
    toolchain.rename(toolchain.with_name("elsewhere"))
    try:
        st = status(gaia_cli, runner)
        assert st["reason"] == f"missing_prerequisite:{toolchain}/bin" and st["will_download"] is False
    finally:
        toolchain.with_name("elsewhere").rename(toolchain)
