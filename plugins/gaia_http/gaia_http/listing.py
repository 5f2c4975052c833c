"""Reading a directory listing: the original's ``?list=1`` contract or nginx autoindex JSON.

Listings come from the remote and are hostile input: only well-formed, single-segment
names survive.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
from typing import Any

from gaia_http.urls import is_safe_segment


class ListingFormatError(ValueError):
    """The body is neither the ``?list=1`` contract nor an autoindex JSON listing."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One entry of an autoindex listing."""

    name: str
    is_directory: bool
    size: int | None
    #: seconds since the epoch, None when the listing does not say
    mtime: float | None


@dataclasses.dataclass
class Listing:
    #: fingerprints (``?list=1``) or directory names (autoindex)
    names: list[str]
    #: True when the server vouches that every name holds a manifest (``?list=1``);
    #: directory listings only say a directory exists, so each must still be looked into
    complete: bool
    #: every entry of an autoindex listing, files included
    items: list[Item] = dataclasses.field(default_factory=list)


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
        items = [_item(entry) for entry in data if is_safe_segment(entry["name"].strip())]
        dirs = [item.name for item in items if item.is_directory]
        return Listing(sorted(set(dirs)), complete=False, items=items)
    raise ListingFormatError(
        "listing is neither an array of fingerprints, {\"fingerprints\": [...]}, "
        "nor an nginx autoindex_format json listing"
    )


def _is_autoindex_entry(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("type"), str)


def _item(entry: dict[str, Any]) -> Item:
    size = entry.get("size")
    return Item(
        name=entry["name"].strip(),
        is_directory=entry["type"] == "directory",
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        mtime=_http_date(entry.get("mtime")),
    )


def _http_date(value: Any) -> float | None:
    """nginx writes ``"Wed, 01 Jan 2025 00:00:00 GMT"``; anything else is unknown."""
    if not isinstance(value, str):
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _clean(names: list[str]) -> list[str]:
    return sorted({n.strip() for n in names if is_safe_segment(n.strip())})
