"""The SSH backend against a real OpenSSH server: the shared contract plus SSH specifics."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from contract import (
    POINT,
    BackendContract,
    MeteredContract,
    download_to,
    fingerprint,
    pack,
    upload_object,
    write_file,
)
from deadlines import DeadlineContract
from gaia_ssh import transfer
from gaia_ssh.backend import SSHBackend
from gaia_ssh.config import SSHConfig
from servers.ssh import SSHServer, keygen, public_key, start_ssh_server
from tiers_contract import TierContract

from gaia_core.backends import MANIFEST, PACKS, object_key
from gaia_core.errors import BackendError, ObjectNotFound

pytestmark = pytest.mark.remote

TARGET_ENV = "GAIA_IT_SSH_TARGET"
PORT_ENV = "GAIA_IT_SSH_PORT"
KNOWN_HOSTS_ENV = "GAIA_IT_SSH_KNOWN_HOSTS"
PASSPHRASE_ENV = "GAIA_IT_SSH_PASSPHRASE"
PAYLOAD = "payload.tar.zst"


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_ssh_server(tmp_path_factory.mktemp("sshd"))
    yield server
    server.close()


@pytest.fixture
def server(ssh_server: SSHServer) -> SSHServer:
    ssh_server.start()  # a no-op unless an earlier test left it stopped
    return ssh_server


def make_backend(server: SSHServer, root: str, **fields) -> SSHBackend:
    """A backend on ``<base_dir>/<root>``; target and port come through their ``*_env``."""
    config = {
        "target_env": TARGET_ENV,
        "port_env": PORT_ENV,
        "identity_file": str(server.client_key),
        "known_hosts_file_env": KNOWN_HOSTS_ENV,
        "connect_timeout": 5.0,
        "stall_timeout": 10.0,
        **fields,
    }
    environ = {
        TARGET_ENV: server.target(root),
        PORT_ENV: str(server.port),
        KNOWN_HOSTS_ENV: str(server.known_hosts),
        PASSPHRASE_ENV: server.passphrase,
    }
    return SSHBackend("itest", SSHConfig(**config), environ=environ)


@pytest.fixture
def root() -> str:
    return f"t-{uuid.uuid4().hex[:12]}/nested/base"


@pytest.fixture
def backend(server: SSHServer, root: str):
    with make_backend(server, root) as live:
        yield live


@pytest.fixture
def bad_credentials_backend(server: SSHServer, root: str):
    """A passphrase-protected key (the passphrase is right) that the server does not know."""
    with make_backend(server, root, identity_file=str(server.wrong_key), identity_passphrase_env=PASSPHRASE_ENV) as bad:
        yield bad


def config_table(server: SSHServer) -> str:
    """The ``[checkpoints.backends.ssh.itest]`` table; target, port and known_hosts come
    through their ``*_env`` variables."""
    return (
        "[checkpoints.backends.ssh.itest]\n"
        f'target_env = "{TARGET_ENV}"\n'
        f'port_env = "{PORT_ENV}"\n'
        f'identity_file = "{server.client_key}"\n'
        f'known_hosts_file_env = "{KNOWN_HOSTS_ENV}"\n'
    )


@pytest.fixture
def backend_config(server: SSHServer, root: str):
    env = {TARGET_ENV: server.target(root), PORT_ENV: str(server.port), KNOWN_HOSTS_ENV: str(server.known_hosts)}
    return config_table(server), env


@pytest.fixture
def backend_config_at(server: SSHServer, root: str, tmp_path: Path):
    """The table of :func:`backend_config`, at another address whose known_hosts entry is
    the real server's key."""

    def at(address: tuple[str, int]) -> tuple[str, dict[str, str]]:
        host_key = server.known_hosts.read_text().split(None, 1)[1]
        known_hosts = tmp_path / f"known_hosts-{address[1]}"
        known_hosts.write_text(f"[{address[0]}]:{address[1]} {host_key}")
        target = server.target(root).replace(server.host, address[0], 1)
        return config_table(server), {TARGET_ENV: target, PORT_ENV: str(address[1]), KNOWN_HOSTS_ENV: str(known_hosts)}

    return at


@pytest.fixture
def backend_factory(server: SSHServer, root: str):
    return lambda: make_backend(server, root)


@pytest.fixture
def litter(backend: SSHBackend):
    """A temporary as a killed upload leaves it, aged with SFTP's utime."""

    def leave(key: str, age_s: float) -> None:
        path = transfer.temporary_name(backend.remote_path(key))
        sftp = backend._session()
        transfer.makedirs(sftp, path.rsplit("/", 1)[0], set())
        with sftp.open(path, "wb") as handle:
            handle.write(b"partial")
        then = time.time() - age_s
        sftp.utime(path, (then, then))

    return leave


