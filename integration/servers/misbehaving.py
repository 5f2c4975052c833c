"""Servers that misbehave on purpose, on 127.0.0.1 only: the remotes of issue 10.

- :class:`SilentServer` accepts TCP connections and never sends a byte (nor reads one).
- :class:`StallingProxy` relays to a real server (nginx, moto, sshd) and, once a
  connection has carried ``after`` bytes in one direction, stops relaying that direction
  while keeping the connection open: a transfer frozen mid-body.
- :func:`refusing_port` holds a port that refuses connections (bound, never listening).
- :class:`ConnectCounter` counts the connection attempts this process makes to a port
  (it wraps ``socket.connect``; the connections themselves are real).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"
#: the proxy stops relaying client -> server ("up") or server -> client ("down")
UP, DOWN = "up", "down"


class _Listener:
    """A loopback listener whose accepted connections a subclass handles in threads."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0), backlog=64)
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
        return HOST, self.port

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

    def __init__(self, upstream: tuple[str, int], *, direction: str, after: int, stalls: int | None = None):
        assert direction in (UP, DOWN)
        self.upstream = upstream
        self.direction = direction
        self.after = after
        self.stalls = stalls
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
        for source, target, direction in ((conn, server, UP), (server, conn, DOWN)):
            limit = self.after if direction == self.direction and stalls else None
            threading.Thread(target=self._pump, args=(source, target, direction, limit), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, direction: str, limit: int | None) -> None:
        passed = 0
        try:
            while not self._stopped.is_set():
                if limit is not None and passed >= limit:
                    self._stopped.wait()  # frozen: read nothing more, send nothing more
                    return
                want = 65536 if limit is None else min(65536, limit - passed)
                data = source.recv(want)
                if not data:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
                passed += len(data)
                self.relayed[direction] += len(data)
        except OSError:
            return  # either side went away: the test is over or the client gave up


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
