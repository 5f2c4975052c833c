"""Issue 10: remotes that hang, stall or refuse cost seconds, not minutes.

A backend's test module subclasses :class:`DeadlineContract` and provides, besides the
contract's ``backend`` (used here to put objects on the real server):

``aimed_backend``
    ``aimed_backend((host, port), **fields)``: a backend of its kind on the same root as
    ``backend``, but connecting to ``host:port`` (a misbehaving server or a proxy in front
    of the real one), with extra config ``fields`` (timeouts);
``upstream``
    ``(host, port)`` of the real server.

Every bound is asserted at backend level, with shortened timeouts (the bounds scale with
them) and once with the defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from contract import POINT, fingerprint, pack, write_file
from servers.misbehaving import DOWN, UP, ConnectCounter, SilentServer, StallingProxy, refusing_port

from gaia_core.backends import MANIFEST, PACKS, POINTS, Backend, object_key
from gaia_core.errors import BackendUnavailable

#: shortened timeouts: every bound below is a function of these
FAST = {"connect_timeout": 1.0, "stall_timeout": 1.5, "probe_timeout": 2.0}
DEFAULTS = {"connect_timeout": 5.0, "stall_timeout": 30.0, "probe_timeout": 10.0}
#: what the machine may add to a bound (thread wake-ups, a loaded CI runner)
MARGIN_S = 1.5
#: a transfer stalls after this many bytes went through the proxy in its direction
STALL_AFTER = 2 << 20
PAYLOAD_SIZE = 6 << 20


def probe_bound(timeouts: dict[str, float]) -> float:
    """A probe or listing: ``probe_timeout`` in total, retries included."""
    return timeouts["probe_timeout"] + MARGIN_S


def transfer_bound(timeouts: dict[str, float]) -> float:
    """A transfer: one stall, one retry on a new connection that stalls again."""
    return 2 * (timeouts["stall_timeout"] + timeouts["connect_timeout"]) + MARGIN_S


def fails_unavailable(call: Callable[[], object]) -> tuple[float, BackendUnavailable]:
    """``call`` raises BackendUnavailable; how long it took."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        call()
    return time.monotonic() - started, info.value


def download_into(backend: Backend, key: str, dest: Path, progress: list[int] | None = None) -> None:
    with dest.open("wb") as out:
        backend.download(key, out, progress=None if progress is None else progress.append)


class RestartOnlyWriter:
    """Like the core's hashing writer: sequential writes; the only seek is a restart."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.restarts = 0

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("only a restart from the beginning is supported")
        self.restarts += 1
        return 0

    def truncate(self, size: int | None = None) -> int:
        del self.data[:]
        return 0


class AppendOnlyWriter:
    """A destination that cannot start over (a pipe)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, chunk) -> int:
        self.size += len(chunk)
        return len(chunk)


