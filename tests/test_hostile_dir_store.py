"""A ``dir`` store written by an attacker: its shape is data, never a path gaia follows.

Each test is a row of issue 18's table: FIFOs where objects should be (a run and status
end, in bounded time, with a reason), links where directories should be (an upload, as
root, writes nothing through them) and a link among the fingerprints (``gc --remote``
deletes nothing outside the store). FIFOs are made by :mod:`fifo_watchdog`, so a gaia
that waits on one fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from counter_project import Project, run
from fifo_watchdog import WATCHDOG_S, watchdog  # noqa: F401  (a fixture)

POINT = "base"
@pytest.fixture
def producer(gaia_cli, pm, tmp_path: Path) -> Project:
    """A workspace that built, captured and uploaded its object to the shared store."""
    project = Project(tmp_path / "producer", shared=tmp_path / "shared")
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    run(gaia_cli, pm, "run", project.build)
    assert len(project.remote_objects()) == 1
    return project


@pytest.fixture
def consumer(tmp_path: Path, producer: Project) -> Project:
    project = Project(tmp_path / "consumer", shared=producer.shared)
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "off"')
    return project


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A directory outside the store, with files older than any grace period."""
    victim = tmp_path / "host-dir"
    victim.mkdir()
    for name in ("passwd", "manifest.json", "payload.tar.zst"):
        (victim / name).write_text(f"host file {name}\n")
        os.utime(victim / name, (time.time() - 30 * 86400,) * 2)
    return victim


def host_files(victim: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(victim.iterdir())}


def remote_object(project: Project) -> Path:
    (obj,) = project.remote_objects()
    return obj


@pytest.mark.parametrize("which", ["manifest", "pack"])
def test_a_fifo_in_place_of_an_object_file_is_refused_in_bounded_time(gaia_cli, pm, producer, consumer,
                                                                      watchdog, which):
    obj = remote_object(producer)
    pack = next((producer.shared / "packs").glob("*.pack"))  # holds the object's chunks
    watchdog.make(obj / "manifest.json" if which == "manifest" else pack)

    started = time.monotonic()
    status = run(gaia_cli, pm, "checkpoints", "status", consumer.build, "--json").json["points"][0]
    result = run(gaia_cli, pm, "run", consumer.build)

    assert watchdog.fired == [], "gaia waited on a FIFO in the store"
    assert time.monotonic() - started < WATCHDOG_S
    assert consumer.builds() == 1
    # a FIFO manifest is refused by name; a FIFO pack holds nothing its index can point into
    assert ("is a FIFO, not a regular file" if which == "manifest" else "is incomplete") in result.output
    assert "building instead" in result.output
    if which == "manifest":
        assert status["remote_exists"] is True and status["reason"] == "remote_invalid"
        assert "is a FIFO" in status["remote_error"]


def test_the_producers_next_upload_replaces_a_fifo_manifest(gaia_cli, pm, producer, watchdog):
    obj = remote_object(producer)
    good = (obj / "manifest.json").read_bytes()
    watchdog.make(obj / "manifest.json")
    run(gaia_cli, pm, "checkpoints", "push", producer.build)
    assert watchdog.fired == []
    assert (obj / "manifest.json").is_file() and (obj / "manifest.json").read_bytes() == good


@pytest.mark.parametrize("linked", ["object dir", "point dir"])
def test_an_upload_never_writes_through_a_link_in_the_store(gaia_cli, pm, tmp_path, host_dir, linked):
    project = Project(tmp_path / "ws", shared=tmp_path / "shared")
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "off"')
    run(gaia_cli, pm, "run", project.build)
    (obj,) = project.objects()
    (project.shared / "points").mkdir()
    if linked == "point dir":
        os.symlink(host_dir, project.shared / "points" / POINT)
    else:
        (project.shared / "points" / POINT).mkdir()
        os.symlink(host_dir, project.shared / "points" / POINT / obj.name)
    before = host_files(host_dir)

    result = run(gaia_cli, pm, "checkpoints", "push", project.build, code=1)

    assert host_files(host_dir) == before
    assert "is a symbolic link where a directory should be (not followed)" in result.output
    queue = json.loads((project.store / "upload-queue.json").read_text())["entries"]
    assert [e["state"] for e in queue] == ["failed"]


def test_gc_remote_never_deletes_through_a_link_among_the_objects(gaia_cli, pm, producer, host_dir):
    obj = remote_object(producer)
    os.symlink(host_dir, producer.shared / "points" / POINT / "evil")
    os.symlink(host_dir / "passwd", obj / "manifest.json.tmp-evil-1-0")
    os.symlink(host_dir, producer.shared / "packs" / ("0" * 64 + ".pack"))
    before = host_files(host_dir)

    report = run(gaia_cli, pm, "checkpoints", "gc", producer.build, "--remote", "--keep-last", "1",
                 "--grace", "0s", "--json").json

    assert host_files(host_dir) == before
    assert report["remote"]["errors"] == []
    assert all("evil" not in item for item in report["remote"]["litter"])
    assert (obj / "manifest.json").is_file()