class TestSSHContract(BackendContract, MeteredContract):
    pass


class TestSSHTiers(TierContract):
    pass


@pytest.fixture
def upstream(server: SSHServer) -> tuple[str, int]:
    return server.host, server.port


@pytest.fixture
def aimed_backend(server: SSHServer, root: str, tmp_path: Path):
    """A backend on the same root, at another address (whose known_hosts entry is the
    real server's key), with gaia's default timeouts."""

    def make(address: tuple[str, int], **fields) -> SSHBackend:
        host_key = server.known_hosts.read_text().split(None, 1)[1]
        known_hosts = tmp_path / f"known_hosts-{address[1]}"
        known_hosts.write_text(f"[{address[0]}]:{address[1]} {host_key}")
        config = SSHConfig(
            target=server.target(root),
            port=address[1],
            identity_file=str(server.client_key),
            known_hosts_file=str(known_hosts),
            **fields,
        )
        return SSHBackend("itest", config, environ={})

    return make


class TestSSHDeadlines(DeadlineContract):
    pass


# -- host keys ---------------------------------------------------------------------------


def other_host_key_line(server: SSHServer, tmp_path: Path) -> str:
    impostor = keygen(tmp_path / "impostor_host_key")
    return f"[{server.host}]:{server.port} {public_key(impostor)}\n"


