"""Turning the base URL and object keys into request URLs, safely."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from gaia_core.errors import BackendError

#: what a point id, fingerprint or file name may look like as one URL path segment
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,254}$")


def is_safe_segment(text: str) -> bool:
    """A single path segment that cannot climb out of its directory."""
    return bool(_SEGMENT.match(text)) and text not in (".", "..")


class BaseUrl:
    """The store root: ``<scheme>://<host>[:port]/<path>`` without a trailing slash."""

    def __init__(self, raw: str, where: str):
        parts = urllib.parse.urlsplit(raw.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"{where} must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise BackendError(f"{where} must not have a query or fragment")
        self.scheme = parts.scheme
        self.host = parts.hostname
        #: user info is turned into basic auth and kept out of every URL we build
        self.username = urllib.parse.unquote(parts.username or "")
        self.password = urllib.parse.unquote(parts.password or "")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.root = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"

    @property
    def display(self) -> str:
        """The root without user info, for messages."""
        return self.root

    def is_loopback(self) -> bool:
        if self.host.lower().rstrip(".") == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, key: str, *, directory: bool = False) -> str:
        """The URL of ``key`` (``a/b/c``); every segment is checked, then quoted."""
        segments = key.split("/")
        for segment in segments:
            if not is_safe_segment(segment):
                raise BackendError(f"refusing unsafe object key segment {segment!r}")
        path = "/".join(urllib.parse.quote(s, safe="") for s in segments)
        return f"{self.root}/{path}" + ("/" if directory else "")
