"""Padded directories on a real Buildroot build with busybox (issue 19, point 1).

The out dir and gaia's Buildroot clone live in padded directories of one path length
(``workspace.padded_length``), behind the links ``build/buildroot/output`` and ``src``. A
checkpoint captured in a short workspace then restores in a longer one and in a shorter one
with every embedded path rewritten, binaries included (the RUNPATH of
``build/host-patchelf-custom/src/patchelf``), no package step, and no WARN.

Environment: ``GAIA_REAL_BUILDROOT_REPO`` (required, as for ``test_real_buildroot.py``),
``GAIA_REAL_BUILDROOT_BUSYBOX_VERSION`` (default ``gaia-acceptance-busybox``),
``GAIA_REAL_BUILDROOT_BUSYBOX_DEFCONFIG`` (default ``gaiatest_busybox_defconfig``),
``GAIA_REAL_BUILDROOT_DL_DIR`` (default ``/opt/br-offline-src/dl``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_real_buildroot import (
    POINT,
    POST_IMAGE,
    REPO,
    Run,
    files_naming,
    gaia,
    out_dir,
    run,
    status,
    target_finalize,
)

from gaia_core.config.loader import load_build

pytestmark = pytest.mark.real_buildroot

VERSION = os.environ.get("GAIA_REAL_BUILDROOT_BUSYBOX_VERSION", "gaia-acceptance-busybox")
DEFCONFIG = os.environ.get("GAIA_REAL_BUILDROOT_BUSYBOX_DEFCONFIG", "gaiatest_busybox_defconfig")
DL_DIR = os.environ.get("GAIA_REAL_BUILDROOT_DL_DIR", "/opt/br-offline-src/dl")
#: the one binary of this build that embeds the out dir (its RUNPATH)
PATCHELF = "build/host-patchelf-custom/src/patchelf"
KEY = "gaia-acceptance"

BUILD_TOML = """\
[buildroot]
repo = "{repo}"
version = "{version}"
defconfig = "{defconfig}"
download_dir = "{dl_dir}"

[buildroot.symbols]
ROOTFS_POST_IMAGE_SCRIPT = "{post_image}"

[checkpoints]
enabled = true
trusted_public_keys = ["{public}"]
signing_key_file_env = "ACCEPTANCE_SIGNING_KEY"

[checkpoints.backends.dir.remote]
path = "{remote}"

[[checkpoints.points]]
id = "{point}"
anchor_task = "buildroot.build"
backend = "dir:remote"
upload_policy = "always"
"""


@dataclasses.dataclass
class Captured:
    base: Path
    ws: Path
    build_toml: str
    manifest: dict
    cold: Run


_WARN = re.compile(r"^(\[[^\]]+\] )?WARN: ")


def warnings(result: Run) -> list[str]:
    """gaia's own warnings (``WARN: ...``, also inside a task's log), not Buildroot's output."""
    return [line for line in result.text.splitlines() if _WARN.match(line)]


def checkout(base: Path, name: str, build_toml: str) -> Path:
    """A fresh checkout of the build file: gaia clones Buildroot itself, so every source
    file is newer than the checkpoint (a CI runner; issue 16 keeps the restored tree up to
    date for make all the same)."""
    ws = base / name
    ws.mkdir(parents=True)
    (ws / "build.toml").write_text(build_toml)
    return ws


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory, measured: list[str]) -> Iterator[Captured]:
    """A workspace built cold, its checkpoint signed by a key every build file trusts."""
    base = tmp_path_factory.mktemp("padded")
    keys, remote, tools = base / "keys", base / "remote", base / "tools"
    remote.mkdir()
    tools.mkdir()
    post_image = tools / "rootfs-tar.sh"
    post_image.write_text(POST_IMAGE)
    post_image.chmod(0o755)
    gaia(base, "checkpoints", "keygen", KEY, "--dir", str(keys)).ok()
    build_toml = BUILD_TOML.format(
        repo=REPO, version=VERSION, defconfig=DEFCONFIG, dl_dir=DL_DIR, post_image=post_image,
        public=(keys / f"{KEY}.public").read_text().strip(), remote=remote, point=POINT,
    )
    ws = base / "ws-a"  # the restores below go to a longer and a shorter path
    ws.mkdir()
    (ws / "build.toml").write_text(build_toml)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ACCEPTANCE_SIGNING_KEY", str(keys / f"{KEY}.secret"))
        cold = gaia(ws, "run", "build.toml").ok()
        assert cold.package_steps and "captured" in cold.text, cold.text[-4000:]
        [manifest_path] = (ws / "build" / "checkpoints" / "points" / POINT).glob("*/manifest.json")
        manifest = json.loads(manifest_path.read_text())
        embedded = manifest["embedded"]
        measured.append(
            f"padded: cold build in {ws} ({len(str(ws))} chars): {cold.seconds:.1f} s, "
            f"{len(cold.package_steps)} package steps; "
            f"packed {manifest['tree']['packed'] / 2**20:.1f} MiB, {manifest['tree']['entries']} entries, "
            f"{len(embedded)} embed a root ({sum(e['kind'] == 'binary' for e in embedded)} binary)"
        )
        yield Captured(base, ws, build_toml, manifest, cold)


