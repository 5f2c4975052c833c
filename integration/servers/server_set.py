"""Which servers the remote suite runs against: the Docker services or native processes.

``GAIA_REMOTE_SERVERS=docker`` or ``=native`` forces a set; unset (or ``auto``) means the
Docker services when a Docker engine answers (``DOCKER_HOST`` or the default socket), the
native servers otherwise. A forced Docker run without an engine is an error: a suite that
quietly ran natively would claim a Docker run that never happened.
"""

from __future__ import annotations

import dataclasses
import functools
import os

ENV = "GAIA_REMOTE_SERVERS"
DOCKER = "docker"
NATIVE = "native"
AUTO = "auto"


class ServerSetError(RuntimeError):
    """The requested server set cannot run here."""


@dataclasses.dataclass(frozen=True)
class ServerSet:
    name: str  #: ``docker`` or ``native``
    why: str  #: how it was chosen, for the report

    def describe(self) -> str:
        label = "Docker services of integration/compose.yaml" if self.name == DOCKER else "native servers"
        return f"{self.name} ({label}; {self.why})"


def engine_description(timeout: float = 2.0) -> str | None:
    """``Docker 20.10.24 at unix:///...`` when an engine answers, else None (any error means none)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except Exception:  # noqa: BLE001 -- no package, no socket, no engine: all mean no Docker
        return None
    return f"Docker {version} at {os.environ.get('DOCKER_HOST') or 'the default socket'}"


@functools.cache
def selected() -> ServerSet:
    """The server set of this run, decided once; raises :class:`ServerSetError`."""
    requested = os.environ.get(ENV, "").strip().lower() or AUTO
    if requested not in (DOCKER, NATIVE, AUTO):
        raise ServerSetError(f"{ENV}={requested!r}: use {DOCKER}, {NATIVE} or {AUTO}")
    if requested == NATIVE:
        return ServerSet(NATIVE, f"{ENV}={NATIVE}")
    engine = engine_description()
    if requested == DOCKER:
        if engine is None:
            where = os.environ.get("DOCKER_HOST") or "the default socket (set DOCKER_HOST to name another)"
            raise ServerSetError(
                f"{ENV}={DOCKER} but no Docker engine answers at {where}; start one "
                "(scripts/test-all.sh starts its own with integration/docker/dockerd.sh), "
                f"or set {ENV}={NATIVE} to run the native servers"
            )
        return ServerSet(DOCKER, f"{ENV}={DOCKER}, {engine}")
    if engine is not None:
        return ServerSet(DOCKER, f"{engine}; {ENV}={NATIVE} forces the native servers")
    return ServerSet(NATIVE, "no Docker engine answers")


def use_docker() -> bool:
    """Whether the servers of this run are the Docker services."""
    return selected().name == DOCKER
