"""Build the images of integration/compose.yaml that the engine does not have yet.

An image is built once per engine and reused while its build context is unchanged: the
image carries a digest of the context (every file but the downloaded wheels, and the build
arguments) in the label ``gaia-it.context``, and a changed Dockerfile or entrypoint makes
it stale (``--rebuild`` forces a new build; Docker's layer cache keeps rebuilds short). Before
a build, a context with a ``requirements.txt`` gets its wheels: ``pip download`` on the
host, for the container's Python and the engine's architecture, into ``<context>/wheels``
(a container has neither the host's package-index configuration nor its CA
certificates). The base image must be on the engine or pullable; where no registry is
reachable, ``integration/docker/base-image.sh`` makes it from Debian's archive.

Command line (from integration/): ``python -m servers.images [--rebuild] [SERVICE...]``
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

from servers import docker_client as client
from servers.compose import Service, service, services

#: what the wheels are for: debian:bookworm-slim's python3 and C library
CONTAINER_PYTHON = "3.11"
CONTAINER_GLIBC_MINOR = 36
BASE_IMAGE_SCRIPT = "integration/docker/base-image.sh"
CONTEXT_LABEL = "gaia-it.context"
WHEELS = "wheels"


class ImageError(RuntimeError):
    pass


def has_image(tag: str) -> bool:
    return _labels(tag) is not None


def _labels(tag: str) -> dict[str, str] | None:
    import docker.errors

    try:
        return client().images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return None


def context_digest(spec: Service) -> str:
    """sha256 of the build arguments and of every file of the context but the wheels."""
    digest = hashlib.sha256(repr(sorted(spec.build_args.items())).encode())
    for path in sorted(spec.context.rglob("*")):
        relative = path.relative_to(spec.context)
        if path.is_file() and relative.parts[0] != WHEELS and "__pycache__" not in relative.parts:
            digest.update(f"{relative.as_posix()}\0{path.stat().st_mode & 0o111:o}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def is_current(spec: Service) -> bool:
    """Whether the engine has ``spec``'s image, built from the context as it is now."""
    labels = _labels(spec.image)
    return labels is not None and labels.get(CONTEXT_LABEL) == context_digest(spec)


def ensure_image(name: str) -> str:
    """The tag of service ``name``'s image, built first if the engine lacks it or it is stale."""
    spec = service(name)
    if not is_current(spec):
        build(spec)
    return spec.image


def build(spec: Service) -> float:
    """Build ``spec``'s image from its context; returns the seconds it took."""
    import docker.errors

    started = time.monotonic()
    base = spec.build_args.get("BASE_IMAGE", "")
    if base and not has_image(base) and not registry_resolves():
        raise ImageError(
            f"the base image {base} is not on the Docker engine and no registry is reachable; "
            f"make it from Debian's archive with {BASE_IMAGE_SCRIPT}"
        )
    if (spec.context / "requirements.txt").is_file():
        download_wheels(spec.context)
    try:
        client().images.build(
            path=str(spec.context),
            tag=spec.image,
            buildargs=spec.build_args,
            network_mode="host",  # apt and pip inside the build reach what the host reaches
            labels={CONTEXT_LABEL: context_digest(spec)},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as error:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in error.build_log)
        raise ImageError(f"building {spec.image} from {spec.context} failed: {error}\n{log[-3000:]}") from None
    # the image this one replaced, now untagged
    client().images.prune(filters={"dangling": True, "label": CONTEXT_LABEL})
    return time.monotonic() - started


def registry_resolves() -> bool:
    """Whether Docker Hub's name resolves: a DNS answer only, no traffic to the registry."""
    try:
        socket.getaddrinfo("registry-1.docker.io", 443)
        return True
    except OSError:
        return False


def download_wheels(context: Path) -> None:
    """``pip download`` the context's requirements as wheels for the container into ``wheels/``."""
    arch = client().info().get("Architecture", "x86_64")  # x86_64, aarch64: manylinux's names too
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(CONTAINER_GLIBC_MINOR, 16, -1)]
    platforms.append(f"manylinux2014_{arch}")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", CONTAINER_PYTHON]
    command += ["--abi", "cp" + CONTAINER_PYTHON.replace(".", "")]
    for platform in platforms:
        command += ["--platform", platform]
    command += ["--dest", str(context / WHEELS), "--requirement", str(context / "requirements.txt")]
    done = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageError(f"pip download for {context.name} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the images of integration/compose.yaml that are missing.")
    parser.add_argument("--rebuild", action="store_true", help="build even the images the engine has")
    parser.add_argument("names", nargs="*", metavar="SERVICE", help="default: every service")
    args = parser.parse_args()
    for name in args.names or list(services()):
        spec = service(name)
        if is_current(spec) and not args.rebuild:
            print(f"images: {spec.image} is up to date", flush=True)
            continue
        print(f"images: building {spec.image} from {spec.context}", flush=True)
        print(f"images: built {spec.image} in {build(spec):.0f} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (ImageError, RuntimeError) as error:
        sys.exit(f"images: {error}")
