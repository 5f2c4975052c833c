"""The S3 backend against a real S3 API: moto 5 in server mode, natively or in the s3 container."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from contract import (
    HOUR_S,
    PAYLOAD,
    POINT,
    BackendContract,
    MeteredContract,
    download_to,
    fingerprint,
    pack,
    upload_object,
    write_file,
)
from deadlines import FAST, STALL_AFTER, DeadlineContract, fails_unavailable, transfer_bound
from gaia_s3.backend import S3Backend
from gaia_s3.config import S3Config
from gaia_s3.session import MiB, Tuning
from servers.misbehaving import OTHER_HOST, UP, RedirectingServer, StallingProxy, redirect_loop, redirect_to
from servers.s3 import ENV_FIELDS, MotoServer, S3Server, backend_table, start_s3_server, unique_prefix
from tiers_contract import TierContract

from gaia_core.backends import MANIFEST, PACKS, POINTS, object_key
from gaia_core.errors import BackendError, ObjectNotFound

pytestmark = pytest.mark.remote

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CA_BUNDLE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture(scope="session")
def server():
    running = start_s3_server()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def clean_aws_environment(monkeypatch):
    """The developer's own AWS setup must neither help nor break these tests."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


def make_backend(env: dict[str, str], tuning: Tuning | None = None, **fields: str) -> S3Backend:
    config = S3Config(**{**ENV_FIELDS, **fields})
    return S3Backend("it", config, environ=env, tuning=tuning)


@pytest.fixture
def backend(server: S3Server, prefix: str):
    with make_backend(server.env(prefix)) as connected:
        yield connected


@pytest.fixture
def bad_credentials_backend(server: S3Server, prefix: str):
    with make_backend(server.env(prefix, secret="not-the-secret-0123456789")) as wrong:
        yield wrong


@pytest.fixture
def backend_config(server: S3Server, prefix: str):
    return backend_table("it"), server.env(prefix)


@pytest.fixture
def backend_config_at(server: S3Server, prefix: str):
    def at(address: tuple[str, int]) -> tuple[str, dict[str, str]]:
        return backend_table("it"), {**server.env(prefix), "GAIA_IT_S3_ENDPOINT": f"http://{address[0]}:{address[1]}"}

    return at


@pytest.fixture
def backend_factory(server: S3Server, prefix: str):
    return lambda: make_backend(server.env(prefix))


@pytest.fixture
def litter(backend: S3Backend):
    """An incomplete multipart upload, the temporary S3 keeps of a killed upload.

    No S3 API sets its age. A young one gets a part now (its last activity); an old one
    has no part, so its age is its ``Initiated`` time, which moto reports as 2010 (a
    server that reports the truth cannot fake an old one: the test is skipped there).
    """

    def leave(key: str, age_s: float) -> None:
        client, bucket, name = backend.client, backend.settings.bucket, backend.object_name(key)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
        if age_s < HOUR_S:
            client.upload_part(Bucket=bucket, Key=name, UploadId=upload_id, PartNumber=1, Body=b"partial")
            return
        [upload] = [u for u in client.list_multipart_uploads(Bucket=bucket, Prefix=name)["Uploads"] if u["UploadId"] == upload_id]
        if upload["Initiated"].timestamp() > time.time() - age_s:
            client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            pytest.skip("this S3 server reports true upload times: an old incomplete upload cannot be made")

    return leave


class TestS3Contract(BackendContract, MeteredContract):
    pass


class TestS3Tiers(TierContract):
    pass


@pytest.fixture
def upstream(server: S3Server) -> tuple[str, int]:
    parts = urlsplit(server.endpoint_url)
    return parts.hostname, parts.port


@pytest.fixture
def aimed_backend(server: S3Server, prefix: str):
    """A backend on the same bucket and prefix, at another address, with gaia's default timeouts."""

    def make(address: tuple[str, int], tuning: Tuning | None = None, **fields) -> S3Backend:
        env = {**server.env(prefix), "GAIA_IT_S3_ENDPOINT": f"http://{address[0]}:{address[1]}"}
        return make_backend(env, tuning, **fields)

    return make


class TestS3Deadlines(DeadlineContract):
    pass


