"""Checkpoint payload capture and verified restore, against GNU tar + zstd in the same run.

    python bench/bench_capture_restore.py [--runs 3] [--keep DIR]

Builds a corpus (>= 300 MB, >= 10,000 files) from /usr/include, /usr/lib/gcc and
/usr/bin (topped up from /usr/lib/x86_64-linux-gnu if needed), warms the page cache,
then times, alternating baseline and gaia, the median of N runs of:

  capture: gaia capture()                   vs  tar -cf - . | zstd -3 -T0 > file
  restore: gaia extract() with sha256 check vs  tar -I zstd -xf file

gaia's capture does all it does for a real checkpoint: pax headers, the restore-side
header validation, and the scan of every byte for four relocation roots (the work dir,
the corpus, a source and a download dir, as an anchor names them). It prints the
wall-time ratios with PASS/MISS against the targets (capture <= 1.1x, verified restore
<= 1.25x), plus the CPU-time ratios (process + children), which stay meaningful when
other work shares the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gaia_core.anchors import Target
from gaia_core.checkpoints.archive import capture, extract

SOURCES = ["/usr/include", "/usr/lib/gcc", "/usr/bin"]
TOP_UP = "/usr/lib/x86_64-linux-gnu"
MIN_BYTES = 300 * 1024 * 1024
MIN_FILES = 10_000
TARGETS = {"capture": 1.10, "restore": 1.25}


def tree_stats(root: Path) -> tuple[int, int]:
    size = files = 0
    for directory, dirs, names in os.walk(root):
        files += len(names) + len(dirs)
        for name in names:
            size += os.lstat(os.path.join(directory, name)).st_size
    return size, files


def build_corpus(corpus: Path) -> tuple[int, int]:
    corpus.mkdir()
    for source in SOURCES:
        if os.path.isdir(source):
            subprocess.run(
                ["cp", "-a", source, str(corpus / Path(source).name)], check=True
            )
    size, files = tree_stats(corpus)
    if size < MIN_BYTES or files < MIN_FILES:
        subprocess.run(["cp", "-a", TOP_UP, str(corpus / "lib")], check=True)
        size, files = tree_stats(corpus)
    return size, files


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its waited-for children."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action) -> tuple[float, float]:
    """Wall and CPU seconds of ``action``."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    action()
    return time.perf_counter() - start, cpu_seconds() - start_cpu


def fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir()
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep", type=Path, help="work directory to use (kept afterwards)"
    )
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / "corpus"
        if corpus.exists():
            size, files = tree_stats(corpus)
        else:
            size, files = build_corpus(corpus)
        print(f"corpus: {size / 2**20:.1f} MiB, {files} entries, {os.cpu_count()} CPUs")
        # the corpus is a slice of a root filesystem: its absolute symlinks
        # (/etc/alternatives/...) are read relative to it, as in a Buildroot target/ dir
        targets = [Target("corpus", corpus, rootfs_dirs=("*",))]
        roots = {
            "workspace": work,
            "out": corpus,
            "src": work / "src",
            "dl": work / "dl",
        }
        baseline_file, gaia_file = work / "baseline.tar.zst", work / "gaia.tar.zst"
        out = work / "out"

        def baseline_capture() -> None:
            subprocess.run(
                f"tar -C '{corpus}' -cf - . | zstd -3 -T0 -q > '{baseline_file}'",
                shell=True, check=True,
            )  # fmt: skip

        info = None

        def gaia_capture() -> None:
            nonlocal info
            with open(gaia_file, "wb") as dest:
                info = capture(targets, dest, roots=roots)

        def baseline_restore() -> None:
            subprocess.run(
                ["tar", "-C", str(fresh(out)), "-I", "zstd", "-xf", str(baseline_file)],
                check=True,
            )

        def gaia_restore() -> None:
            with open(gaia_file, "rb") as source:
                extract(
                    source,
                    fresh(out),
                    targets,
                    compression="zstd",
                    expected_sha256=info.sha256,
                    expected_size=info.size,
                )

        # warm the page cache and both code paths
        baseline_capture(), gaia_capture(), baseline_restore(), gaia_restore()
        results = {}
        for label, baseline, ours, prepare in (
            ("capture", baseline_capture, gaia_capture, lambda: None),
            ("restore", baseline_restore, gaia_restore, lambda: fresh(out)),
        ):
            base_runs, our_runs = [], []
            for _ in range(args.runs):
                prepare(), os.sync()
                base_runs.append(timed(baseline))
                prepare(), os.sync()
                our_runs.append(timed(ours))
            results[label] = [
                (
                    statistics.median(b[i] for b in base_runs),
                    statistics.median(o[i] for o in our_runs),
                )
                for i in (0, 1)
            ]
            print(
                f"{label}: wall s baseline {[round(b[0], 2) for b in base_runs]} "
                f"gaia {[round(o[0], 2) for o in our_runs]}; "
                f"cpu s baseline {[round(b[1], 2) for b in base_runs]} "
                f"gaia {[round(o[1], 2) for o in our_runs]}"
            )

        print(
            f"payload: gaia {gaia_file.stat().st_size / 2**20:.1f} MiB, "
            f"baseline {baseline_file.stat().st_size / 2**20:.1f} MiB; "
            f"{info.entries} entries, {len(info.embedded)} embed a root, "
            f"{len(info.external_links)} link directories outside"
        )
        missed = False
        for label, ((base, ours), (base_cpu, our_cpu)) in results.items():
            ratio = ours / base
            verdict = "PASS" if ratio <= TARGETS[label] else "MISS"
            missed |= verdict == "MISS"
            print(
                f"{label}: gaia {ours:.2f} s / baseline {base:.2f} s = {ratio:.2f}x "
                f"(target <= {TARGETS[label]}x, {size / 2**20 / ours:.0f} MiB/s)  {verdict}"
                f"   [cpu {our_cpu:.2f} s / {base_cpu:.2f} s = {our_cpu / base_cpu:.2f}x]"
            )
        return 1 if missed else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
