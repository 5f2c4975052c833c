"""A real S3 endpoint for the remote suite.

With a Docker engine: the ``minio`` service of integration/compose.yaml. Without one:
moto's S3 API served by werkzeug in a child process (``python -m servers.s3 --serve PORT``), so
the tests' own memory measurements never count the server. The child keeps its state
while its listener is stopped and started again, which is how the suite simulates a
server going away mid-run: listener closed and open connections cut, like a crash.

moto accepts any credentials by default; we create an IAM user with an access key while
authentication is off, then switch it on (``/moto-api/reset-auth``), so a wrong key or
secret is refused with 403 like on AWS.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from servers import COMPOSE_FILE, INTEGRATION_DIR, docker_engine_available, free_port, wait_for_port

REGION = "us-east-1"
BUCKET = "gaia-it"
IAM_USER = "gaia-it"
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@dataclasses.dataclass
class S3Server:
    """A running S3 endpoint with a bucket and a pair of working credentials."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    bucket: str = BUCKET
    region: str = REGION

    def client(self, **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        options = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "config": Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        }
        options.update(overrides)
        return boto3.session.Session().client("s3", **options)

    def env(self, prefix: str, *, secret: str | None = None) -> dict[str, str]:
        """Variables for the ``*_env`` fields of :func:`backend_table`."""
        return {
            "GAIA_IT_S3_BUCKET": self.bucket,
            "GAIA_IT_S3_ENDPOINT": self.endpoint_url,
            "GAIA_IT_S3_REGION": self.region,
            "GAIA_IT_S3_PREFIX": prefix,
            "GAIA_IT_S3_KEY_ID": self.access_key_id,
            "GAIA_IT_S3_SECRET": self.secret_access_key if secret is None else secret,
        }

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


#: the ``*_env`` fields that :meth:`S3Server.env` fills
ENV_FIELDS = {
    "bucket_env": "GAIA_IT_S3_BUCKET",
    "endpoint_url_env": "GAIA_IT_S3_ENDPOINT",
    "region_env": "GAIA_IT_S3_REGION",
    "prefix_env": "GAIA_IT_S3_PREFIX",
    "aws_access_key_id_env": "GAIA_IT_S3_KEY_ID",
    "aws_secret_access_key_env": "GAIA_IT_S3_SECRET",
}


def backend_table(name: str) -> str:
    lines = [f"[checkpoints.backends.s3.{name}]"]
    lines += [f'{field} = "{var}"' for field, var in ENV_FIELDS.items()]
    return "\n".join(lines) + "\n"


def unique_prefix() -> str:
    return f"it/{uuid.uuid4().hex[:12]}"


# -- native: moto in a child process ---------------------------------------------------


class MotoServer(S3Server):
    """moto in a child process; over TLS with a fresh self-signed certificate when ``tls_dir`` is given."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-u", "-m", "servers.s3", "--serve", str(port)]
        self.ca_bundle: str | None = None
        if tls_dir is not None:
            cert, key = make_certificate(tls_dir)
            command += [str(cert), str(key)]
            self.ca_bundle = str(cert)
        self._process = subprocess.Popen(
            # run as a module: a script's own directory would shadow the stdlib (servers/http.py)
            command,
            cwd=INTEGRATION_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            self._expect("ready")
            scheme = "https" if tls_dir is not None else "http"
            endpoint = f"{scheme}://127.0.0.1:{port}"
            key_id, secret = _create_iam_user(endpoint, self.ca_bundle)
            super().__init__(endpoint, key_id, secret)
            self.client().create_bucket(Bucket=self.bucket)
            # from now on every request must be signed by a known key
            _post(f"{endpoint}/moto-api/reset-auth", b"0", self.ca_bundle)
        except BaseException:
            self.close()
            raise

    def client(self, **overrides: Any) -> Any:
        if self.ca_bundle:
            overrides.setdefault("verify", self.ca_bundle)
        return super().client(**overrides)

    def _command(self, command: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        self._expect("ok")

    def _expect(self, word: str) -> None:
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != word:
            code = self._process.poll()
            raise RuntimeError(f"moto server child said {line!r} instead of {word!r} (exit code {code})")

    def stop(self) -> None:
        self._command("stop")

    def start(self) -> None:
        self._command("start")

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, its own trust anchor."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gaia-it")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "s3-cert.pem", folder / "s3-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _create_iam_user(endpoint: str, ca_bundle: str | None) -> tuple[str, str]:
    import boto3

    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        verify=ca_bundle or True,
    )
    iam.create_user(UserName=IAM_USER)
    iam.put_user_policy(UserName=IAM_USER, PolicyName="s3", PolicyDocument=json.dumps(ALLOW_S3))
    key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _post(url: str, data: bytes, ca_bundle: str | None = None) -> None:
    # not form-encoded: moto reads the raw body
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "text/plain"})
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        response.read()


def serve(port: int, tls: tuple[str, str] | None = None) -> None:
    """Child process: serve moto on ``port``; obey ``stop`` / ``start`` lines on stdin."""
    import socket
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    connections: set[socket.socket] = set()

    class TrackedHandler(MotoRequestHandler):
        def setup(self) -> None:
            super().setup()
            connections.add(self.connection)

        def finish(self) -> None:
            connections.discard(self.connection)
            super().finish()

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    def start() -> tuple[Any, threading.Thread]:
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=TrackedHandler, ssl_context=tls)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        return server, thread

    server, thread = start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stop" and server is not None:
            server.shutdown()
            server.server_close()
            thread.join()
            for conn in list(connections):  # a crashed server leaves no connection open
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            server = None
        elif command == "start" and server is None:
            server, thread = start()
        print("ok", flush=True)


# -- Docker: the minio service of compose.yaml -----------------------------------------


class MinioServer(S3Server):
    """The ``minio`` service of compose.yaml, run through the docker package."""

    def __init__(self) -> None:
        import docker
        import yaml

        service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["minio"]
        env = service["environment"]
        port = free_port()
        self._docker = docker.from_env()
        self._container = self._docker.containers.run(
            service["image"],
            service["command"],
            environment=env,
            ports={"9000/tcp": ("127.0.0.1", port)},
            detach=True,
            auto_remove=False,
            name=f"gaia-it-minio-{uuid.uuid4().hex[:8]}",
        )
        self._port = port
        endpoint = f"http://127.0.0.1:{port}"
        super().__init__(endpoint, env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"])
        self._wait_ready()
        self.client().create_bucket(Bucket=self.bucket)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        self._container.stop(timeout=5)
        wait_for_port(self._port, up=False)

    def start(self) -> None:
        self._container.start()
        self._wait_ready()

    def close(self) -> None:
        try:
            self._container.remove(force=True)
        finally:
            self._docker.close()


def start_s3_server() -> S3Server:
    return MinioServer() if docker_engine_available() else MotoServer()


if __name__ == "__main__" and len(sys.argv) in (3, 5) and sys.argv[1] == "--serve":
    serve(int(sys.argv[2]), (sys.argv[3], sys.argv[4]) if len(sys.argv) == 5 else None)
