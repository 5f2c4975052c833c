"""Portable checkpoints against a real Buildroot build (issue 8, point 9).

gaia drives a real Buildroot from a git repository the user prepared (see
``docs/real-buildroot.md``); nothing here builds Buildroot by itself. Scenarios:

1. a cold build captures a checkpoint that holds no stage file, no image and no absolute
   workspace path in its fingerprint, and names its roots and prerequisites;
4. the out dir wiped: restored from the local store, no package step, the order of the stamp
   mtimes kept to the nanosecond, and ``make target-finalize`` by hand runs no package step;
5. a fresh checkout at a longer path restores from the ``dir`` backend and relocates: no
   package step, nothing but package build dirs still names the old path (each one warned
   about), and the host compiler wrapper builds a program with the old workspace gone;
6. a second build file importing the first hits the same checkpoint, and each image
   carries its own motd.

Environment: ``GAIA_REAL_BUILDROOT_REPO`` (required), ``GAIA_REAL_BUILDROOT_VERSION``
(default ``gaia-acceptance``), ``GAIA_REAL_BUILDROOT_DEFCONFIG`` (default
``gaiatest_offline_defconfig``). The defconfig must build offline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_buildroot

REPO = os.environ.get("GAIA_REAL_BUILDROOT_REPO", "")
VERSION = os.environ.get("GAIA_REAL_BUILDROOT_VERSION", "gaia-acceptance")
DEFCONFIG = os.environ.get("GAIA_REAL_BUILDROOT_DEFCONFIG", "gaiatest_offline_defconfig")

if not REPO:
    pytest.fail(
        "GAIA_REAL_BUILDROOT_REPO is not set: set it to a real Buildroot git repository whose "
        f"tag {VERSION!r} (GAIA_REAL_BUILDROOT_VERSION) has configs/{DEFCONFIG} "
        "(GAIA_REAL_BUILDROOT_DEFCONFIG) building offline, e.g. "
        "GAIA_REAL_BUILDROOT_REPO=/work/scratch/rb/br-git pytest -m real_buildroot acceptance "
        "(docs/real-buildroot.md says how to prepare one)",
        pytrace=False,
    )
if not (Path(REPO) / ".git").exists() and not (Path(REPO) / "HEAD").is_file():
    pytest.fail(
        f"GAIA_REAL_BUILDROOT_REPO={REPO} is not a git repository (docs/real-buildroot.md)",
        pytrace=False,
    )

_GAIA_SCRIPT = Path(sys.executable).with_name("gaia")
GAIA = [str(_GAIA_SCRIPT)] if _GAIA_SCRIPT.is_file() else [sys.executable, "-m", "gaia_core.cli"]
POINT = "base-os"
STAGE_MOTD = "Welcome to an image of build.toml (gaia acceptance).\n"
RELEASE_MOTD = "Welcome to the RELEASE image (gaia acceptance).\n"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: ``>>> host-skeleton  Extracting``; the finalize lines (``>>>   Finalizing ...``) are no steps
_PACKAGE_STEP = re.compile(r">>> (?! )\S")
_CAPTURED = re.compile(r"captured ([0-9a-f]{12}) \((\d+) entries, ([^;]+);")

BUILD_TOML = """\
[buildroot]
repo = "{repo}"
version = "{version}"
defconfig = "{defconfig}"

[buildroot.symbols]
TARGET_GENERIC_HOSTNAME = "gaia-acceptance"
# an image to look into (BR2_TARGET_ROOTFS_TAR needs host-fakeroot's sources, not offline)
ROOTFS_POST_IMAGE_SCRIPT = "{post_image}"

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
"""

RELEASE_TOML = """\
imports = ["build.toml"]

[[stage.files]]
dst = "/etc/motd"
src = "assets/motd-release"
mode = 0o644
"""

POST_IMAGE = """\
#!/bin/sh
set -e
tar -C "$TARGET_DIR" --numeric-owner -cf "$BINARIES_DIR/rootfs.tar" .
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}


@dataclasses.dataclass
class Run:
    argv: list[str]
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.out + self.err)

    @property
    def package_steps(self) -> list[str]:
        return [line for line in self.text.splitlines() if _PACKAGE_STEP.search(line)]

    def task_seconds(self, task: str) -> float | None:
        found = re.search(rf"^DONE: {re.escape(task)} \(([\d.]+)(ms|s)\)", self.text, re.M)
        if not found:
            return None
        value = float(found.group(1))
        return value / 1000 if found.group(2) == "ms" else value

    def ok(self) -> Run:
        assert self.rc == 0, f"{' '.join(self.argv)} exited {self.rc}:\n{self.text[-6000:]}"
        return self


