"""A checkpoint restored in a fresh clone, on real Buildroot with a kconfig package (issue 16).

The busybox build of ``shared/real-buildroot`` (tag ``gaia-acceptance-busybox``,
``gaiatest_busybox_defconfig``). The user's repository holds the build file, an asset and a
BR2_EXTERNAL tree with a busybox config fragment (``BR2_PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES``):
both ``package/busybox/busybox.config`` of gaia's fresh Buildroot clone and that fragment
are make prerequisites of busybox's ``.stamp_dotconfig``, and both are newer than any
checkpoint in a fresh clone.

1. workspace A, a ``git clone`` of that repository, builds cold and uploads to a ``dir``
   backend; its stage files with modes 0600, 0700, 0755, 4755 have those modes in
   ``target/`` and in ``images/rootfs.tar``;
2. A is moved away; workspace B, a new ``git clone`` at another (longer) path, restores from
   the backend: 0 package steps, ``make target-finalize`` by hand afterwards runs none
   either, and its image is identical in content (paths, modes, sha256) to A's;
3. a second run in B, nothing changed, skips collect's ``make target-post-image``.

Environment: ``GAIA_REAL_BUILDROOT_REPO`` (required); this file always builds the busybox
tag and defconfig, with ``/opt/br-offline-src/dl`` as the download dir
(``GAIA_REAL_BUILDROOT_DL_DIR`` overrides it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared helpers' dir
from test_real_buildroot import POINT, REPO, Run, gaia, out_dir, target_finalize  # noqa: E402

pytestmark = pytest.mark.real_buildroot

VERSION = "gaia-acceptance-busybox"
DEFCONFIG = "gaiatest_busybox_defconfig"
DL_DIR = os.environ.get("GAIA_REAL_BUILDROOT_DL_DIR", "/opt/br-offline-src/dl")

BUILD_TOML = """\
[buildroot]
repo = "{repo}"
version = "{version}"
defconfig = "{defconfig}"
download_dir = "{dl_dir}"
external = ["br2-external"]

[buildroot.symbols]
TARGET_GENERIC_HOSTNAME = "gaia-fresh-clone"
PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES = "$(BR2_EXTERNAL_GAIATEST_PATH)/board/busybox.fragment"

[checkpoints]
enabled = true

[checkpoints.backends.dir.remote]
path = "{remote}"

[[checkpoints.points]]
id = "{point}"
anchor_task = "buildroot.build"
backend = "dir:remote"
upload_policy = "always"

[[stage.files]]
dst = "/etc/motd"
src = "assets/motd"
mode = 0o644

[[stage.files]]
dst = "/etc/gaia/secret.key"
content = "not for everyone"
mode = 0o600

[[stage.files]]
dst = "/usr/libexec/gaia-private"
content = "#!/bin/sh\\necho private\\n"
mode = 0o700

[[stage.files]]
dst = "/usr/bin/gaia-tool"
content = "#!/bin/sh\\necho tool\\n"
mode = 0o755

[[stage.files]]
dst = "/usr/bin/gaia-setuid"
content = "#!/bin/sh\\necho setuid\\n"
mode = 0o4755
"""

STAGE_MODES = {
    "etc/motd": 0o644,
    "etc/gaia/secret.key": 0o600,
    "usr/libexec/gaia-private": 0o700,
    "usr/bin/gaia-tool": 0o755,
    "usr/bin/gaia-setuid": 0o4755,
}
FRAGMENT = "# from the user's BR2_EXTERNAL tree\nCONFIG_FEATURE_EDITING_HISTORY=64\n"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "gaia acceptance", "GIT_AUTHOR_EMAIL": "acceptance@gaia.invalid",
    "GIT_COMMITTER_NAME": "gaia acceptance", "GIT_COMMITTER_EMAIL": "acceptance@gaia.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True)
    return done.stdout


def user_repository(base: Path, remote: Path) -> Path:
    """The user's repository: build file, asset, external tree with the busybox fragment."""
    repo = base / "user-repo"
    (repo / "assets").mkdir(parents=True)
    (repo / "build.toml").write_text(BUILD_TOML.format(
        repo=REPO, version=VERSION, defconfig=DEFCONFIG, dl_dir=DL_DIR, remote=remote, point=POINT))
    (repo / "assets" / "motd").write_text("Welcome to a fresh clone (gaia acceptance).\n")
    ext = repo / "br2-external"
    (ext / "board").mkdir(parents=True)
    (ext / "external.desc").write_text("name: GAIATEST\ndesc: the user's own tree (gaia acceptance)\n")
    (ext / "Config.in").write_text("")
    (ext / "external.mk").write_text("")
    (ext / "board" / "busybox.fragment").write_text(FRAGMENT)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", "the product")
    return repo