def test_the_out_dir_and_the_clone_are_padded_behind_the_known_links(captured: Captured) -> None:
    workspace = load_build(captured.ws / "build.toml").workspace
    for name in ("output", "src"):
        link = captured.ws / "build" / "buildroot" / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == workspace.padded_dir(f"buildroot/{name}")
    roots = captured.manifest["roots"]
    assert len(roots["buildroot.out_dir"]) == len(roots["buildroot.src_dir"]) == workspace.padded_length
    binaries = {e["path"]: e["roots"] for e in captured.manifest["embedded"] if e["kind"] == "binary"}
    assert binaries.get(f"buildroot_out_dir/{PATCHELF}") == ["buildroot.out_dir"], binaries
    assert warnings(captured.cold) == [], warnings(captured.cold)


@pytest.mark.parametrize("name", ["ws-a-checked-out-again-at-a-much-longer-path-of-a-ci-runner", "s"])
def test_a_restore_at_another_path_rewrites_every_embedded_path(
    captured: Captured, measured: list[str], name: str
) -> None:
    ws = checkout(captured.base, name, captured.build_toml)
    before = status(ws)  # gaia has not cloned Buildroot here yet
    assert before["fingerprint"] == "unknown" and "buildroot.fetch" in (before["pending"] or ""), before

    restored = gaia(ws, "run", "build.toml").ok()
    assert status(ws)["signer"] == KEY  # the object restored is the one the trusted key signed
    assert "restored" in restored.text and "SKIP: buildroot.build" in restored.text, restored.text[-4000:]
    assert restored.package_steps == [], restored.package_steps
    assert warnings(restored) == [], warnings(restored)
    assert "as captured" not in restored.text
    relocated = re.search(r"relocated (\d+) file\(s\)", restored.text)
    assert relocated, restored.text[-4000:]

    old_out = captured.manifest["roots"]["buildroot.out_dir"]
    new_out = str(out_dir(ws).resolve())
    assert len(new_out) == len(old_out)
    patchelf = (out_dir(ws) / PATCHELF).read_bytes()
    assert new_out.encode() + b"/host/lib" in patchelf and old_out.encode() not in patchelf
    assert run([str(out_dir(ws) / PATCHELF), "--version"], cwd=ws).ok().out.startswith("patchelf")
    assert files_naming(out_dir(ws), str(captured.ws)) == []

    by_hand = target_finalize(ws)
    assert by_hand.package_steps == [], by_hand.package_steps
    measured.append(
        f"padded: restore in {ws} ({len(str(ws))} chars vs {len(str(captured.ws))}): run {restored.seconds:.1f} s "
        f"(restore {restored.task_seconds('checkpoints.restore.buildroot-build')} s, collect "
        f"{restored.task_seconds('buildroot.collect')} s), 0 package steps, relocated {relocated.group(1)} "
        f"file(s) and link(s), {PATCHELF} rewritten at equal length ({len(new_out)} chars), no WARN; nothing "
        f"names the old workspace; make target-finalize by hand {by_hand.seconds:.1f} s, 0 package steps"
    )
