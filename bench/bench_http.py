"""HTTP backend upload and download over loopback, against curl in the same run.

    python bench/bench_http.py [--size-mb 1024] [--runs 2]

Starts the native nginx WebDAV server of the integration suite (Debian's nginx; run
integration/install-servers.sh first), writes an incompressible payload once, then times,
alternating baseline and gaia, the best of N runs of (in /dev/shm when it has room, so
that disk writeback does not drown the clients' difference):

  upload:   HttpBackend.upload()   (PUT to a temporary name + MOVE)  vs  curl -T
  download: HttpBackend.download() (streamed into a file)            vs  curl -o
  ranged:   read_range() in 16 MiB ranges over 4 backends in threads,
            as the core reads a pack back (bench/ranged.py)          vs  curl -o

The timed section of each side is one whole transfer including its TCP connect (curl's
also includes its process start); the backend child imports requests and builds its
Session before the clock starts, as a gaia process does once for all its transfers.

The backend runs in a child process that does nothing else, so its RSS high-water mark
(getrusage) is the transfer's peak memory, interpreter included. Prints MB/s, the ratio
and PASS/MISS against the targets: throughput >= 0.8x curl, peak memory < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integration"))
sys.path.insert(0, str(REPO / "bench"))

THROUGHPUT_TARGET = 0.8
MEMORY_TARGET_MB = 200
KEY_DIR = "bench/0123456789abcdef"
#: gaia's operations, each against curl's of the same direction
OPS = {"upload": "upload", "download": "download", "ranged": "download"}

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig
mode, base_url, token, key, path, size, bench_dir = sys.argv[1:8]
sys.path.insert(0, bench_dir)
from ranged import read_in_ranges
make = lambda: HttpBackend("bench", HttpConfig(base_url=base_url, token_env="T"), environ={"T": token})
backend = make()
# imports requests and builds the Session (no network): a gaia run pays this once, not
# per transfer; connecting stays inside the timed section, as it does for curl
backend.session()
start = time.perf_counter()
if mode == "upload":
    backend.upload(key, Path(path))
elif mode == "ranged":
    read_in_ranges(make, key, int(size), Path(path))
else:
    with open(path, "wb") as out:
        backend.download(key, out)
elapsed = time.perf_counter() - start
backend.close()
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_mb": peak_kb / 1024}))
"""


def default_dir(size: int) -> str | None:
    """tmpfs when it fits (payload, two stored copies, two downloads): disk writeback
    otherwise dominates and makes the numbers noise."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        stat = os.statvfs(shm)
        if stat.f_bavail * stat.f_frsize > 6 * size:
            return str(shm)
    return None


def write_payload(path: Path, size: int) -> None:
    block = 1 << 20
    with path.open("wb") as out:
        for offset in range(0, size, block):
            out.write(os.urandom(min(block, size - offset)))


def run_backend(mode: str, base_url: str, token: str, key: str, path: Path, size: int = 0) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, base_url, token, key, str(path), str(size), str(REPO / "bench")],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"backend {mode} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def run_curl(mode: str, url: str, token: str, path: Path) -> float:
    # the token goes through a header file argument, not the command line (ps shows that)
    command = ["curl", "-sS", "--fail", "-H", f"@{os.environ['GAIA_BENCH_HEADERS']}"]
    command += ["-T", str(path), url] if mode == "upload" else ["-o", str(path), url]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="payload size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, best kept (default 3)")
    parser.add_argument("--dir", help="work directory (default: /dev/shm when it has room, else the temp dir)")
    args = parser.parse_args()

    from ranged import KEY

    from gaia_core.fingerprints import sha256_file
    from servers.http import NginxServer

    size = args.size_mb << 20
    with tempfile.TemporaryDirectory(prefix="gaia-bench-http-", dir=args.dir or default_dir(size)) as tmp:
        print(f"working in {tmp}")
        work = Path(tmp)
        token = "bench-" + uuid.uuid4().hex
        headers = work / "headers"
        headers.write_text(f"Authorization: Bearer {token}\n")
        headers.chmod(0o600)
        os.environ["GAIA_BENCH_HEADERS"] = str(headers)
        server = NginxServer(work / "nginx", token)
        server.start()
        try:
            payload = work / "payload.bin"
            print(f"writing a {args.size_mb} MiB incompressible payload ...", flush=True)
            write_payload(payload, size)
            expected = sha256_file(payload)
            base_url = f"{server.url}/store"
            curl_url = f"{base_url}/{KEY_DIR}/curl-payload"
            best = dict.fromkeys(("curl upload", "gaia upload", "curl download", "gaia download", "gaia ranged"),
                                 float("inf"))
            peaks = dict.fromkeys(OPS, 0.0)
            for _ in range(args.runs):
                best["curl upload"] = min(best["curl upload"], run_curl("upload", curl_url, token, payload))
                result = run_backend("upload", base_url, token, KEY, payload)
                best["gaia upload"] = min(best["gaia upload"], result["seconds"])
                peaks["upload"] = max(peaks["upload"], result["peak_mb"])

                curl_copy, gaia_copy = work / "curl-copy", work / "gaia-copy"
                best["curl download"] = min(best["curl download"], run_curl("download", curl_url, token, curl_copy))
                for op in ("download", "ranged"):
                    result = run_backend(op, base_url, token, KEY, gaia_copy, size)
                    best[f"gaia {op}"] = min(best[f"gaia {op}"], result["seconds"])
                    peaks[op] = max(peaks[op], result["peak_mb"])
                    if sha256_file(gaia_copy) != expected:
                        raise SystemExit(f"the gaia {op} copy differs from the payload")
                    gaia_copy.unlink()
                if curl_copy.stat().st_size != size:
                    raise SystemExit("the curl download has the wrong size")
                curl_copy.unlink()
        finally:
            server.stop()

    mb = size / 1e6
    print(f"\nHTTP backend vs curl, {args.size_mb} MiB over loopback (nginx WebDAV), best of {args.runs}")
    ok = True
    for op, curl_op in OPS.items():
        curl_rate, gaia_rate = mb / best[f"curl {curl_op}"], mb / best[f"gaia {op}"]
        ratio = gaia_rate / curl_rate
        fast = ratio >= THROUGHPUT_TARGET
        small = peaks[op] < MEMORY_TARGET_MB
        ok = ok and fast and small
        print(
            f"  {op:<8}  curl {curl_rate:8.1f} MB/s   gaia {gaia_rate:8.1f} MB/s   ratio {ratio:5.2f}x "
            f"[{'PASS' if fast else 'MISS'} >= {THROUGHPUT_TARGET}x]   peak RSS {peaks[op]:6.1f} MB "
            f"[{'PASS' if small else 'MISS'} < {MEMORY_TARGET_MB} MB]"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
