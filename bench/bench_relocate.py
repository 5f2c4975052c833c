"""Restore at another path (extract + relocation) against restore at the same path.

    python bench/bench_relocate.py [--runs 3] [--size-mb 320] [--keep DIR]

Builds a tree of --size-mb (default 320 MB) of files from 4 KiB to 1 MiB (most of them
small), half text-like and half binary, where 1% of the files embed the tree's own
absolute path (text files as a config line, binaries as NUL-terminated strings, four
times each, from the start to the end of the file), plus a Buildroot-like
``staging`` symlink into the tree and hard links. It captures the tree once with its
relocation roots, then takes the median of N alternating runs of:

  same path:    write_tree() into a staging dir + plan_relocation() (nothing to do)
  another path: write_tree() into a staging dir + plan_relocation() + apply_relocation()

(store format 4: the tree captured once into a local pack store, every chunk checked
against its id and every entry against the safety rules on the way out)

and prints the ratio with PASS/MISS against the target (<= 1.10x), plus CPU-time ratios
(process + children), which stay meaningful when other work shares the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.relocate import apply_relocation, plan_relocation
from gaia_core.checkpoints.treecapture import capture_tree
from gaia_core.checkpoints.treewrite import write_tree

TARGET = 1.10
#: of every 200 files, one text file and one binary embed the root: 1%
EMBEDDING = (0, 101)
SIZES = (4096, 16384, 65536, 262144, 1 << 20)
SIZE_WEIGHTS = (40, 30, 20, 8, 2)


def build_tree(out: Path, size: int) -> tuple[int, int]:
    """Files of mixed sizes and kinds; 1% of them embed ``out``."""
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 9)))
             for _ in range(500)]  # fmt: skip
    root = str(out).encode()
    written = files = 0
    while written < size:
        directory = out / "build" / f"pkg-{files // 200:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        length = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        binary = files % 2 == 1
        if binary:
            data = bytearray(rng.randbytes(length))
        else:
            line = b" ".join(rng.choices(words, k=12)) + b"\n"
            data = bytearray((line * (length // len(line) + 1))[:length])
        if files % 200 in EMBEDDING:
            for at in range(0, length - len(root) - 32, max(length // 4, 1)):
                if binary:
                    data[at : at + len(root) + 6] = b"\0" + root + b"/lib\0"
                else:
                    data[at : at + len(root) + 13] = b"\nprefix='" + root + b"'\n"
        path = directory / f"file-{files:05d}{'.so' if binary else '.txt'}"
        path.write_bytes(data)
        written += length
        files += 1
    sysroot = out / "host" / "x86_64-buildroot-linux-gnu" / "sysroot"
    sysroot.mkdir(parents=True)
    os.symlink(sysroot, out / "staging")
    os.link(
        out / "build" / "pkg-000" / "file-00000.txt", out / "build" / "hard-link.txt"
    )
    return written, files


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action) -> tuple[float, float]:
    os.sync()
    start, start_cpu = time.perf_counter(), cpu_seconds()
    action()
    return time.perf_counter() - start, cpu_seconds() - start_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=320)
    parser.add_argument("--keep", type=Path, help="work directory (kept afterwards)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-relocate-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        old_ws = work / "captured-workspace"
        out = old_ws / "out"
        if not out.exists():
            size, files = build_tree(out, args.size_mb << 20)
        else:
            files = sum(len(names) for _, _, names in os.walk(out))
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        roots = {"workspace": old_ws, "out": out}
        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        packs = PackStore(store)
        staging_dir = work / "capture-staging"
        shutil.rmtree(staging_dir, ignore_errors=True)
        staging_dir.mkdir()
        info = capture_tree([Target("out", out)], packs, staging_dir, roots=roots)
        for pack in info.packs:
            packs.add(pack)
        manifest = {"tree": info.tree(), "targets": [{"name": "out"}]}
        kinds = {}
        for record in info.embedded:
            kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
        print(
            f"tree: {size / 2**20:.0f} MiB, {files} files, {info.entries} entries; "
            f"packed {info.packed / 2**20:.0f} MiB; embed a root: {kinds}; "
            f"{os.cpu_count()} CPUs"
        )
        old = {name: str(path) for name, path in roots.items()}
        moved_ws = work / "restored-ws"  # shorter: binaries can be rewritten too
        places = {
            "same path": (old_ws, old),
            "another path": (
                moved_ws, {"workspace": str(moved_ws), "out": str(moved_ws / "out")}
            ),
        }  # fmt: skip
        results = {}

        def restore(label: str) -> None:
            ws, new_roots = places[label]
            ws.mkdir(exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".out.restore-", dir=ws))
            write_tree(tree.entries(packs, manifest), staging, packs)
            plan = plan_relocation(info.embedded, old, new_roots)
            if not plan.empty:
                result = apply_relocation(staging, plan)
                assert not result.failed and not plan.unrewritable, result.failed
                results["rewritten"] = len(result.rewritten)
            shutil.rmtree(staging)

        restore("same path"), restore("another path")  # warm caches and code
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label in places}
        for _ in range(args.runs):
            for label in places:
                runs[label].append(timed(lambda label=label: restore(label)))
        for label, measured in runs.items():
            print(
                f"{label}: wall s {[round(w, 2) for w, _ in measured]}, "
                f"cpu s {[round(c, 2) for _, c in measured]}"
            )
        same, moved = (
            [statistics.median(m[i] for m in runs[label]) for i in (0, 1)]
            for label in places
        )
        ratio = moved[0] / same[0]
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(
            f"restore at another path: {moved[0]:.2f} s / same path {same[0]:.2f} s = "
            f"{ratio:.2f}x (target <= {TARGET}x; {results.get('rewritten', 0)} members "
            f"rewritten)  {verdict}   [cpu {moved[1]:.2f} s / {same[1]:.2f} s = "
            f"{moved[1] / same[1]:.2f}x]"
        )
        return 0 if verdict == "PASS" else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
