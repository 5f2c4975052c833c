"""One ``gaia run`` per workspace: a second one waits (saying who holds it) or, with
``--no-wait``, stops at once; a lock that cannot be taken stops the run before it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from test_trust import WRITER

from gaia_core.runlock import RunLockUnavailable, run_lock


def start(script, build, *extra):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    return subprocess.Popen([sys.executable, str(script), "run", str(build), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


@pytest.fixture
def writer(tmp_path):  # type: ignore[no-untyped-def]
    from pathlib import Path

    script = tmp_path / "gaia_counter.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent)))
    return script


def test_a_second_run_waits_for_the_first_and_names_the_holder(project, writer):
    project.write(value="a")
    with run_lock(project.root / "build", wait=False, echo=print):
        second = start(writer, project.build)
        time.sleep(1.5)
        assert second.poll() is None, "the second run did not wait"
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert "waiting for the workspace run lock" in out and f"pid {os.getpid()}" in out
    assert project.builds() == 1


def test_no_wait_stops_at_once_with_the_holder(project, writer):
    project.write()
    with run_lock(project.root / "build", wait=False, echo=print):
        second = start(writer, project.build, "--no-wait")
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 1
    assert "is in use by pid" in out and "--no-wait" in out
    assert project.builds() == 0


def test_four_runs_in_one_workspace_all_succeed_one_after_another(project, writer):
    project.write()
    runs = [start(writer, project.build) for _ in range(4)]
    outputs = [r.communicate(timeout=120)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0, 0, 0], outputs
    assert project.builds() == 1  # the first built and captured; the others found it in place


def test_a_lock_that_cannot_be_taken_stops_the_run(tmp_path):
    blocker = tmp_path / "build"
    blocker.write_text("a file where the build dir should be")
    with pytest.raises(RunLockUnavailable, match="cannot take the workspace run lock .* the run does not start"), \
            run_lock(blocker, wait=True, echo=print):
        pass
