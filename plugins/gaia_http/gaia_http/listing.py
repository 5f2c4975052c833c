"""Reading a point directory's listing: the original's ``?list=1`` contract or nginx autoindex.

Listings come from the remote and are hostile input: only well-formed, single-segment
names survive.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gaia_http.urls import is_safe_segment


class ListingFormatError(ValueError):
    """The body is neither the ``?list=1`` contract nor an autoindex JSON listing."""


@dataclasses.dataclass
class Listing:
    names: list[str]
    #: True when the server vouches that every name holds a manifest (``?list=1``);
    #: directory listings only say a directory exists, so each must still be probed
    complete: bool


def parse_listing(body: bytes) -> Listing:
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ListingFormatError("listing is not JSON") from exc
    if isinstance(data, dict) and isinstance(data.get("fingerprints"), list):
        data = data["fingerprints"]
        if not all(isinstance(item, str) for item in data):
            raise ListingFormatError("'fingerprints' must be an array of strings")
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return Listing(_clean(data), complete=True)
    if isinstance(data, list) and all(_is_autoindex_entry(item) for item in data):
        dirs = [item["name"] for item in data if item.get("type") == "directory"]
        return Listing(_clean(dirs), complete=False)
    raise ListingFormatError(
        "listing is neither an array of fingerprints, {\"fingerprints\": [...]}, "
        "nor an nginx autoindex_format json listing"
    )


def _is_autoindex_entry(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("type"), str)


def _clean(names: list[str]) -> list[str]:
    return sorted({n.strip() for n in names if is_safe_segment(n.strip())})
