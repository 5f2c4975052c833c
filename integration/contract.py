"""The contract every remote backend honours, run against a real server per backend.

A backend's test module subclasses :class:`BackendContract` and provides six fixtures:

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

from gaia_core.backends import MANIFEST, Backend, object_key
from gaia_core.errors import BackendError, ObjectExists, ObjectNotFound
from gaia_core.fingerprints import sha256_file

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
POINT = "base-os"
PAYLOAD = "payload.tar.zst"
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
    backend: Backend, tmp_path: Path, fp: str, *, manifest: bool = True, size: int = 4096
) -> dict[str, Path]:
    """Upload like the core does: payload first, manifest last."""
    folder = tmp_path / "up" / fp
    folder.mkdir(parents=True, exist_ok=True)
    payload = write_file(folder / PAYLOAD, size)
    backend.upload(object_key(POINT, fp, PAYLOAD), payload)
    files = {PAYLOAD: payload}
    if manifest:
        manifest_path = folder / MANIFEST
        manifest_path.write_text(json.dumps({"id": POINT, "fingerprint": fp, "payload": PAYLOAD}))
        backend.upload(object_key(POINT, fp, MANIFEST), manifest_path)
        files[MANIFEST] = manifest_path
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
        for name, original in files.items():
            copy = download_to(backend, object_key(POINT, fp, name), tmp_path / f"down-{name}")
            assert copy.read_bytes() == original.read_bytes()

    def test_upload_replaces_an_existing_object(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(2)
        upload_object(backend, tmp_path / "first", fp, size=10_000)
        second = upload_object(backend, tmp_path / "second", fp, size=5_000)
        copy = download_to(backend, object_key(POINT, fp, PAYLOAD), tmp_path / "down")
        assert copy.read_bytes() == second[PAYLOAD].read_bytes()

    def test_empty_file_round_trip(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(3)
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        backend.upload(object_key(POINT, fp, PAYLOAD), empty)
        copy = download_to(backend, object_key(POINT, fp, PAYLOAD), tmp_path / "down")
        assert copy.read_bytes() == b""

    # -- listing -----------------------------------------------------------------------

    def test_list_counts_only_fingerprints_with_a_manifest(self, backend: Backend, tmp_path: Path) -> None:
        complete = sorted([fingerprint(10), fingerprint(11), fingerprint(12)])
        for fp in reversed(complete):
            upload_object(backend, tmp_path, fp)
        partial = fingerprint(13)
        upload_object(backend, tmp_path, partial, manifest=False)

        listed = backend.list_fingerprints(POINT)
        assert listed == complete
        assert partial not in listed
        assert backend.exists(object_key(POINT, partial, MANIFEST)) is False

    def test_list_of_an_unknown_point_is_empty(self, backend: Backend, tmp_path: Path) -> None:
        upload_object(backend, tmp_path, fingerprint(20))
        assert backend.list_fingerprints("no-such-point") == []
        # a point id that is a prefix of another must not see the other's objects
        assert backend.list_fingerprints(POINT[:-1]) == []

    # -- not found ---------------------------------------------------------------------

    def test_missing_object_is_not_found(self, backend: Backend, tmp_path: Path) -> None:
        fp = fingerprint(30)
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is False
        with pytest.raises(ObjectNotFound):
            download_to(backend, object_key(POINT, fp, MANIFEST), tmp_path / "missing")
        # a payload without a manifest: the payload is there, the manifest is not
        upload_object(backend, tmp_path, fp, manifest=False)
        with pytest.raises(ObjectNotFound):
            download_to(backend, object_key(POINT, fp, MANIFEST), tmp_path / "missing2")

    def test_read_small_reads_a_manifest_and_tells_a_larger_object_by_its_length(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        fp = fingerprint(31)
        files = upload_object(backend, tmp_path, fp, size=10)
        key = object_key(POINT, fp, MANIFEST)
        manifest = files[MANIFEST].read_bytes()
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
        payload = write_file(tmp_path / PAYLOAD, 1000)
        key = object_key(POINT, fp, MANIFEST)
        assert_backend_error(lambda: bad_credentials_backend.exists(key), secrets)
        assert_backend_error(lambda: bad_credentials_backend.upload(object_key(POINT, fp, PAYLOAD), payload), secrets)
        assert_backend_error(lambda: download_to(bad_credentials_backend, key, tmp_path / "down"), secrets)
        assert_backend_error(lambda: bad_credentials_backend.list_fingerprints(POINT), secrets)
        for secret in secrets:
            assert secret not in bad_credentials_backend.describe()

    def test_server_stopped_mid_run_is_a_bounded_backend_error(self, backend: Backend, server, tmp_path: Path) -> None:
        fp = fingerprint(50)
        upload_object(backend, tmp_path, fp)
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True
        payload = write_file(tmp_path / "another", 1000)
        server.stop()
        try:
            assert_backend_error(lambda: backend.exists(object_key(POINT, fp, MANIFEST)))
            assert_backend_error(lambda: download_to(backend, object_key(POINT, fp, PAYLOAD), tmp_path / "down"))
            assert_backend_error(lambda: backend.upload(object_key(POINT, fingerprint(51), PAYLOAD), payload))
            assert_backend_error(lambda: backend.list_fingerprints(POINT))
        finally:
            server.start()
        # the same backend object recovers once the server is back
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True

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
        payload = object_key(POINT, fp, PAYLOAD)
        backend.delete(payload)
        assert backend.exists(payload) is False
        backend.delete(payload)
        backend.delete(object_key(POINT, fingerprint(73), MANIFEST))  # never existed
        assert backend.exists(object_key(POINT, fp, MANIFEST)) is True

    # -- listing of every stored file ----------------------------------------------------

    def test_list_entries_shows_objects_with_sizes_and_temporaries(
        self, backend: Backend, litter, tmp_path: Path
    ) -> None:
        fp = fingerprint(74)
        upload_object(backend, tmp_path, fp, size=1234)
        payload = object_key(POINT, fp, PAYLOAD)
        litter(payload, 2 * HOUR_S)

        entries = backend.list_entries(POINT)
        complete = {e.key: e for e in entries if not e.temporary}
        assert set(complete) == {payload, object_key(POINT, fp, MANIFEST)}
        assert complete[payload].size == 1234
        assert complete[payload].fingerprint == fp and complete[payload].file_name == PAYLOAD
        [temporary] = temporaries_of(entries, payload)
        assert temporary.fingerprint is None, "a temporary must never count as an object"
        assert temporary.mtime is not None and temporary.mtime < time.time() - HOUR_S
        assert backend.list_fingerprints(POINT) == [fp]
        assert backend.list_entries("no-such-point") == []

    def test_an_upload_of_a_key_removes_its_litter_older_than_an_hour(
        self, backend: Backend, litter, tmp_path: Path
    ) -> None:
        fp = fingerprint(75)
        payload, manifest = object_key(POINT, fp, PAYLOAD), object_key(POINT, fp, MANIFEST)
        litter(payload, 2 * HOUR_S)  # killed long ago: litter
        litter(payload, 60)  # maybe a concurrent writer elsewhere: kept
        litter(manifest, 2 * HOUR_S)  # another key's: not this upload's business
        assert len(temporaries_of(backend.list_entries(POINT), payload)) == 2

        backend.upload(payload, write_file(tmp_path / PAYLOAD, 1000))
        entries = backend.list_entries(POINT)
        [young] = temporaries_of(entries, payload)
        assert young.mtime is None or young.mtime > time.time() - HOUR_S
        assert len(temporaries_of(entries, manifest)) == 1

    # -- the caller's code: destination, progress ----------------------------------------

    @pytest.mark.parametrize("error", [Cancelled("stop"), OSError(errno.ENOSPC, "No space left on device")], ids=repr)
    def test_download_lets_the_destination_error_through_unretried(
        self, backend: Backend, tmp_path: Path, error: BaseException
    ) -> None:
        key = object_key(POINT, fingerprint(76), PAYLOAD)
        backend.upload(key, write_file(tmp_path / PAYLOAD, 3 << 20))
        dest = CountingFile(tmp_path / "down", error)
        try:
            with pytest.raises(type(error)) as info:
                backend.download(key, dest)
        finally:
            dest.close()
        assert info.value is error, "the destination's exception must reach the caller unchanged"
        assert dest.writes == 1, "a failed write must not be retried"
        assert backend.exists(key) is True  # and the backend still works

    def test_progress_reports_every_byte_both_ways(self, backend: Backend, tmp_path: Path) -> None:
        size = (5 << 20) + 17
        source = write_file(tmp_path / PAYLOAD, size)
        key = object_key(POINT, fingerprint(77), PAYLOAD)
        sent: list[int] = []
        backend.upload(key, source, progress=sent.append)
        assert sum(sent) == size and len(sent) >= 2, f"upload progress {len(sent)} calls, {sum(sent)} bytes"
        received: list[int] = []
        with (tmp_path / "down").open("wb") as out:
            backend.download(key, out, progress=received.append)
        assert sum(received) == size and len(received) >= 2, f"download progress {len(received)} calls"
        assert (tmp_path / "down").read_bytes() == source.read_bytes()

    def test_a_progress_callback_that_raises_cancels_without_retry(self, backend: Backend, tmp_path: Path) -> None:
        key = object_key(POINT, fingerprint(78), PAYLOAD)
        source = write_file(tmp_path / PAYLOAD, 5 << 20)

        def cancelling(calls: list[int]):
            cancel = Cancelled("enough")

            def progress(count: int) -> None:
                calls.append(count)
                raise cancel

            return cancel, progress

        calls: list[int] = []
        cancel, progress = cancelling(calls)
        with pytest.raises(Cancelled) as info:
            backend.upload(key, source, progress=progress)
        assert info.value is cancel and len(calls) == 1, f"upload: {len(calls)} progress calls: retried?"
        assert backend.exists(key) is False, "a cancelled upload must not leave a visible object"

        backend.upload(key, source)
        calls = []
        cancel, progress = cancelling(calls)
        with pytest.raises(Cancelled) as info, (tmp_path / "down").open("wb") as out:
            backend.download(key, out, progress=progress)
        assert info.value is cancel and len(calls) == 1, f"download: {len(calls)} progress calls: retried?"

    # -- bounded memory ----------------------------------------------------------------

    def test_large_transfer_keeps_python_memory_bounded(self, backend: Backend, tmp_path: Path) -> None:
        size = LARGE_PAYLOAD_MB << 20
        payload = write_file(tmp_path / PAYLOAD, size)
        expected = sha256_file(payload)
        key = object_key(POINT, fingerprint(60), PAYLOAD)
        limit = LARGE_PAYLOAD_PEAK_MB << 20

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            backend.upload(key, payload)
            upload_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            copy = download_to(backend, key, tmp_path / "down")
            download_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

        assert copy.stat().st_size == size
        assert sha256_file(copy) == expected
        assert upload_peak < limit, f"upload peaked at {upload_peak / 2**20:.1f} MiB"
        assert download_peak < limit, f"download peaked at {download_peak / 2**20:.1f} MiB"

    # -- end to end through the CLI ----------------------------------------------------

    def test_end_to_end_restore_from_a_wiped_local_store(self, backend_config, tmp_path: Path) -> None:
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



# -- helpers of the end-to-end test ----------------------------------------------------


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
        assert "bad" not in done.stdout.replace("bad=0", ""), f"{command}: an unavailable backend is no bad object"
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
