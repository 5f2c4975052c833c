"""Parsing listings, which come from the remote and are hostile input."""

from __future__ import annotations

import json

import pytest
from gaia_http.listing import ListingFormatError, parse_listing


def body(value) -> bytes:
    return json.dumps(value).encode()


def test_array_of_strings_is_the_original_contract() -> None:
    listing = parse_listing(body([" bbb ", "aaa", "aaa", ""]))
    assert listing.names == ["aaa", "bbb"]
    assert listing.complete


def test_object_with_fingerprints_is_the_original_contract() -> None:
    listing = parse_listing(body({"fingerprints": ["f2", "f1"], "extra": 1}))
    assert listing.names == ["f1", "f2"]
    assert listing.complete


def test_nginx_autoindex_json_keeps_directories_and_needs_probing() -> None:
    entries = [
        {"name": "fp2", "type": "directory", "mtime": "Mon, 01 Jan 2024 00:00:00 GMT"},
        {"name": "fp1", "type": "directory", "mtime": "Mon, 01 Jan 2024 00:00:00 GMT"},
        {"name": "stray.txt", "type": "file", "mtime": "Mon, 01 Jan 2024 00:00:00 GMT", "size": 3},
    ]
    listing = parse_listing(body(entries))
    assert listing.names == ["fp1", "fp2"]
    assert not listing.complete


def test_empty_array_is_an_empty_listing() -> None:
    assert parse_listing(b"[]").names == []


@pytest.mark.parametrize("name", ["..", ".", "../etc", "a/b", "/abs", "a\nb", "x" * 300, ".hidden"])
def test_hostile_names_are_dropped(name: str) -> None:
    assert parse_listing(body(["good", name])).names == ["good"]
    assert parse_listing(body([{"name": name, "type": "directory"}])).names == []


@pytest.mark.parametrize(
    "raw",
    [b"<html>Index of /</html>", b"\xff\xfe", body({"items": []}), body([1, 2]), body({"fingerprints": [1]}), body("x")],
)
def test_other_shapes_are_format_errors(raw: bytes) -> None:
    with pytest.raises(ListingFormatError):
        parse_listing(raw)
