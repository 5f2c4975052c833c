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


def test_entries_are_the_contract_extension_for_any_directory() -> None:
    listing = parse_listing(body({
        "fingerprints": ["ignored-when-entries-are-there"],
        "entries": [
            {"name": "a.pack", "type": "file", "size": 12, "mtime": 1_700_000_000.5},
            {"name": "a.idx", "type": "file", "size": 3, "mtime": "Mon, 01 Jan 2024 00:00:00 GMT"},
            {"name": "sub", "type": "directory", "mtime": 1_700_000_000},
            {"name": "../x", "type": "file", "size": 1, "mtime": 1},
        ],
    }))
    assert not listing.complete
    assert listing.names == ["sub"]
    assert [(f.name, f.size, f.mtime) for f in listing.files] == [("a.pack", 12, 1_700_000_000.5),
                                                                 ("a.idx", 3, 1_704_067_200.0)]


def test_an_empty_directory_is_empty_in_every_shape() -> None:
    for raw in (b"[]", body({"entries": []})):
        listing = parse_listing(raw)
        assert (listing.names, listing.files, listing.complete) == ([], [], False)
    # only the original contract's object form says "fingerprints, nothing else"
    assert parse_listing(body({"fingerprints": []})).complete


@pytest.mark.parametrize("mtime", [True, -5, 1e13, "yesterday", None, [1]])
def test_an_mtime_that_is_no_time_is_unknown(mtime) -> None:
    [item] = parse_listing(body({"entries": [{"name": "f", "type": "file", "mtime": mtime}]})).files
    assert item.mtime is None


@pytest.mark.parametrize("entries", [{"a": 1}, [{"name": "x"}], ["x"], "x"])
def test_malformed_entries_are_format_errors(entries) -> None:
    with pytest.raises(ListingFormatError):
        parse_listing(body({"entries": entries}))
