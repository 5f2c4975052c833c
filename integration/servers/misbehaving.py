"""Servers that misbehave on purpose, on 127.0.0.1 only: the remotes of issue 10.

- :class:`SilentServer` accepts TCP connections and never sends a byte (nor reads one).
- :class:`StallingProxy` relays to a real server (nginx, moto, sshd) and, once a
  connection has carried ``after`` bytes in one direction, stops relaying that direction
  while keeping the connection open: a transfer frozen mid-body. With ``answer_after_up``
  it relays every request and freezes the answer to one that carried that many bytes up:
  an upload whose body went through and whose answer never comes.
- :class:`RedirectingServer` answers HTTP requests with redirects: to itself (a loop), a
  chain of them on the same origin that ends in a real answer, or to another host.
- :func:`refusing_port` holds a port that refuses connections (bound, never listening).
- :class:`ConnectCounter` counts the connection attempts this process makes to a port
  (it wraps ``socket.connect``; the connections themselves are real).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator

HOST = "127.0.0.1"
#: another loopback host: a different origin than HOST, still on loopback
OTHER_HOST = "127.0.0.2"
#: the proxy stops relaying client -> server ("up") or server -> client ("down")
UP, DOWN = "up", "down"


class _Listener:
    """A loopback listener whose accepted connections a subclass handles in threads."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self._socket = socket.create_server((host, 0), backlog=64)
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._track(conn)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stopped.set()
        self._socket.close()
        self._thread.join(timeout=5)
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer(_Listener):
    """Accepts every connection and then does nothing at all with it."""

    def handle(self, conn: socket.socket) -> None:
        pass  # kept open (tracked) until close()


class StallingProxy(_Listener):
    """A TCP relay to ``upstream`` that freezes one direction after ``after`` bytes.

    The count is per connection, so every new connection (a retry) stalls again at the
    same point, unless ``stalls`` limits how many connections stall (later ones relay
    everything). ``relayed[direction]`` is the total that went through.
    """

    def __init__(self, upstream: tuple[str, int], *, direction: str, after: int, stalls: int | None = None,
                 answer_after_up: int | None = None):
        assert direction in (UP, DOWN)
        assert answer_after_up is None or direction == DOWN
        self.upstream = upstream
        self.direction = direction
        self.after = after
        self.stalls = stalls
        self.answer_after_up = answer_after_up
        self.relayed = {UP: 0, DOWN: 0}
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            conn.close()
            return
        server.settimeout(None)
        self._track(server)
        stalls = self.stalls is None or self.accepted <= self.stalls
        carried = {UP: 0, DOWN: 0}  # this connection's bytes
        for source, target, direction in ((conn, server, UP), (server, conn, DOWN)):
            limit = self.after if direction == self.direction and stalls else None
            threading.Thread(target=self._pump, args=(source, target, direction, limit, carried), daemon=True).start()

    def _frozen(self, direction: str, limit: int | None, carried: dict[str, int]) -> bool:
        if limit is None:
            return False
        if self.answer_after_up is not None:
            return direction == DOWN and carried[UP] >= self.answer_after_up
        return carried[direction] >= limit

    def _pump(self, source: socket.socket, target: socket.socket, direction: str, limit: int | None,
              carried: dict[str, int]) -> None:
        try:
            while not self._stopped.is_set():
                if self._frozen(direction, limit, carried):
                    self._stopped.wait()  # frozen: read nothing more, send nothing more
                    return
                bounded = limit is not None and self.answer_after_up is None
                want = min(65536, limit - carried[direction]) if bounded else 65536
                data = source.recv(want)
                if not data:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    return
                if self._frozen(direction, limit, carried):  # the answer to a large upload: withheld
                    self._stopped.wait()
                    return
                target.sendall(data)
                carried[direction] += len(data)
                self.relayed[direction] += len(data)
        except OSError:
            return  # either side went away: the test is over or the client gave up


#: what a RedirectingServer answers to (method, path): (status, Location or None, body)
Answer = Callable[[str, str], tuple[int, str | None, bytes]]


class RedirectingServer(_Listener):
    """An HTTP/1.1 server whose answers are redirects.

    ``answer(method, path)`` returns ``(status, location or None, body)`` per request; the
    helpers below make the usual ones. Request bodies are read (by Content-Length) before
    the answer, so a client sending one sees the status, not a reset. ``requests`` lists
    ``(method, path)`` of every request, in order.
    """

    def __init__(self, answer: Answer, host: str = HOST):
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        super().__init__(host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buffer = b""
        try:
            while not self._stopped.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
                length = int(headers.get("content-length", "0") or 0)
                if headers.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                self.requests.append((method, path))
                status, location, body = self.answer(method, path)
                lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Redirect'}", f"Content-Length: {len(body)}"]
                if location is not None:
                    lines.append(f"Location: {location}")
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if method == "HEAD" else body))
        except OSError:
            return


def redirect_loop(status: int = 301) -> Answer:
    """Every request is sent back to its own path: a loop that never ends."""
    return lambda method, path: (status, path, b"")


def redirect_to(url: str, status: int = 302) -> Answer:
    """Every request is sent to ``url`` + its path (another host, say)."""
    return lambda method, path: (status, url + path, b"")


def redirect_chain(hops: int, body: Callable[[str], bytes], status: int = 302) -> Answer:
    """``/hops-<n>/<rest>`` redirects to ``/hops-<n-1>/<rest>`` (relative location), and
    ``/hops-0/<rest>`` answers 200 with ``body(rest)``: a client starting at
    ``/hops-<hops>/`` follows ``hops`` redirects on one origin."""

    def answer(method: str, path: str) -> tuple[int, str | None, bytes]:
        match = re.match(r"^/hops-(\d+)/(.*)$", path)
        if match is None:
            return 404, None, b""
        left, rest = int(match.group(1)), match.group(2)
        if left == 0:
            return 200, None, body(rest)
        return status, f"/hops-{left - 1}/{rest}", b""

    return answer


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused: bound (so nobody else takes
    it) but not listening, which Linux answers with a reset to every SYN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


class ConnectCounter:
    """Counts this process's ``connect()`` calls to ``port`` (all threads)."""

    def __init__(self, monkeypatch, port: int):  # type: ignore[no-untyped-def]
        self.port = port
        self.count = 0
        real_connect = socket.socket.connect
        counter = self

        def connect(sock: socket.socket, address, /):  # type: ignore[no-untyped-def]
            if isinstance(address, tuple) and len(address) >= 2 and address[1] == counter.port:
                counter.count += 1
            return real_connect(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