def test_a_multipart_upload_stalled_mid_part_fails_within_two_stalls(aimed_backend, upstream, tmp_path: Path) -> None:
    tuning = Tuning(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    payload = write_file(tmp_path / "payload", 12 * MiB)
    moved: list[int] = []
    with (
        StallingProxy(upstream, direction=UP, after=STALL_AFTER) as proxy,
        aimed_backend(proxy.address, tuning, **FAST) as stalled,
    ):
        elapsed, _ = fails_unavailable(lambda: stalled.upload("p/f/payload.tar.zst", payload, progress=moved.append))
    assert elapsed <= transfer_bound(FAST), f"multipart upload took {elapsed:.1f}s"
    assert sum(moved) > 0


# -- redirects: botocore's region redirector recursed into RecursionError -------------------


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_is_an_error_naming_status_and_host_never_a_recursion(aimed_backend, tmp_path: Path,
                                                                        status: int) -> None:
    """An S3 endpoint that answers every request with a redirect to itself: each operation
    ends at the first answer (no request is signed again for a location the build file does
    not name), with the status and the location's host, after one request."""
    key = object_key(POINT, fingerprint(40), MANIFEST)
    payload = write_file(tmp_path / "payload", 1000)
    with RedirectingServer(redirect_loop(status)) as server, aimed_backend(server.address, **FAST) as backend:
        for name, call in (
            ("exists", lambda: backend.exists(key)),
            ("list_entries", lambda: backend.list_entries(POINT)),
            ("read_small", lambda: backend.read_small(key, 1000)),
            ("download", lambda: download_to(backend, key, tmp_path / "down")),
            ("upload", lambda: backend.upload(key, payload)),
            ("publish", lambda: backend.publish(key, payload)),
        ):
            before = len(server.requests)
            with pytest.raises(BackendError) as info:
                call()
            assert not isinstance(info.value, ObjectNotFound), name
            message = str(info.value)
            assert f"HTTP {status}: a redirect to {server.host}:{server.port}, which gaia does not follow" in message, \
                f"{name}: {message}"
            assert len(server.requests) - before == 1, f"{name}: {server.requests[before:]}"


def test_a_redirect_to_another_host_sends_it_nothing(aimed_backend, tmp_path: Path) -> None:
    with (
        RedirectingServer(redirect_loop(), host=OTHER_HOST) as other,
        RedirectingServer(redirect_to(other.url, 307)) as server,
        aimed_backend(server.address, **FAST) as backend,
    ):
        with pytest.raises(BackendError, match=rf"HTTP 307: a redirect to {other.host}:{other.port}, "):
            backend.upload(PAYLOAD, write_file(tmp_path / "payload", 1000))
        assert other.requests == [], "a signed request reached another host"


# -- S3 specifics ----------------------------------------------------------------------


def test_listing_follows_pagination(server: S3Server, prefix: str, tmp_path: Path) -> None:
    with make_backend(server.env(prefix), Tuning(list_page_size=2)) as paged:
        complete = sorted(fingerprint(n) for n in range(5))
        for fp in complete:
            upload_object(paged, tmp_path, fp, size=10)
        upload_object(paged, tmp_path, fingerprint(99), manifest=False, size=10)
        # 5 manifests, 12 packs and indexes, 2 per page: every page must be read
        assert paged.list_fingerprints(POINT) == complete
        assert len(paged.list_entries(POINT)) == 5
        assert len(paged.list_files(PACKS)) == 12
        for n in range(5):
            other = tmp_path / "other"
            other.write_text("{}")
            paged.publish(f"{POINTS}/point-{n}/{fingerprint(n)}/{MANIFEST}", other)
        assert paged.list_dirs(POINTS) == sorted([POINT, *(f"point-{n}" for n in range(5))])


def test_keys_live_under_the_trimmed_prefix(server: S3Server, prefix: str, tmp_path: Path) -> None:
    env = server.env(f"/{prefix}/")
    with make_backend(env) as backend:
        files = upload_object(backend, tmp_path, fingerprint(1), size=10)
    listed = server.client().list_objects_v2(Bucket=server.bucket, Prefix=f"{prefix}/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    assert keys == sorted(f"{prefix}/{key}" for key in files)
    assert f"{prefix}/{POINTS}/{POINT}/{fingerprint(1)}/{MANIFEST}" in keys


def test_large_payload_goes_up_in_parts(server: S3Server, prefix: str, tmp_path: Path) -> None:
    tuning = Tuning(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    payload = write_file(tmp_path / "payload", 12 * MiB)
    with make_backend(server.env(prefix), tuning) as backend:
        backend.upload("p/f/payload.tar.zst", payload)
        copy = download_to(backend, "p/f/payload.tar.zst", tmp_path / "down")
    head = server.client().head_object(Bucket=server.bucket, Key=f"{prefix}/p/f/payload.tar.zst")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart ETag names its part count
    assert _sha(copy) == _sha(payload)


def test_download_into_a_non_seekable_stream(backend: S3Backend, tmp_path: Path) -> None:
    files = upload_object(backend, tmp_path, fingerprint(2), size=3 * MiB + 17)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def write(self, data) -> int:
            self.digest.update(data)
            self.size += len(data)
            return len(data)

    pipe = Pipe()
    key = pack(int(fingerprint(2)[:8], 16))
    backend.download(key, pipe)
    assert pipe.size == files[key].stat().st_size
    assert pipe.digest.hexdigest() == _sha(files[key])
    with pytest.raises(ObjectNotFound):
        backend.download(object_key(POINT, fingerprint(3), MANIFEST), Pipe())


def test_a_missing_bucket_is_an_error_not_a_miss(server: S3Server, prefix: str, tmp_path: Path) -> None:
    env = {**server.env(prefix), "GAIA_IT_S3_BUCKET": "no-such-bucket-gaia"}
    key = object_key(POINT, fingerprint(4), MANIFEST)
    with make_backend(env) as backend:
        for call in (
            lambda: backend.exists(key),
            lambda: download_to(backend, key, tmp_path / "down"),
            lambda: backend.list_fingerprints(POINT),
            lambda: backend.list_files(PACKS),
            lambda: backend.list_dirs(POINTS),
            lambda: backend.read_range(pack(1), 0, 10),
            lambda: backend.upload(key, write_file(tmp_path / "up", 10)),
        ):
            with pytest.raises(BackendError) as info:
                call()
            assert not isinstance(info.value, ObjectNotFound)
            assert "no-such-bucket-gaia" in str(info.value)


def test_default_credential_chain_when_no_mapping_is_set(
    server: S3Server, prefix: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    with make_backend(server.env(prefix), aws_access_key_id_env=None, aws_secret_access_key_env=None) as backend:
        upload_object(backend, tmp_path, fingerprint(5), size=10)
        assert backend.list_fingerprints(POINT) == [fingerprint(5)]


def test_mapped_files_and_profile_win_without_touching_the_process_environment(
    server: S3Server, prefix: str, tmp_path: Path, monkeypatch
) -> None:
    good = tmp_path / "credentials"
    good.write_text(
        f"[gaia-it]\naws_access_key_id = {server.access_key_id}\naws_secret_access_key = {server.secret_access_key}\n"
    )
    config_file = tmp_path / "config"
    config_file.write_text("[profile gaia-it]\nregion = eu-west-3\n")
    # the process's own variables point at a wrong key: the mapping must win over them
    decoy = tmp_path / "decoy"
    decoy.write_text("[gaia-it]\naws_access_key_id = AKIADECOY\naws_secret_access_key = decoy-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(decoy))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    before = dict(os.environ)

    env = {
        **server.env(prefix),
        "GAIA_IT_S3_CREDS": str(good),
        "GAIA_IT_S3_CONFIG": str(config_file),
        "GAIA_IT_S3_PROFILE": "gaia-it",
    }
    fields = {
        "aws_access_key_id_env": None,
        "aws_secret_access_key_env": None,
        "region_env": None,
        "aws_shared_credentials_file_env": "GAIA_IT_S3_CREDS",
        "aws_config_file_env": "GAIA_IT_S3_CONFIG",
        "profile_env": "GAIA_IT_S3_PROFILE",
    }
    with make_backend(env, **fields) as backend:
        upload_object(backend, tmp_path, fingerprint(6), size=10)
        assert backend.list_fingerprints(POINT) == [fingerprint(6)]
        assert backend.client.meta.region_name == "eu-west-3"
        assert server.secret_access_key in backend.secrets()
    assert dict(os.environ) == before


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    running = start_s3_server(tls_dir=tmp_path_factory.mktemp("tls"))
    yield running
    running.close()


def test_ca_bundle_is_used_for_tls_verification(tls_server: MotoServer, prefix: str, tmp_path: Path) -> None:
    env = {**tls_server.env(prefix), "GAIA_IT_S3_CA": tls_server.ca_bundle}
    with make_backend(env, aws_ca_bundle_env="GAIA_IT_S3_CA") as trusted:
        upload_object(trusted, tmp_path, fingerprint(7), size=10)
        assert trusted.list_fingerprints(POINT) == [fingerprint(7)]
    # without the bundle the self-signed certificate is refused: an error, not a miss
    with make_backend(tls_server.env(prefix)) as untrusted, pytest.raises(BackendError) as info:
        untrusted.exists(object_key(POINT, fingerprint(7), MANIFEST))
    assert not isinstance(info.value, ObjectNotFound)
    assert "SSL" in str(info.value)


def test_upload_of_a_missing_local_file_is_a_backend_error(backend: S3Backend, tmp_path: Path) -> None:
    with pytest.raises(BackendError) as info:
        backend.upload("p/f/payload.tar", tmp_path / "nope")
    assert "upload" in str(info.value)


def test_a_large_pack_is_read_in_ranges_of_one_multipart_object(server: S3Server, prefix: str, tmp_path: Path) -> None:
    """Ranges across the parts of a multipart object come back whole."""
    tuning = Tuning(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    payload = write_file(tmp_path / "payload", 12 * MiB)
    data = payload.read_bytes()
    with make_backend(server.env(prefix), tuning) as backend:
        backend.upload(pack(1), payload)
        for offset, length in ((5 * MiB - 10, 20), (0, 12 * MiB), (11 * MiB, 2 * MiB)):
            assert bytes(backend.read_range(pack(1), offset, length)) == data[offset : offset + length]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
