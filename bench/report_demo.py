"""The report page of a team's simulated month (:mod:`records_corpus`), and its screenshot.

    python bench/report_demo.py [--out docs/report.html] [--screenshot docs/report.png]

The month's records go through the same code as ``gaia checkpoints report`` (stats, then
the page), as if this machine were the team's first CI runner; with ``--screenshot`` the
page is rendered by Debian's chromium, headless and offline. The README's picture of the
page is made this way.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from records_corpus import POINT, simulate  # noqa: E402

from gaia_core import atomic  # noqa: E402
from gaia_core.checkpoints import stats  # noqa: E402
from gaia_core.checkpoints.htmlreport import render  # noqa: E402
from gaia_core.checkpoints.records import epoch  # noqa: E402
from gaia_core.hostinfo import host_name  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-default-browser-check", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("report.html"))
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--size", default="1200,2500", help="the browser window, WIDTH,HEIGHT")
    args = parser.parse_args()
    me = host_name()
    end = time.time() // 86400 * 86400  # the month up to last midnight (UTC): no day half over
    records = [{**r, "t": epoch(r["at"])} for r in simulate(days=30, me=me, end=end)]
    since = end - 30 * 86400
    result = stats.compute(records, since=since, point_ids=[POINT], tier_sizes={}, local_host=me)
    atomic.write_bytes(args.out, render(result, records, title="gaia checkpoints: build.toml", since=since,
                                        tier_sizes={}, local_host=me).encode())
    print(f"wrote {args.out} ({result['runs']} runs on {result['hosts_seen']} hosts)")
    if args.screenshot:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            print("chromium is not installed (sh integration/apt-install.sh chromium)", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="gaia-report-demo-") as profile:
            subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={args.size}",
                            f"--screenshot={args.screenshot.resolve()}", args.out.resolve().as_uri()],
                           check=True, capture_output=True)
        print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
