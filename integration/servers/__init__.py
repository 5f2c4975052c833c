"""Real servers for the remote suite: the Docker services of compose.yaml or native processes, on loopback.

server_set.py decides which; compose.py, images.py and containers.py run the Docker
services; s3.py, ssh.py and http.py offer each backend's server in both forms.
list_contract.py is the HTTP store of the ``?list=1`` contract (in process, both sets),
misbehaving.py servers that hang or stall, metering.py a relay that counts what moves,
nginx_office.py the nginx ``proxy_cache`` office tier of docs/tiers.md (both sets).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from pathlib import Path

INTEGRATION_DIR = Path(__file__).resolve().parents[1]
COMPOSE_FILE = INTEGRATION_DIR / "compose.yaml"
INSTALL_HINT = "run integration/install-servers.sh (the README's test command does) to install it"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0, *, up: bool = True) -> None:
    """Wait until ``host:port`` accepts connections (``up``) or refuses them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    state = "accept" if up else "refuse"
    raise TimeoutError(f"{host}:{port} did not {state} connections within {timeout:.0f}s")


def cut(sockets: list[socket.socket]) -> None:
    """End connections now, whatever state they are in (both directions shut, then closed)."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def docker_engine_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers; False on any error (no package, no socket, no engine)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 -- no package, no socket, no engine: all mean no Docker
        return False


@functools.cache
def docker_client():  # type: ignore[no-untyped-def]
    """One client for the run, on the engine of ``DOCKER_HOST`` (or the default socket)."""
    import docker

    return docker.from_env(timeout=120)
