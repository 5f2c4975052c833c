"""The office tier of docs/tiers.md: nginx ``proxy_cache`` in front of an HTTP cloud store.

The config is the docs' own block, read from docs/tiers.md and given this run's port,
cache directory, tokens and upstream, so the recipe users copy is the config under test.
It runs as a second nginx: natively (:class:`~servers.http.NginxServer` with this server
block), or as a container of compose's nginx image with this block in place of the WebDAV
one (:class:`~servers.http.DockerNginx`).
"""

from __future__ import annotations

import re
from pathlib import Path

from servers import INTEGRATION_DIR
from servers.http import start_http_server
from servers.server_set import use_docker

DOC = INTEGRATION_DIR.parent / "docs" / "tiers.md"
MARKER = "<!-- nginx office tier:"
#: what the docs' block says, and what a test run puts there
PLACEHOLDERS = ("listen 8080;", "/var/cache/nginx/gaia", "OFFICE-TOKEN", "CLOUD-READ-TOKEN",
                "https://cloud.example.com")
#: the office's cache directory inside the container (the image runs nginx as www-data)
CACHE_IN_CONTAINER = "/tmp/gaia-office-cache"


def recipe() -> str:
    """The nginx block of docs/tiers.md (the first ```nginx block after the marker)."""
    text = DOC.read_text()
    start = text.index(MARKER)
    found = re.search(r"```nginx\n(.*?)```", text[start:], re.S)
    assert found, f"{DOC} has no nginx block after {MARKER!r}"
    return found.group(1)


def render(port: int, cache_dir: str, office_token: str, cloud_token: str, upstream: str) -> str:
    """The docs' block for this run (every placeholder must be there, once or more)."""
    block = recipe()
    for placeholder in PLACEHOLDERS:
        assert placeholder in block, f"the nginx block of {DOC} lost {placeholder!r}"
    return (block.replace("listen 8080;", f"listen 127.0.0.1:{port};")
                 .replace("/var/cache/nginx/gaia", cache_dir)
                 .replace("OFFICE-TOKEN", office_token)
                 .replace("CLOUD-READ-TOKEN", cloud_token)
                 .replace("https://cloud.example.com", upstream))


def start_office(workdir: Path, *, office_token: str, cloud_token: str,  # type: ignore[no-untyped-def]
                 upstream: tuple[str, int]):
    """The office nginx, caching ``upstream`` (``host, port`` of the cloud store), started."""
    cache_dir = CACHE_IN_CONTAINER if use_docker() else str(workdir / "cache")
    url = f"http://{upstream[0]}:{upstream[1]}"
    return start_http_server(workdir, office_token,
                             lambda port: render(port, cache_dir, office_token, cloud_token, url))
