"""The Buildroot out dir as hostile input: the anchor declares where later steps write, a
restored tree whose links would take those writes to the host is refused, the links a real
Buildroot tree holds keep working, and the stage sync never moves host files into target/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from buildroot_repo import make_external_toolchain
from fifo_watchdog import watchdog  # noqa: F401  (a fixture)
from test_buildroot_relocation import PREFIX, make, workspace

import gaia_buildroot.compile
from gaia_buildroot.anchor import TARGET_NAME, WRITE_PATHS
from gaia_buildroot.layout import SYNC_BACKUP_DIR, SYNC_MANIFEST_FILE
from gaia_buildroot.overlay import SyncRecord, sync_overlay, undo_sync
from gaia_core.anchors import Target
from gaia_core.checkpoints import containment

SYSROOT = "host/x86_64-buildroot-linux-gnu/sysroot"


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An out dir with the links of a real Buildroot build (busybox, merged /usr, a
    preinstalled external toolchain under /opt, per-package directories)."""
    out = tmp_path / "ws" / "output"
    toolchain = make_external_toolchain(tmp_path / "opt" / "toolchain", prefix=PREFIX)
    for d in ("build/busybox-1.38.0", "images", SYSROOT + "/usr/lib", "host/bin", "target/usr/bin",
              "target/usr/lib", "target/usr/sbin", "target/proc", "target/run", "target/etc",
              "per-package/busybox/host/bin", "per-package/busybox/target/etc"):
        (out / d).mkdir(parents=True, exist_ok=True)
    write(out / ".config")
    write(out / "target" / "usr" / "lib" / "os-release")
    write(out / "target" / "usr" / "bin" / "busybox")
    links = {
        "staging": str(out / SYSROOT),  # absolute, inside the tree
        "host/usr": ".",
        f"host/bin/{PREFIX}-ar": f"{toolchain}/bin/{PREFIX}-ar",  # into the toolchain under /opt
        f"per-package/busybox/host/bin/{PREFIX}-ld": f"{toolchain}/bin/{PREFIX}-ld",
        "target/bin": "usr/bin", "target/lib": "usr/lib", "target/sbin": "usr/sbin", "target/lib64": "lib",
        "target/usr/lib64": "lib", "target/linuxrc": "bin/busybox", "target/usr/bin/sh": "busybox",
        "target/etc/os-release": "../usr/lib/os-release",
        "target/etc/mtab": "../proc/self/mounts",
        "target/etc/resolv.conf": "../run/resolv.conf",
        "target/var": "tmp", "target/dev": "../proc/../dev-not-there",  # dangling, still inside
        "per-package/busybox/target/etc/resolv.conf": "../run/resolv.conf",
    }
    for name, to in links.items():
        os.symlink(to, out / name)
    return out


def check(out: Path) -> list[str]:
    return Target(TARGET_NAME, out, writes=WRITE_PATHS).unsafe_writes()


def test_the_links_of_a_real_buildroot_tree_are_inside(out):
    assert check(out) == []


@pytest.mark.parametrize(("link", "to", "flagged"), [
    ("target/etc/hostname", "/etc/hostname", "target/etc/hostname"),  # finalize writes the host's file
    ("target/usr/share", "/usr/share", "target/usr/share"),           # finalize's rm -rf usr/share/doc
    ("target/usr", "../../../../..", "target/usr"),
    ("images", "{host}", "images"),
    ("images/rootfs.tar", "{host}/rootfs.tar", "images/rootfs.tar"),
    ("build", "{host}", "build"),
    ("build/busybox-1.38.0", "{host}", "build/busybox-1.38.0"),
    ("host", "/opt", "host"),
    ("host/bin", "/usr/bin", "host/bin"),
    ("staging", "/usr", "staging"),
    ("target", "/", "target"),
    ("per-package/busybox/host", "{host}", "per-package/busybox/host"),
    ("per-package/busybox/target", "{host}", "per-package/busybox/target"),
    (SYNC_BACKUP_DIR, "{host}", SYNC_BACKUP_DIR),
    (SYNC_MANIFEST_FILE, "{host}/sync.json", SYNC_MANIFEST_FILE),
    (".br2-external.mk", "{host}/ext.mk", ".br2-external.mk"),
])
def test_a_link_that_takes_a_later_write_outside_is_flagged(out, tmp_path, link, to, flagged):
    host = tmp_path / "host-dir"
    host.mkdir()
    path = out / link
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(to.format(host=host), path)
    assert f"{flagged}: {link} -> {to.format(host=host)} leads outside the tree" in check(out)


