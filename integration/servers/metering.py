"""A relay in front of a real server that counts what moves, on 127.0.0.1 only.

The end-to-end tests of store format 4 measure what a run sends and receives (a second
checkpoint that differs by one file uploads only its new packs; a restore over the tree
in place downloads only the changed chunks) at the one place no backend can misreport:
the wire. :class:`MeteringProxy` relays TCP to ``upstream``, counts the bytes of each
direction, can hold the client's uploads to a rate (so that a test can stop it in the
middle of a multi-pack upload), and can be stopped (open connections cut, the port then
refusing, like a server that went away) and started again on the same port. It also counts
the connections it accepted and keeps the HTTP request lines it relayed (method and path of
each request a client sent through it: the upstream's access log, for the nginx office
tier's tests).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

from servers import cut, free_port

HOST = "127.0.0.1"
#: client -> server, and server -> client
UP, DOWN = "up", "down"
_CHUNK = 64 * 1024
#: the request line of an HTTP/1.x request, at the start of a line
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)([A-Z]+) (\S+) HTTP/1\.[01]\r\n")


class MeteringProxy:
    """A counting TCP relay to ``upstream``; ``rate`` (bytes/s) limits the upload direction."""

    def __init__(self, upstream: tuple[str, int], *, rate: float | None = None):
        self.upstream = upstream
        self.rate = rate
        self.port = free_port()
        self.moved = {UP: 0, DOWN: 0}
        #: connections accepted since the start (or the last reset)
        self.connections = 0
        #: (method, path) of the HTTP requests relayed upstream, in order
        self.requests: list[tuple[str, str]] = []
        #: the requests before the last :meth:`reset`
        self.last_requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_send = 0.0  # when the rate allows the next upload chunk out
        self.start()

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def start(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._listener is not None:
            return
        self._stopped.clear()
        self._listener = socket.create_server((HOST, self.port), backlog=64)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept_loop, args=(self._listener,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cut every open connection and stop listening: new connections are refused."""
        self._stopped.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            sockets, self._open = list(self._open), set()
        cut(sockets)

    def reset(self) -> dict[str, int]:
        """The counts so far (the requests go to ``last_requests``); counting starts again from zero."""
        with self._lock:
            moved, self.moved = dict(self.moved), {UP: 0, DOWN: 0}
            self.last_requests, self.requests, self.connections = self.requests, [], 0
        return moved

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            for source, target, direction in ((client, server, UP), (server, client, DOWN)):
                threading.Thread(target=self._pump, args=(source, target, direction), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, direction: str) -> None:
        try:
            while not self._stopped.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    return
                if direction == UP and self.rate:
                    self._wait_for_rate(len(data))
                if direction == UP:
                    self._note_requests(data)
                target.sendall(data)
                with self._lock:
                    self.moved[direction] += len(data)
        except OSError:
            return  # either side went away, or stop() cut the connection

    def _note_requests(self, data: bytes) -> None:
        """Request lines in what a client sent (a request split across two reads, or one
        inside a body, is not seen: good enough for requests without bodies, like reads)."""
        found = [(m.group(1).decode(), m.group(2).decode(errors="replace")) for m in _REQUEST_LINE.finditer(data)]
        if found:
            with self._lock:
                self.requests += found

    def _wait_for_rate(self, count: int) -> None:
        """Every upload chunk gets its slot of ``count / rate`` seconds, across connections."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_send)
            self._next_send = slot + count / float(self.rate or 1)
        if slot > now:
            self._stopped.wait(slot - now)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> MeteringProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
