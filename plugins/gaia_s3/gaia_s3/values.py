"""What a well-formed bucket, region, endpoint, prefix or profile looks like.

Each check returns a problem in words that never quote the value (an endpoint may carry
credentials), or None. The config model runs them on literal values, so the loader
reports ``<file>: checkpoints.backends.s3.<name>.<key>: <problem>``; the settings run
them on values read from the environment and name the variable.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

#: botocore's own rules: a name, or an access point / outpost ARN
_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
_BUCKET_ARN = re.compile(r"^arn:[^:]+:s3(?:-object-lambda|-outposts)?:[a-z\-0-9]*:[0-9]{12}:[a-zA-Z0-9\-.:/]{1,255}$")
#: botocore's own rule for region names
_REGION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _printable(value: str) -> str | None:
    if any(not ch.isprintable() or ch.isspace() for ch in value):
        return "must not contain whitespace or control characters"
    return None


def bucket_problem(value: str) -> str | None:
    if not (_BUCKET.match(value) or _BUCKET_ARN.match(value)):
        return "must be a bucket name (letters, digits, '.', '_' and '-') or an access point ARN"
    return None


def region_problem(value: str) -> str | None:
    if not _REGION.match(value):
        return "must be a region name such as 'eu-west-1' (letters, digits and '-')"
    return None


def prefix_problem(value: str) -> str | None:
    if any(not ch.isprintable() for ch in value):
        return "must not contain control characters"
    if any(part in (".", "..") for part in value.strip("/").split("/")):
        return "must not contain '.' or '..' segments"
    return None


def profile_problem(value: str) -> str | None:
    return _printable(value)


def endpoint_problem(value: str) -> str | None:
    problem = _printable(value)
    if problem:
        return problem
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return "is not a valid URL (the host has an invalid IPv6 '[...]' part)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry user info; credentials come from the *_env fields or the AWS credential chain"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return _host_problem(parts.hostname)


def _host_problem(host: str) -> str | None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return "the host is not a valid IPv6 address"
        return None
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "the host is not a valid host name"
    if not all(_HOST_LABEL.match(label) for label in ascii_host.rstrip(".").split(".")):
        return "the host is not a valid host name"
    return None


#: config field -> its check, for literal values and the variables of their ``*_env`` twins
CHECKS = {
    "bucket": bucket_problem,
    "region": region_problem,
    "prefix": prefix_problem,
    "endpoint_url": endpoint_problem,
    "profile": profile_problem,
}