class DeadlineContract:
    # -- a server that accepts and never answers ---------------------------------------

    def test_a_silent_server_fails_probes_within_the_probe_timeout(self, aimed_backend) -> None:
        with SilentServer() as silent, aimed_backend(silent.address, **FAST) as backend:
            elapsed, _ = fails_unavailable(lambda: backend.exists(object_key(POINT, fingerprint(1), MANIFEST)))
            assert elapsed <= probe_bound(FAST), f"exists took {elapsed:.1f}s"
            for name, listing in (("list_entries", lambda: backend.list_entries(POINT)),
                                  ("list_files", lambda: backend.list_files(PACKS)),
                                  ("list_dirs", lambda: backend.list_dirs(POINTS))):
                elapsed, _ = fails_unavailable(listing)
                assert elapsed <= probe_bound(FAST), f"{name} took {elapsed:.1f}s"

    def test_a_silent_server_fails_transfers_within_two_stalls(self, aimed_backend, tmp_path: Path) -> None:
        payload = write_file(tmp_path / "pack", 1 << 20)
        key = pack(2)
        with SilentServer() as silent, aimed_backend(silent.address, **FAST) as backend:
            elapsed, _ = fails_unavailable(lambda: backend.upload(key, payload))
            assert elapsed <= transfer_bound(FAST), f"upload took {elapsed:.1f}s"
            elapsed, _ = fails_unavailable(lambda: download_into(backend, key, tmp_path / "down"))
            assert elapsed <= transfer_bound(FAST), f"download took {elapsed:.1f}s"
            elapsed, _ = fails_unavailable(lambda: backend.read_range(key, 0, 1 << 20))
            assert elapsed <= transfer_bound(FAST), f"read_range took {elapsed:.1f}s"

    @pytest.mark.slow
    def test_a_silent_server_fails_a_probe_within_the_default_probe_timeout(self, aimed_backend) -> None:
        with SilentServer() as silent, aimed_backend(silent.address) as backend:
            assert (backend.connect_timeout, backend.stall_timeout, backend.probe_timeout) == tuple(DEFAULTS.values())
            elapsed, _ = fails_unavailable(lambda: backend.exists(object_key(POINT, fingerprint(3), MANIFEST)))
            assert elapsed <= probe_bound(DEFAULTS), f"exists took {elapsed:.1f}s with the defaults"

    # -- a port that refuses -----------------------------------------------------------

    def test_a_refused_connection_is_tried_twice_at_most(self, aimed_backend, monkeypatch, tmp_path: Path) -> None:
        payload = write_file(tmp_path / "pack", 1000)
        key = pack(4)
        with refusing_port() as port, aimed_backend(("127.0.0.1", port), **FAST) as backend:
            counter = ConnectCounter(monkeypatch, port)
            for name, call in (
                ("exists", lambda: backend.exists(key)),
                ("list_entries", lambda: backend.list_entries(POINT)),
                ("upload", lambda: backend.upload(key, payload)),
                ("download", lambda: download_into(backend, key, tmp_path / "down")),
                ("read_range", lambda: backend.read_range(key, 0, 100)),
                ("list_files", lambda: backend.list_files(PACKS)),
            ):
                counter.count = 0
                elapsed, _ = fails_unavailable(call)
                assert 1 <= counter.count <= 2, f"{name}: {counter.count} connection attempts"
                assert elapsed < 1.5, f"{name} took {elapsed:.1f}s against a refusing port"

    # -- a real server behind a proxy that freezes mid-body ----------------------------

    def test_a_download_stalled_mid_body_fails_within_two_stalls(
        self, backend: Backend, aimed_backend, upstream, tmp_path: Path
    ) -> None:
        key = pack(5)
        backend.upload(key, write_file(tmp_path / "pack", PAYLOAD_SIZE))
        moved: list[int] = []
        with StallingProxy(upstream, direction=DOWN, after=STALL_AFTER) as proxy, aimed_backend(proxy.address, **FAST) as stalled:
            elapsed, _ = fails_unavailable(lambda: download_into(stalled, key, tmp_path / "down", moved))
        assert elapsed <= transfer_bound(FAST), f"download took {elapsed:.1f}s"
        assert 0 < sum(moved) < 2 * PAYLOAD_SIZE, "the stall was not in the middle of the body"
        assert proxy.relayed[DOWN] >= STALL_AFTER

    def test_a_ranged_read_stalled_mid_body_fails_within_two_stalls(
        self, backend: Backend, aimed_backend, upstream, tmp_path: Path
    ) -> None:
        key = pack(9)
        backend.upload(key, write_file(tmp_path / "pack", PAYLOAD_SIZE))
        with StallingProxy(upstream, direction=DOWN, after=STALL_AFTER) as proxy, aimed_backend(proxy.address, **FAST) as stalled:
            elapsed, _ = fails_unavailable(lambda: stalled.read_range(key, 1 << 20, PAYLOAD_SIZE - (1 << 20)))
        assert elapsed <= transfer_bound(FAST), f"read_range took {elapsed:.1f}s"
        assert proxy.relayed[DOWN] >= STALL_AFTER

    def test_a_ranged_read_stalled_once_is_read_again_whole(
        self, backend: Backend, aimed_backend, upstream, tmp_path: Path
    ) -> None:
        key = pack(10)
        source = write_file(tmp_path / "pack", PAYLOAD_SIZE)
        backend.upload(key, source)
        with (
            StallingProxy(upstream, direction=DOWN, after=STALL_AFTER, stalls=1) as proxy,
            aimed_backend(proxy.address, **FAST) as flaky,
        ):
            started = time.monotonic()
            got = flaky.read_range(key, 1 << 20, PAYLOAD_SIZE)
            elapsed = time.monotonic() - started
        assert bytes(got) == source.read_bytes()[1 << 20 :], "the retry did not read the range again cleanly"
        assert elapsed <= transfer_bound(FAST)

    def test_a_download_stalled_once_starts_over_into_a_writer_that_can_restart(
        self, backend: Backend, aimed_backend, upstream, tmp_path: Path
    ) -> None:
        key = pack(7)
        source = write_file(tmp_path / "pack", PAYLOAD_SIZE)
        backend.upload(key, source)
        dest = RestartOnlyWriter()
        with (
            StallingProxy(upstream, direction=DOWN, after=STALL_AFTER, stalls=1) as proxy,
            aimed_backend(proxy.address, **FAST) as flaky,
        ):
            started = time.monotonic()
            flaky.download(key, dest)
            elapsed = time.monotonic() - started
        assert bytes(dest.data) == source.read_bytes(), "the retry did not start over cleanly"
        assert dest.restarts == 1
        assert elapsed <= transfer_bound(FAST)

    def test_a_download_stalled_into_a_writer_that_cannot_restart_is_not_retried(
        self, backend: Backend, aimed_backend, upstream, tmp_path: Path
    ) -> None:
        key = pack(8)
        backend.upload(key, write_file(tmp_path / "pack", PAYLOAD_SIZE))
        dest = AppendOnlyWriter()
        with (
            StallingProxy(upstream, direction=DOWN, after=STALL_AFTER, stalls=1) as proxy,
            aimed_backend(proxy.address, **FAST) as flaky,
        ):
            elapsed, _ = fails_unavailable(lambda: flaky.download(key, dest))
        assert 0 < dest.size < PAYLOAD_SIZE, "bytes already written can only be appended to: no second attempt"
        assert elapsed <= FAST["stall_timeout"] + FAST["connect_timeout"] + MARGIN_S

    def test_an_upload_stalled_mid_body_fails_within_two_stalls(self, aimed_backend, upstream, tmp_path: Path) -> None:
        payload = write_file(tmp_path / "pack", PAYLOAD_SIZE)
        key = pack(6)
        moved: list[int] = []
        with StallingProxy(upstream, direction=UP, after=STALL_AFTER) as proxy, aimed_backend(proxy.address, **FAST) as stalled:
            elapsed, _ = fails_unavailable(lambda: stalled.upload(key, payload, progress=moved.append))
        assert elapsed <= transfer_bound(FAST), f"upload took {elapsed:.1f}s"
        assert sum(moved) > 0, "the stall was not in the middle of the body"
        assert proxy.relayed[UP] >= STALL_AFTER
