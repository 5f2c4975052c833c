"""moto's S3 API (moto 5 in server mode) whose listener can go away and come back.

The program both server sets run: the s3 image's entrypoint, and the native fixture's
child process. It serves what ``moto_server -H 127.0.0.1 -p PORT`` serves, with one
addition the contract suite needs: ``SIGUSR1`` closes the listener and cuts every open
connection, like a crashed server, and ``SIGUSR2`` opens it again on the same port. The
state (buckets, objects, IAM users) lives in this process, so it survives, which a
restarted ``moto_server`` would not. ``SIGTERM`` and ``SIGINT`` end it (as PID 1 of a
container it must handle them itself). Whoever sends a signal waits for the port to
refuse or accept connections: that is the acknowledgement.

Usage: moto_listener.py [--host 127.0.0.1] [--port $S3_PORT] [--cert PEM --key PEM]
Only the standard library, moto and werkzeug: it runs in the image's venv.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("S3_PORT", "9000")))
    parser.add_argument("--cert", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    tls = (args.cert, args.key) if args.cert else None

    # Block the signals before any thread starts (threads inherit the mask) and take them
    # with sigwait in this thread: a handler would run only when this thread next runs
    # Python code, and a signal delivered to a request thread would wait forever.
    commands = {signal.SIGUSR1: "stop", signal.SIGUSR2: "start", signal.SIGTERM: "exit", signal.SIGINT: "exit"}
    for signum in commands:
        signal.signal(signum, lambda *_: None)  # not SIG_DFL: PID 1 of a container ignores those
    signal.pthread_sigmask(signal.SIG_BLOCK, commands)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    wsgi_app = DomainDispatcherApplication(create_backend_app)
    listener: Listener | None = Listener(wsgi_app, args.host, args.port, tls)
    print(f"moto S3 API on {'https' if tls else 'http'}://{args.host}:{args.port}", flush=True)
    while True:
        command = commands[signal.sigwait(commands)]
        if command == "stop" and listener is not None:
            listener.close()
            listener = None
        elif command == "start" and listener is None:
            listener = Listener(wsgi_app, args.host, args.port, tls)
        elif command == "exit":
            if listener is not None:
                listener.close()
            return


class Listener:
    """moto's WSGI app served by werkzeug on one port, in a thread, until :meth:`close`.

    The app (and moto's backends, which hold the state) outlive every listener."""

    def __init__(self, wsgi_app: Any, host: str, port: int, tls: tuple[str, str] | None) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        connections = self.connections = set[socket.socket]()

        class TrackedHandler(MotoRequestHandler):
            def setup(self) -> None:
                super().setup()
                connections.add(self.connection)

            def finish(self) -> None:
                connections.discard(self.connection)
                super().finish()

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self.server = make_server(host, port, wsgi_app, threaded=True, request_handler=TrackedHandler, ssl_context=tls)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop accepting, cut open connections, then free the port (so a refused
        connection means every old one is gone too)."""
        self.server.shutdown()
        self.thread.join()
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()


if __name__ == "__main__":
    main()
