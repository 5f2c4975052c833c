"""Issue 10 at the level users see: whole ``gaia run`` and ``gaia checkpoints status``
commands against remotes that never answer or freeze mid-transfer, with the default time
budgets, and SIGTERM during a blocked transfer. Native servers only (marked slow)."""

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
                         after: int) -> tuple[int, str, float]:
    """Start ``gaia run``, wait until ``proxy`` froze its transfer, SIGTERM it: (code, output, seconds)."""
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
        proc.send_signal(signal.SIGTERM)
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
    assert status.returncode == 0, status.stdout + status.stderr
    assert status_s < STATUS_BOUND_S, status_s
    assert "remote_probe_error" in status.stdout
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