def test_unknown_host_is_refused_by_default_with_a_way_to_add_it(server: SSHServer, root: str, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    backend = make_backend(server, root, known_hosts_file=str(empty))
    with backend, pytest.raises(BackendError) as info:
        backend.exists(object_key(POINT, fingerprint(1), MANIFEST))
    message = str(info.value)
    assert not isinstance(info.value, ObjectNotFound)
    assert "not in" in message and str(empty) in message
    assert f"ssh-keyscan -p {server.port} {server.host}" in message


def test_no_strict_checking_accepts_an_unknown_host_with_a_warning(
    server: SSHServer, root: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    caplog.set_level(logging.WARNING, logger="gaia_ssh")
    with make_backend(server, root, known_hosts_file=str(empty), strict_host_key_checking=False) as backend:
        upload_object(backend, tmp_path, fingerprint(2))
        assert backend.list_fingerprints(POINT) == [fingerprint(2)]
    warnings = [r for r in caplog.records if r.name == "gaia_ssh" and r.levelno == logging.WARNING]
    assert warnings and "unverified SSH host key" in warnings[0].getMessage()
    assert empty.read_text() == "", "an accepted key must not be written to known_hosts"


@pytest.mark.parametrize("strict", [True, False])
def test_a_changed_host_key_is_always_refused(server: SSHServer, root: str, tmp_path: Path, strict: bool):
    wrong = tmp_path / "known_hosts"
    wrong.write_text(other_host_key_line(server, tmp_path))
    backend = make_backend(server, root, known_hosts_file=str(wrong), strict_host_key_checking=strict)
    with backend, pytest.raises(BackendError) as info:
        backend.list_fingerprints(POINT)
    assert "CHANGED" in str(info.value)
    assert "ssh-keygen -R" in str(info.value)


# -- credentials ---------------------------------------------------------------------------


def test_a_passphrase_protected_key_works_and_its_passphrase_stays_secret(server: SSHServer, root: str, tmp_path: Path):
    with make_backend(
        server, root, identity_file=str(server.encrypted_key), identity_passphrase_env=PASSPHRASE_ENV
    ) as backend:
        assert backend.secrets() == [server.passphrase]
        upload_object(backend, tmp_path, fingerprint(3))
        assert backend.exists(object_key(POINT, fingerprint(3), MANIFEST))
        assert server.passphrase not in backend.describe()


def test_an_encrypted_key_without_its_passphrase_fails_without_prompting(server: SSHServer, root: str):
    backend = make_backend(server, root, identity_file=str(server.encrypted_key))
    with backend, pytest.raises(BackendError) as info:
        backend.exists(object_key(POINT, fingerprint(4), MANIFEST))
    assert "identity_passphrase_env" in str(info.value)


def test_a_key_others_can_read_is_refused_like_openssh_although_the_server_knows_it(
    server: SSHServer, root: str, tmp_path: Path
):
    readable = tmp_path / "readable_ed25519"
    readable.write_bytes(server.client_key.read_bytes())
    readable.chmod(0o644)
    backend = make_backend(server, root, identity_file=str(readable))
    with backend, pytest.raises(BackendError) as info:
        backend.exists(object_key(POINT, fingerprint(4), MANIFEST))
    assert f"Permissions 0644 for '{readable}' are too open." in str(info.value)
    readable.chmod(0o600)
    with make_backend(server, root, identity_file=str(readable)) as fixed:
        assert fixed.exists(object_key(POINT, fingerprint(4), MANIFEST)) is False


def test_a_wrong_passphrase_is_named_as_such(server: SSHServer, root: str):
    backend = make_backend(
        server, root, identity_file=str(server.encrypted_key), identity_passphrase_env="GAIA_IT_WRONG_PASS"
    )
    backend.environ = {**backend.environ, "GAIA_IT_WRONG_PASS": "not-" + server.passphrase}
    with backend, pytest.raises(BackendError) as info:
        backend.exists(object_key(POINT, fingerprint(4), MANIFEST))
    message = str(info.value)
    assert "wrong passphrase" in message and str(server.encrypted_key) in message
    assert server.passphrase not in message


# -- uploads -------------------------------------------------------------------------------


def remote_dir_entries(backend: SSHBackend, key: str) -> list[str]:
    return backend._session().listdir(backend.remote_path(key).rsplit("/", 1)[0])


def test_upload_creates_missing_parents_and_leaves_no_temporary_file(backend: SSHBackend, tmp_path: Path):
    fp = fingerprint(5)
    files = upload_object(backend, tmp_path, fp)
    assert remote_dir_entries(backend, object_key(POINT, fp, MANIFEST)) == [MANIFEST]
    packs = sorted(key.rsplit("/", 1)[1] for key in files if key.startswith(PACKS))
    assert sorted(remote_dir_entries(backend, pack(1))) == packs


def test_a_failed_upload_never_shows_a_partial_object(
    backend: SSHBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The payload goes to a temporary name and only a complete one is renamed into place."""
    fp = fingerprint(6)
    key = object_key(POINT, fp, PAYLOAD)
    source = write_file(tmp_path / PAYLOAD, 3 * transfer.MAX_REQUEST_SIZE)
    real_put = transfer.put

    class Interrupted(OSError):
        pass

    class FailingHalfway:
        def __init__(self, inner):
            self.inner, self.sent = inner, 0

        def read(self, size):
            if self.sent > 0:
                raise Interrupted("disk read error")
            chunk = self.inner.read(size)
            self.sent += len(chunk)
            return chunk

    def put_then_fail(sftp, source_file, remote, limits, *rest):
        return real_put(sftp, FailingHalfway(source_file), remote, limits, *rest)

    monkeypatch.setattr(transfer, "put", put_then_fail)
    with pytest.raises(BackendError):
        backend.upload(key, source)
    monkeypatch.undo()

    with pytest.raises(ObjectNotFound):
        download_to(backend, key, tmp_path / "down")
    assert remote_dir_entries(backend, key) == [], "the temporary file was not cleaned up"
    backend.upload(key, source)  # the same connection still works
    assert download_to(backend, key, tmp_path / "down").read_bytes() == source.read_bytes()


# -- connections and timeouts --------------------------------------------------------------


def test_one_connection_serves_many_calls_and_close_ends_it(backend: SSHBackend, tmp_path: Path):
    upload_object(backend, tmp_path, fingerprint(7))
    transport = backend._client.get_transport()
    backend.list_fingerprints(POINT)
    backend.exists(object_key(POINT, fingerprint(7), MANIFEST))
    assert backend._client.get_transport() is transport
    backend.close()
    assert not transport.is_active()


def test_a_server_that_never_answers_fails_within_the_connect_timeout(server: SSHServer, root: str):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        accepted = []
        threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
        backend = make_backend(server, root, port=silent.getsockname()[1], connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            backend.exists(object_key(POINT, fingerprint(8), MANIFEST))
        assert time.monotonic() - started < 10
        for conn, _ in accepted:
            conn.close()
    assert not isinstance(info.value, ObjectNotFound)
    assert "timed out" in str(info.value)


def test_a_server_that_hangs_mid_session_fails_within_the_stall_timeout(server: SSHServer, root: str, tmp_path: Path):
    with make_backend(server, root, stall_timeout=1.0, connect_timeout=1.0) as backend:
        upload_object(backend, tmp_path, fingerprint(9))
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BackendError) as info:
                download_to(backend, object_key(POINT, fingerprint(9), PAYLOAD), tmp_path / "down")
            assert time.monotonic() - started < 10
        finally:
            server.resume()
    assert "timed out" in str(info.value)


def test_short_reads_and_small_requests_still_copy_every_byte(
    server: SSHServer, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Reads larger than sshd serves (255 KiB) come back short; the rest is asked for
    again while later replies wait their turn, and the file is written in order."""
    request_size = 300_000
    monkeypatch.setattr(
        transfer, "negotiate", lambda sftp: transfer.Limits(read=request_size, write=transfer.BASIC_REQUEST_SIZE)
    )
    asked = []
    real_read_request = transfer._Download._read_request

    def recording(self, offset, length):
        asked.append(offset)
        return real_read_request(self, offset, length)

    monkeypatch.setattr(transfer._Download, "_read_request", recording)
    with make_backend(server, root) as backend:
        source = write_file(tmp_path / PAYLOAD, 2_000_003)
        key = object_key(POINT, fingerprint(11), PAYLOAD)
        backend.upload(key, source)
        assert download_to(backend, key, tmp_path / "down").read_bytes() == source.read_bytes()
        assert any(offset % request_size for offset in asked), "sshd did not shorten any read; the test no longer covers short reads"
        asked.clear()
        data = source.read_bytes()
        assert bytes(backend.read_range(key, 12_345, 1_500_000)) == data[12_345 : 1_512_345]
        assert bytes(backend.read_range(key, 1_900_000, 500_000)) == data[1_900_000:]
    assert asked and min(asked) == 12_345, "a ranged read must start at its offset"
    assert any((offset - 12_345) % request_size for offset in asked), "no ranged read came back short"


def test_a_download_that_fails_midway_leaves_a_working_session(backend: SSHBackend, tmp_path: Path):
    """Replies still in flight when a download stops must not be read as answers to the
    next command: the backend starts a new SFTP session."""
    key = object_key(POINT, fingerprint(12), PAYLOAD)
    source = write_file(tmp_path / PAYLOAD, 6 << 20)
    backend.upload(key, source)

    full = OSError(28, "No space left on device")

    class FullDisk:
        def write(self, data):
            raise full

    # the destination's own error reaches the caller as it is
    with pytest.raises(OSError) as info:
        backend.download(key, FullDisk())
    assert info.value is full
    assert backend.exists(key)
    assert download_to(backend, key, tmp_path / "down").read_bytes() == source.read_bytes()


def test_a_ranged_read_that_fails_midway_leaves_a_working_session(
    backend: SSHBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A ranged read stopped with READs in flight: their replies are never taken for the
    answers of the next request."""
    source = write_file(tmp_path / PAYLOAD, 6 << 20)
    backend.upload(pack(1), source)

    class Broken(OSError):
        pass

    def failing_write(self, piece):
        raise Broken("the buffer went away")

    with monkeypatch.context() as patched:
        patched.setattr(transfer._IntoBuffer, "write", failing_write)
        with pytest.raises(BackendError):
            backend.read_range(pack(1), 1 << 20, 4 << 20)
    assert backend.exists(pack(1))
    assert bytes(backend.read_range(pack(1), 1 << 20, 4 << 20)) == source.read_bytes()[1 << 20 : 5 << 20]
    assert [e.key for e in backend.list_files(PACKS)] == [pack(1)]


def test_the_server_states_its_request_limits(backend: SSHBackend):
    backend.list_fingerprints(POINT)
    assert backend._limits.read > transfer.BASIC_REQUEST_SIZE
    assert backend._limits.write > transfer.BASIC_REQUEST_SIZE


def test_a_server_that_never_starts_sftp_fails_within_the_connect_timeout(tmp_path: Path):
    """A real (paramiko) SSH server that accepts the login but never answers the SFTP request."""
    import paramiko

    host_key = paramiko.Ed25519Key.from_private_key_file(str(keygen(tmp_path / "stall_host")))
    client_key = keygen(tmp_path / "stall_client")
    release = threading.Event()

    class Stalling(paramiko.ServerInterface):
        def get_allowed_auths(self, username):
            return "publickey"

        def check_auth_publickey(self, username, key):
            return paramiko.AUTH_SUCCESSFUL

        def check_channel_request(self, kind, chanid):
            return paramiko.OPEN_SUCCEEDED

        def check_channel_subsystem_request(self, channel, name):
            release.wait(30)
            return False

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    transports = []

    def serve():
        conn, _ = listener.accept()
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        transports.append(transport)
        transport.start_server(server=Stalling())

    threading.Thread(target=serve, daemon=True).start()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    config = SSHConfig(
        target="gaia@127.0.0.1:/srv",
        port=port,
        identity_file=str(client_key),
        known_hosts_file=str(known_hosts),
        connect_timeout=1.0,
    )
    try:
        started = time.monotonic()
        with SSHBackend("stall", config, environ={}) as backend, pytest.raises(BackendError) as info:
            backend.exists(object_key(POINT, fingerprint(12), MANIFEST))
        assert time.monotonic() - started < 10
        assert "timed out" in str(info.value)
    finally:
        release.set()
        for transport in transports:
            transport.close()
        listener.close()
