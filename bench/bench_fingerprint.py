"""Per-file tree digests (``digest_files``, what ``--explain`` names files with) against the
opaque ``hash_tree`` of the same tree, median of N alternating runs (page cache warm); and
what the listing costs in a manifest, in bytes per file. Targets: time ≤ 1.3×, ≤ 16 bytes a file.

    python bench/bench_fingerprint.py [--runs 5] [--tree DIR]

The default tree is a copy of ``/usr/include`` (no git: every file is read); a git work tree
(``--tree`` a Buildroot checkout) also measures the ``git ls-files`` the digest asks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gaia_core.fingerprints import digest_files, hash_tree

TARGET_RATIO = 1.3
TARGET_BYTES_PER_FILE = 16


def timed(func: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gaia-bench-fp-") as tmp:
        tree = args.tree
        if tree is None:
            tree = Path(tmp) / "include"
            shutil.copytree("/usr/include", tree, symlinks=True)
        value = digest_files(tree)
        assert isinstance(value, dict)
        hash_tree(tree, skip_dirs=(".git",))  # warm the page cache
        ours, base = [], []
        for _ in range(args.runs):
            ours.append(timed(lambda: digest_files(tree)))
            base.append(timed(lambda: hash_tree(tree, skip_dirs=(".git",))))
    o, b = statistics.median(ours), statistics.median(base)
    per_file = len(json.dumps(value)) / max(value["files"], 1)
    ok = o / b <= TARGET_RATIO and per_file <= TARGET_BYTES_PER_FILE
    print(f"tree: {value['files']} files ({tree})")
    print(f"digest_files {o:.2f} s / hash_tree {b:.2f} s = {o / b:.2f}x (target <= {TARGET_RATIO}x); "
          f"manifest {len(json.dumps(value))} bytes = {per_file:.1f} bytes a file "
          f"(target <= {TARGET_BYTES_PER_FILE})  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
