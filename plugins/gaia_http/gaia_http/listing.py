"""Reading a directory listing: the ``?list=1`` contract or nginx autoindex JSON.

Three shapes answer ``GET <dir>/?list=1``:

- the original contract, for a point directory only: ``["<fp>", ...]`` or
  ``{"fingerprints": [...]}``, the fingerprints whose manifest exists (nothing else);
- gaia's extension of it, for any directory: ``{"entries": [{"name": ..., "type":
  "file" | "directory", "size": <bytes>, "mtime": <seconds since the epoch>}, ...]}``;
- nginx's ``autoindex_format json``, which stock nginx sends whatever the query: the same
  entries as a bare array, with ``mtime`` as an HTTP date.

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
    """One entry of a directory listing (autoindex, or the contract's ``entries``)."""

    name: str
    is_directory: bool
    size: int | None
    #: seconds since the epoch, None when the listing does not say
    mtime: float | None


@dataclasses.dataclass
class Listing:
    #: fingerprints (the original contract) or directory names (a directory listing)
    names: list[str]
    #: True for the original contract: the server vouches that every name holds a
    #: manifest, and names nothing else (no files, sizes or temporaries)
    complete: bool
    #: every entry of a directory listing, files included
    items: list[Item] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> list[Item]:
        return [item for item in self.items if not item.is_directory]


def parse_listing(body: bytes) -> Listing:
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ListingFormatError("listing is not JSON") from exc
    if data == []:
        return Listing([], complete=False)  # an empty directory, in either shape
    if isinstance(data, dict) and "entries" in data:
        if not (isinstance(data["entries"], list) and all(_is_autoindex_entry(item) for item in data["entries"])):
            raise ListingFormatError("'entries' must be an array of {\"name\": ..., \"type\": ...} objects")
        return _directory(data["entries"])
    if isinstance(data, dict) and isinstance(data.get("fingerprints"), list):
        data = data["fingerprints"]
        if not all(isinstance(item, str) for item in data):
            raise ListingFormatError("'fingerprints' must be an array of strings")
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return Listing(_clean(data), complete=True)
    if isinstance(data, list) and all(_is_autoindex_entry(item) for item in data):
        return _directory(data)
    raise ListingFormatError(
        "listing is neither an array of fingerprints, {\"fingerprints\": [...]}, "
        "{\"entries\": [...]}, nor an nginx autoindex_format json listing"
    )


def _directory(entries: list[dict[str, Any]]) -> Listing:
    items = [_item(entry) for entry in entries if is_safe_segment(entry["name"].strip())]
    dirs = [item.name for item in items if item.is_directory]
    return Listing(sorted(set(dirs)), complete=False, items=items)


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
    """nginx writes ``"Wed, 01 Jan 2025 00:00:00 GMT"``, the contract seconds since the
    epoch; anything else is unknown."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if 0 <= value < 1e11 else None
    if not isinstance(value, str):
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _clean(names: list[str]) -> list[str]:
    return sorted({n.strip() for n in names if is_safe_segment(n.strip())})
