"""Benchmark: the S3 backend against a single boto3 upload_file/download_file, same server, same run.

gaia's side is timed three ways: ``upload()`` and ``download()`` of the whole object, and
``ranged``: the object read back as the core reads a pack, with ``read_range`` in 16 MiB
ranges over 4 backend instances in threads (bench/ranged.py), against the same baseline
download.

    /work/venv/bin/python bench/bench_s3.py            # 1 GiB payload
    /work/venv/bin/python bench/bench_s3.py --size-mb 64

The server is moto's S3 API on loopback (integration/servers/s3.py), in its own process.
Each transfer runs in a fresh child process so that its peak RSS (``ru_maxrss``) counts
that transfer only. Targets: throughput >= 0.8x the baseline, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integration"))

sys.path.insert(0, str(REPO / "bench"))

from contract import write_file  # noqa: E402  (incompressible payload, 1 MiB blocks)
from ranged import KEY as PACK_KEY  # noqa: E402
from ranged import read_in_ranges  # noqa: E402

from gaia_core.fingerprints import sha256_file  # noqa: E402

RATIO_TARGET = 0.8
RSS_TARGET_MB = 200
KEYS = {"baseline": "bench/baseline.pack", "gaia": PACK_KEY}
#: gaia's operations, each against the baseline's of the same direction
OPS = {"upload": "upload", "download": "download", "ranged": "download"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="payload size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per transfer; the fastest counts")
    args = parser.parse_args()

    from servers.s3 import MotoServer

    with tempfile.TemporaryDirectory(prefix="gaia-bench-s3-") as tmp:
        work = Path(tmp)
        payload = write_file(work / "payload", args.size_mb << 20)
        expected = sha256_file(payload)
        server = MotoServer()
        try:
            env = {**os.environ, "BENCH_S3": json.dumps(server_info(server))}
            results = {}
            for op, baseline_op in OPS.items():
                for who in ("baseline", "gaia") if op == baseline_op else ("gaia",):
                    runs = [child(who, op, payload, work, env) for _ in range(args.repeat)]
                    results[op, who] = min(runs, key=lambda r: r["seconds"])
                    if op != "upload":
                        got = sha256_file(Path(results[op, who]["path"]))
                        assert got == expected, f"{who} {op} is corrupt"
        finally:
            server.close()

    size_mb = args.size_mb * (1 << 20) / 1e6
    print(f"S3 backend vs boto3 (one upload_file/download_file), {args.size_mb} MiB over loopback to moto")
    ok = True
    for op, baseline_op in OPS.items():
        base, ours = results[baseline_op, "baseline"], results[op, "gaia"]
        base_speed, our_speed = size_mb / base["seconds"], size_mb / ours["seconds"]
        ratio = our_speed / base_speed
        rss_mb = ours["maxrss_kb"] / 1024
        ratio_ok, rss_ok = ratio >= RATIO_TARGET, rss_mb < RSS_TARGET_MB
        ok = ok and ratio_ok and rss_ok
        print(
            f"  {op:8}  baseline {base_speed:7.1f} MB/s (peak RSS {base['maxrss_kb'] / 1024:5.0f} MB)"
            f"  gaia {our_speed:7.1f} MB/s  ratio {ratio:4.2f}x [{'PASS' if ratio_ok else 'MISS'} >= {RATIO_TARGET}x]"
            f"  peak RSS {rss_mb:5.0f} MB [{'PASS' if rss_ok else 'MISS'} < {RSS_TARGET_MB} MB]"
        )
    return 0 if ok else 1


def server_info(server) -> dict:
    return {
        "endpoint": server.endpoint_url,
        "bucket": server.bucket,
        "region": server.region,
        "key_id": server.access_key_id,
        "secret": server.secret_access_key,
    }


def child(who: str, op: str, payload: Path, work: Path, env: dict) -> dict:
    target = work / f"down-{who}"
    command = [sys.executable, __file__, "--child", who, op, str(payload), str(target)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{who} {op} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["path"] = str(target)
    return result


def run_child(who: str, op: str, payload: str, target: str) -> None:
    """In a fresh process: one transfer, timed, then its peak RSS."""
    info = json.loads(os.environ["BENCH_S3"])
    key = KEYS[who]
    if who == "baseline":
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=info["endpoint"],
            region_name=info["region"],
            aws_access_key_id=info["key_id"],
            aws_secret_access_key=info["secret"],
            config=Config(s3={"addressing_style": "path"}),
        )
        started = time.perf_counter()
        if op == "upload":
            client.upload_file(payload, info["bucket"], key)
        else:
            client.download_file(info["bucket"], key, target)
    else:
        from gaia_s3.backend import S3Backend
        from gaia_s3.config import S3Config

        environ = {
            "B": info["bucket"],
            "E": info["endpoint"],
            "R": info["region"],
            "K": info["key_id"],
            "S": info["secret"],
        }
        config = S3Config(
            bucket_env="B",
            endpoint_url_env="E",
            region_env="R",
            aws_access_key_id_env="K",
            aws_secret_access_key_env="S",
        )
        backend = S3Backend("bench", config, environ=environ)
        started = time.perf_counter()
        if op == "upload":
            backend.upload(key, Path(payload))
        elif op == "ranged":
            size = Path(payload).stat().st_size
            read_in_ranges(lambda: S3Backend("bench", config, environ=environ), key, size, Path(target))
        else:
            with open(target, "wb") as dest:
                backend.download(key, dest)
        backend.close()
    seconds = time.perf_counter() - started
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "maxrss_kb": maxrss_kb}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        run_child(*sys.argv[2:])
    else:
        sys.exit(main())
