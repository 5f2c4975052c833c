"""The contract every remote backend honours, run against a real server per backend.

A backend's test module subclasses :class:`BackendContract` and provides these fixtures:

``backend``
    a connected :class:`gaia_core.backends.Backend` on the live server, with a fresh,
    empty root (unique prefix / directory per test);
``backend_factory``
    a callable returning another, new backend on the same root (another machine);
``litter``
    ``litter(key, age_s)`` leaves on the server what an upload of ``key`` killed
    ``age_s`` seconds ago leaves behind (a temporary object whose last write is that old);
``bad_credentials_backend``
    the same server with wrong credentials (key, token or SSH key);
``server``
    the running server, with ``stop()`` and ``start()``;
``backend_config``
    ``(toml_table_text, env)``: a ``[checkpoints.backends.<kind>.<name>]`` table and the
    environment it reads, configuring the same live root for runs of the ``gaia`` CLI.

A backend with a server also subclasses :class:`MeteredContract`, which needs two more:

``backend_config_at``
    ``backend_config_at((host, port))``: ``backend_config`` for the server reached at
    another address (a relay in front of the real one);
``upstream``
    ``(host, port)`` of the real server.

Store format 4 keeps ``packs/<pack id>.pack`` (and ``.idx``) and
``points/<point id>/<fingerprint>/<manifest file>``; the objects of the backend-level tests
have that shape. The end-to-end tests run the ``gaia`` CLI with a ``[tree]`` anchor
(tree_anchor.py); those of :class:`MeteredContract` through a
:class:`~servers.metering.MeteringProxy`, which counts the bytes each run moves.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import tracemalloc
from pathlib import Path

import pytest

from servers.metering import DOWN, UP, MeteringProxy
from tree_anchor import TreePlugin
from tree_project import POINT as TREE_POINT
from tree_project import TreeProject, changed_copy, make_source, remote_index_bytes, remote_packs, tree_digest

from gaia_core.backends import MANIFEST, PACKS, POINTS, Backend, object_dir, object_key, pack_key
from gaia_core.errors import BackendError, ObjectExists, ObjectNotFound
from gaia_core.fingerprints import sha256_file

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
POINT = "base-os"
#: a signer's manifest slot beside the unsigned one
SIGNED_MANIFEST = "manifest.key.alice.json"
#: a stopped server (connections refused) must turn into an error within this many
#: seconds, never a hang: a refused connection is tried twice at most
STOPPED_SERVER_BUDGET_S = 5.0
LARGE_PAYLOAD_MB = 64
#: Python-level peak (tracemalloc) allowed while moving LARGE_PAYLOAD_MB
LARGE_PAYLOAD_PEAK_MB = 32
HOUR_S = 3600
#: concurrent publishers of one manifest
PUBLISHERS = 4


def fingerprint(n: int) -> str:
    return hashlib.sha256(f"fingerprint-{n}".encode()).hexdigest()


def pack_id(n: int) -> str:
    return hashlib.sha256(f"pack-{n}".encode()).hexdigest()


def pack(n: int, suffix: str = ".pack") -> str:
    """The key of a pack (or, with ``suffix=".idx"``, of its index)."""
    return pack_key(f"{pack_id(n)}{suffix}")


#: the key the transfer tests move their large objects through
PAYLOAD = pack(0)


def write_file(path: Path, size: int, seed: bytes = b"") -> Path:
    """Incompressible bytes, written in 1 MiB blocks so the test itself stays small."""
    block = 1 << 20
    with path.open("wb") as out:
        written = 0
        while written < size:
            chunk = os.urandom(min(block, size - written))
            out.write(chunk)
            written += len(chunk)
    return path


def upload_object(
    backend: Backend, tmp_path: Path, fp: str, *, manifest: bool = True, size: int = 4096,
    manifest_name: str = MANIFEST,
) -> dict[str, Path]:
    """Store an object like the core does: its pack and index first, then its manifest,
    create-only. Keys -> the local files they were made from."""
    folder = tmp_path / "up" / fp
    folder.mkdir(parents=True, exist_ok=True)
    n = int(fp[:8], 16)
    files = {pack(n): write_file(folder / "pack", size), pack(n, ".idx"): write_file(folder / "idx", 64)}
    for key, local in files.items():
        backend.upload(key, local)
    if manifest:
        manifest_path = folder / manifest_name
        manifest_path.write_text(json.dumps({"id": POINT, "fingerprint": fp, "packs": [pack_id(n)]}))
        backend.publish(object_key(POINT, fp, manifest_name), manifest_path)
        files[object_key(POINT, fp, manifest_name)] = manifest_path
    return files


def download_to(backend: Backend, key: str, dest: Path) -> Path:
    """Download like the core does: into a real temporary file opened 'wb'."""
    with dest.open("wb") as out:
        backend.download(key, out)
    return dest


class Cancelled(Exception):
    """What a caller's progress callback or destination raises to stop a transfer."""


class CountingFile:
    """A real file whose ``write`` raises ``error`` (counting calls); everything else
    is the file's, so a backend may seek, tell and truncate it like the core's."""

    def __init__(self, path: Path, error: BaseException):
        self.file = path.open("wb")
        self.error = error
        self.writes = 0

    def write(self, data) -> int:
        self.writes += 1
        raise self.error

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def close(self) -> None:
        self.file.close()


def temporaries_of(entries, key: str) -> list:
    """The temporary entries that belong to an upload of ``key``."""
    return [e for e in entries if e.temporary and e.key.startswith(key)]


def assert_backend_error(call, secrets: list[str] = ()) -> BackendError:
    """``call`` fails with a BackendError that is not "not found", within the time budget."""
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        call()
    elapsed = time.monotonic() - started
    assert not isinstance(info.value, ObjectNotFound), f"a failure was reported as not found: {info.value}"
    assert elapsed < STOPPED_SERVER_BUDGET_S, f"took {elapsed:.1f}s to fail"
    message = str(info.value)
    assert message.strip(), "error messages must say what failed"
    for secret in secrets:
        assert secret not in message, "a secret leaked into an error message"
    return info.value


