"""Store format 4 on a real Buildroot build: two checkpoints that differ in the hostname.

    python bench/bench_real_buildroot.py --repo /path/to/br-git [--keep DIR]

Needs the real Buildroot that ``shared/real-buildroot`` prepares (``docs/real-buildroot.md``):
a git repository whose tag ``gaia-acceptance-busybox`` builds ``gaiatest_busybox_defconfig``
offline from the download dir ``/opt/br-offline-src/dl``. Everything runs through ``gaia
run`` with a ``dir`` backend (the figures are gaia's own, not a network's):

1. producer: a cold build with hostname A, captured and uploaded;
2. producer: the hostname set to B, built again in the same out dir, captured and uploaded:
   bytes the second upload added to the store / bytes of the first (target <= 5%), the
   manifests' own bytes printed apart;
3. consumer, a fresh checkout at another path with an empty local store: A restored from
   the backend, then B over it in place: bytes downloaded for B, and the restore task's
   wall time / a full restore of B into a second fresh checkout (target <= 10%).

The full restore of B is not taken in the first consumer's out dir after wiping it: on a disk
without a journal every file created in the minute after a large deletion scans past the
freed inodes, which made that baseline up to three times slower and the ratio a false PASS.

Wall times are gaia's own ``DONE:`` times of the restore task (placement included). gaia's
modules are compiled to bytecode first, as ``pip install`` does: a restore imports some of
them, and with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) an editable install
would otherwise compile them in every run, inside the task's time (40-50 ms of 0.3 s).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GAIA = [str(Path(sys.executable).with_name("gaia"))]
TASK = "checkpoints.restore.buildroot-build"
BUILD_TOML = """\
[buildroot]
repo = "{repo}"
version = "{version}"
defconfig = "{defconfig}"
download_dir = "{dl_dir}"

[buildroot.symbols]
TARGET_GENERIC_HOSTNAME = "{hostname}"

[checkpoints]
enabled = true

[checkpoints.backends.dir.remote]
path = "{remote}"

[[checkpoints.points]]
id = "base-os"
anchor_task = "buildroot.build"
backend = "dir:remote"
upload_policy = "always"
"""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DONE = re.compile(r"^DONE: (\S+) \(([\d.]+)(ms|s)\)", re.M)
_DOWNLOADED = re.compile(r"downloaded [0-9a-f]{12} via \S+ \(([\d.]+) (B|KiB|MiB|GiB) of")
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def gaia_run(ws: Path, what: str) -> str:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    done = subprocess.run([*GAIA, "run", "build.toml"], cwd=ws, env=env, capture_output=True, text=True)
    text = _ANSI.sub("", done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"{what}: gaia run exited {done.returncode}:\n{text[-6000:]}")
    print(f"  {what}: {time.monotonic() - started:.1f} s")
    return text


def task_seconds(text: str, task: str) -> float:
    for name, value, unit in _DONE.findall(text):
        if name == task:
            return float(value) / (1000 if unit == "ms" else 1)
    sys.exit(f"no DONE line for {task}:\n{text[-4000:]}")


def downloaded(text: str) -> int:
    found = _DOWNLOADED.search(text)
    return round(float(found.group(1)) * _UNITS[found.group(2)]) if found else 0


def size_of(root: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def workspace(path: Path, hostname: str, options: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "build.toml").write_text(BUILD_TOML.format(hostname=hostname, **options))
    return path


def compile_gaia() -> None:
    """Bytecode for gaia's packages, as an install has it (see the module's docstring)."""
    for package in ("gaia_core", "gaia_buildroot"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(location, quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=os.environ.get("GAIA_REAL_BUILDROOT_REPO"))
    parser.add_argument("--version", default="gaia-acceptance-busybox")
    parser.add_argument("--defconfig", default="gaiatest_busybox_defconfig")
    parser.add_argument("--dl-dir", default="/opt/br-offline-src/dl")
    parser.add_argument("--keep", type=Path, help="work here and leave it (default: a temporary dir)")
    args = parser.parse_args()
    if not args.repo:
        parser.error("--repo (or GAIA_REAL_BUILDROOT_REPO) names the prepared Buildroot repository")
    base = args.keep or Path(tempfile.mkdtemp(prefix="gaia-bench-br-"))
    remote = base / "remote"
    for old in (remote, base / "producer", base / "consumer-at-a-longer-path", base / "consumer-b-at-a-longer-path"):
        shutil.rmtree(old, ignore_errors=True)
    remote.mkdir(parents=True)
    options = {"repo": args.repo, "version": args.version, "defconfig": args.defconfig, "dl_dir": args.dl_dir,
               "remote": str(remote)}

    compile_gaia()
    print(f"real Buildroot {args.version} ({args.defconfig}) in {base}")
    producer = workspace(base / "producer", "gaia-bench-a", options)
    cold = gaia_run(producer, "producer: cold build, hostname A, captured and uploaded")
    first = size_of(remote, "packs/*")
    first_manifests = size_of(remote, "points/**/*")
    workspace(producer, "gaia-bench-b", options)
    gaia_run(producer, "producer: hostname B, built again in place, captured and uploaded")
    second = size_of(remote, "packs/*") - first
    second_manifests = size_of(remote, "points/**/*") - first_manifests

    consumer = workspace(base / "consumer-at-a-longer-path", "gaia-bench-a", options)
    full_a = gaia_run(consumer, "consumer: A restored from the backend")
    workspace(consumer, "gaia-bench-b", options)
    over = gaia_run(consumer, "consumer: B restored over A in place")
    fresh = workspace(base / "consumer-b-at-a-longer-path", "gaia-bench-b", options)
    full = gaia_run(fresh, "consumer: B restored in full into a second fresh checkout")

    incremental_s, full_s = task_seconds(over, TASK), task_seconds(full, TASK)
    moved_over, moved_full = downloaded(over), downloaded(full)
    print(f"entries: {_entries(cold)}; first upload {first / 2**20:.1f} MiB of packs "
          f"(+{first_manifests / 2**10:.1f} KiB manifest)")
    print(f"dedup:   second upload {second / 2**20:.2f} MiB / first {first / 2**20:.1f} MiB = "
          f"{second / first:.3f} (target <= 0.05; manifest {second_manifests / 2**10:.1f} KiB apart)  "
          f"{'PASS' if second <= 0.05 * first else 'MISS'}")
    print(f"restore: B over A {incremental_s:.2f} s / full {full_s:.2f} s = {incremental_s / full_s:.3f} "
          f"(target <= 0.10)  {'PASS' if incremental_s <= 0.10 * full_s else 'MISS'}; downloaded "
          f"{moved_over / 2**20:.2f} MiB over A, {moved_full / 2**20:.1f} MiB in full "
          f"(A in full: {task_seconds(full_a, TASK):.2f} s)")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _entries(text: str) -> str:
    found = re.search(r"\((\d+) entries", text)
    return found.group(1) if found else "?"


if __name__ == "__main__":
    sys.exit(main())
