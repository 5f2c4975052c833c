"""Issue 10 at the level users see: whole ``gaia run`` and ``gaia checkpoints status``
commands against remotes that never answer or freeze mid-transfer, with the default time
budgets, and SIGTERM during a blocked transfer (marked slow). Issue 18: ``pull`` against a
silent server within the probe budget, and SIGTERM or SIGINT during a frozen S3 upload
ending the run within 5 s, every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from servers.http import start_http_server
from servers.misbehaving import DOWN, SilentServer, StallingProxy

TESTS = Path(__file__).resolve().parent.parent / "tests"
CLI = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS)!r})
    from checkpoint_plugin import CounterPlugin
    from gaia_core.cli import main
    from gaia_core.plugins import get_plugin_manager
    pm = get_plugin_manager()
    pm.register(CounterPlugin(), name="counter")
    main(sys.argv[1:], pm=pm)
""")
#: the issue's bounds for a remote that accepts and never answers, with the default budgets
RUN_BOUND_S = 60
STATUS_BOUND_S = 20
#: a command whose one remote call is a probe: probe_timeout (10 s) and the CLI's start
PROBE_BOUND_S = 10 + 5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_http_server(tmp_path_factory.mktemp("nginx"), token="it-" + uuid.uuid4().hex)
    yield server
    server.stop()


def write_build(root: Path, backend_table: str, ref: str, **counter) -> Path:  # type: ignore[no-untyped-def]
    root.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in counter.items())
    build = root / "build.toml"
    build.write_text(f'[counter]\nvalue = "a"\n{extra}\n[checkpoints]\nenabled = true\n{backend_table}\n'
                     f'[[checkpoints.points]]\nid = "base"\nanchor_task = "counter.build"\nbackend = "{ref}"\n'
                     'upload_policy = "always"\n')
    return build


def gaia(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):  # type: ignore[no-untyped-def]
    script = tmp_path / "gaia_counter.py"
    script.write_text(CLI)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GAIA_", "AWS_"))}
    full.update(env or {})
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=full,
                          timeout=timeout)
    return done, time.monotonic() - started


