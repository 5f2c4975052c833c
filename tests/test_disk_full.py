"""A disk that fills up (issue 18): each message says what was done and what was not, and
names the file. The disk is a real small tmpfs (mounting one needs root); it is filled
right before the step under test, as a concurrent job on the same runner would."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from counter_project import Project, run

from gaia_core import atomic

REAL_WRITE = atomic.write_stream


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest):
    """A tmpfs of 4 MiB (or the size a ``disk_size`` mark names), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    marker = request.node.get_closest_marker("disk_size")
    size = marker.args[0] if marker else "4m"
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write into ``disk`` until it refuses another byte; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def full_for(disk: Path, name: str, occurrence: int = 1):  # type: ignore[no-untyped-def]
    """``atomic.write_stream`` that fills ``disk`` right before the ``occurrence``-th write
    of a file called ``name``, and frees it after that write (which the kernel refuses)."""
    seen = {"count": 0}

    def write_stream(path, source):  # type: ignore[no-untyped-def]
        if path.name != name:
            return REAL_WRITE(path, source)
        seen["count"] += 1
        if seen["count"] != occurrence:
            return REAL_WRITE(path, source)
        filler = fill(disk)
        try:
            return REAL_WRITE(path, source)
        finally:
            filler.unlink()

    return write_stream


def write_build(project: Project, workspace: str, point: str = "", checkpoints: str = "", bulk: int = 0) -> None:
    project.build.write_text(
        f"[workspace]\n{workspace}\n[counter]\nvalue = \"a\"\nbulk = {bulk}\n\n"
        f"[checkpoints]\nenabled = true\n{checkpoints}\n"
        f'[checkpoints.backends.dir.shared]\npath = "{project.shared}"\n\n'
        f'[[checkpoints.points]]\nid = "base"\nanchor_task = "counter.build"\n{point}\n')


def stored(store: Path) -> list[Path]:
    return sorted(p for p in (store / "points" / "base").glob("*") if (p / "manifest.json").is_file())


def test_a_payload_that_does_not_fit_is_named_and_no_checkpoint_is_kept(gaia_cli, pm, project, small_disk):
    store = small_disk / "store"
    write_build(project, f'checkpoints_dir = "{store}"', bulk=6 << 20)
    result = run(gaia_cli, pm, "run", project.build)
    assert f"capture failed: writing the checkpoint pack {store / 'tmp'}/" in result.output
    assert ".partial failed: No space left on device; the build goes on without a checkpoint" in result.output
    assert stored(store) == [] and not list((store / "tmp").iterdir())
    assert (project.root / "out" / "build" / "result.txt").read_text() == "a+"


def test_an_index_that_does_not_fit_after_publishing_keeps_and_uploads_the_checkpoint(gaia_cli, pm, project,
                                                                                     small_disk, monkeypatch):
    """It used to say "capture failed ... without a checkpoint" about a published object."""
    project.shared.mkdir()
    store = small_disk / "store"
    write_build(project, f'checkpoints_dir = "{store}"', point='backend = "dir:shared"\nupload_policy = "always"',
                checkpoints=f'queue_file = "{project.root / "queue.json"}"')
    monkeypatch.setattr(atomic, "write_stream", full_for(small_disk, "index.json"))
    result = run(gaia_cli, pm, "run", project.build)
    assert "capture failed" not in result.output and "captured" in result.output
    assert (f"the checkpoint is stored, but the index {store / 'index.json'} could not be updated "
            "(No space left on device)") in result.output
    [obj] = stored(store)
    assert "uploaded" in result.output and project.remote_objects()[0].name == obj.name
    monkeypatch.setattr(atomic, "write_stream", REAL_WRITE)
    listed = run(gaia_cli, pm, "checkpoints", "list", project.build, "--json")
    assert listed.json["points"][0]["local_latest"] == obj.name  # the index came back from the objects


def test_a_queue_that_cannot_record_a_finished_upload_says_it_is_uploaded(gaia_cli, pm, project, small_disk,
                                                                         monkeypatch):
    """It used to say "upload failed" after the upload had succeeded."""
    project.shared.mkdir()
    queue = small_disk / "queue.json"
    write_build(project, "", point='backend = "dir:shared"\nupload_policy = "always"',
                checkpoints=f'queue_file = "{queue}"')
    monkeypatch.setattr(atomic, "write_stream", full_for(small_disk, "queue.json", occurrence=2))
    result = run(gaia_cli, pm, "run", project.build)
    assert "upload via" not in result.output and "not uploaded" not in result.output
    assert ("is uploaded to dir:shared, but the upload queue could not record it: updating the upload queue "
            f"{queue} failed: {queue}: No space left on device") in result.output
    assert len(project.remote_objects()) == 1
    monkeypatch.setattr(atomic, "write_stream", REAL_WRITE)
    retried = run(gaia_cli, pm, "checkpoints", "retry", project.build)
    assert "uploaded=1" in retried.output and "is already in dir:shared" in retried.output


def test_a_marker_that_does_not_fit_keeps_the_captured_checkpoint(gaia_cli, pm, project, small_disk, monkeypatch):
    write_build(project, f'build_dir = "{small_disk / "build"}"\ncheckpoints_dir = "{project.root / "store"}"')
    monkeypatch.setattr(atomic, "write_stream", full_for(small_disk, ".gaia-checkpoint.json"))
    result = run(gaia_cli, pm, "run", project.build)
    marker = small_disk / "build" / "counter-out" / ".gaia-checkpoint.json"
    assert (f"is stored, but writing the checkpoint marker failed: {marker}: No space left on device; the next "
            "run restores it over the tree") in result.output
    assert "capture failed" not in result.output and len(stored(project.root / "store")) == 1


@pytest.mark.disk_size("72m")  # the free-space check wants the payload and a 64 MiB margin
def test_a_download_that_does_not_fit_names_the_file_and_keeps_nothing(gaia_cli, pm, project, small_disk,
                                                                       monkeypatch):
    """The free-space check passed; then another job filled the disk mid-download."""
    from gaia_core.checkpoints import restore

    project.shared.mkdir()
    point = 'backend = "dir:shared"\nupload_policy = "always"'
    write_build(project, f'checkpoints_dir = "{project.root / "producer-store"}"', point=point, bulk=1 << 20)
    run(gaia_cli, pm, "run", project.build)
    assert len(project.remote_objects()) == 1
    store = small_disk / "store"
    write_build(project, f'build_dir = "{project.root / "consumer"}"\ncheckpoints_dir = "{store}"', point=point,
                bulk=1 << 20)
    real_check = restore.check_free_space

    def then_full(directory, needed, what):  # type: ignore[no-untyped-def]
        real_check(directory, needed, what)
        fill(small_disk)

    monkeypatch.setattr(restore, "check_free_space", then_full)
    result = run(gaia_cli, pm, "run", project.build)
    [failure] = {line for line in result.output.splitlines() if "remote fetch via dir:shared failed:" in line}
    # the first write that did not fit is named (the chunk index, or a pack in the store's tmp)
    assert f" {store}/" in failure and failure.endswith("; building instead"), failure
    assert "database or disk is full" in failure or "No space left on device" in failure, failure
    assert stored(store) == [] and project.builds() == 2
