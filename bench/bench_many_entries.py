"""Peak memory of capture and full restore on a tree of many entries (500k by default).

    python bench/bench_many_entries.py [--entries 500000] [--keep DIR]

Makes a synthetic tree (files of 0-2 KiB, some links, 100 entries per directory), then
runs capture and restore each in a process of its own and prints each one's peak
resident set (target: < 500 MB at 500k entries) and wall time, beside ``tar -cf - |
zstd -3 -T0`` and ``tar -I zstd -x`` of the same tree for scale.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import fresh

LIMIT_MB = 500
_STEP = r"""
import os, resource, sys, time
from pathlib import Path
from gaia_core.anchors import Target
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.treecapture import capture_tree
from gaia_core.checkpoints.treewrite import write_tree
import json
step, work = sys.argv[1], Path(sys.argv[2])
packs = PackStore(work / "store")
started = time.perf_counter()
if step == "capture":
    info = capture_tree([Target("t", work / "tree")], packs, work / "staging")
    for pack in info.packs:
        packs.add(pack)
    (work / "manifest.json").write_text(json.dumps({"tree": info.tree(), "targets": [{"name": "t"}]}))
    extra = f"{info.entries} entries, {info.packed >> 20} MiB stored"
else:
    manifest = json.loads((work / "manifest.json").read_text())
    info = write_tree(tree.entries(packs, manifest), work / "out", packs)
    extra = f"{info.files_written} files written"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{step}: {time.perf_counter() - started:.1f} s, peak {peak:.0f} MB ({extra})")
"""


def make_tree(root: Path, entries: int) -> None:
    per_dir = 100
    made = 0
    d = 0
    while made < entries:
        directory = root / f"d{d // 100:03d}" / f"e{d % 100:02d}"
        directory.mkdir(parents=True)
        made += 1
        for i in range(min(per_dir, entries - made)):
            path = directory / f"f{i:03d}"
            if i % 50 == 49:
                os.symlink(f"f{i - 1:03d}", path)
            else:
                path.write_bytes(os.urandom(8) * ((i * 37 + d) % 256))
        made += min(per_dir, entries - made)
        d += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not (work / "tree").is_dir():
            started = time.perf_counter()
            make_tree(fresh(work / "tree"), args.entries)
            print(f"made {args.entries} entries in {time.perf_counter() - started:.0f} s")
        for name in ("store", "staging", "tar-out"):
            fresh(work / name)
        (work / "b.tar.zst").unlink(missing_ok=True)
        for _ in os.walk(work / "tree"):  # the tree's metadata in the page cache for both sides
            pass
        os.sync()
        peaks = []
        for step in ("capture", "restore"):
            if step == "restore":
                fresh(work / "out")
                os.rmdir(work / "out")
                (work / "out").mkdir()
            os.sync()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            result = subprocess.run([sys.executable, "-c", _STEP, step, str(work)], capture_output=True, text=True)
            print(result.stdout.strip() or result.stderr.strip()[-2000:])
            if result.returncode:
                return 1
            peaks.append(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
        os.sync()
        started = time.perf_counter()
        subprocess.run(f"tar -C '{work / 'tree'}' -cf - . | zstd -3 -T0 -q -o '{work / 'b.tar.zst'}'",
                       shell=True, check=True)
        tar_capture = time.perf_counter() - started
        os.sync()  # what came before is written back: not billed to the next step
        started = time.perf_counter()
        subprocess.run(["tar", "-C", str(work / "tar-out"), "-I", "zstd", "-xf", str(work / "b.tar.zst")],
                       check=True)
        print(f"baseline: tar | zstd {tar_capture:.1f} s, tar -x {time.perf_counter() - started:.1f} s")
        worst = max(peaks)
        print(f"peak memory: {worst:.0f} MB (target < {LIMIT_MB} MB)  {'PASS' if worst < LIMIT_MB else 'MISS'}")
        return 0 if worst < LIMIT_MB else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