def silent_backend(kind: str, address: tuple[str, int], tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The ``[checkpoints.backends]`` table of a ``kind`` backend aimed at ``address``, and its env."""
    host, port = address
    if kind == "http":
        return f'[checkpoints.backends.http.c]\nbase_url = "http://{host}:{port}/cache"\n', {}
    if kind == "s3":
        table = (f'[checkpoints.backends.s3.c]\nbucket = "cache"\nregion = "us-east-1"\n'
                 f'endpoint_url = "http://{host}:{port}"\naws_access_key_id_env = "K"\n'
                 'aws_secret_access_key_env = "S"\n')
        return table, {"K": "AKIAEXAMPLE", "S": "not-a-real-secret"}
    key = tmp_path / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text("")
    table = (f'[checkpoints.backends.ssh.c]\ntarget = "gaia@{host}:/srv/cache"\nport = {port}\n'
             f'identity_file = "{key}"\nknown_hosts_file = "{known}"\n')
    return table, {}


def terminate_frozen_run(tmp_path: Path, build: Path, env: dict[str, str], proxy: StallingProxy, direction: str,
                         after: int, sig: int = signal.SIGTERM) -> tuple[int, str, float]:
    """Start ``gaia run``, wait until ``proxy`` froze its transfer, send ``sig``: (code,
    output, seconds from the signal to the end of the process)."""
    script = tmp_path / "gaia_counter.py"
    script.write_text(CLI)
    full = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    full.update(env)
    proc = subprocess.Popen([sys.executable, str(script), "run", str(build)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full)
    try:
        deadline = time.monotonic() + 60
        while proxy.relayed[direction] < after and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the transfer now sits in a blocking socket call
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def nginx_table(http_server, name: str, url: str | None = None) -> str:  # type: ignore[no-untyped-def]
    return (f'[checkpoints.backends.http.c]\nbase_url = "{url or http_server.url}/{name}-{os.getpid()}"\n'
            'token_env = "T"\n')


def via(proxy: StallingProxy) -> str:
    return f"http://{proxy.address[0]}:{proxy.address[1]}"


def upstream_of(http_server) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    host, port = http_server.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


@pytest.mark.parametrize("kind", ["http", "s3", "ssh"])
def test_an_auto_run_against_a_server_that_never_answers_ends_within_a_minute(tmp_path, kind):
    with SilentServer() as silent:
        table, env = silent_backend(kind, silent.address, tmp_path)
        build = write_build(tmp_path / "ws", table, f"{kind}:c")
        status, status_s = gaia(tmp_path, "checkpoints", "status", str(build), env=env)
        run, run_s = gaia(tmp_path, "run", str(build), env=env)
    assert status.returncode == 5, status.stdout + status.stderr
    assert status_s < STATUS_BOUND_S, status_s
    assert "remote_probe_error" in status.stdout and "probe_timeout" in status.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert run_s < RUN_BOUND_S, run_s
    assert "skipped for the rest of this run" in run.stdout
    queue = json.loads((tmp_path / "ws" / "build" / "checkpoints" / "upload-queue.json").read_text())
    assert [e["state"] for e in queue["entries"]] == ["failed"]


def test_sigterm_during_a_download_frozen_mid_body_ends_the_run_within_5_s(tmp_path, http_server):
    """The object is on nginx; a proxy in front of it freezes the payload after 256 KiB."""
    env = {"T": http_server.token}
    first = write_build(tmp_path / "producer", nginx_table(http_server, "run-download"), "http:c", bulk=8 << 20)
    produced, _ = gaia(tmp_path, "run", str(first), env=env)
    assert produced.returncode == 0, produced.stdout + produced.stderr
    with StallingProxy(upstream_of(http_server), direction=DOWN, after=256 << 10) as proxy:
        table = nginx_table(http_server, "run-download", url=via(proxy))
        consumer = write_build(tmp_path / "consumer", table, "http:c", bulk=8 << 20)
        code, out, stopped_s = terminate_frozen_run(tmp_path, consumer, env, proxy, DOWN, 256 << 10)
    assert code == 143, out
    assert stopped_s < 5 + 1.5, stopped_s
    assert "INTERRUPTED" in out


def test_sigterm_during_an_upload_frozen_mid_body_leaves_it_pending_for_retry(tmp_path, http_server):
    from servers.misbehaving import UP

    env = {"T": http_server.token}
    with StallingProxy(upstream_of(http_server), direction=UP, after=256 << 10) as proxy:
        table = nginx_table(http_server, "run-upload", url=via(proxy))
        build = write_build(tmp_path / "ws", table, "http:c", bulk=8 << 20)
        code, out, stopped_s = terminate_frozen_run(tmp_path, build, env, proxy, UP, 256 << 10)
    assert code == 143, out
    assert stopped_s < 5 + 1.5, stopped_s
    queue = json.loads((tmp_path / "ws" / "build" / "checkpoints" / "upload-queue.json").read_text())
    assert [e["state"] for e in queue["entries"]] == ["pending"]
    direct = write_build(tmp_path / "ws", nginx_table(http_server, "run-upload"), "http:c", bulk=8 << 20)
    retried, _ = gaia(tmp_path, "checkpoints", "retry", str(direct), env=env)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "uploaded=1" in retried.stdout


@pytest.mark.parametrize("kind", ["http", "s3", "ssh"])
def test_pull_from_a_server_that_never_answers_costs_the_probe_budget(tmp_path, kind):
    """The manifest is read under the probe budget (10 s), not a transfer's stall budget:
    pull took 61-63 s before."""
    with SilentServer() as silent:
        table, env = silent_backend(kind, silent.address, tmp_path)
        build = write_build(tmp_path / "ws", table, f"{kind}:c")
        pulled, pulled_s = gaia(tmp_path, "checkpoints", "pull", str(build), env=env)
    assert pulled.returncode == 5, pulled.stdout + pulled.stderr
    assert pulled_s < PROBE_BOUND_S, pulled_s
    assert f"backend {kind}:c is unavailable: " in pulled.stdout + pulled.stderr
    assert "probe_timeout" in pulled.stdout + pulled.stderr, pulled.stdout + pulled.stderr


#: trials of each signal; the issue's bound holds in every one of them
SIGNAL_TRIALS = 12
#: the issue's bound: a run ends within 5 s of the signal
SIGNAL_BOUND_S = 5.0


@pytest.fixture(scope="module")
def s3_server():
    from servers.s3 import start_s3_server

    running = start_s3_server()
    yield running
    running.close()


def test_sigterm_or_sigint_ends_a_run_within_5_s_during_a_frozen_s3_upload_every_time(tmp_path, s3_server):
    """A frozen S3 upload held the process after a signal: s3transfer's workers, blocked in
    a read of an answer that never came, were joined at exit (16 of 24 runs took over 5 s,
    10 of them 25-30 s). Half the trials freeze the answer to the upload (its body went
    through), half freeze the body itself; SIGTERM and SIGINT alternate. The object is
    captured once; each later trial is a local hit whose upload is still to do, under a new
    prefix, through a new frozen proxy."""
    from servers.misbehaving import DOWN, UP
    from servers.s3 import ENV_FIELDS, unique_prefix

    upstream = s3_server.endpoint_url.split("//", 1)[1].rsplit(":", 1)
    fields = "".join(f'{field} = "{var}"\n' for field, var in ENV_FIELDS.items() if field != "endpoint_url_env")
    bulk = 8 << 20
    timings = []
    for trial in range(2 * SIGNAL_TRIALS):
        sig = signal.SIGTERM if trial % 2 == 0 else signal.SIGINT
        in_a_read = trial // 2 % 2 == 0
        env = {**s3_server.env(unique_prefix())}
        env.pop("GAIA_IT_S3_ENDPOINT")
        frozen = (StallingProxy((upstream[0], int(upstream[1])), direction=DOWN, after=0, answer_after_up=bulk // 2)
                  if in_a_read else StallingProxy((upstream[0], int(upstream[1])), direction=UP, after=256 << 10))
        with frozen as proxy:
            table = f'[checkpoints.backends.s3.c]\n{fields}endpoint_url = "{via(proxy)}"\n'
            build = write_build(tmp_path / "ws", table, "s3:c", bulk=bulk)
            code, out, stopped_s = terminate_frozen_run(tmp_path, build, env, proxy, UP,
                                                        bulk if in_a_read else 256 << 10, sig=sig)
        assert code == (143 if sig == signal.SIGTERM else 130), out
        timings.append(stopped_s)
    slow = [f"{t:.1f}s" for t in timings if t >= SIGNAL_BOUND_S]
    assert not slow, f"{len(slow)} of {len(timings)} runs took 5 s or more after the signal: {slow}"
