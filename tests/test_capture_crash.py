"""A `gaia run` killed with SIGKILL in the middle of a capture leaves no visible checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BUILD = """
[toolchain]
source = "src"
command = ["sh", "build.sh"]

[checkpoints]
enabled = true

[[checkpoints.points]]
id = "toolchain"
anchor_task = "toolchain.build"
"""

# 256 MiB of incompressible data: capturing it takes long enough to be interrupted
SCRIPT = "mkdir -p \"$OUT\" && head -c 268435456 /dev/urandom > \"$OUT/blob\"\n"


def gaia(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "gaia_core.cli", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_sigkill_during_capture_leaves_no_object_and_the_next_run_recovers(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "build.sh").write_text(SCRIPT)
    build = tmp_path / "build.toml"
    build.write_text(BUILD)
    store = tmp_path / "build" / "checkpoints"

    proc = subprocess.Popen([sys.executable, "-m", "gaia_core.cli", "run", str(build)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _packs_in_staging(store):
                break
            assert proc.poll() is None, "the run ended before the capture could be interrupted"
            time.sleep(0.01)
        else:
            raise AssertionError("the capture never started")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()

    assert not list(store.glob("points/toolchain/*/manifest.json")), "a partial capture became visible"
    assert not list(store.glob("packs/*.pack")), "packs of an unfinished capture entered the store"
    status = gaia("checkpoints", "status", str(build), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["points"][0]["exists"] is False

    again = gaia("run", str(build))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "left in the store by an interrupted run" in again.stdout + again.stderr
    assert len(list(store.glob("points/toolchain/*/manifest.json"))) == 1
    assert not _packs_in_staging(store)
    verified = gaia("checkpoints", "verify", str(build), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] == 1, verified.stdout + verified.stderr


def _packs_in_staging(store: Path) -> list[Path]:
    """Packs a capture is writing (``.pack-*.partial``) or has finished, still in its staging dir."""
    found = []
    for path in [*store.glob("tmp/*/.pack-*.partial"), *store.glob("tmp/*/*.pack")]:
        try:
            if path.stat().st_size > 0:
                found.append(path)
        except FileNotFoundError:
            pass  # renamed (finished) or removed while we looked
    return found