def clone(repo: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(dest.parent, "clone", "--quiet", str(repo), str(dest))
    return dest


def image_content(ws: Path) -> dict[str, tuple]:
    """Path -> (type, mode, uid, gid, link target, sha256) of every member of the image."""
    found = {}
    with tarfile.open(ws / "out" / "build" / "images" / "rootfs.tar") as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            found[member.name.removeprefix("./")] = (
                member.type, member.mode, member.uid, member.gid, member.linkname, hashlib.sha256(data).hexdigest())
    return found


def seconds(result: Run, task: str) -> str:
    """A task's wall time from its ``DONE:`` line (``412ms``, ``9.3s``, ``2m41s``)."""
    found = re.search(rf"^DONE: {re.escape(task)} \((?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)(ms|s))?\)", result.text, re.M)
    if not found:
        return "?"
    hours, minutes, value, unit = found.groups()
    total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(value or 0) / (1000 if unit == "ms" else 1)
    return f"{total:.1f}"


def modes_in(root: Path) -> dict[str, str]:
    return {rel: oct((root / rel).lstat().st_mode & 0o7777) for rel in STAGE_MODES}


@dataclasses.dataclass
class Clones:
    base: Path
    repo: Path
    ws_a: Path
    cold: Run
    image_a: dict[str, tuple]


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory, measured: list[str]) -> Clones:
    base = tmp_path_factory.mktemp("fresh-clone")
    remote = base / "remote"
    remote.mkdir()
    repo = user_repository(base, remote)
    ws_a = clone(repo, base / "ws-a")
    cold = gaia(ws_a, "run", "build.toml").ok()
    assert "captured" in cold.text and "uploaded" in cold.text, cold.text[-4000:]
    busybox = [line for line in cold.package_steps if " busybox " in line]
    assert busybox, "the cold build builds busybox"
    dotconfig = next((out_dir(ws_a) / "build").glob("busybox-*/.config")).read_text()
    assert "CONFIG_FEATURE_EDITING_HISTORY=64" in dotconfig, "the fragment did not reach busybox's .config"
    measured.append(
        f"fresh clone A: cold build {cold.seconds:.1f} s, {len(cold.package_steps)} package steps "
        f"({len(busybox)} of busybox), build {seconds(cold, 'buildroot.build')} s, capture "
        f"{seconds(cold, 'checkpoints.capture.buildroot-build')} s, collect {seconds(cold, 'buildroot.collect')} s"
    )
    return Clones(base, repo, ws_a, cold, image_content(ws_a))


def test_stage_modes_reach_target_and_image(clones: Clones, measured: list[str]) -> None:
    wanted = {rel: oct(mode) for rel, mode in STAGE_MODES.items()}
    assert modes_in(out_dir(clones.ws_a) / "target") == wanted
    assert {rel: oct(clones.image_a[rel][1] & 0o7777) for rel in STAGE_MODES} == wanted
    measured.append(f"fresh clone A: stage modes in target/ and rootfs.tar: {wanted}")


def test_a_fresh_clone_elsewhere_restores_with_no_package_step(clones: Clones, measured: list[str]) -> None:
    away = clones.ws_a.with_name("ws-a.away")
    clones.ws_a.rename(away)  # nothing may come from A
    try:
        ws_b = clone(clones.repo, clones.base / "ci" / "builds" / "runner-17" / "a-fresh-clone-of-the-product")
        restored = gaia(ws_b, "run", "build.toml").ok()
        assert "restored" in restored.text and "from dir:remote" in restored.text, restored.text[-4000:]
        assert "SKIP: buildroot.build" in restored.text
        assert restored.package_steps == [], restored.package_steps
        newest_source = max(p.lstat().st_mtime_ns for p in (ws_b / "build" / "buildroot" / "src").rglob("busybox.config"))
        stamp = next((out_dir(ws_b) / "build").glob("busybox-*/.stamp_dotconfig")).lstat().st_mtime_ns
        assert stamp > newest_source, "the restored stamp is older than the fresh clone's busybox.config"

        image_b = image_content(ws_b)
        differ = sorted(k for k in set(image_b) | set(clones.image_a) if image_b.get(k) != clones.image_a.get(k))
        assert not differ, differ
        assert modes_in(out_dir(ws_b) / "target") == {rel: oct(mode) for rel, mode in STAGE_MODES.items()}

        warm = gaia(ws_b, "run", "build.toml").ok()
        assert "make target-post-image skipped" in warm.text, warm.text[-3000:]
        assert warm.package_steps == [] and image_content(ws_b) == image_b

        by_hand = target_finalize(ws_b)
        assert by_hand.package_steps == [], by_hand.package_steps
        placed = [line for line in restored.text.splitlines() if "placed the mtimes" in line]
        measured.append(
            f"fresh clone B ({len(str(ws_b))} chars, A moved away): run {restored.seconds:.1f} s (restore "
            f"{seconds(restored, 'checkpoints.restore.buildroot-build')} s, collect "
            f"{seconds(restored, 'buildroot.collect')} s), 0 package steps; {placed[0].split('] ')[-1] if placed else ''}; "
            f"make target-finalize by hand {by_hand.seconds:.1f} s, 0 package steps; image identical to A's "
            f"({len(image_b)} members: paths, modes, sha256); warm no-op run {warm.seconds:.1f} s "
            f"(collect {seconds(warm, 'buildroot.collect')} s, make skipped)"
        )
    finally:
        away.rename(clones.ws_a)
