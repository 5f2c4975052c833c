"""The pieces of the transfer layer that need no server."""

from __future__ import annotations

import re

from gaia_ssh import transfer


def test_the_channel_buffer_hands_out_bytes_in_order_without_losing_any() -> None:
    pipe = transfer._ByteArrayPipe()
    pipe.feed(b"abcdef")
    pipe.feed(b"ghij")
    assert len(pipe) == 10
    assert pipe.read(4) == b"abcd"
    assert pipe.read(100) == b"efghij"
    pipe.feed(b"k")
    assert pipe.read(1) == b"k" and isinstance(pipe._buffer, bytearray)


def test_in_flight_requests_keep_a_fixed_byte_budget() -> None:
    assert transfer.in_flight(transfer.BASIC_REQUEST_SIZE) * transfer.BASIC_REQUEST_SIZE == transfer.IN_FLIGHT_BYTES
    assert transfer.in_flight(transfer.MAX_REQUEST_SIZE) * transfer.MAX_REQUEST_SIZE <= transfer.IN_FLIGHT_BYTES
    assert transfer.in_flight(transfer.IN_FLIGHT_BYTES * 2) == 4  # a floor, for pipelining


def test_temporary_names_are_unique_siblings() -> None:
    names = {transfer.temporary_name("/srv/p/f/manifest.json") for _ in range(100)}
    assert len(names) == 100
    assert all(re.fullmatch(r"/srv/p/f/manifest\.json\.tmp-[0-9a-f]{16}", n) for n in names)