# -- the stage sync and its backups -----------------------------------------------------------


@pytest.fixture
def host_files(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    write(host / "etc" / "passwd", "root:host\n")
    write(host / "etc" / "motd", "host motd\n")
    return host


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_linked_backup_dir_never_moves_host_files_into_the_target(tmp_path, host_files):
    out = tmp_path / "out"
    write(out / "target" / "etc" / "passwd", "root:target\n")
    os.symlink(host_files, out / SYNC_BACKUP_DIR)
    SyncRecord(files=["etc/motd"]).write(out / SYNC_MANIFEST_FILE)
    before = snapshot(host_files)

    undo_sync(out / "target", out / SYNC_MANIFEST_FILE, out / SYNC_BACKUP_DIR)

    assert snapshot(host_files) == before
    assert (out / "target" / "etc" / "passwd").read_text() == "root:target\n"
    assert not os.path.lexists(out / SYNC_BACKUP_DIR)


def test_backups_are_never_written_through_a_link(tmp_path, host_files):
    out = tmp_path / "out"
    stage = tmp_path / "stage"
    write(stage / "etc" / "motd", "stage motd\n")
    write(out / "target" / "etc" / "motd", "buildroot motd\n")
    os.symlink(host_files, out / SYNC_BACKUP_DIR)
    before = snapshot(host_files)

    sync_overlay(stage, out / "target", out / SYNC_MANIFEST_FILE, out / SYNC_BACKUP_DIR)

    assert snapshot(host_files) == before
    assert (out / SYNC_BACKUP_DIR / "etc" / "motd").read_text() == "buildroot motd\n"
    assert not (out / SYNC_BACKUP_DIR).is_symlink()
    undo_sync(out / "target", out / SYNC_MANIFEST_FILE, out / SYNC_BACKUP_DIR)
    assert (out / "target" / "etc" / "motd").read_text() == "buildroot motd\n"


def test_a_link_inside_the_backups_is_restored_as_a_link_never_followed(tmp_path, host_files):
    out = tmp_path / "out"
    (out / "target" / "etc").mkdir(parents=True)
    (out / SYNC_BACKUP_DIR).mkdir()
    os.symlink(host_files / "etc", out / SYNC_BACKUP_DIR / "etc")  # a directory link in the backups
    before = snapshot(host_files)
    undo_sync(out / "target", out / SYNC_MANIFEST_FILE, out / SYNC_BACKUP_DIR)
    assert snapshot(host_files) == before
    assert sorted(p.name for p in (out / "target" / "etc").iterdir()) == []


def test_the_sync_record_is_read_without_waiting_on_a_fifo(tmp_path, watchdog):
    record = watchdog.make(tmp_path / SYNC_MANIFEST_FILE)
    assert SyncRecord.read(record) == SyncRecord()
    assert watchdog.fired == []


def test_the_stage_is_never_synced_through_a_linked_target(tmp_path, host_files):
    stage = tmp_path / "stage"
    write(stage / "etc" / "motd", "stage motd\n")
    os.symlink(host_files, tmp_path / "target")
    with pytest.raises(OSError, match="never synced through"):
        sync_overlay(stage, tmp_path / "target", tmp_path / "sync.json", tmp_path / "backup")
    assert (host_files / "etc" / "motd").read_text() == "host motd\n"


# -- end to end on the quickstart's test tree -------------------------------------------------


@pytest.fixture
def team(tmp_path: Path):  # type: ignore[no-untyped-def]
    toolchain = make_external_toolchain(tmp_path / "opt" / "vendor-toolchain", prefix=PREFIX)
    shared = tmp_path / "team-cache"
    shared.mkdir()
    return toolchain, shared


def test_a_restore_at_another_path_keeps_real_buildroot_links_and_finalize_works(gaia_cli, tmp_path, team):
    toolchain, shared = team
    laptop = workspace(tmp_path / "laptop", toolchain, shared)
    assert gaia_cli("run", laptop.build).exit_code == 0
    runner = workspace(tmp_path / "ci" / "runner", toolchain, shared)

    result = gaia_cli("run", runner.build)

    assert result.exit_code == 0, result.output
    assert "restored" in result.output and "unsafe" not in result.output
    target = runner.out / "target"
    assert os.readlink(target / "etc" / "os-release") == "../usr/lib/os-release"
    assert os.readlink(target / "etc" / "mtab") == "../proc/self/mounts"
    assert os.readlink(target / "etc" / "resolv.conf") == "../run/resolv.conf"
    # the out dir is a padded directory behind build/buildroot/output: staging names the padded path
    assert os.readlink(runner.out / "staging").startswith(os.path.realpath(runner.out) + "/host/")
    assert os.readlink(runner.out / "host" / "bin" / f"{PREFIX}-ar") == f"{toolchain}/bin/{PREFIX}-ar"
    built = runner.compile_log()
    make(runner, "target-finalize")
    assert runner.compile_log() == built  # no package step
    assert (target / "etc" / "hostname").read_text() == "gaia-quickstart\n"


def producer_with(monkeypatch, plant) -> None:  # type: ignore[no-untyped-def]
    """The next ``buildroot.build`` plants something in the out dir after make, and capture
    publishes it (as an older gaia, or an attacker with write access to the store, would)."""
    real_build = gaia_buildroot.compile.build

    def build(ctx, cfg):  # type: ignore[no-untyped-def]
        real_build(ctx, cfg)
        from gaia_buildroot.layout import BuildrootLayout

        plant(BuildrootLayout.of(ctx.build, cfg).out_dir)

    monkeypatch.setattr(gaia_buildroot.compile, "build", build)
    monkeypatch.setattr(containment, "check_in_place", lambda targets: None)


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    return write(tmp_path / "host-etc" / "hostname", "the host\n")


def test_a_checkpoint_whose_target_links_to_a_host_file_is_refused(gaia_cli, monkeypatch, tmp_path, team, host_file):
    toolchain, shared = team

    def plant(out: Path) -> None:
        (out / "target" / "etc" / "hostname").unlink()
        os.symlink(host_file, out / "target" / "etc" / "hostname")

    with monkeypatch.context() as patch:
        producer_with(patch, plant)
        laptop = workspace(tmp_path / "laptop", toolchain, shared)
        produced = gaia_cli("run", laptop.build)
    assert "uploaded" in produced.output
    assert "would make Buildroot write outside" in produced.output  # the producer's own collect stops
    runner = workspace(tmp_path / "runner", toolchain, shared)

    result = gaia_cli("run", runner.build)

    assert result.exit_code == 0, result.output
    assert (f"restore miss (reason=unsafe_tree:{TARGET_NAME}/target/etc/hostname" in result.output)
    assert host_file.read_text() == "the host\n"
    assert (runner.out / "target" / "etc" / "hostname").read_text() == "gaia-quickstart\n"
    assert not (runner.out / "target" / "etc" / "hostname").is_symlink()


def test_a_link_hidden_in_the_backups_of_a_checkpoint_stops_collect_before_make(gaia_cli, monkeypatch, tmp_path,
                                                                               team, host_file):
    toolchain, shared = team

    def plant(out: Path) -> None:
        (out / SYNC_BACKUP_DIR / "etc").mkdir(parents=True)
        os.symlink(host_file, out / SYNC_BACKUP_DIR / "etc" / "hostname")

    with monkeypatch.context() as patch:
        producer_with(patch, plant)
        laptop = workspace(tmp_path / "laptop", toolchain, shared)
        gaia_cli("run", laptop.build)
    runner = workspace(tmp_path / "runner", toolchain, shared)
    posts = runner.post_image_runs()

    result = gaia_cli("run", runner.build)

    assert result.exit_code == 1
    assert "restored" in result.output
    assert "target/etc/hostname -> " in result.output and "would make Buildroot write outside" in result.output
    assert host_file.read_text() == "the host\n"
    assert runner.post_image_runs() == posts  # make never ran on it
