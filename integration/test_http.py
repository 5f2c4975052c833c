"""The HTTP backend against real servers: a stock nginx with WebDAV and the ``?list=1``
contract server of servers/list_contract.py (the contract suite against both), and small
stdlib servers for misbehaviour."""

from __future__ import annotations

import email.utils
import io
import json
import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from contract import (
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
from deadlines import DeadlineContract
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig
from servers.http import STATIC_CONFIG, compose_config, start_http_server
from servers.list_contract import ContractHandler, ContractServer
from servers.metering import UP, MeteringProxy
from servers.misbehaving import OTHER_HOST, RedirectingServer, redirect_chain, redirect_loop, redirect_to
from tiers_contract import TierContract, as_tier
from tiers_contract import project as tier_project
from tree_project import make_source

from gaia_core.backends import MANIFEST, PACKS, POINTS, object_dir, object_key
from gaia_core.checkpoints.downtiers import DownTiers
from gaia_core.errors import BackendError, BackendUnavailable, ObjectNotFound
from gaia_core.retry import temporary_name

pytestmark = pytest.mark.remote

TOKEN_ENV = "GAIA_IT_HTTP_TOKEN"
URL_ENV = "GAIA_IT_HTTP_URL"
#: fast failures in tests; the defaults are for real networks
FAST = {"backoff": 0.05, "connect_timeout": 2.0, "stall_timeout": 5.0}


def make_backend(base_url: str, token: str | None, **fields) -> HttpBackend:
    """A backend on ``base_url``; with no ``token`` it names no token variable (a named but
    unset one makes the backend unavailable)."""
    environ = {TOKEN_ENV: token} if token else {}
    auth = {"token_env": TOKEN_ENV} if token else {}
    config = HttpConfig.model_validate({"base_url": base_url, **auth, **FAST, **fields})
    return HttpBackend("it", config, environ=environ)


# -- nginx: the contract ---------------------------------------------------------------


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory):
    server = start_http_server(tmp_path_factory.mktemp("nginx"), token="it-" + uuid.uuid4().hex)
    yield server
    server.stop()
    if hasattr(server, "remove"):
        server.remove()


@pytest.fixture
def server(http_server):
    yield http_server
    http_server.start()  # a test that stopped it leaves it running for the next


@pytest.fixture
def root_url(http_server) -> str:
    return f"{http_server.url}/{uuid.uuid4().hex}"


@pytest.fixture
def backend(http_server, root_url: str) -> Iterator[HttpBackend]:
    with make_backend(root_url, http_server.token) as live:
        yield live


@pytest.fixture
def bad_credentials_backend(root_url: str) -> Iterator[HttpBackend]:
    with make_backend(root_url, "wrong-" + uuid.uuid4().hex) as wrong:
        yield wrong


@pytest.fixture
def backend_config(http_server, root_url: str) -> tuple[str, dict[str, str]]:
    return backend_config_table(root_url, http_server.token)


@pytest.fixture
def backend_config_at(http_server, root_url: str):
    def at(address: tuple[str, int]) -> tuple[str, dict[str, str]]:
        table, env = backend_config_table(root_url, http_server.token)
        return table, {**env, URL_ENV: f"http://{address[0]}:{address[1]}{urlsplit(root_url).path}"}

    return at


def backend_config_table(root_url: str, token: str | None) -> tuple[str, dict[str, str]]:
    table = f'[checkpoints.backends.http.it]\nbase_url_env = "{URL_ENV}"\ntoken_env = "{TOKEN_ENV}"\n'
    return table, {URL_ENV: root_url, **({TOKEN_ENV: token} if token else {})}


@pytest.fixture
def backend_factory(http_server, root_url: str):
    return lambda: make_backend(root_url, http_server.token)


@pytest.fixture
def litter(backend: HttpBackend):
    """A temporary as a killed upload leaves it, aged with the ``Date`` header of its
    PUT: nginx's WebDAV module takes the file's mtime from it."""

    def leave(key: str, age_s: float) -> None:
        directory, name = key.rsplit("/", 1)
        url = backend.base().url(f"{directory}/{temporary_name(name)}")
        date = email.utils.formatdate(time.time() - age_s, usegmt=True)
        response = backend.session().put(url, data=b"partial", headers={"Date": date}, timeout=5)
        assert response.status_code in (201, 204), response.status_code

    return leave


