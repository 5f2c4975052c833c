"""The upload body: exactly the announced bytes, from one reused buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
from gaia_http.session import SEND_CHUNK, FileBody


def test_the_body_yields_the_whole_file_in_send_sized_pieces(tmp_path: Path) -> None:
    data = bytes(range(256)) * ((2 * SEND_CHUNK + 1000) // 256 + 1)
    path = tmp_path / "payload"
    path.write_bytes(data)
    with path.open("rb") as file:
        body = FileBody(file, len(data))
        sent = bytearray()
        for piece in body:
            assert len(piece) <= SEND_CHUNK
            sent += piece  # urllib3 sends each piece before asking for the next
    assert len(body) == len(data) and bytes(sent) == data


def test_the_body_stops_at_the_announced_size_when_the_file_grew(tmp_path: Path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"x" * 1000)
    with path.open("rb") as file:
        assert b"".join(bytes(p) for p in FileBody(file, 600)) == b"x" * 600


def test_a_file_shorter_than_announced_fails_instead_of_hanging_the_server(tmp_path: Path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"x" * 100)
    with path.open("rb") as file, pytest.raises(OSError, match="short"):
        for _ in FileBody(file, 1000):
            pass


def test_a_rewound_body_is_sent_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(b"abc" * 1000)
    with path.open("rb") as file:
        body = FileBody(file, 3000)
        start = body.tell()
        first = b"".join(bytes(p) for p in body)
        body.seek(start)  # what urllib3 does before replaying a request
        assert b"".join(bytes(p) for p in body) == first == b"abc" * 1000
