"""The HTTP store of the ``?list=1`` contract, as a small stdlib server on 127.0.0.1.

The original implementation implied a plain file server: ``PUT``/``GET``/``HEAD`` on file
URLs and ``GET <base>/<point id>/?list=1`` answering the fingerprints whose manifest
exists. Store format 4 lists any directory (``packs/``, a fingerprint's manifests), so
gaia extends the contract (documented in plugins/gaia_http/README.md):

``GET <dir>/?list=1`` on any directory answers ``{"entries": [...]}``, one object per
entry ``{"name", "type": "file" | "directory", "size", "mtime"}`` (``mtime`` in seconds
since the epoch), and a server may keep ``"fingerprints"`` beside it for older clients;
a directory that does not exist is a 404.

This server speaks the extension (``list_shape = "entries"``) or only the original
contract (``"object"``: ``{"fingerprints": [...]}``, ``"array"``: a bare array). Besides:
``Range`` (one range: 206 with ``Content-Range``, 416 past the end; ``ignore_range``
answers 200 with the whole body, as a server without range support does), no ``MOVE``
(501, so gaia falls back to direct PUTs), 409 on a PUT whose parent is missing (gaia then
sends MKCOL), ``If-None-Match: *`` honoured atomically, and PUTs that readers see only
once complete (written to a temporary file, renamed into place). Bodies move in 64 KiB
pieces: the suite measures the client's memory in this same process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from servers import cut, free_port, wait_for_port

MANIFEST = "manifest.json"
_PIECE = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class ContractHandler(BaseHTTPRequestHandler):
    """One request to a :class:`ContractServer`; configured through class attributes."""

    protocol_version = "HTTP/1.1"
    root: Path
    token: str | None
    list_shape = "entries"
    ignore_range = False
    #: (method, path with query, Authorization header) of every request, in order
    requests_seen: list[tuple[str, str, str | None]]
    create_lock: threading.Lock

    def log_message(self, *args) -> None:
        pass

    def _path(self) -> Path:
        return self.root / unquote(urlsplit(self.path).path).lstrip("/")

    def _reply(self, status: int, body: bytes = b"", content_type: str = "application/octet-stream",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        self.requests_seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.token is not None and self.headers.get("Authorization") != f"Bearer {self.token}":
            self._drain()
            self._reply(401)
            return False
        return True

    def _drain(self) -> None:
        remaining = int(self.headers.get("Content-Length", 0))
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, _PIECE)))

    # -- reading -------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorized():
            return
        parts = urlsplit(self.path)
        target = self._path()
        if parts.path.endswith("/") and parts.query == "list=1":
            if not target.is_dir():
                return self._reply(404)
            return self._reply(200, json.dumps(self._listing(target)).encode(), "application/json")
        if not target.is_file():
            return self._reply(404)
        size = target.stat().st_size
        start, end, status = 0, size, 200
        wanted = _RANGE.match(self.headers.get("Range", "").strip())
        if wanted and not self.ignore_range:
            first = int(wanted.group(1))
            last = int(wanted.group(2)) if wanted.group(2) else size - 1
            if first >= size or last < first:
                return self._reply(416, headers={"Content-Range": f"bytes */{size}"})
            start, end, status = first, min(last + 1, size), 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if self.ignore_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with target.open("rb") as source:
            source.seek(start)
            left = end - start
            while left > 0:
                piece = source.read(min(left, _PIECE))
                if not piece:
                    break
                self.wfile.write(piece)
                left -= len(piece)

    do_HEAD = do_GET

    def _listing(self, directory: Path) -> object:
        children = sorted(directory.iterdir())
        fingerprints = [d.name for d in children if d.is_dir() and (d / MANIFEST).is_file()]
        if self.list_shape == "array":
            return fingerprints
        if self.list_shape == "object":
            return {"fingerprints": fingerprints}
        entries = []
        for child in children:
            with contextlib.suppress(FileNotFoundError):
                info = child.stat()
                kind = "directory" if child.is_dir() else "file"
                entries.append({"name": child.name, "type": kind, "size": info.st_size, "mtime": info.st_mtime})
        return {"fingerprints": fingerprints, "entries": entries}

    # -- writing -------------------------------------------------------------------------

    def do_PUT(self) -> None:
        if not self._authorized():
            return
        target = self._path()
        if not target.parent.is_dir():
            self._drain()
            return self._reply(409)
        temporary = target.with_name(f".put-{threading.get_ident()}-{target.name}")
        with temporary.open("wb") as out:
            remaining = int(self.headers["Content-Length"])
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _PIECE))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
        if remaining:
            temporary.unlink()
            self.close_connection = True
            return
        if self.headers.get("If-None-Match", "").strip() == "*":
            with self.create_lock:
                if target.exists():
                    temporary.unlink()
                    return self._reply(412)
                os.replace(temporary, target)
        else:
            os.replace(temporary, target)
        self._reply(201)

    def do_MKCOL(self) -> None:
        if not self._authorized():
            return
        target = self._path()
        if target.exists():
            return self._reply(405)
        if not target.parent.is_dir():
            return self._reply(409)
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


class _Server(ThreadingHTTPServer):
    """Keeps the sockets of open connections, so that stopping can cut them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        """A client that hung up mid-answer (a ranged read that had what it wanted, a
        test that cut the connection) is no error of the server's."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)


class ContractServer:
    """:class:`ContractHandler` serving ``root`` on a fixed loopback port from a thread;
    ``stop()`` cuts open connections and refuses new ones, ``start()`` serves again."""

    def __init__(self, root: Path, token: str | None = None, *, handler: type[ContractHandler] = ContractHandler,
                 **options: object):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.token = token
        self.handler = type("Handler", (handler,), {
            "root": root, "token": token, "requests_seen": [], "create_lock": threading.Lock(), **options,
        })
        self.port = free_port()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests_seen(self) -> list[tuple[str, str, str | None]]:
        return self.handler.requests_seen

    @property
    def description(self) -> str:
        return f"native: the ?list=1 contract server of integration/servers/list_contract.py, port {self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            return
        self._httpd = _Server(("127.0.0.1", self.port), self.handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        wait_for_port(self.port, timeout=5)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            open_connections = list(httpd.connections)
        cut(open_connections)
        wait_for_port(self.port, up=False, timeout=5)

    def close(self) -> None:
        self.stop()