class TestHttpContract(BackendContract, MeteredContract):
    pass


class TestHttpTiers(TierContract):
    def test_a_tier_answering_503_is_remembered_down_like_one_that_timed_out(
        self, backend_config, serve, gaia_cli, tree_pm, tmp_path: Path
    ) -> None:
        """The office answers every request at once with 503 (it failed, it did not time
        out): the first job restores from the cloud and remembers the office as down, the
        next job on this machine sends it no request."""
        source = make_source(tmp_path / "src", files=4, size=64 << 10)
        cloud = as_tier(backend_config, "cloud")
        producer = tier_project(tmp_path / "producer", [cloud])
        producer.write(source, "1")
        producer.run(gaia_cli, tree_pm)
        failing = scripted(503)
        office = (f'[checkpoints.backends.http.office]\nbase_url = "{serve(failing).url}/cache"\nbackoff = 0.05\n',
                  {}, "http:office")
        first = tier_project(tmp_path / "first", [office, cloud])
        first.write(source, "1")
        out = first.run(gaia_cli, tree_pm).output
        assert first.builds() == 0 and f"via {cloud[2]}" in out, out
        assert "backend http:office is unavailable: " in out and "HTTP 503" in out, out
        assert failing.calls >= 1
        [down] = DownTiers().read().values()
        assert down.ref == "http:office" and "HTTP 503" in down.reason, down
        assert down.until > time.time() + 60, "remembered for down_for (10 minutes by default)"
        asked = failing.calls

        second = tier_project(tmp_path / "second", [office, cloud])
        second.write(source, "1")
        out = second.run(gaia_cli, tree_pm).output
        status = second.gaia(gaia_cli, tree_pm, "checkpoints", "status", second.build, "--json")
        assert failing.calls == asked, "a later run sent a request to the tier remembered down"
        assert second.builds() == 0 and "not contacted again until" in out, out
        assert status.json["points"][0]["tiers"][0]["down_until"], status.output


@pytest.fixture
def upstream(http_server) -> tuple[str, int]:
    return "127.0.0.1", http_server.port


@pytest.fixture
def aimed_backend(http_server, root_url: str):
    """A backend on the same root, at another address, with gaia's default timeouts."""

    def make(address: tuple[str, int], **fields) -> HttpBackend:
        url = f"http://{address[0]}:{address[1]}{urlsplit(root_url).path}"
        config = HttpConfig.model_validate({"base_url": url, "token_env": TOKEN_ENV, **fields})
        return HttpBackend("it", config, environ={TOKEN_ENV: http_server.token})

    return make


class TestHttpDeadlines(DeadlineContract):
    pass


def directory_names(backend: HttpBackend, key: str) -> list[str]:
    """What nginx's autoindex shows in a directory (works native and in compose)."""
    response = backend.session().get(backend.base().url(key, directory=True), timeout=5)
    response.raise_for_status()
    return sorted(entry["name"] for entry in response.json())


def test_nginx_upload_goes_through_move_and_leaves_no_temporary_object(backend: HttpBackend, tmp_path: Path) -> None:
    fp = fingerprint(100)
    files = upload_object(backend, tmp_path, fp)
    assert backend.move_supported
    assert directory_names(backend, object_dir(POINT, fp)) == [MANIFEST]
    assert directory_names(backend, PACKS) == sorted(key.rsplit("/", 1)[1] for key in files if key.startswith(PACKS))


