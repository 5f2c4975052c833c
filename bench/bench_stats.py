"""``gaia checkpoints stats --remote`` over 30 days of records from 20 hosts, once the cache
is warm, against ``gaia checkpoints status --no-remote`` on the same build (interpreter
start, imports, loading and planning the build: what any command that takes a build file
costs). Target: the warm stats answer in under 1 s.

    python bench/bench_stats.py [--runs 7] [--days 30]

The records are simulated as a team's month runs (:mod:`records_corpus`) and published
into a ``dir`` tier as runs publish them, one object per run. The first ``stats --remote``
fetches them all into the cache (timed once: the cold figure); then N alternating runs
of the warm ``stats --remote`` (which still lists the days not known complete), ``stats``
(the cache only) and the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TARGET_SECONDS = 1.0

from bench_status import gaia, timed  # noqa: E402
from records_corpus import hosts, publish, simulate  # noqa: E402


def project(tmp: Path) -> Path:
    """The quickstart with its point on a ``dir`` tier (``dir:team``)."""
    root = tmp / "project"
    shutil.copytree(HERE.parent / "examples" / "quickstart", root, ignore=shutil.ignore_patterns("build", "out"))
    (tmp / "team").mkdir()
    layer = root / "layers" / "checkpoints.toml"
    layer.write_text(f'[checkpoints]\nenabled = true\nshare_records = true\n\n[checkpoints.backends.dir.team]\n'
                     f'path = "{tmp / "team"}"\n\n[[checkpoints.points]]\nid = "base-os"\n'
                     f'anchor_task = "buildroot.build"\nbackend = "dir:team"\n')
    return root / "build.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_") and k != "PYTHONDONTWRITEBYTECODE"}
    os.environ.clear()
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="gaia-bench-stats-") as tmp:
        build = project(Path(tmp))
        records = simulate(days=args.days, tier="dir:team")
        objects = publish(records, Path(tmp) / "team")
        since = f"{args.days}d"
        stats = gaia("checkpoints", "stats", str(build), "--since", since)
        cold = timed([*stats, "--remote"])
        baseline_argv = gaia("checkpoints", "status", str(build), "--no-remote")
        warm, local, baseline = [], [], []
        for _ in range(args.runs):
            warm.append(timed([*stats, "--remote"]))
            local.append(timed(stats))
            baseline.append(timed(baseline_argv))
    w, c, b = statistics.median(warm), statistics.median(local), statistics.median(baseline)
    print(f"records: {len(records)} from {len(hosts())} hosts over {args.days} days, {objects} shared objects")
    print(f"stats --remote, cold cache (fetches every object): {cold:.2f} s")
    print(f"stats --remote, warm cache: {w:.2f} s / baseline {b:.2f} s = {w / b:.2f}x; "
          f"target < {TARGET_SECONDS:.1f} s  {'PASS' if w < TARGET_SECONDS else 'FAIL'}")
    print(f"stats (cache only):         {c:.2f} s / baseline {b:.2f} s = {c / b:.2f}x")
    return 0 if w < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