def run(argv: list[str], cwd: Path, timeout: float = 3600) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    return Run(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def gaia(ws: Path, *args: str) -> Run:
    return run([*GAIA, *args], cwd=ws)


def status(ws: Path, build_file: str = "build.toml") -> dict:
    result = gaia(ws, "checkpoints", "status", build_file, "--json").ok()
    points = {p["id"]: p for p in json.loads(result.out)["points"]}
    return points[POINT]


def out_dir(ws: Path) -> Path:
    return ws / "build" / "buildroot" / "output"


def target_finalize(ws: Path) -> Run:
    return run(
        ["make", "-C", str(ws / "build" / "buildroot" / "src"), f"O={out_dir(ws)}", "target-finalize"],
        cwd=ws,
    ).ok()


def stamp_mtimes(ws: Path) -> dict[str, int]:
    found = {}
    for stamp in (out_dir(ws) / "build").glob("*/.stamp_*"):
        found[stamp.relative_to(out_dir(ws)).as_posix()] = stamp.lstat().st_mtime_ns
    return found


def order(mtimes: dict[str, int]) -> dict[str, int]:
    """Each entry's rank among the distinct mtimes: what make compares."""
    ranks = {t: i for i, t in enumerate(sorted(set(mtimes.values())))}
    return {k: ranks[t] for k, t in mtimes.items()}


def new_checkout(base: Path, name: str, src: Path) -> Path:
    """A fresh checkout: the build files and their assets, no build dir."""
    ws = base / name
    (ws / "assets").mkdir(parents=True)
    for rel in ("build.toml", "assets/motd"):
        (ws / rel).write_bytes((src / rel).read_bytes())
    return ws


def _packs_of(manifest_path: Path):  # type: ignore[no-untyped-def]
    """The local store's chunks (``<store>/points/<id>/<fp>/manifest.json``)."""
    from gaia_core.checkpoints.packstore import PackStore

    return PackStore(manifest_path.parents[3])


def payload_members(manifest_path: Path) -> dict:
    """Path -> entry of every entry a format-4 object lists (read and checked as restore does)."""
    from gaia_core.checkpoints import tree

    manifest = json.loads(manifest_path.read_text())
    packs = _packs_of(manifest_path)
    try:
        return {entry.path: entry for entry in tree.entries(packs, manifest)}
    finally:
        packs.close()


def payload_file(manifest_path: Path, name: str) -> bytes | None:
    """The content of the file ``name`` of the object, from its chunks."""
    entry = payload_members(manifest_path).get(name)
    if entry is None or entry.type != "f":
        return None
    packs = _packs_of(manifest_path)
    try:
        wanted = entry.chunk_list()
        located = packs.locate([c for c, _ in wanted])
        return b"".join(packs.read(c, located[c], n) for c, n in wanted)
    finally:
        packs.close()


def files_naming(tree: Path, old: str) -> list[str]:
    """Files and links under ``tree`` that still name ``old`` as a path (not a longer name)."""
    pattern = re.compile(re.escape(old.encode()) + rb"(?![-\w.])")
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            path = here / name
            rel = path.relative_to(tree).as_posix()
            if path.is_symlink():
                if pattern.search(os.readlink(path).encode()):
                    found.append(rel)
            elif path.is_file() and pattern.search(path.read_bytes()):
                found.append(rel)
    return sorted(found)


def image_motd(ws: Path, build_name: str) -> str:
    with tarfile.open(ws / "out" / build_name / "images" / "rootfs.tar") as tar:
        member = tar.extractfile("./etc/motd")
        assert member is not None
        return member.read().decode()


def dotconfig(ws: Path) -> dict[str, str]:
    values = {}
    for line in (out_dir(ws) / ".config").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key] = value.strip('"')
    return values


