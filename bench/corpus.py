"""The benches' shared corpus and timing helpers.

The corpus is a slice of this machine's root filesystem (headers, compilers, programs):
real file sizes and contents, the mix a Buildroot out dir has (many small text files,
some large binaries, links). Timings are wall and CPU seconds of this process and its
children; peaks are the process's maximum resident set.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

SOURCES = ["/usr/include", "/usr/lib/gcc", "/usr/bin"]
TOP_UP = "/usr/lib/x86_64-linux-gnu"
MIN_BYTES = 300 * 1024 * 1024
MIN_FILES = 10_000


def tree_stats(root: Path) -> tuple[int, int]:
    """(bytes of regular files, entries) under ``root``."""
    size = entries = 0
    for directory, dirs, names in os.walk(root):
        entries += len(names) + len(dirs)
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            size += st.st_size if not os.path.islink(os.path.join(directory, name)) else 0
    return size, entries


def build_corpus(corpus: Path) -> tuple[int, int]:
    if corpus.exists():
        return tree_stats(corpus)
    corpus.mkdir(parents=True)
    for source in SOURCES:
        if os.path.isdir(source):
            subprocess.run(["cp", "-a", source, str(corpus / Path(source).name)], check=True)
    size, entries = tree_stats(corpus)
    if size < MIN_BYTES or entries < MIN_FILES:
        subprocess.run(["cp", "-a", TOP_UP, str(corpus / "lib")], check=True)
        size, entries = tree_stats(corpus)
    return size, entries


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``action``."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    action()
    return time.perf_counter() - start, cpu_seconds() - start_cpu


def fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def drop_caches() -> None:
    """Write back dirty pages, so one run's writes are not billed to the next."""
    os.sync()


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
