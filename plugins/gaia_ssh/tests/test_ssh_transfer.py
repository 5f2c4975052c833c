"""The pieces of the transfer layer that need no server."""

from __future__ import annotations

import re
import threading

import pytest
from gaia_ssh import transfer
from paramiko.buffered_pipe import PipeTimeout


def test_the_channel_buffer_hands_out_bytes_in_order_without_losing_any() -> None:
    pipe = transfer._PacketPipe()
    pipe.feed(b"abcdef")
    pipe.feed(b"ghij")
    assert len(pipe) == 10 and pipe.read_ready()
    assert pipe.read(4) == b"abcd"
    assert pipe.read(100) == b"ef"  # never more than one packet per read, like recv may
    assert pipe.read(100) == b"ghij"
    assert len(pipe) == 0 and not pipe.read_ready()
    pipe.feed(b"k")
    pipe.feed(b"lm")
    assert pipe.empty() == b"klm" and len(pipe) == 0


def test_the_channel_buffer_hands_out_whole_packets_without_copying_them() -> None:
    pipe = transfer._PacketPipe()
    packet = bytes(range(256)) * 128
    pipe.feed(packet)
    assert pipe.read(1 << 20) is packet


def test_the_channel_buffer_keeps_the_stock_timeout_and_close_behaviour() -> None:
    pipe = transfer._PacketPipe()
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.0)
    with pytest.raises(PipeTimeout):
        pipe.read(10, timeout=0.05)
    threading.Timer(0.05, pipe.feed, args=(b"late",)).start()
    assert pipe.read(10, timeout=5) == b"late"
    pipe.feed(b"rest")
    pipe.close()
    assert pipe.read(10) == b"rest"
    assert pipe.read(10) == b""  # closed and drained: end of stream


def test_in_flight_requests_keep_a_fixed_byte_budget() -> None:
    assert transfer.in_flight(transfer.BASIC_REQUEST_SIZE) * transfer.BASIC_REQUEST_SIZE == transfer.IN_FLIGHT_BYTES
    assert transfer.in_flight(transfer.MAX_REQUEST_SIZE) * transfer.MAX_REQUEST_SIZE <= transfer.IN_FLIGHT_BYTES
    assert transfer.in_flight(transfer.IN_FLIGHT_BYTES * 2) == 4  # a floor, for pipelining


def test_temporary_names_are_unique_siblings() -> None:
    names = {transfer.temporary_name("/srv/p/f/manifest.json") for _ in range(100)}
    assert len(names) == 100
    # <file>.tmp-<host>-<pid>-<random>: a later upload or gc can tell it is a temporary
    assert all(re.fullmatch(r"/srv/p/f/manifest\.json\.tmp-[A-Za-z0-9-]+-\d+-[0-9a-f]{8}", n) for n in names)
