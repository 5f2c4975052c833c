"""Run a service of integration/compose.yaml as a container, through the docker package.

Host networking only (the services bind 127.0.0.1 themselves, on the free port the
fixture passes in their environment), no published port, no bridge: no test sends
traffic anywhere but loopback. Containers carry the label ``gaia-it`` and a name that
says which run started them.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from servers import docker_client as client
from servers.compose import service
from servers.images import ensure_image

LABEL = "gaia-it"


def run(
    name: str,
    environment: dict[str, str],
    *,
    command: list[str] | None = None,
    mounts: dict[str, dict[str, str]] | None = None,
) -> Any:
    """Start service ``name`` (building its image if needed). ``environment`` overrides the
    file's; ``command`` (arguments to the image's entrypoint) and ``mounts`` are added (a
    mount at a path the file mounts something at replaces that one)."""
    spec = service(name)
    taken = {mount["bind"] for mount in (mounts or {}).values()}
    volumes = {host: mount for host, mount in spec.volumes.items() if mount["bind"] not in taken}
    return client().containers.run(
        ensure_image(name),
        command=command,
        detach=True,
        network_mode="host",
        environment=spec.environment_with(environment),
        volumes={**volumes, **(mounts or {})},
        name=f"{LABEL}-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        labels={LABEL: name},
    )


def describe(container: Any) -> str:
    return f"container {container.name} ({container.image.tags[0] if container.image.tags else container.image.id[:19]})"


def logs(container: Any, lines: int = 30) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace")
    except Exception as error:  # noqa: BLE001 -- diagnostics only
        return f"(no logs: {error})"


def wait_until(container: Any, ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``ready()`` until it holds; fail early, with the logs, if the container exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        container.reload()
        if container.status in ("exited", "dead"):
            raise RuntimeError(f"{describe(container)} exited before {what}:\n{logs(container)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{describe(container)}: no {what} within {timeout:.0f}s:\n{logs(container)}")
        time.sleep(0.2)


def remove(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):  # already gone
        container.remove(force=True)
