"""How a file's bytes become chunks: the cut points are a format (chunk ids in manifests
depend on them), so gaia's own cutter must cut where FastCDC's stream cutter does."""

from __future__ import annotations

import os
import random

import pytest
from pyfastcdc import FastCDC

from gaia_core.checkpoints import chunking
from gaia_core.checkpoints.chunking import AVG_CHUNK, MAX_CHUNK, MIN_CHUNK, SMALL_FILE


def _stream_cuts(path) -> list[bytes]:
    cdc = FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
    with open(path, "rb") as f:
        return [bytes(c.data) for c in cdc.cut_stream(f)]


def _cuts(path) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [bytes(c) for c in chunking.cut(fd, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


def _random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _low_entropy(size: int, seed: int) -> bytes:
    """Long runs of one byte (no cut point but MAX_CHUNK) between random stretches."""
    rng, out = random.Random(seed), bytearray()
    while len(out) < size:
        out += bytes([rng.randrange(4)]) * rng.randrange(1, 3 * MAX_CHUNK) if rng.random() < 0.3 \
            else rng.randbytes(rng.randrange(1, 2 * MAX_CHUNK))
    return bytes(out[:size])


@pytest.mark.parametrize("size", [
    SMALL_FILE + 1, MIN_CHUNK * 5, chunking._READ - 1, chunking._READ, chunking._READ + 1,
    2 * chunking._READ, 3 * chunking._READ + MAX_CHUNK - 7, 37 * (1 << 20) + 12345,
])
@pytest.mark.parametrize("make", [_random, _low_entropy])
def test_large_files_are_cut_where_fastcdc_s_stream_cutter_cuts(tmp_path, size, make):
    data = make(size, size)
    path = tmp_path / "f"
    path.write_bytes(data)
    cuts = _cuts(path)
    assert cuts == _stream_cuts(path)
    assert b"".join(cuts) == data and (len(cuts) > 1 or size <= MAX_CHUNK)
    assert all(len(c) <= MAX_CHUNK for c in cuts)


def test_a_chunk_stays_valid_after_the_next_one_is_read(tmp_path):
    """Chunks are handed on uncopied (compressed on other threads while the file is read on),
    so a chunk's bytes must not change when the cutter moves on."""
    data = _random(5 * chunking._READ // 2, 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = list(chunking.cut(fd, len(data)))
    finally:
        os.close(fd)
    assert b"".join(bytes(c) for c in chunks) == data
    assert [chunking.chunk_id(c) for c in chunks] == [chunking.chunk_id(c) for c in _stream_cuts(path)]


def test_a_small_file_is_one_chunk(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(_random(SMALL_FILE, 3))
    assert _cuts(path) == [path.read_bytes()]


def test_a_file_is_read_back_cut_where_its_entry_says(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(_random(3 * MAX_CHUNK + 12345, 9))
    cuts = _cuts(path)
    assert len(cuts) > 1
    fd = os.open(path, os.O_RDONLY)
    try:
        assert [bytes(c) for c in chunking.cut_as(fd, [len(c) for c in cuts])] == cuts
        os.lseek(fd, 0, os.SEEK_SET)  # a file shorter than the entry says: its last chunk short, then no more
        read = [bytes(c) for c in chunking.cut_as(fd, [len(c) for c in cuts] + [100, 100])]
        assert read[:-1] == cuts and read[-1] == b""
    finally:
        os.close(fd)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)  # one byte more than a small entry says, when the file grew
    fd = os.open(small, os.O_RDONLY)
    try:
        assert [bytes(c) for c in chunking.cut_as(fd, [99])] == [b"x" * 100]
    finally:
        os.close(fd)
