"""A full or read-only disk under the checkpoint store costs the checkpoint, never the build
(under ``auto``), and the message names the file."""

from __future__ import annotations

import errno
import os

import pytest
from counter_project import run

from gaia_core import atomic

REAL_WRITE = atomic.write_stream


def full_disk_for(*names: str):  # type: ignore[no-untyped-def]
    """``atomic.write_stream`` that fails like a full disk for files of these names."""

    def write_stream(path, source):  # type: ignore[no-untyped-def]
        if path.name in names:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return REAL_WRITE(path, source)

    return write_stream


# the index and the marker are written after the object is stored: tests/test_disk_full.py
@pytest.mark.parametrize("name", ["manifest.json", ".store.lock.holder.json"])
def test_a_full_disk_for_metadata_degrades_like_a_failed_capture(gaia_cli, pm, project, monkeypatch, name):
    project.write()
    monkeypatch.setattr(atomic, "write_stream", full_disk_for(name))
    result = run(gaia_cli, pm, "run", project.build)
    assert "the build goes on" in result.output
    assert name in result.output and "No space left on device" in result.output
    assert (project.root / "out" / "build" / "result.txt").read_text() == "a+"


def test_a_full_disk_for_the_queue_keeps_the_build_and_the_object(gaia_cli, pm, project, monkeypatch):
    project.shared.mkdir()
    project.write(backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    monkeypatch.setattr(atomic, "write_stream", full_disk_for("upload-queue.json"))
    result = run(gaia_cli, pm, "run", project.build)
    assert "upload-queue.json" in result.output and "No space left on device" in result.output
    assert len(project.objects()) == 1


def test_restore_with_a_full_disk_for_the_marker_still_builds_or_restores(gaia_cli, pm, project, monkeypatch):
    project.write()
    run(gaia_cli, pm, "run", project.build)
    import shutil

    shutil.rmtree(project.out)
    monkeypatch.setattr(atomic, "write_stream", full_disk_for(".gaia-checkpoint.json"))
    result = run(gaia_cli, pm, "run", project.build)
    assert ".gaia-checkpoint.json" in result.output
    assert (project.out / "value.txt").read_text() == "a"
