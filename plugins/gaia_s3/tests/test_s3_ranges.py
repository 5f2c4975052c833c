"""Offline: what a ranged GET's answer holds, and reading just that into one buffer.

The live behaviour (moto: 206, 416, missing keys) is in integration/test_s3.py; S3
stores that ignore ``Range`` cannot be had on loopback, so the arithmetic of a 200 answer
is checked here on the response shapes botocore returns.
"""

from __future__ import annotations

import io

import pytest
from gaia_s3.backend import _BadRange, _range_in_answer, _read_into, _ShortBody


def answer(status: int, length: int, content_range: str | None = None) -> dict:
    response = {"ResponseMetadata": {"HTTPStatusCode": status}, "ContentLength": length}
    if content_range is not None:
        response["ContentRange"] = content_range
    return response


def test_a_206_holds_exactly_the_range() -> None:
    assert _range_in_answer(answer(206, 100, "bytes 50-149/1000"), 50, 100) == (0, 100)
    # the object ends first: a shorter range
    assert _range_in_answer(answer(206, 10, "bytes 990-999/1000"), 990, 100) == (0, 10)


@pytest.mark.parametrize("content_range", ["bytes 0-99/1000", "bytes 50-200/1000", "bytes 60-10/1000", "", "items 1-2/3"])
def test_a_206_of_another_range_is_refused(content_range: str) -> None:
    with pytest.raises(_BadRange):
        _range_in_answer(answer(206, 100, content_range), 50, 100)


def test_a_200_is_the_whole_object_from_which_the_range_is_cut() -> None:
    assert _range_in_answer(answer(200, 1000), 50, 100) == (50, 100)
    assert _range_in_answer(answer(200, 1000), 990, 100) == (990, 10)
    assert _range_in_answer(answer(200, 1000), 2000, 100) == (2000, 0)


def test_reading_skips_then_keeps_the_range_and_leaves_the_rest_unread() -> None:
    body = io.BytesIO(bytes(range(256)) * 40)
    assert bytes(_read_into(body, 300, 1000)) == (bytes(range(256)) * 40)[300:1300]
    assert body.tell() == 1300


def test_a_body_that_ends_early_is_short() -> None:
    with pytest.raises(_ShortBody):
        _read_into(io.BytesIO(b"x" * 10), 0, 20)
    with pytest.raises(_ShortBody):
        _read_into(io.BytesIO(b"x" * 10), 20, 5)
