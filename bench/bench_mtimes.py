"""Placing a restored tree's mtimes (the last step of every restore) against touching them.

    python bench/bench_mtimes.py [--entries 100000] [--runs 3] [--keep DIR]

Builds a tree of --entries entries laid out like a Buildroot out dir (directories of 40
files and one symlink, 50 directories per package; file mtimes spread over an hour with
some equal), then takes the median of N alternating runs of:

  gaia:     gaia_core.checkpoints.mtimes.place_mtimes() (two lstat walks, ranking, utime)
  baseline: find TREE -print0 | xargs -0 touch -h -c -d @T (one utime per entry, in C:
            what a uniform touch of the tree costs, without keeping any order)

and prints the ratio with PASS/MISS against the target (<= 5x), the seconds per 100,000
entries, and the step's peak Python memory (tracemalloc, in a separate untimed run).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from gaia_core.checkpoints.mtimes import place_mtimes

TARGET = 5.0
T0 = 1_700_000_000_000_000_000


def build_tree(root: Path, entries: int) -> int:
    rng = random.Random(16)
    made = directory = 0
    while made < entries:
        here = root / f"pkg-{directory // 50:04d}" / f"dir-{directory:05d}"
        here.mkdir(parents=True)
        directory += 1
        for i in range(40):
            path = here / f"file-{i:02d}.o"
            path.write_bytes(b"")
            ns = T0 + rng.randrange(0, 3600 * 10**9) if i % 8 else T0  # every 8th the same time
            os.utime(path, ns=(ns, ns))
        os.symlink("file-00.o", here / "link")
        made += 41 + (1 if directory % 50 == 1 else 0)
    return sum(1 for _ in root.rglob("*")) + 1


def run_gaia(tree: Path) -> float:
    started = time.perf_counter()
    place_mtimes([tree], clock_dir=tree.parent)
    return time.perf_counter() - started


def run_baseline(tree: Path) -> float:
    started = time.perf_counter()
    find = subprocess.Popen(["find", str(tree), "-print0"], stdout=subprocess.PIPE)
    subprocess.run(["xargs", "-0", "touch", "-h", "-c", "-d", f"@{time.time():.0f}"], stdin=find.stdout, check=True)
    assert find.stdout is not None
    find.stdout.close()
    find.wait()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the tree here and keep it")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-mtimes-"))
    tree = base / "out"
    try:
        if not tree.is_dir():
            print(f"building a tree of {args.entries:,} entries in {tree} ...", file=sys.stderr)
            build_tree(tree, args.entries)
        entries = sum(1 for _ in tree.rglob("*")) + 1
        tracemalloc.start()
        place_mtimes([tree], clock_dir=base)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        gaia, baseline = [], []
        for _ in range(args.runs):
            gaia.append(run_gaia(tree))
            baseline.append(run_baseline(tree))
        g, b = statistics.median(gaia), statistics.median(baseline)
        ratio = g / b
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"place mtimes of {entries:,} entries: gaia {g:.2f} s / baseline {b:.2f} s = {ratio:.2f}x "
              f"(target <= {TARGET:g}x)  {verdict}   [{g / entries * 100_000:.2f} s per 100,000 entries, "
              f"peak {peak / 2**20:.1f} MiB]")
        return 0 if verdict == "PASS" else 1
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
