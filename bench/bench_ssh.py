"""Benchmark: the SSH backend against OpenSSH ``scp`` on the same loopback sshd.

    python bench/bench_ssh.py                 # 1 GiB payload
    python bench/bench_ssh.py --size-mb 128   # a quick run

A native sshd is started on loopback (as in the integration tests). Each round
uploads and downloads the payload with ``scp`` and with the backend, alternating
which goes first. The best time of each over the rounds is kept, so a busy machine
hurts both the same way. Every backend transfer runs in a child process that does
only that transfer, and the child's peak RSS is the memory that is reported. The timed
section of each side is one whole transfer including connecting and the SSH handshake;
the backend child imports paramiko before the clock starts (a gaia process does that
once for all its transfers). ``ranged`` is the object read back as the core reads a
pack, with ``read_range`` in 16 MiB ranges over 4 backends (4 SSH connections) in
threads (bench/ranged.py), against the scp download.
Targets: throughput >= 0.8x scp, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from contract import write_file  # noqa: E402  (incompressible payload, 1 MiB blocks)
from ranged import KEY, read_in_ranges  # noqa: E402

from gaia_core.fingerprints import sha256_file  # noqa: E402

THROUGHPUT_TARGET = 0.8
PEAK_RSS_TARGET_MB = 200
#: the backend's directions, each against scp's of the same direction
BASELINE = {"up": "up", "down": "down", "ranged": "down"}


# -- the child: one backend transfer, nothing else ------------------------------------


def child(spec: dict) -> None:
    from gaia_ssh.backend import SSHBackend
    from gaia_ssh.config import SSHConfig

    backend = SSHBackend("bench", SSHConfig(**spec["config"]))
    # paramiko and cryptography load once per gaia process, not per transfer; the SSH
    # connection and handshake stay inside the timed section, as they do for scp
    import gaia_ssh.transfer  # noqa: F401  (imports paramiko)

    cpu_before = cpu_seconds(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if spec["op"] == "upload":
        backend.upload(KEY, Path(spec["path"]))
    elif spec["op"] == "ranged":
        make = lambda: SSHBackend("bench", SSHConfig(**spec["config"]))  # noqa: E731
        read_in_ranges(make, KEY, spec["size"], Path(spec["path"]))
    else:
        with open(spec["path"], "wb") as dest:
            backend.download(KEY, dest)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu_before
    backend.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_rss_mb": peak_kb / 1024}))


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_backend(op: str, path: Path, config: dict, size: int = 0) -> dict:
    spec = json.dumps({"op": op, "path": str(path), "config": config, "size": size})
    out = subprocess.run([sys.executable, __file__, "--child", spec], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_scp(args: list[str], server) -> tuple[float, float]:
    command = [
        "scp", "-q", "-P", str(server.port), "-i", str(server.client_key),
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "BatchMode=yes", *args,
    ]  # fmt: skip
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before


# -- the parent ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(json.loads(options.child))
        return 0
    if shutil.which("scp") is None:
        sys.exit("scp is missing (Debian package openssh-client)")

    from servers.ssh import NativeSSHServer

    with tempfile.TemporaryDirectory(prefix="gaia-bench-ssh-") as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        server = NativeSSHServer(work / "sshd")
        server.start()
        try:
            return bench(server, work, options)
        finally:
            server.close()


def bench(server, work: Path, options) -> int:
    size_mb = options.size_mb
    payload = work / "payload"
    print(f"generating {size_mb} MiB of incompressible data ...", flush=True)
    write_file(payload, size_mb << 20)
    expected = sha256_file(payload)
    remote_scp = f"{server.base_dir}/scp-copy"
    config = {
        "target": f"{server.user}@{server.host}:{server.base_dir}",
        "port": server.port,
        "identity_file": str(server.client_key),
        "known_hosts_file": str(server.known_hosts),
    }
    target = f"{server.user}@{server.host}"
    best = {k: float("inf") for k in ("scp_up", "scp_down", "gaia_up", "gaia_down", "gaia_ranged")}
    peaks = {"gaia_up": 0.0, "gaia_down": 0.0, "gaia_ranged": 0.0}
    cpu = {k: float("inf") for k in best}

    for round_no in range(options.rounds):
        order = ["scp", "gaia"] if round_no % 2 == 0 else ["gaia", "scp"]
        for tool in order:
            for direction in ("up", "down", "ranged") if tool == "gaia" else ("up", "down"):
                copy = work / f"{tool}-down"
                if tool == "scp" and direction == "up":
                    seconds, used = run_scp([str(payload), f"{target}:{remote_scp}"], server)
                elif tool == "scp":
                    seconds, used = run_scp([f"{target}:{remote_scp}", str(copy)], server)
                else:
                    path = payload if direction == "up" else copy
                    op = {"up": "upload", "down": "download", "ranged": "ranged"}[direction]
                    result = run_backend(op, path, config, size_mb << 20)
                    seconds, used = result["seconds"], result["cpu"]
                    peaks[f"gaia_{direction}"] = max(peaks[f"gaia_{direction}"], result["peak_rss_mb"])
                best[f"{tool}_{direction}"] = min(best[f"{tool}_{direction}"], seconds)
                cpu[f"{tool}_{direction}"] = min(cpu[f"{tool}_{direction}"], used)
                if direction != "up":
                    if sha256_file(copy) != expected:
                        print(f"FAIL: the {tool} download differs from the payload")
                        return 1
                    copy.unlink()
                print(
                    f"  round {round_no + 1}: {tool:4} {direction:4} {size_mb / seconds:8.1f} MB/s"
                    f"  client CPU {used:6.2f} s",
                    flush=True,
                )

    ok = True
    print(f"\nSSH backend vs OpenSSH scp, {size_mb} MiB over loopback, best of {options.rounds}:")
    for direction, baseline in BASELINE.items():
        gaia_rate = size_mb / best[f"gaia_{direction}"]
        scp_rate = size_mb / best[f"scp_{baseline}"]
        ratio = gaia_rate / scp_rate
        peak = peaks[f"gaia_{direction}"]
        rate_ok = ratio >= THROUGHPUT_TARGET
        peak_ok = peak < PEAK_RSS_TARGET_MB
        ok &= rate_ok and peak_ok
        name = {"up": "upload", "down": "download", "ranged": "ranged"}[direction]
        print(
            f"  {name:8}  gaia {gaia_rate:7.1f} MB/s  scp {scp_rate:7.1f} MB/s  ratio {ratio:4.2f}x "
            f"[{'PASS' if rate_ok else 'MISS'} >= {THROUGHPUT_TARGET}x]  "
            f"peak RSS {peak:6.1f} MB [{'PASS' if peak_ok else 'MISS'} < {PEAK_RSS_TARGET_MB} MB]"
        )
    print("  client CPU seconds (less sensitive to a busy machine than wall time):")
    for direction, baseline in BASELINE.items():
        name = {"up": "upload", "down": "download", "ranged": "ranged"}[direction]
        print(f"  {name:8}  gaia {cpu[f'gaia_{direction}']:6.2f} s  scp+ssh {cpu[f'scp_{baseline}']:6.2f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