def test_nginx_listing_is_read_from_autoindex_json(backend: HttpBackend, tmp_path: Path) -> None:
    """Stock nginx ignores ``?list=1`` and answers with autoindex JSON; a directory
    without a manifest (an upload in progress) and a stray file are not fingerprints."""
    upload_object(backend, tmp_path, fingerprint(101))
    backend.publish(object_key(POINT, fingerprint(102), "notes.txt"), write_file(tmp_path / "notes", 10))
    stray = backend.session().put(backend.base().url(f"{POINTS}/{POINT}/stray.txt"), data=b"not a fingerprint", timeout=5)
    assert stray.status_code in (201, 204)
    assert backend.list_fingerprints(POINT) == [fingerprint(101)]
    assert backend.list_dirs(f"{POINTS}/{POINT}") == sorted([fingerprint(101), fingerprint(102)])
    assert [e.key for e in backend.list_files(f"{POINTS}/{POINT}")] == [f"{POINTS}/{POINT}/stray.txt"]


def test_nginx_answers_ranged_reads_with_206(backend: HttpBackend, http_server, tmp_path: Path) -> None:
    data = write_file(tmp_path / "pack", 1 << 20).read_bytes()
    backend.upload(PAYLOAD, tmp_path / "pack")
    response = backend.session().get(backend.base().url(PAYLOAD), headers={"Range": "bytes=10-19"}, timeout=5)
    assert response.status_code == 206 and response.content == data[10:20]
    assert bytes(backend.read_range(PAYLOAD, 10, 10)) == data[10:20]


def test_compose_config_file_is_generated_from_the_same_server_block() -> None:
    assert STATIC_CONFIG.read_text() == compose_config()


def test_large_upload_with_a_wrong_token_is_an_auth_error(bad_credentials_backend: HttpBackend, tmp_path: Path) -> None:
    """nginx answers 401 before reading an 8 MB body; that must read as an auth failure."""
    payload = write_file(tmp_path / "big", 8 << 20)
    with pytest.raises(BackendError, match="authentication failed"):
        bad_credentials_backend.upload(object_key(POINT, fingerprint(103), "payload.tar.zst"), payload)


# -- the ?list=1 contract server: the contract suite, the original contract --------------


@pytest.fixture(scope="module")
def contract_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("list-contract")


@pytest.fixture(scope="module")
def contract_server(contract_root: Path):
    running = ContractServer(contract_root, token="tok-" + uuid.uuid4().hex)
    yield running
    running.close()


class TestHttpListContract(BackendContract, MeteredContract):
    """The whole contract against a server of the ``?list=1`` contract with gaia's
    ``entries`` extension: no MOVE, no parents created on PUT."""

    @pytest.fixture
    def server(self, contract_server):
        yield contract_server
        contract_server.start()

    @pytest.fixture
    def root_url(self, contract_server, contract_root: Path) -> str:
        name = uuid.uuid4().hex
        (contract_root / name).mkdir()
        return f"{contract_server.url}/{name}"

    @pytest.fixture
    def upstream(self, contract_server) -> tuple[str, int]:
        return "127.0.0.1", contract_server.port

    @pytest.fixture
    def backend(self, contract_server, root_url: str) -> Iterator[HttpBackend]:
        with make_backend(root_url, contract_server.token) as live:
            yield live

    @pytest.fixture
    def backend_factory(self, contract_server, root_url: str):
        return lambda: make_backend(root_url, contract_server.token)

    @pytest.fixture
    def bad_credentials_backend(self, root_url: str) -> Iterator[HttpBackend]:
        with make_backend(root_url, "wrong-" + uuid.uuid4().hex) as wrong:
            yield wrong

    @pytest.fixture
    def backend_config(self, contract_server, root_url: str) -> tuple[str, dict[str, str]]:
        return backend_config_table(root_url, contract_server.token)

    @pytest.fixture
    def backend_config_at(self, contract_server, root_url: str):
        def at(address: tuple[str, int]) -> tuple[str, dict[str, str]]:
            table, env = backend_config_table(root_url, contract_server.token)
            return table, {**env, URL_ENV: f"http://{address[0]}:{address[1]}{urlsplit(root_url).path}"}

        return at

    @pytest.fixture
    def litter(self, contract_root: Path, root_url: str):
        """A temporary as a killed upload leaves it: written straight into the served tree."""

        def leave(key: str, age_s: float) -> None:
            directory, name = key.rsplit("/", 1)
            path = contract_root / urlsplit(root_url).path.lstrip("/") / directory / temporary_name(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"partial")
            then = time.time() - age_s
            os.utime(path, (then, then))

        return leave


