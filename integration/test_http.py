"""The HTTP backend against real servers: a stock nginx with WebDAV (the contract suite),
and small stdlib servers for the original's ``?list=1`` contract and for misbehaviour."""

from __future__ import annotations

import email.utils
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from contract import (
    POINT,
    BackendContract,
    download_to,
    fingerprint,
    upload_object,
    write_file,
)
from deadlines import DeadlineContract
from gaia_http.backend import HttpBackend
from gaia_http.config import HttpConfig
from servers.http import STATIC_CONFIG, compose_config, start_http_server
from servers.misbehaving import OTHER_HOST, RedirectingServer, redirect_chain, redirect_loop, redirect_to

from gaia_core.backends import MANIFEST, object_key
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
    table = f'[checkpoints.backends.http.it]\nbase_url_env = "{URL_ENV}"\ntoken_env = "{TOKEN_ENV}"\n'
    return table, {URL_ENV: root_url, TOKEN_ENV: http_server.token}


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


class TestHttpContract(BackendContract):
    pass


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
    upload_object(backend, tmp_path, fp)
    assert backend.move_supported
    assert directory_names(backend, f"{POINT}/{fp}") == [MANIFEST, "payload.tar.zst"]


def test_nginx_listing_is_read_from_autoindex_json(backend: HttpBackend, tmp_path: Path) -> None:
    """Stock nginx ignores ``?list=1`` and answers with autoindex JSON; a directory
    without a manifest (an upload in progress) and a stray file are not fingerprints."""
    upload_object(backend, tmp_path, fingerprint(101))
    upload_object(backend, tmp_path, fingerprint(102), manifest=False)
    stray = backend.session().put(backend.base().url(f"{POINT}/stray.txt"), data=b"not a fingerprint", timeout=5)
    assert stray.status_code in (201, 204)
    assert backend.list_fingerprints(POINT) == [fingerprint(101)]


def test_compose_config_file_is_generated_from_the_same_server_block() -> None:
    assert STATIC_CONFIG.read_text() == compose_config()


def test_large_upload_with_a_wrong_token_is_an_auth_error(bad_credentials_backend: HttpBackend, tmp_path: Path) -> None:
    """nginx answers 401 before reading an 8 MB body; that must read as an auth failure."""
    payload = write_file(tmp_path / "big", 8 << 20)
    with pytest.raises(BackendError, match="authentication failed"):
        bad_credentials_backend.upload(object_key(POINT, fingerprint(103), "payload.tar.zst"), payload)


# -- small real servers: the original's ?list=1 contract and misbehaviour -------------


class FileHandler(BaseHTTPRequestHandler):
    """A plain file server: GET/HEAD/PUT/DELETE/MKCOL, no MOVE (501), 409 on a missing
    parent, and ``GET <dir>/?list=1`` answering the original's JSON contract."""

    protocol_version = "HTTP/1.1"
    root: Path
    token: str
    list_shape = "object"
    requests_seen: list[tuple[str, str, str | None]]

    def log_message(self, *args) -> None:
        pass

    def _path(self) -> Path:
        return self.root / urlsplit(self.path).path.lstrip("/")

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", content_type)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        self.requests_seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self._drain()
            self._reply(401)
            return False
        return True

    def _drain(self) -> None:
        remaining = int(self.headers.get("Content-Length", 0))
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, 1 << 16)))

    def do_GET(self) -> None:
        if not self._authorized():
            return
        parts = urlsplit(self.path)
        target = self._path()
        if parts.path.endswith("/") and parts.query == "list=1":
            if not target.is_dir():
                return self._reply(404)
            complete = sorted(d.name for d in target.iterdir() if (d / MANIFEST).is_file())
            document = complete if self.list_shape == "array" else {"fingerprints": complete}
            return self._reply(200, json.dumps(document).encode(), "application/json")
        if not target.is_file():
            return self._reply(404)
        self._reply(200, target.read_bytes())

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        if not self._authorized():
            return
        target = self._path()
        if not target.parent.is_dir():
            self._drain()
            return self._reply(409)
        with target.open("wb") as out:
            remaining = int(self.headers["Content-Length"])
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                out.write(chunk)
                remaining -= len(chunk)
        self._reply(201)

    def do_MKCOL(self) -> None:
        if not self._authorized():
            return
        target = self._path()
        if target.exists():
            return self._reply(405)
        target.mkdir()
        self._reply(201)

    def do_DELETE(self) -> None:
        if not self._authorized():
            return
        target = self._path()
        if not target.is_file():
            return self._reply(404)
        target.unlink()
        self._reply(204)


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