class BackendContract:
    """Behaviour shared by every backend; subclasses only provide the fixtures."""

    # -- round trip --------------------------------------------------------------------

    def test_upload_probe_list_download_round_trip(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(1)
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is False
        files = upload_object(backend, tmp_path, fp, size=300_000)

        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True
        assert backend.list_fingerprints(POINT) == [fp]
        for n, (key, original) in enumerate(files.items()):
            assert backend.exists(key) is True
            copy = download_to(backend, key, tmp_path / f"down-{n}")
            assert copy.read_bytes() == original.read_bytes()

    def test_upload_replaces_an_existing_object(self, backend: Backend, tmp_path: Path) -> None:
        first, second = write_file(tmp_path / "first", 10_000), write_file(tmp_path / "second", 5_000)
        backend.upload(PAYLOAD, first)
        backend.upload(PAYLOAD, second)
        assert download_to(backend, PAYLOAD, tmp_path / "down").read_bytes() == second.read_bytes()

    def test_empty_file_round_trip(self, backend: Backend, tmp_path: Path) -> None:
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        backend.upload(PAYLOAD, empty)
        assert download_to(backend, PAYLOAD, tmp_path / "down").read_bytes() == b""
        assert backend.read_range(PAYLOAD, 0, 10) == b""

    # -- listing of fingerprints ---------------------------------------------------------

    def test_list_counts_only_fingerprints_with_a_manifest(self, backend: Backend, litter, tmp_path: Path) -> None:
        complete = sorted([fingerprint(10), fingerprint(11), fingerprint(12)])
        for fp in reversed(complete[:2]):
            upload_object(backend, tmp_path, fp)
        upload_object(backend, tmp_path, complete[2], manifest_name=SIGNED_MANIFEST)  # a signer's slot counts
        partial = fingerprint(13)
        upload_object(backend, tmp_path, partial, manifest=False)
        litter(object_key(POINT, partial, MANIFEST), 60)  # its manifest still on its way

        listed = backend.list_fingerprints(POINT)
        assert listed == complete
        assert partial not in listed
        assert backend.exists(object_key(POINT, partial, MANIFEST)) is False

    def test_list_of_an_unknown_point_is_empty(self, backend: Backend, tmp_path: Path) -> None:
        upload_object(backend, tmp_path, fingerprint(20))
        assert backend.list_fingerprints("no-such-point") == []
        # a point id that is a prefix of another must not see the other's objects
        assert backend.list_fingerprints(POINT[:-1]) == []
        assert backend.list_entries(POINT[:-1]) == []

    # -- listing of directories: list_files, list_dirs -------------------------------------

    def test_list_files_shows_the_files_of_one_directory_with_sizes_mtimes_and_temporaries(
        self, backend: Backend, litter, tmp_path: Path
    ) -> None:
        before = time.time()
        upload_object(backend, tmp_path, fingerprint(21), size=1234)
        upload_object(backend, tmp_path, fingerprint(22), size=4321, manifest_name=SIGNED_MANIFEST)
        litter(pack(99), 2 * HOUR_S)

        files = backend.list_files(PACKS)
        complete = {e.key: e for e in files if not e.temporary}
        n21, n22 = int(fingerprint(21)[:8], 16), int(fingerprint(22)[:8], 16)
        assert set(complete) == {pack(n21), pack(n21, ".idx"), pack(n22), pack(n22, ".idx")}
        assert complete[pack(n21)].size == 1234 and complete[pack(n22)].size == 4321
        assert complete[pack(n21, ".idx")].size == 64
        for entry in complete.values():
            assert entry.mtime is not None and before - 5 <= entry.mtime <= time.time() + 5, entry
            assert entry.fingerprint is None and not entry.is_manifest
        [temporary] = temporaries_of(files, pack(99))
        assert temporary.mtime is not None and temporary.mtime < time.time() - HOUR_S
        assert temporary.file_name is None, "a temporary must never count as a file"

        [manifest] = backend.list_files(object_dir(POINT, fingerprint(22)))
        assert manifest.key == object_key(POINT, fingerprint(22), SIGNED_MANIFEST) and manifest.is_manifest
        assert manifest.fingerprint == fingerprint(22)
        # only the files directly in a directory; a directory that is not there is empty
        assert backend.list_files(f"{POINTS}/{POINT}") == []
        assert backend.list_files(POINTS) == []
        assert backend.list_files("no-such-dir") == []
        assert backend.list_files(PACKS[:-1]) == []  # a prefix of a directory's name is not it
        assert backend.list_files(f"{PACKS}/no-such-dir") == []

    def test_list_dirs_names_the_directories_of_one_directory(self, backend: Backend, tmp_path: Path) -> None:
        assert backend.list_dirs(POINTS) == []
        upload_object(backend, tmp_path, fingerprint(23))
        upload_object(backend, tmp_path, fingerprint(24))
        other = tmp_path / "other"
        other.write_text("{}")
        backend.publish(object_key("other-point", fingerprint(25), MANIFEST), other)

        assert backend.list_dirs(POINTS) == sorted([POINT, "other-point"])
        assert backend.list_dirs(f"{POINTS}/{POINT}") == sorted([fingerprint(23), fingerprint(24)])
        assert backend.list_dirs(PACKS) == []  # files only
        assert backend.list_dirs(object_dir(POINT, fingerprint(23))) == []
        assert backend.list_dirs("no-such-dir") == []
        assert backend.list_dirs(POINTS[:-1]) == []

    def test_list_entries_shows_the_files_under_a_point_with_sizes_and_temporaries(
        self, backend: Backend, litter, tmp_path: Path
    ) -> None:
        fp = fingerprint(74)
        upload_object(backend, tmp_path, fp)
        manifest = object_key(POINT, fp, MANIFEST)
        litter(object_key(POINT, fp, SIGNED_MANIFEST), 2 * HOUR_S)

        entries = backend.list_entries(POINT)
        complete = {e.key: e for e in entries if not e.temporary}
        assert set(complete) == {manifest}
        assert complete[manifest].size == len(json.dumps({"id": POINT, "fingerprint": fp,
                                                          "packs": [pack_id(int(fp[:8], 16))]}))
        assert complete[manifest].fingerprint == fp and complete[manifest].file_name == MANIFEST
        assert complete[manifest].is_manifest
        [temporary] = temporaries_of(entries, object_key(POINT, fp, SIGNED_MANIFEST))
        assert temporary.fingerprint is None, "a temporary must never count as an object"
        assert temporary.mtime is not None and temporary.mtime < time.time() - HOUR_S
        assert backend.list_fingerprints(POINT) == [fp]
        assert backend.list_entries("no-such-point") == []

    # -- ranged reads ------------------------------------------------------------------

    def test_read_range_reads_the_bytes_asked_for_and_no_more(self, backend: Backend, tmp_path: Path) -> None:
        size = (3 << 20) + 17
        data = write_file(tmp_path / "pack", size).read_bytes()
        backend.upload(PAYLOAD, tmp_path / "pack")
        for offset, length in ((0, 1000), (1 << 20, 64 << 10), ((1 << 20) + 5, 300_001), (size - 100, 100),
                               (0, size), (size - 1, 1)):
            got = backend.read_range(PAYLOAD, offset, length)
            assert bytes(got) == data[offset : offset + length], (offset, length)
        # the object ends first: a short answer, or an empty one past its end
        assert bytes(backend.read_range(PAYLOAD, size - 10, 100)) == data[-10:]
        assert bytes(backend.read_range(PAYLOAD, 0, size + 1000)) == data
        assert backend.read_range(PAYLOAD, size, 10) == b""
        assert backend.read_range(PAYLOAD, size + 1000, 10) == b""
        assert backend.read_range(PAYLOAD, 5, 0) == b""

    def test_read_range_of_a_missing_key_is_not_found(self, backend: Backend, tmp_path: Path) -> None:
        with pytest.raises(ObjectNotFound):
            backend.read_range(PAYLOAD, 0, 100)
        with pytest.raises(ObjectNotFound):
            backend.read_range(PAYLOAD, 0, 0)
        upload_object(backend, tmp_path, fingerprint(26), manifest=False)
        with pytest.raises(ObjectNotFound):
            backend.read_range(object_key(POINT, fingerprint(26), MANIFEST), 10, 100)

    def test_read_range_holds_no_more_than_the_range_in_memory(self, backend: Backend, tmp_path: Path) -> None:
        size = 32 << 20
        source = write_file(tmp_path / "pack", size)
        backend.upload(PAYLOAD, source)
        with source.open("rb") as f:
            f.seek(20 << 20)
            expected = f.read(1 << 20)
        backend.read_range(PAYLOAD, 0, 1)  # connected, so that only the read itself is measured
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            got = backend.read_range(PAYLOAD, 20 << 20, 1 << 20)
            small_peak = tracemalloc.get_traced_memory()[1]
            del got
            tracemalloc.reset_peak()
            whole = backend.read_range(PAYLOAD, 0, size)
            whole_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(whole) == size
        del whole
        assert bytes(backend.read_range(PAYLOAD, 20 << 20, 1 << 20)) == expected
        assert small_peak < 4 << 20, f"a 1 MiB range peaked at {small_peak / 2**20:.1f} MiB"
        # the range once, plus what a pipelined transfer keeps in flight (SFTP: 8 MiB of
        # READs); never a second copy of the range
        assert whole_peak < size + (12 << 20), f"a {size >> 20} MiB range peaked at {whole_peak / 2**20:.1f} MiB"

    def test_instances_in_their_own_threads_work_side_by_side(self, backend_factory, tmp_path: Path) -> None:
        """The core gives each transfer thread a backend instance of its own."""
        workers = 4
        sources = {n: write_file(tmp_path / f"pack-{n}", (2 << 20) + n) for n in range(workers)}
        start = threading.Barrier(workers)
        problems: list[BaseException] = []

        def work(n: int) -> None:
            try:
                with backend_factory() as own:
                    start.wait(timeout=30)
                    own.upload(pack(n), sources[n])
                    own.upload(pack(n, ".idx"), sources[n])
                    for _ in range(3):
                        assert pack(n) in {e.key for e in own.list_files(PACKS)}
                        got = own.read_range(pack(n), 1 << 20, 1 << 20)
                        assert bytes(got) == sources[n].read_bytes()[1 << 20 : 2 << 20]
                    with (tmp_path / f"down-{n}").open("wb") as out:
                        own.download(pack(n, ".idx"), out)
            except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
                problems.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not problems, problems
        for n in range(workers):
            assert (tmp_path / f"down-{n}").read_bytes() == sources[n].read_bytes()

    # -- not found ---------------------------------------------------------------------

    def test_missing_object_is_not_found(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(30)
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is False
        with pytest.raises(ObjectNotFound):
            download_to(backend, object_key(POINT, fp, MANIFEST), tmp_path / "missing")
        # packs without a manifest: the packs are there, the manifest is not
        upload_object(backend, tmp_path, fp, manifest=False)
        with pytest.raises(ObjectNotFound):
            download_to(backend, object_key(POINT, fp, MANIFEST), tmp_path / "missing2")

    def test_read_small_reads_a_manifest_and_tells_a_larger_object_by_its_length(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        fp = fingerprint(31)
        files = upload_object(backend, tmp_path, fp, size=10)
        key = object_key(POINT, fp, MANIFEST)
        manifest = files[key].read_bytes()
        assert backend.read_small(key, 1 << 20) == manifest
        assert backend.read_small(key, len(manifest)) == manifest
        assert backend.read_small(key, 5) == manifest[:6]  # limit + 1 bytes: larger than the limit
        with pytest.raises(ObjectNotFound):
            backend.read_small(object_key(POINT, fingerprint(32), MANIFEST), 100)

    # -- failures ----------------------------------------------------------------------

    def test_wrong_credentials_fail_without_leaking_the_secret(
        self, bad_credentials_backend: Backend, tmp_path: Path
    ) -> None:
        secrets = [s for s in bad_credentials_backend.secrets() if s]
        assert secrets, "the backend must report its secrets so that they can be redacted"
        fp = fingerprint(40)
        payload = write_file(tmp_path / "pack", 1000)
        key = object_key(POINT, fp, MANIFEST)
        assert_backend_error(lambda: bad_credentials_backend.exists(key), secrets)
        assert_backend_error(lambda: bad_credentials_backend.upload(PAYLOAD, payload), secrets)
        assert_backend_error(lambda: download_to(bad_credentials_backend, key, tmp_path / "down"), secrets)
        assert_backend_error(lambda: bad_credentials_backend.read_range(PAYLOAD, 0, 100), secrets)
        assert_backend_error(lambda: bad_credentials_backend.list_fingerprints(POINT), secrets)
        assert_backend_error(lambda: bad_credentials_backend.list_files(PACKS), secrets)
        assert_backend_error(lambda: bad_credentials_backend.list_dirs(POINTS), secrets)
        for secret in secrets:
            assert secret not in bad_credentials_backend.describe()

    def test_server_stopped_mid_run_is_a_bounded_backend_error(self, backend: Backend, server, tmp_path: Path) -> None:
        fp = fingerprint(50)
        upload_object(backend, tmp_path, fp)
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True
        payload = write_file(tmp_path / "another", 1000)
        n = int(fp[:8], 16)
        server.stop()
        try:
            assert_backend_error(lambda: backend.exists(object_key(POINT, fp, MANIFEST)))
            assert_backend_error(lambda: download_to(backend, pack(n), tmp_path / "down"))
            assert_backend_error(lambda: backend.read_range(pack(n), 0, 100))
            assert_backend_error(lambda: backend.upload(pack(51), payload))
            assert_backend_error(lambda: backend.list_fingerprints(POINT))
            assert_backend_error(lambda: backend.list_files(PACKS))
            assert_backend_error(lambda: backend.list_dirs(POINTS))
        finally:
            server.start()
        # the same backend object recovers once the server is back
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True
        assert len(backend.read_range(pack(n), 0, 100)) == 100

    # -- create-only publish, delete -----------------------------------------------------

    def test_publish_is_create_only_and_the_first_object_stays(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(70)
        key = object_key(POINT, fp, MANIFEST)
        first, second = tmp_path / "first", tmp_path / "second"
        first.write_bytes(b'{"writer": 1}')
        second.write_bytes(b'{"writer": 2, "longer": true}')
        backend.publish(key, first)
        with pytest.raises(ObjectExists):
            backend.publish(key, second)
        assert download_to(backend, key, tmp_path / "down").read_bytes() == first.read_bytes()
        assert backend.list_fingerprints(POINT) == [fp]
        assert [e for e in backend.list_entries(POINT) if e.temporary] == [], "publish left a temporary behind"

    def test_of_concurrent_publishers_of_one_key_exactly_one_wins(
        self, backend_factory, tmp_path: Path
    ) -> None:
        key = object_key(POINT, fingerprint(71), MANIFEST)
        sources = []
        for number in range(PUBLISHERS):
            source = tmp_path / f"manifest-{number}"
            source.write_bytes(json.dumps({"writer": number, "pad": "x" * 1000 * number}).encode())
            sources.append(source)
        start = threading.Barrier(PUBLISHERS)
        outcomes: list[object] = [None] * PUBLISHERS

        def publisher(number: int) -> None:
            try:
                with backend_factory() as own:
                    own.exists(key)  # connected: the race is about the publish itself
                    start.wait(timeout=30)
                    own.publish(key, sources[number])
                outcomes[number] = "won"
            except ObjectExists:
                outcomes[number] = "exists"
            except BaseException as exc:  # noqa: BLE001 -- reported by the assertion below
                outcomes[number] = exc

        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(PUBLISHERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(map(str, outcomes)) == ["exists"] * (PUBLISHERS - 1) + ["won"], outcomes
        with backend_factory() as reader:
            stored = download_to(reader, key, tmp_path / "down").read_bytes()
        assert stored == sources[outcomes.index("won")].read_bytes(), "the object is not the winner's, intact"

    def test_delete_is_idempotent(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(72)
        upload_object(backend, tmp_path, fp)
        n = int(fp[:8], 16)
        backend.delete(pack(n))
        assert backend.exists(pack(n)) is False
        assert pack(n) not in {e.key for e in backend.list_files(PACKS)}
        backend.delete(pack(n))
        backend.delete(object_key(POINT, fingerprint(73), MANIFEST))  # never existed
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True

    def test_an_upload_of_a_key_removes_its_litter_older_than_an_hour(
        self, backend: Backend, litter, tmp_path: Path
    ) -> None:
        idx = pack(75, ".idx")
        litter(PAYLOAD, 2 * HOUR_S)  # killed long ago: litter
        litter(PAYLOAD, 60)  # maybe a concurrent writer elsewhere: kept
        litter(idx, 2 * HOUR_S)  # another key's: not this upload's business
        assert len(temporaries_of(backend.list_files(PACKS), PAYLOAD)) == 2

        backend.upload(PAYLOAD, write_file(tmp_path / "pack", 1000))
        files = backend.list_files(PACKS)
        [young] = temporaries_of(files, PAYLOAD)
        assert young.mtime is None or young.mtime > time.time() - HOUR_S
        assert len(temporaries_of(files, idx)) == 1

    # -- the caller's code: destination, progress ----------------------------------------

    @pytest.mark.parametrize("error", [Cancelled("stop"), OSError(errno.ENOSPC, "No space left on device")], ids=repr)
    def test_download_lets_the_destination_error_through_unretried(
        self, backend: Backend, tmp_path: Path, error: BaseException
    ) -> None:
        backend.upload(PAYLOAD, write_file(tmp_path / "pack", 3 << 20))
        dest = CountingFile(tmp_path / "down", error)
        try:
            with pytest.raises(type(error)) as info:
                backend.download(PAYLOAD, dest)
        finally:
            dest.close()
        assert info.value is error, "the destination's exception must reach the caller unchanged"
        assert dest.writes == 1, "a failed write must not be retried"
        assert backend.exists(PAYLOAD) is True  # and the backend still works

    def test_progress_reports_every_byte_both_ways(self, backend: Backend, tmp_path: Path) -> None:
        size = (5 << 20) + 17
        source = write_file(tmp_path / "pack", size)
        sent: list[int] = []
        backend.upload(PAYLOAD, source, progress=sent.append)
        assert sum(sent) == size and len(sent) >= 2, f"upload progress {len(sent)} calls, {sum(sent)} bytes"
        received: list[int] = []
        with (tmp_path / "down").open("wb") as out:
            backend.download(PAYLOAD, out, progress=received.append)
        assert sum(received) == size and len(received) >= 2, f"download progress {len(received)} calls"
        assert (tmp_path / "down").read_bytes() == source.read_bytes()

    def test_a_progress_callback_that_raises_cancels_without_retry(self, backend: Backend, tmp_path: Path) -> None:
        source = write_file(tmp_path / "pack", 5 << 20)

        def cancelling(calls: list[int]):
            cancel = Cancelled("enough")

            def progress(count: int) -> None:
                calls.append(count)
                raise cancel

            return cancel, progress

        calls: list[int] = []
        cancel, progress = cancelling(calls)
        with pytest.raises(Cancelled) as info:
            backend.upload(PAYLOAD, source, progress=progress)
        assert info.value is cancel and len(calls) == 1, f"upload: {len(calls)} progress calls: retried?"
        assert backend.exists(PAYLOAD) is False, "a cancelled upload must not leave a visible object"

        backend.upload(PAYLOAD, source)
        calls = []
        cancel, progress = cancelling(calls)
        with pytest.raises(Cancelled) as info, (tmp_path / "down").open("wb") as out:
            backend.download(PAYLOAD, out, progress=progress)
        assert info.value is cancel and len(calls) == 1, f"download: {len(calls)} progress calls: retried?"

    # -- bounded memory ----------------------------------------------------------------

    def test_large_transfer_keeps_python_memory_bounded(self, backend: Backend, tmp_path: Path) -> None:
        size = LARGE_PAYLOAD_MB << 20
        payload = write_file(tmp_path / "pack", size)
        expected = sha256_file(payload)
        limit = LARGE_PAYLOAD_PEAK_MB << 20

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            backend.upload(PAYLOAD, payload)
            upload_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            copy = download_to(backend, PAYLOAD, tmp_path / "down")
            download_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

        assert copy.stat().st_size == size
        assert sha256_file(copy) == expected
        assert upload_peak < limit, f"upload peaked at {upload_peak / 2**20:.1f} MiB"
        assert download_peak < limit, f"download peaked at {download_peak / 2**20:.1f} MiB"

    # -- end to end through the CLI ----------------------------------------------------

    def test_end_to_end_restore_from_a_wiped_local_store(self, backend: Backend, backend_config, tmp_path: Path) -> None:
        project, build_file, run_env = quickstart_with(backend_config, tmp_path, "on_success")

        cold = gaia(["run", str(build_file)], run_env, project)
        assert cold.returncode == 0, cold.stdout + cold.stderr
        store = find_store(project)
        assert list((store / "points" / POINT).glob(f"*/{MANIFEST}")), "the cold run captured nothing locally"
        compile_log = find_compile_log(project)
        compile_log_text = compile_log.read_text()
        buildroot_out = compile_log.parent.parent
        images = sorted(p.relative_to(buildroot_out) for p in (buildroot_out / "images").rglob("*") if p.is_file())
        assert images, "the quickstart produced no images"

        listed = gaia(["checkpoints", "list", str(build_file), "--remote", "--json"], run_env, project)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        fingerprints = remote_fingerprints(json.loads(listed.stdout))
        assert len(fingerprints) == 1, listed.stdout
        (fp,) = fingerprints
        assert fp in cold.stdout + cold.stderr or fp[:12] in cold.stdout + cold.stderr
        # store format 4 on the remote: the manifest under points/, its chunks in packs/
        assert backend.list_dirs(POINTS) == [POINT] and backend.list_fingerprints(POINT) == [fp]
        assert [e.file_name for e in backend.list_files(object_dir(POINT, fp))] == [MANIFEST]
        names = {e.file_name for e in backend.list_files(PACKS) if not e.temporary}
        packs = {n[:-5] for n in names if n and n.endswith(".pack")}
        assert packs and {f"{p}.idx" for p in packs} | {f"{p}.pack" for p in packs} == names, names

        shutil.rmtree(store)
        shutil.rmtree(buildroot_out)
        warm = gaia(["run", str(build_file)], run_env, project)
        output = warm.stdout + warm.stderr
        assert warm.returncode == 0, output
        assert "download" in output.lower(), output
        for task in ("buildroot.configure", "buildroot.build"):
            assert task_was_skipped(output, task), f"{task} was not skipped:\n{output}"
        for image in images:
            assert (buildroot_out / image).is_file(), f"{image} missing after restore"
        # the restored tree brings its compile log back; nothing was compiled again
        assert compile_log.read_text() == compile_log_text
        assert (store / "points" / POINT / fp / MANIFEST).is_file(), "the download was not published locally"


    def test_backend_down_falls_back_to_building_and_retry_uploads_later(
        self, backend_config, server, tmp_path: Path
    ) -> None:
        _, env = backend_config
        project, build_file, run_env = quickstart_with(backend_config, tmp_path, "always")
        secrets = [v for k, v in env.items() if v and any(w in k.upper() for w in ("SECRET", "TOKEN", "PASS"))]

        server.stop()
        try:
            status = gaia(["checkpoints", "status", str(build_file), "--json"], run_env, project)
            assert status.returncode == 5, status.stdout + status.stderr
            point = json.loads(status.stdout)["points"][0]
            assert point["reason"] == "remote_probe_error" and point["remote_error"], point
            assert point["remote_unavailable"] is True and point["will_rebuild"] is True
            ref = point["backend"]
            assert status.stderr.count(f"error: backend {ref} is unavailable: ") == 1, status.stderr

            run = gaia(["run", str(build_file)], run_env, project)
            output = run.stdout + run.stderr
            assert run.returncode == 0, output
            assert f"backend {ref} is unavailable: " in output, output
            assert "building instead" in output and "queued for retry" in output, output
            output += unavailable_everywhere(build_file, run_env, project, ref)
        finally:
            server.start()

        queue = (find_store(project) / "upload-queue.json").read_text()
        assert '"failed"' in queue
        for secret in secrets:
            assert secret not in queue, "a secret reached the upload queue"
            assert secret not in output, "a secret reached the output"

        retry = gaia(["checkpoints", "retry", str(build_file), "--json"], run_env, project)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert json.loads(retry.stdout)["uploaded"] == 1
        listed = gaia(["checkpoints", "list", str(build_file), "--remote", "--json"], run_env, project)
        assert len(remote_fingerprints(json.loads(listed.stdout))) == 1, listed.stdout


    def test_gc_push_and_pull_through_the_cli(self, backend_config, tmp_path: Path) -> None:
        """Three objects in the backend; gc keeps the young ones, then the current one only;
        pull brings the current one into a wiped store, push finds it already there."""
        project, build_file, run_env = quickstart_with(backend_config, tmp_path, "always")
        fingerprints = []
        for host in ("one", "two", "three"):
            sets = ["--set", f'buildroot.symbols.TARGET_GENERIC_HOSTNAME="{host}"']
            run = gaia(["run", str(build_file), *sets], run_env, project)
            assert run.returncode == 0, run.stdout + run.stderr
            status = gaia(["checkpoints", "status", str(build_file), "--json", *sets], run_env, project)
            fingerprints.append(json.loads(status.stdout)["points"][0]["fingerprint"])
        current = ["--set", 'buildroot.symbols.TARGET_GENERIC_HOSTNAME="three"']

        def remote() -> set[str]:
            listed = gaia(["checkpoints", "list", str(build_file), "--remote", "--json", *current], run_env, project)
            assert listed.returncode == 0, listed.stdout + listed.stderr
            return remote_fingerprints(json.loads(listed.stdout))

        assert remote() == set(fingerprints)
        young = gaia(["checkpoints", "gc", str(build_file), "--remote", "--keep-last", "1", "--json", *current],
                     run_env, project)
        assert young.returncode == 0, young.stdout + young.stderr
        assert remote() == set(fingerprints), "gc removed a remote object younger than the grace period"
        dry = gaia(["checkpoints", "gc", str(build_file), "--remote", "--keep-last", "1", "--grace", "0s",
                    "--dry-run", "--json", *current], run_env, project)
        assert json.loads(dry.stdout)["remote"]["freed"] > 0 and remote() == set(fingerprints)
        gone = gaia(["checkpoints", "gc", str(build_file), "--remote", "--keep-last", "1", "--grace", "0s",
                     "--json", *current], run_env, project)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert remote() == {fingerprints[-1]}

        shutil.rmtree(find_store(project))
        pulled = gaia(["checkpoints", "pull", str(build_file), "--json", *current], run_env, project)
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert (find_store(project) / "points" / POINT / fingerprints[-1] / MANIFEST).is_file()
        pushed = gaia(["checkpoints", "push", str(build_file), *current], run_env, project)
        assert pushed.returncode == 0 and "pushed" in pushed.stdout, pushed.stdout + pushed.stderr
        assert "is already in" in pushed.stdout + pushed.stderr

    def test_run_records_are_shared_through_the_backend(self, backend: Backend, backend_config,
                                                        tmp_path: Path) -> None:
        """Two machines share their run records through the backend (one object per run under
        records/<day>/); stats --remote on the first sees both runs, the second's a remote hit."""
        share = ["--set", "checkpoints.share_records=true"]
        first, build_one, run_env = quickstart_with(backend_config, tmp_path / "one", "always")
        second, build_two, _ = quickstart_with(backend_config, tmp_path / "two", "always")
        for project, build_file in ((first, build_one), (second, build_two)):
            run = gaia(["run", str(build_file), *share], run_env, project)
            assert run.returncode == 0, run.stdout + run.stderr
        [day] = backend.list_dirs("records")
        assert len([e for e in backend.list_files(f"records/{day}") if not e.temporary]) == 2
        stats = gaia(["checkpoints", "stats", str(build_one), "--remote", "--json", *share], run_env, first)
        assert stats.returncode == 0, stats.stdout + stats.stderr
        result = json.loads(stats.stdout)
        point = result["points"][POINT]
        assert (point["runs"], point["hits"], point["remote_hits"], point["misses"]) == (2, 1, 1, 1), point
        assert result["tiers"][backend_ref(backend_config[0])]["bytes"] > 0, result["tiers"]

    # -- end to end through the core: store format 4 ---------------------------------------

    @pytest.fixture
    def tree_pm(self, gaia_pm):  # type: ignore[no-untyped-def]
        return with_tree_plugin(gaia_pm)

    def test_end_to_end_gc_keeps_what_retained_manifests_need_and_deletes_dead_packs(
        self, backend: Backend, litter, backend_config, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """Three checkpoints, the second and third changing the same file: once the first
        two go, the pack of the second's version of the file is dead. A killed upload's
        temporary goes too."""
        sources = [make_source(tmp_path / "src1", files=16, size=256 << 10)]
        sources += [changed_copy(sources[0], tmp_path / f"src{n}", "dir0/file004.bin") for n in (2, 3)]
        producer = TreeProject(tmp_path / "producer", *backend_config)
        packs_after = []
        for version, source in enumerate(sources, 1):
            producer.write(source, str(version))
            producer.run(gaia_cli, tree_pm)
            packs_after.append(set(remote_packs(backend)))
        fingerprints = backend.list_fingerprints(TREE_POINT)
        assert len(fingerprints) == 3
        second_only = packs_after[1] - packs_after[0]
        third_only = packs_after[2] - packs_after[1]
        assert second_only and third_only

        def gc(*args: str) -> dict:  # type: ignore[type-arg]
            result = producer.gaia(gaia_cli, tree_pm, "checkpoints", "gc", producer.build, "--remote",
                                   "--keep-last", "1", "--json", *args)
            assert result.exit_code == 0, result.output
            return result.json

        gc()
        assert set(remote_packs(backend)) == packs_after[2], "gc removed packs younger than the grace period"
        assert len(backend.list_fingerprints(TREE_POINT)) == 3
        litter(pack(99), 2 * HOUR_S)
        assert temporaries_of(backend.list_files(PACKS), pack(99))
        gc("--grace", "0s")
        assert not temporaries_of(backend.list_files(PACKS), pack(99)), "gc left a killed upload's temporary"
        left = set(remote_packs(backend))
        assert len(backend.list_fingerprints(TREE_POINT)) == 1
        assert not left & second_only, "a pack only the removed checkpoints needed was kept"
        assert packs_after[0] <= left and third_only <= left, "gc removed a pack the kept checkpoint needs"

        consumer = TreeProject(tmp_path / "consumer", *backend_config)
        consumer.write(sources[2], "3")
        consumer.run(gaia_cli, tree_pm)
        assert consumer.builds() == 0 and tree_digest(consumer.out) == tree_digest(sources[2])

    def test_end_to_end_gc_repacks_a_mostly_dead_pack(
        self, backend: Backend, backend_config, gaia_cli, tree_pm, tmp_path: Path, monkeypatch
    ) -> None:
        """The second checkpoint changes 12 of the first one's 16 files: once the first goes,
        its pack is a quarter live. gc copies that quarter into a new pack (ranged reads,
        uploaded before the old pack is deleted) while a consumer restores: the consumer
        listed the packs before the gc and reads after it, and still restores."""
        from gaia_core.checkpoints.transfer import Transfers

        first = make_source(tmp_path / "src1", files=16, size=256 << 10)
        second = changed_copy(first, tmp_path / "src2", *(f"dir{n % 2}/file{n:03}.bin" for n in range(4, 16)))
        producer = TreeProject(tmp_path / "producer", *backend_config)
        packs_after = []
        for version, source in enumerate((first, second), 1):
            producer.write(source, str(version))
            producer.run(gaia_cli, tree_pm)
            packs_after.append(remote_packs(backend))
        assert packs_after[0]
        ref = backend_ref(backend_config[0])

        def gc(*args: str) -> dict:  # type: ignore[type-arg]
            result = producer.gaia(gaia_cli, tree_pm, "checkpoints", "gc", producer.build, "--remote",
                                   "--keep-last", "1", "--grace", "0s", "--json", *args)
            assert result.exit_code == 0, result.output
            return result.json["remote"]

        dry = gc("--dry-run")
        assert remote_packs(backend) == packs_after[1], "a dry run changed the backend's packs"
        assert dry["backends"][ref]["packs_repacked"] >= 1
        fetch, reports = Transfers.fetch, []

        def gc_then_fetch(transfers, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not reports:  # the consumer's first read: its listing is from before the gc
                reports.append({})  # (the gc's own reads pass through)
                reports[0] = gc()
            return fetch(transfers, *args, **kwargs)

        monkeypatch.setattr(Transfers, "fetch", gc_then_fetch)
        consumer = TreeProject(tmp_path / "consumer", *backend_config)
        consumer.write(second, "2")
        consumer.run(gaia_cli, tree_pm)
        assert consumer.builds() == 0 and tree_digest(consumer.out) == tree_digest(second)
        (done,) = reports
        assert done["backends"][ref]["packs_repacked"] == dry["backends"][ref]["packs_repacked"]
        assert done["freed"] == dry["freed"] and done["freed"] >= 12 * (256 << 10) * 0.9
        left = remote_packs(backend)
        assert not set(packs_after[0]) & set(left), "a mostly dead pack of the first checkpoint was kept whole"
        assert sum(left.values()) < sum(packs_after[1].values()) - done["freed"] + (64 << 10)
        assert len(backend.list_fingerprints(TREE_POINT)) == 1


class MeteredContract:
    """End-to-end tests that measure what moves on the wire, through a
    :class:`~servers.metering.MeteringProxy` in front of the server: for backends with a
    server (``backend_config_at`` and ``upstream`` fixtures), beside :class:`BackendContract`."""

    @pytest.fixture
    def tree_pm(self, gaia_pm):  # type: ignore[no-untyped-def]
        return with_tree_plugin(gaia_pm)

    def test_end_to_end_a_second_checkpoint_moves_only_what_changed(
        self, backend: Backend, backend_config_at, upstream, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """One file of 64 changed: the second upload sends its new packs only, and a
        restore of it over the first tree in place downloads only the changed chunks."""
        file_size = 128 << 10
        first_source = make_source(tmp_path / "src1", files=64, size=file_size)
        second_source = changed_copy(first_source, tmp_path / "src2", "dir1/file007.bin")
        with MeteringProxy(upstream) as proxy:
            producer = TreeProject(tmp_path / "producer", *backend_config_at(proxy.address))
            producer.write(first_source, "1")
            assert "uploaded" in producer.run(gaia_cli, tree_pm).output
            first = proxy.reset()
            first_packs = remote_packs(backend)
            producer.write(second_source, "2")
            assert "uploaded" in producer.run(gaia_cli, tree_pm).output
            second = proxy.reset()
            second_packs = remote_packs(backend)

            consumer = TreeProject(tmp_path / "consumer", *backend_config_at(proxy.address))
            consumer.write(first_source, "1")
            consumer.run(gaia_cli, tree_pm)
            full = proxy.reset()
            assert consumer.builds() == 0 and tree_digest(consumer.out) == tree_digest(first_source)
            shutil.rmtree(consumer.store)  # the chunks must come from the tree in place
            consumer.write(second_source, "2")
            consumer.run(gaia_cli, tree_pm)
            incremental = proxy.reset()
        assert consumer.builds() == 0, "the consumer built instead of restoring"
        assert tree_digest(consumer.out) == tree_digest(second_source)

        new_pack_bytes = sum(size for p, size in second_packs.items() if p not in first_packs)
        print(f"upload: first {first[UP]} B ({sum(first_packs.values())} B of packs), second {second[UP]} B "
              f"({new_pack_bytes} B of new packs); restore: full {full[DOWN]} B, in place {incremental[DOWN]} B")
        assert first_packs.keys() <= second_packs.keys()
        assert 0 < new_pack_bytes <= 0.05 * sum(first_packs.values()), (new_pack_bytes, first_packs)
        assert second[UP] <= 0.05 * first[UP], f"second upload sent {second[UP]} bytes, the first {first[UP]}"
        # what a restore in place may fetch: the changed chunk, the manifest, every pack's
        # index (the wiped store knows none), and the requests around them
        manifest = sum(e.size or 0 for fp in backend.list_dirs(f"{POINTS}/{TREE_POINT}")
                       for e in backend.list_files(object_dir(TREE_POINT, fp)))
        allowed = 1.1 * file_size + manifest + remote_index_bytes(backend) + (64 << 10)
        assert incremental[DOWN] <= allowed, f"incremental restore fetched {incremental[DOWN]} bytes, allowed {allowed:.0f}"
        assert incremental[DOWN] <= 0.10 * full[DOWN], (incremental, full)

    def test_end_to_end_an_upload_cut_midway_resends_only_what_is_missing(
        self, backend: Backend, backend_factory, backend_config_at, upstream, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        source = make_source(tmp_path / "src", files=40, size=1 << 20)
        cut_after = 2  # complete packs on the server when the relay goes away
        with MeteringProxy(upstream, rate=16 << 20) as proxy:
            producer = TreeProject(tmp_path / "producer", *backend_config_at(proxy.address),
                                   backend_options='max_object_size = "8MiB"\nparallel = 1\n')
            producer.write(source, "1")
            watcher = PackWatcher(backend_factory, cut_after, proxy.stop)
            with watcher:
                cut = producer.run(gaia_cli, tree_pm)
            assert watcher.fired, "the upload ended before the relay could be stopped"
            assert "queued for retry" in cut.output, cut.output
            present = remote_packs(backend)
            assert len(present) >= cut_after, present
            proxy.start()
            proxy.reset()
            retried = producer.gaia(gaia_cli, tree_pm, "checkpoints", "retry", producer.build, "--json")
            assert retried.exit_code == 0, retried.output
            moved = proxy.reset()
        final = remote_packs(backend)
        assert present.keys() <= final.keys(), "packs the cut upload completed were lost"
        missing = sum(size for p, size in final.items() if p not in present)
        print(f"cut after {len(present)} of {len(final)} packs; the retry sent {moved[UP]} B for {missing} B of packs")
        assert missing > 0, "the cut upload had sent everything"
        assert moved[UP] <= 1.05 * missing + (256 << 10), (
            f"the retry sent {moved[UP]} bytes; only {missing} bytes of packs were missing (complete after the "
            f"cut: {sorted(present)}; at the end: {sorted(final)})\ncut:\n{cut.output[-3000:]}\n"
            f"retry:\n{retried.output[-3000:]}")

        consumer = TreeProject(tmp_path / "consumer", *backend_config_at(upstream))
        consumer.write(source, "1")
        consumer.run(gaia_cli, tree_pm)
        assert consumer.builds() == 0 and tree_digest(consumer.out) == tree_digest(source)


# -- helpers of the end-to-end test ----------------------------------------------------


def with_tree_plugin(pm):  # type: ignore[no-untyped-def]
    """The installed plugins (the backends) plus the ``[tree]`` anchor."""
    pm.register(TreePlugin(), name="tree")
    return pm


def unavailable_everywhere(build_file: Path, env: dict[str, str], project: Path, ref: str) -> str:
    """Every command that needs the stopped backend exits 5 and says why exactly once, in
    the same words; the output of them all."""
    other = ["--set", 'buildroot.symbols.TARGET_GENERIC_HOSTNAME="not-built-here"']  # not local: status, pull ask
    output = ""
    for command in (["status", *other], ["list", "--remote"], ["verify", "--remote"], ["gc", "--remote"], ["push"],
                    ["retry"], ["pull", *other]):
        done = gaia(["checkpoints", command[0], str(build_file), *command[1:]], env, project)
        text = done.stdout + done.stderr
        assert done.returncode == 5, f"{command}: exit {done.returncode}\n{text}"
        assert text.count(f"backend {ref} is unavailable: ") == 1, f"{command}: the reason is not said once\n{text}"
        said = done.stdout.replace("bad=0", "")
        for name, value in env.items():  # the server's address is random hex: "...488bad46..." is no verdict
            if name.startswith("GAIA_IT_") and value:
                said = said.replace(value, "")
        assert "bad" not in said, f"{command}: an unavailable backend is no bad object"
        output += text
    return output



def copy_quickstart(dest: Path) -> Path:
    assert QUICKSTART.is_dir(), f"{QUICKSTART} is missing"
    shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("build", "out", ".gaia*"))
    candidates = [dest / "build.toml", dest / "gaia.toml"] + sorted(dest.glob("*.toml"))
    build_file = next(p for p in candidates if p.is_file())
    assert "[checkpoints" not in build_file.read_text(), "the quickstart already configures checkpoints"
    return build_file


def backend_ref(table_text: str) -> str:
    backends = tomllib.loads(table_text)["checkpoints"]["backends"]
    ((kind, named),) = backends.items()
    ((name, _),) = named.items()
    return f"{kind}:{name}"


def checkpoints_section(ref: str, table_text: str, upload_policy: str = "on_success") -> str:
    return (
        "\n\n[checkpoints]\nenabled = true\n\n"
        "[[checkpoints.points]]\n"
        f'id = "{POINT}"\nanchor_task = "buildroot.build"\nbackend = "{ref}"\nupload_policy = "{upload_policy}"\n\n'
        f"{table_text.strip()}\n"
    )


def quickstart_with(backend_config, tmp_path: Path, upload_policy: str):  # type: ignore[no-untyped-def]
    """A copy of the quickstart whose point uses the backend: (project dir, build file, env)."""
    table_text, env = backend_config
    project = tmp_path / "quickstart"
    build_file = copy_quickstart(project)
    with build_file.open("a") as out:
        out.write(checkpoints_section(backend_ref(table_text), table_text, upload_policy))
    return project, build_file, {**os.environ, **env}


def gaia(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gaia")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "gaia_core.cli"]
    return subprocess.run(command + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def find_store(project: Path) -> Path:
    found = [p.parent.parent for p in project.rglob(f"points/{POINT}") if p.is_dir()]
    assert len(found) == 1, f"expected one local checkpoint store under {project}, found {found}"
    return found[0]


def find_compile_log(project: Path) -> Path:
    found = list(project.rglob("build/fake-compile.log"))
    assert len(found) == 1, f"expected one fake Buildroot compile log under {project}, found {found}"
    return found[0]


def remote_fingerprints(document) -> set[str]:
    """Fingerprints listed as remote for POINT, whatever the exact JSON nesting."""
    found: set[str] = set()

    def walk(node, point: str | None) -> None:
        if isinstance(node, dict):
            point = node.get("id", point) if isinstance(node.get("id"), str) else point
            for key, value in node.items():
                if key in ("remote_fingerprints", "remote") and point == POINT and isinstance(value, list):
                    found.update(v for v in value if isinstance(v, str))
                    found.update(v["fingerprint"] for v in value if isinstance(v, dict) and "fingerprint" in v)
                else:
                    walk(value, point)
        elif isinstance(node, list):
            for item in node:
                walk(item, point)

    walk(document, None)
    return found


def task_was_skipped(output: str, task: str) -> bool:
    for line in output.splitlines():
        words = line.replace(":", " ").replace("[", " ").replace("]", " ").split()
        if task in words and any(w.lower() in ("skip", "skipped") for w in words):
            return True
    return False


class PackWatcher:
    """Calls ``act`` once the backend holds ``count`` complete packs (a thread polling
    with a backend of its own), at most once."""

    def __init__(self, backend_factory, count: int, act) -> None:  # type: ignore[no-untyped-def]
        self.backend_factory = backend_factory
        self.count = count
        self.act = act
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with self.backend_factory() as own:
            while not self._done.wait(0.05):
                try:
                    done = len(remote_packs(own)) >= self.count
                except BackendError:
                    continue
                if done:
                    self.act()
                    self.fired = True
                    return

    def __enter__(self) -> PackWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)