@pytest.fixture
def contract_server_of(tmp_path: Path):
    """``contract_server_of(token, **options)``: a :class:`ContractServer` of ``tmp_path/files``,
    closed after the test."""
    started: list[ContractServer] = []

    def start(token: str | None, **options) -> ContractServer:
        started.append(ContractServer(tmp_path / "files", token=token, **options))
        return started[-1]

    yield start
    for server in started:
        server.close()


def contract_backend(server: ContractServer, path: str = "") -> HttpBackend:
    return make_backend(server.url + path, server.token)


@pytest.mark.parametrize("shape", ["object", "array"])
def test_a_server_of_the_original_contract_lists_fingerprints_but_no_files(
    contract_server_of, tmp_path: Path, shape: str
) -> None:
    """The original's implied server: PUT/GET/HEAD on files plus ``?list=1`` answering
    the fingerprints of a point. It has no MOVE, so uploads fall back to a direct PUT; it
    creates no parents, so we MKCOL them. Store format 4 needs the listing of any
    directory, which it cannot give: that is an error naming the extension, never an
    empty listing."""
    server = contract_server_of(token="tok-" + uuid.uuid4().hex, list_shape=shape)
    (server.root / "cache").mkdir()
    backend = contract_backend(server, "/cache")
    complete, partial = fingerprint(200), fingerprint(201)
    files = upload_object(backend, tmp_path, complete, size=200_000)
    upload_object(backend, tmp_path, partial, manifest=False)

    assert backend.move_supported is False
    assert backend.list_fingerprints(POINT) == [complete]
    assert backend.list_fingerprints("other-point") == []
    assert backend.exists(object_key(POINT, complete, MANIFEST))
    key = pack(int(complete[:8], 16))
    assert download_to(backend, key, tmp_path / "down").read_bytes() == files[key].read_bytes()
    # the temporary object of the one MOVE attempt was deleted
    assert sorted(p.name for p in (server.root / "cache" / object_dir(POINT, complete)).iterdir()) == [MANIFEST]
    list_requests = [path for method, path, _ in server.requests_seen
                     if method == "GET" and path.startswith(f"/cache/{POINTS}/") and path.endswith("?list=1")]
    assert list_requests == [f"/cache/{POINTS}/{POINT}/?list=1", f"/cache/{POINTS}/other-point/?list=1"]
    calls = [lambda: backend.list_files(f"{POINTS}/{POINT}"), lambda: backend.list_dirs(f"{POINTS}/{POINT}")]
    if shape == "object":  # a bare [] would read as an empty directory; {"fingerprints": []} cannot
        calls += [lambda: backend.list_files(PACKS), lambda: backend.list_dirs(POINTS)]
    for call in calls:
        with pytest.raises(BackendError, match="entries"):
            call()