def file_server(serve, tmp_path: Path, *, list_shape: str = "object"):
    root = tmp_path / "files"
    root.mkdir()
    handler = type("Files", (FileHandler,), {"root": root, "token": "tok-" + uuid.uuid4().hex, "list_shape": list_shape, "requests_seen": []})
    return serve(handler), handler


@pytest.mark.parametrize("shape", ["object", "array"])
def test_list_contract_server_round_trip(serve, tmp_path: Path, shape: str) -> None:
    """The original's implied server: PUT/GET/HEAD on files plus ``?list=1``. It has no
    MOVE, so uploads fall back to a direct PUT; it creates no parents, so we MKCOL them."""
    srv, handler = file_server(serve, tmp_path, list_shape=shape)
    backend = make_backend(srv.url + "/cache", handler.token)
    (handler.root / "cache").mkdir()
    complete, partial = fingerprint(200), fingerprint(201)
    files = upload_object(backend, tmp_path, complete, size=200_000)
    upload_object(backend, tmp_path, partial, manifest=False)

    assert backend.move_supported is False
    assert backend.list_fingerprints(POINT) == [complete]
    assert backend.list_fingerprints("other-point") == []
    assert backend.exists(object_key(POINT, complete, MANIFEST))
    copy = download_to(backend, object_key(POINT, complete, "payload.tar.zst"), tmp_path / "down")
    assert copy.read_bytes() == files["payload.tar.zst"].read_bytes()
    # the temporary object of the one MOVE attempt was deleted
    assert sorted(p.name for p in (handler.root / "cache" / POINT / complete).iterdir()) == [MANIFEST, "payload.tar.zst"]
    list_requests = [path for method, path, _ in handler.requests_seen if method == "GET" and path.endswith("?list=1")]
    assert list_requests == [f"/cache/{POINT}/?list=1", "/cache/other-point/?list=1"]


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


def test_put_answered_503_is_retried_by_reopening_the_file(serve, tmp_path: Path) -> None:
    srv, handler = file_server(serve, tmp_path)
    flaky = {"left": 2}
    original_put = handler.do_PUT

    def do_put(self) -> None:
        if flaky["left"]:
            flaky["left"] -= 1
            self._drain()
            return self._reply(503)
        original_put(self)

    handler.do_PUT = do_put
    backend = make_backend(srv.url, handler.token)
    payload = write_file(tmp_path / "payload", 50_000)
    backend.upload(object_key(POINT, fingerprint(300), "payload.tar.zst"), payload)
    stored = handler.root / POINT / fingerprint(300) / "payload.tar.zst"
    assert stored.read_bytes() == payload.read_bytes()
    assert flaky["left"] == 0


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


def test_wrong_token_message_never_contains_the_token(serve, tmp_path: Path) -> None:
    srv, _ = file_server(serve, tmp_path)
    secret = "tok-" + uuid.uuid4().hex
    backend = make_backend(srv.url, secret)
    with pytest.raises(BackendError) as info:
        backend.upload(object_key(POINT, fingerprint(400), "payload.tar.zst"), write_file(tmp_path / "p", 100))
    assert secret not in str(info.value)
    out = io.BytesIO()
    with pytest.raises(BackendError) as info:
        backend.download(object_key(POINT, fingerprint(400), MANIFEST), out)
    assert secret not in str(info.value) and out.getvalue() == b""


def test_upload_puts_a_temporary_name_then_moves_it_into_place(serve, tmp_path: Path) -> None:
    """Readers of the final name never see a partial body: it only ever appears by MOVE."""

    class MovingHandler(FileHandler):
        def do_MOVE(self) -> None:
            if not self._authorized():
                return
            destination = self.root / urlsplit(self.headers["Destination"]).path.lstrip("/")
            assert self.headers["Overwrite"] == "T"
            self._path().replace(destination)
            self._reply(201)

    root = tmp_path / "files"
    root.mkdir()
    handler = type("Moving", (MovingHandler,), {"root": root, "token": "tok-move", "requests_seen": []})
    backend = make_backend(serve(handler).url, handler.token)
    key = object_key(POINT, fingerprint(500), "payload.tar.zst")
    payload = write_file(tmp_path / "payload", 30_000)
    backend.upload(key, payload)

    assert (root / key).read_bytes() == payload.read_bytes()
    writes = [(method, path) for method, path, _ in handler.requests_seen if method in ("PUT", "MOVE", "MKCOL")]
    final = f"/{key}"
    assert [method for method, _ in writes] == ["PUT", "MKCOL", "MKCOL", "MKCOL", "PUT", "MOVE"]
    assert all(path != final for _, path in writes)
    assert writes[-1][1].startswith(final + ".tmp-")
    assert sorted(p.name for p in (root / POINT / fingerprint(500)).iterdir()) == ["payload.tar.zst"]
    assert backend.move_supported
