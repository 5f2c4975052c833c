"""``gaia checkpoints status`` on a local-only build vs ``gaia --version`` (interpreter start
and imports), median of N alternating runs; target ≤ 1.5×.

    python bench/bench_status.py [--runs 15] [--build examples/quickstart/build.toml]

The quickstart is copied to a temporary directory and run once, so status has a local
object to find; it then reads only (no remote, nothing written).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 1.5


def gaia(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("gaia")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "gaia_core.cli", *args]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--build", type=Path, default=HERE.parent / "examples" / "quickstart" / "build.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gaia-bench-status-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.build.parent, project, ignore=shutil.ignore_patterns("build", "out"))
        build = project / args.build.name
        # as users run it: byte code cached (some sandboxes set PYTHONDONTWRITEBYTECODE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_") and k != "PYTHONDONTWRITEBYTECODE"}
        os.environ.clear()
        os.environ.update(env)
        subprocess.run(gaia("run", str(build), "--quiet"), check=True, stdout=subprocess.DEVNULL)
        version, status = [], []
        for _ in range(2):  # warm the page cache and the bytecode cache
            timed(gaia("--version"))
            timed(gaia("checkpoints", "status", str(build)))
        for _ in range(args.runs):
            version.append(timed(gaia("--version")))
            status.append(timed(gaia("checkpoints", "status", str(build))))
    v, s = statistics.median(version), statistics.median(status)
    ratio = s / v
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"status: gaia checkpoints status {s * 1000:.0f} ms / gaia --version {v * 1000:.0f} ms = {ratio:.2f}x "
          f"(target <= {TARGET}x)  {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