def test_a_server_that_ignores_range_gives_the_range_from_a_streamed_body(contract_server_of, tmp_path: Path) -> None:
    """A 200 with the whole object: the range is cut out while the body streams past, and
    the body is not read beyond it."""
    server = contract_server_of(token="tok-range", ignore_range=True)
    backend = contract_backend(server)
    size = 32 << 20
    data = write_file(tmp_path / "pack", size).read_bytes()
    backend.upload(PAYLOAD, tmp_path / "pack")
    for offset, length in ((0, 100), (20 << 20, 1 << 20), (size - 10, 100), (size, 10)):
        assert bytes(backend.read_range(PAYLOAD, offset, length)) == data[offset : offset + length]
    with MeteringProxy(("127.0.0.1", server.port)) as proxy:
        via = make_backend(f"http://127.0.0.1:{proxy.port}", server.token)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            got = via.read_range(PAYLOAD, 4 << 20, 1 << 20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert bytes(got) == data[4 << 20 : 5 << 20]
        assert peak < 4 << 20, f"a 1 MiB range from a 200 peaked at {peak / 2**20:.1f} MiB"
        assert proxy.moved["down"] < 16 << 20, "the body was read far beyond the range"


def test_an_answer_to_a_range_that_is_another_range_is_refused(serve) -> None:
    handler = scripted(206, b"x" * 10, {"Content-Range": "bytes 0-9/100"})
    backend = make_backend(serve(handler).url, None)
    with pytest.raises(BackendError, match="asked for bytes 50-59") as info:
        backend.read_range(pack(1), 50, 10)
    assert not isinstance(info.value, ObjectNotFound)
    multipart = scripted(206, b"--x--", {"Content-Type": "multipart/byteranges; boundary=x"})
    with pytest.raises(BackendError, match="Content-Range"):
        make_backend(serve(multipart).url, None).read_range(pack(1), 0, 10)


def test_a_ranged_read_cut_short_is_retried_then_fails(serve) -> None:
    handler = scripted(206, b"only ten b", {"Content-Range": "bytes 0-99/100"}, declared=100)
    backend = make_backend(serve(handler).url, None, retries=2)
    with pytest.raises(BackendError, match="short body"):
        backend.read_range(pack(1), 0, 100)
    assert handler.calls == 3


def test_a_large_upload_to_a_server_without_move_sends_its_body_once(contract_server_of, tmp_path: Path) -> None:
    """Every transfer thread has a backend of its own: each learns with an empty object
    that MOVE is missing, rather than with a pack's worth of bytes."""
    server = contract_server_of(token="tok-move")
    size = 4 << 20
    source = write_file(tmp_path / "pack", size)
    with MeteringProxy(("127.0.0.1", server.port)) as proxy:
        backend = make_backend(f"http://127.0.0.1:{proxy.port}", server.token)
        backend.upload(PAYLOAD, source)
        assert backend.move_supported is False
        assert proxy.moved[UP] < size + (64 << 10), f"{proxy.moved[UP]} bytes sent for {size}"
    assert (server.root / PAYLOAD).read_bytes() == source.read_bytes()
    assert [p.name for p in (server.root / PACKS).iterdir()] == [PAYLOAD.rsplit("/", 1)[1]]


def test_list_contract_is_trusted_and_filtered(serve, tmp_path: Path) -> None:
    class Lister(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"fingerprints": ["b", " a ", "../../etc", "a", ""]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = serve(Lister)
    assert make_backend(srv.url, None).list_fingerprints(POINT) == ["a", "b"]


class ThreadServer:
    """A stdlib HTTP server on a free loopback port, served from a thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    started: list[ThreadServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> ThreadServer:
        started.append(ThreadServer(handler))
        return started[-1]

    yield start
    for item in started:
        item.close()


def scripted(status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, declared: int | None = None, stall: float = 0.0):
    """A handler class that answers every request the same way (possibly badly)."""

    class Scripted(BaseHTTPRequestHandler):
        calls = 0

        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            type(self).calls += 1
            remaining = int(self.headers.get("Content-Length", 0))
            while remaining > 0:
                remaining -= len(self.rfile.read(min(remaining, 1 << 16)))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if stall:
                self.wfile.flush()
                time.sleep(stall)
            if self.command != "HEAD":
                self.wfile.write(body)
            self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_MOVE = do_DELETE = do_MKCOL = _answer

    return Scripted


def test_chunked_download_is_copied_byte_for_byte(serve, tmp_path: Path) -> None:
    """A body without Content-Length (chunked, chunks of odd sizes) is read right."""
    payload = bytes(range(256)) * 5000

    class Chunked(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(payload), 77_777):
                piece = payload[start : start + 77_777]
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

    backend = make_backend(serve(Chunked).url, None)
    assert download_to(backend, "p/f/payload.tar", tmp_path / "down").read_bytes() == payload


def test_short_body_is_a_backend_error_after_retries(serve, tmp_path: Path) -> None:
    handler = scripted(200, b"only ten b", declared=1000)
    backend = make_backend(serve(handler).url, None, retries=2)
    with pytest.raises(BackendError, match="download") as info:
        download_to(backend, "p/f/payload.tar", tmp_path / "down")
    assert not isinstance(info.value, ObjectNotFound)
    assert handler.calls == 3


def test_gone_is_not_found_and_forbidden_is_an_auth_failure(serve, tmp_path: Path) -> None:
    gone = make_backend(serve(scripted(410)).url, None)
    assert gone.exists("p/f/manifest.json") is False
    with pytest.raises(ObjectNotFound):
        download_to(gone, "p/f/manifest.json", tmp_path / "down")
    forbidden = make_backend(serve(scripted(403)).url, None)
    with pytest.raises(BackendError, match="authentication failed"):
        forbidden.exists("p/f/manifest.json")


def test_compressed_download_is_refused(serve, tmp_path: Path) -> None:
    backend = make_backend(serve(scripted(200, b"\x1f\x8b....", {"Content-Encoding": "gzip"})).url, None)
    with pytest.raises(BackendError, match="Content-Encoding"):
        download_to(backend, "p/f/payload.tar", tmp_path / "down")


def test_listing_that_is_html_is_an_error_not_an_empty_list(serve) -> None:
    backend = make_backend(serve(scripted(200, b"<html><a href='x/'>x/</a></html>")).url, None)
    with pytest.raises(BackendError, match="not JSON"):
        backend.list_fingerprints(POINT)


def test_stalled_server_hits_the_stall_timeout_and_is_retried_once(serve, tmp_path: Path) -> None:
    handler = scripted(200, b"late", stall=5)
    backend = make_backend(serve(handler).url, None, stall_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="stall_timeout"):
        download_to(backend, "p/f/payload.tar", tmp_path / "down")
    assert time.monotonic() - started < 4
    assert handler.calls == 2


def test_put_answered_503_is_retried_by_reopening_the_file(contract_server_of, tmp_path: Path) -> None:
    class Flaky(ContractHandler):
        left = 2

        def do_PUT(self) -> None:
            if type(self).left:
                type(self).left -= 1
                self._drain()
                return self._reply(503)
            super().do_PUT()

    server = contract_server_of(token="tok-flaky", handler=Flaky)
    backend = contract_backend(server)
    payload = write_file(tmp_path / "payload", 50_000)
    backend.upload(PAYLOAD, payload)
    assert (server.root / PAYLOAD).read_bytes() == payload.read_bytes()
    assert server.handler.left == 0


# -- redirects: at most 5, on the base URL's origin while holding a token ---------------


def body_of(rest: str) -> bytes:
    return f"object {rest}".encode()


def read_everything(backend: HttpBackend, key: str) -> list[bytes]:
    """What exists, read_small and download see of ``key``."""
    assert backend.exists(key)
    out = io.BytesIO()
    backend.download(key, out)
    return [backend.read_small(key, 1000), out.getvalue()]


@pytest.mark.parametrize("token", ["tok-" + uuid.uuid4().hex, None], ids=["token", "anonymous"])
def test_reads_follow_five_redirects_on_the_same_origin(token) -> None:
    key = object_key(POINT, fingerprint(500), MANIFEST)
    with RedirectingServer(redirect_chain(5, body_of)) as server:
        backend = make_backend(f"{server.url}/hops-5/cache", token)
        assert read_everything(backend, key) == [body_of(f"cache/{key}")] * 2
        assert len(server.requests) == 3 * 6  # each read: five redirects and the answer


@pytest.mark.parametrize(("answer", "status"), [(redirect_chain(6, body_of), 302), (redirect_loop(301), 301),
                                               (redirect_loop(308), 308)], ids=["six-hops", "loop-301", "loop-308"])
def test_a_sixth_redirect_or_a_loop_is_an_error_naming_status_and_host(answer, status: int, tmp_path: Path) -> None:
    key = object_key(POINT, fingerprint(501), MANIFEST)
    with RedirectingServer(answer) as server:
        backend = make_backend(f"{server.url}/hops-6/cache", "tok-" + uuid.uuid4().hex)
        for call in (lambda: backend.exists(key), lambda: backend.read_small(key, 1000),
                     lambda: backend.download(key, io.BytesIO()), lambda: backend.list_entries(POINT)):
            before = len(server.requests)
            with pytest.raises(BackendError) as info:
                call()
            message = str(info.value)
            assert f"HTTP {status}, a redirect to {server.host}:{server.port}, not followed (more than 5 redirects)" \
                in message
            assert len(server.requests) - before == 6, server.requests[before:]


def test_a_redirect_to_another_host_is_not_followed_while_holding_a_token(tmp_path: Path) -> None:
    key = object_key(POINT, fingerprint(502), MANIFEST)
    token = "tok-" + uuid.uuid4().hex
    with RedirectingServer(redirect_chain(0, body_of), host=OTHER_HOST) as other, \
            RedirectingServer(redirect_to(f"{other.url}/hops-0")) as server:
        with_token = make_backend(f"{server.url}/cache", token)
        for call in (lambda: with_token.exists(key), lambda: with_token.read_small(key, 1000),
                     lambda: with_token.download(key, io.BytesIO())):
            with pytest.raises(BackendError) as info:
                call()
            assert f"HTTP 302, a redirect to {other.host}:{other.port}, not followed" in str(info.value)
            assert token not in str(info.value)
        assert other.requests == [], "the token's requests reached another host"
        # without credentials nothing is at stake: the redirect is followed
        assert read_everything(make_backend(f"{server.url}/cache", None), key) == [body_of(f"cache/{key}")] * 2
        assert len(other.requests) == 3


def test_a_write_follows_no_redirect(tmp_path: Path) -> None:
    with RedirectingServer(redirect_loop(307)) as server:
        backend = make_backend(f"{server.url}/cache", "tok-" + uuid.uuid4().hex)
        with pytest.raises(BackendError) as info:
            backend.upload(object_key(POINT, fingerprint(503), "payload.tar.zst"), write_file(tmp_path / "p", 1000))
        assert f"HTTP 307, a redirect to {server.host}:{server.port}, not followed (a write follows no redirect)" \
            in str(info.value)
        assert [method for method, _ in server.requests] == ["PUT"]


def test_wrong_token_message_never_contains_the_token(contract_server_of, tmp_path: Path) -> None:
    server = contract_server_of(token="tok-" + uuid.uuid4().hex)
    secret = "tok-" + uuid.uuid4().hex
    backend = make_backend(server.url, secret)
    with pytest.raises(BackendError) as info:
        backend.upload(PAYLOAD, write_file(tmp_path / "p", 100))
    assert secret not in str(info.value)
    out = io.BytesIO()
    with pytest.raises(BackendError) as info:
        backend.download(object_key(POINT, fingerprint(400), MANIFEST), out)
    assert secret not in str(info.value) and out.getvalue() == b""
    with pytest.raises(BackendError) as info:
        backend.read_range(PAYLOAD, 0, 10)
    assert secret not in str(info.value)


def test_upload_puts_a_temporary_name_then_moves_it_into_place(contract_server_of, tmp_path: Path) -> None:
    """Readers of the final name never see a partial body: it only ever appears by MOVE."""

    class Moving(ContractHandler):
        def do_MOVE(self) -> None:
            if not self._authorized():
                return
            destination = self.root / urlsplit(self.headers["Destination"]).path.lstrip("/")
            assert self.headers["Overwrite"] == "T"
            self._path().replace(destination)
            self._reply(201)

    server = contract_server_of(token="tok-move", handler=Moving)
    backend = contract_backend(server)
    payload = write_file(tmp_path / "payload", 30_000)
    backend.upload(PAYLOAD, payload)

    assert (server.root / PAYLOAD).read_bytes() == payload.read_bytes()
    writes = [(method, path) for method, path, _ in server.requests_seen if method in ("PUT", "MOVE", "MKCOL")]
    final = f"/{PAYLOAD}"
    assert [method for method, _ in writes] == ["PUT", "MKCOL", "MKCOL", "PUT", "MOVE"]
    assert all(path != final for _, path in writes)
    assert writes[-1][1].startswith(final + ".tmp-")
    assert [p.name for p in (server.root / PACKS).iterdir()] == [PAYLOAD.rsplit("/", 1)[1]]
    assert backend.move_supported