@dataclasses.dataclass
class World:
    base: Path
    ws_a: Path
    remote: Path
    cold: Run
    fingerprint: str
    manifest: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, measured: list[str]) -> World:
    """ws-a, built cold once with checkpoints on (scenario 1's run)."""
    base = tmp_path_factory.mktemp("real-buildroot")
    tools = base / "tools"
    tools.mkdir()
    post_image = tools / "rootfs-tar.sh"
    post_image.write_text(POST_IMAGE)
    post_image.chmod(0o755)
    remote = base / "remote"
    remote.mkdir()
    ws_a = base / "ws-a"
    (ws_a / "assets").mkdir(parents=True)
    (ws_a / "build.toml").write_text(
        BUILD_TOML.format(
            repo=REPO,
            version=VERSION,
            defconfig=DEFCONFIG,
            post_image=post_image,
            remote=remote,
            point=POINT,
        )
    )
    (ws_a / "assets" / "motd").write_text(STAGE_MOTD)

    before = status(ws_a)
    assert before["fingerprint"] == "unknown", before
    assert "buildroot.fetch" in (before["pending"] or ""), before

    cold = gaia(ws_a, "run", "build.toml").ok()
    captured = _CAPTURED.search(cold.text)
    assert captured, f"no capture line in:\n{cold.text[-4000:]}"
    after = status(ws_a)
    assert after["fingerprint"].startswith(captured.group(1)), (after, captured.group(0))
    assert after["reason"] == "hit", after
    fingerprint = after["fingerprint"]
    manifest = ws_a / "build" / "checkpoints" / "points" / POINT / fingerprint / "manifest.json"
    measured.append(
        f"1 cold build: {cold.seconds:.1f} s, {len(cold.package_steps)} package steps, "
        f"build {cold.task_seconds('buildroot.build')} s, capture {captured.group(3)} "
        f"({captured.group(2)} entries) in {cold.task_seconds('checkpoints.capture.buildroot-build')} s, "
        f"fingerprint {fingerprint[:12]}; status before fetch: fingerprint=unknown ({before['pending']})"
    )
    return World(base, ws_a, remote, cold, fingerprint, manifest)


def test_cold_build_captures_a_portable_checkpoint(world: World, measured: list[str]) -> None:
    assert world.cold.package_steps, "a cold build runs package steps"
    assert "SKIP: buildroot.build" not in world.cold.text
    manifest = json.loads(world.manifest.read_text())

    assert manifest["roots"]["workspace"] == str(world.ws_a)
    assert manifest["roots"]["buildroot.out_dir"] == str(out_dir(world.ws_a).resolve())  # the padded dir
    config = dotconfig(world.ws_a)
    if config.get("BR2_TOOLCHAIN_EXTERNAL_PREINSTALLED") == "y":
        toolchain_bin = config["BR2_TOOLCHAIN_EXTERNAL_PATH"].rstrip("/") + "/bin"
        assert toolchain_bin in manifest["prerequisites"], manifest["prerequisites"]
    embedded = {e["path"]: e["kind"] for e in manifest["embedded"]}
    assert embedded, "a real out dir embeds its absolute paths somewhere"
    assert set(embedded.values()) <= {"text", "binary", "symlink"}, embedded

    inputs = json.dumps(manifest["fingerprint_inputs"])
    # (the post-image script's path is outside every workspace, the same for all of them)
    assert str(world.ws_a) not in inputs, inputs
    assert "buildroot.build:host.system" in manifest["fingerprint_inputs"]

    members = payload_members(world.manifest)
    assert len(members) == manifest["tree"]["entries"]
    assert "buildroot_out_dir/images/rootfs.tar" not in members
    motd = "buildroot_out_dir/target/etc/motd"
    if motd in members:
        assert payload_file(world.manifest, motd) != STAGE_MOTD.encode(), "the stage leaked into the checkpoint"
    assert not [m for m in members if ".gaia-stage-overlay" in m], "the stage sync record leaked"

    kinds = {k: sum(1 for v in embedded.values() if v == k) for k in sorted(set(embedded.values()))}
    measured.append(
        f"1 manifest: {manifest['tree']['packed'] / 2**20:.1f} MiB packed, "
        f"{manifest['tree']['size'] / 2**20:.1f} MiB of files, {manifest['tree']['entries']} entries in "
        f"{manifest['tree']['chunks']} chunks; "
        f"roots {sorted(manifest['roots'])}; prerequisites {manifest['prerequisites']}; embedded {kinds}: "
        + ", ".join(f"{p.removeprefix('buildroot_out_dir/')} ({k})" for p, k in sorted(embedded.items()))
    )


