"""Read the services of integration/compose.yaml the way ``docker compose`` does.

compose.yaml is the one description of the Docker services (build context, image tag,
environment, mounts); the fixtures start containers from it through the docker package,
which has no compose of its own. Only what that file uses is understood: ``${VAR}``,
``${VAR:-default}`` and ``${VAR:?message}`` in values, relative bind mounts, and
``network_mode: host``, which every service must have.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

from servers import COMPOSE_FILE

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class ComposeError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    image: str
    context: Path
    build_args: dict[str, str]
    environment: dict[str, str]  #: raw values, interpolated by :meth:`environment_with`
    volumes: dict[str, dict[str, str]]  #: the docker package's form: host path -> bind, mode

    def environment_with(self, values: dict[str, str]) -> dict[str, str]:
        """The service's environment, ``values`` replacing the file's entries of the same name."""
        merged = {key: interpolate(raw) for key, raw in self.environment.items() if key not in values}
        return {**merged, **values}


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ComposeError(f"{COMPOSE_FILE.name}: {arg or name + ' is not set'}")
        return arg if op == ":-" else env.get(name, "")

    return _VARIABLE.sub(replace, str(value))


@functools.cache
def services() -> dict[str, Service]:
    import yaml

    found = {}
    for name, spec in (yaml.safe_load(COMPOSE_FILE.read_text()) or {}).get("services", {}).items():
        if spec.get("network_mode") != "host":
            raise ComposeError(f"{COMPOSE_FILE}: service {name} must use network_mode: host (loopback only, no bridge)")
        if spec.get("ports"):
            raise ComposeError(f"{COMPOSE_FILE}: service {name} publishes ports; with host networking it binds 127.0.0.1 itself")
        build = spec["build"] if isinstance(spec.get("build"), dict) else {"context": spec["build"]}
        environment = spec.get("environment") or {}
        if isinstance(environment, list):  # ["KEY=value", ...]
            environment = dict(item.split("=", 1) for item in environment)
        found[name] = Service(
            name=name,
            image=spec["image"],
            context=(COMPOSE_FILE.parent / build["context"]).resolve(),
            build_args={key: interpolate(value) for key, value in (build.get("args") or {}).items()},
            environment={key: str(value) for key, value in environment.items()},
            volumes=dict(_bind(entry) for entry in spec.get("volumes") or []),
        )
    return found


def service(name: str) -> Service:
    try:
        return services()[name]
    except KeyError:
        raise ComposeError(f"{COMPOSE_FILE} has no service {name!r}") from None


def _bind(entry: str) -> tuple[str, dict[str, str]]:
    host, inside, *mode = entry.split(":")
    path = Path(host) if Path(host).is_absolute() else (COMPOSE_FILE.parent / host).resolve()
    return str(path), {"bind": inside, "mode": mode[0] if mode else "rw"}
