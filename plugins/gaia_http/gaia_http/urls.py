"""Turning the base URL and object keys into request URLs, safely.

A malformed base URL is a configuration problem, never an internal error: every way
``urllib.parse`` can fail on it becomes a :class:`UrlProblem` whose message describes
the fault without repeating the URL (it may carry a password).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from gaia_core.errors import BackendError

#: what a point id, fingerprint or file name may look like as one URL path segment
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=-]{0,254}$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


class UrlProblem(ValueError):
    """What is wrong with a base URL, in words that never quote it."""


def is_safe_segment(text: str) -> bool:
    """A single path segment that cannot climb out of its directory."""
    return bool(_SEGMENT.match(text)) and text not in (".", "..")


def _check_host(host: str) -> None:
    if ":" in host:  # a bracketed IPv6 literal, already checked by urlsplit
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise UrlProblem("the host is not a valid IPv6 address") from None
        return
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlProblem("the host is not a valid host name") from None
    labels = ascii_host.rstrip(".").split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise UrlProblem("the host is not a valid host name")


class BaseUrl:
    """The store root: ``<scheme>://<host>[:port]/<path>`` without a trailing slash."""

    def __init__(self, raw: str):
        text = raw.strip()
        if any(ch.isspace() or not ch.isprintable() for ch in text):
            raise UrlProblem("must not contain whitespace or control characters")
        try:
            parts = urllib.parse.urlsplit(text)
        except ValueError:
            # urlsplit's only complaint is a host with an unbalanced or invalid '[...]'
            raise UrlProblem("is not a valid URL (the host has an invalid IPv6 '[...]' part)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlProblem("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise UrlProblem("must not have a query or fragment")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise UrlProblem("the port must be a number from 1 to 65535")
        _check_host(parts.hostname)
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port
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