def test_restore_into_a_wiped_out_dir(world: World, measured: list[str]) -> None:
    ws = world.ws_a
    stamps = stamp_mtimes(ws)
    assert stamps
    subprocess.run(["rm", "-rf", str(out_dir(ws))], check=True)

    restored = gaia(ws, "run", "build.toml").ok()
    assert f"restored {world.fingerprint[:12]} from local store" in restored.text, restored.text[-4000:]
    assert "SKIP: buildroot.configure" in restored.text
    assert "SKIP: buildroot.build" in restored.text
    assert restored.package_steps == []
    placed = stamp_mtimes(ws)  # a restore moves mtimes to end at the restore, in their order (issue 16)
    assert order(placed) == order(stamps), "a restored stamp file lost its place among the others"

    by_hand = target_finalize(ws)
    assert by_hand.package_steps == [], by_hand.package_steps
    assert stamp_mtimes(ws) == placed
    measured.append(
        f"4 wiped out dir: run {restored.seconds:.1f} s (restore {restored.task_seconds('checkpoints.restore.buildroot-build')} s, "
        f"collect {restored.task_seconds('buildroot.collect')} s), 0 package steps; {len(stamps)} stamp mtimes "
        f"in their order to the ns; make target-finalize by hand {by_hand.seconds:.1f} s, 0 package steps"
    )


def test_restore_at_a_longer_path_relocates(world: World, measured: list[str]) -> None:
    ws = new_checkout(world.base, "ws-a-checked-out-again-at-a-longer-path", world.ws_a)
    before = status(ws)
    assert before["fingerprint"] == "unknown", before

    restored = gaia(ws, "run", "build.toml").ok()
    assert f"restored {world.fingerprint[:12]} from dir:remote" in restored.text, restored.text[-4000:]
    assert "SKIP: buildroot.build" in restored.text
    assert restored.package_steps == []
    assert status(ws)["fingerprint"] == world.fingerprint

    by_hand = target_finalize(ws)
    assert by_hand.package_steps == [], by_hand.package_steps

    left = files_naming(out_dir(ws), str(world.ws_a))
    for rel in left:
        parts = rel.split("/")
        assert len(parts) >= 3 and parts[0] == "build", f"{rel} still names the old workspace"
        assert f"buildroot_out_dir/{rel}" in restored.text, f"{rel} kept as captured, unannounced"

    compilers = sorted((out_dir(ws) / "host" / "bin").glob("*-gcc"))
    assert compilers, "no host compiler wrapper"
    hello_c = world.base / "hello.c"
    hello_c.write_text('#include <stdio.h>\nint main(void){puts("hello, relocated");return 0;}\n')
    hello = world.base / "hello"
    away = world.base / "ws-a.away"
    world.ws_a.rename(away)  # nothing can fall back to the old path
    try:
        compiled = run([str(compilers[0]), "-o", str(hello), str(hello_c)], cwd=world.base)
        ran = run([str(hello)], cwd=world.base) if compiled.rc == 0 else None
    finally:
        away.rename(world.ws_a)
    compiled.ok()
    assert ran is not None and ran.ok().out == "hello, relocated\n"
    reloc = re.search(r"relocated (\d+) file\(s\)", restored.text)
    measured.append(
        f"5 longer path ({len(str(ws))} vs {len(str(world.ws_a))} chars): run {restored.seconds:.1f} s "
        f"(restore {restored.task_seconds('checkpoints.restore.buildroot-build')} s), 0 package steps, "
        f"relocated {reloc.group(1) if reloc else '?'} file(s); target-finalize by hand 0 package steps; "
        f"still naming the old path: {left or 'nothing'}; {compilers[0].name} built and ran hello.c "
        "with the old workspace moved away"
    )


def test_second_profile_shares_the_checkpoint(world: World, measured: list[str]) -> None:
    ws = world.ws_a
    (ws / "release.toml").write_text(RELEASE_TOML)
    (ws / "assets" / "motd-release").write_text(RELEASE_MOTD)
    point = status(ws, "release.toml")
    assert point["fingerprint"] == world.fingerprint, point
    assert point["reason"] == "hit" and point["materialized"] is True, point

    release = gaia(ws, "run", "release.toml").ok()
    assert "SKIP: buildroot.build" in release.text
    assert release.package_steps == []
    assert image_motd(ws, "release") == RELEASE_MOTD
    assert image_motd(ws, "build") == STAGE_MOTD

    again = gaia(ws, "run", "build.toml").ok()
    assert again.package_steps == []
    assert image_motd(ws, "build") == STAGE_MOTD
    assert image_motd(ws, "release") == RELEASE_MOTD
    measured.append(
        f"6 release.toml: status reason={point['reason']} materialized={point['materialized']} "
        f"fingerprint {point['fingerprint'][:12]} (= build.toml's); run {release.seconds:.1f} s, 0 package steps; "
        "out/release/images/rootfs.tar and out/build/images/rootfs.tar each carry their own /etc/motd"
    )
