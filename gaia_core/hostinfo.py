"""Who this machine is, in the words records and fingerprints share.

``host_system`` is what an anchor salts its fingerprint with when its tree holds tools built
for this machine (Buildroot's ``host/``), and what run records name as a host's system, so
that ``status --explain --against HOST`` can say "the other host runs debian-12, this one
debian-13" in the same terms as the fingerprint.
"""

from __future__ import annotations

import platform
import socket
from pathlib import Path


def host_system() -> str:
    """``<os id>-<version id>-<machine>``, e.g. ``debian-12-x86_64``."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    except OSError:
        pass
    return f"{fields.get('ID', platform.system().lower())}-{fields.get('VERSION_ID', '?')}-{platform.machine()}"


def host_name() -> str:
    """This machine's name as it calls itself (``socket.gethostname``)."""
    return socket.gethostname() or "unknown"


__all__ = ["host_name", "host_system"]
