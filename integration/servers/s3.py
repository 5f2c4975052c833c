"""A real S3 endpoint for the remote suite: moto 5's S3 API in server mode.

Both server sets run the same program, integration/docker/s3/moto_listener.py: natively
as a child process of the venv's Python (so the tests' own memory measurements never
count the server), under Docker as the ``s3`` service of compose.yaml. Its listener
closes on SIGUSR1 (open connections cut, like a crash) and opens again on SIGUSR2 while
the state lives on, which is how the suite simulates a server going away mid-run.

moto accepts any credentials by default; we create an IAM user with an access key while
authentication is off, then switch it on (``/moto-api/reset-auth``), so a wrong key or
secret is refused with 403 like on AWS.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from servers import INTEGRATION_DIR, free_port, wait_for_port
from servers.server_set import use_docker

LISTENER = INTEGRATION_DIR / "docker" / "s3" / "moto_listener.py"

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
    #: which server this is, for the report: ``native: ...`` or ``docker: ...``
    description: str = ""

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


# -- both: the listener's signals and the account ---------------------------------------


class MotoListener(S3Server):
    """What both flavours share: moto_listener.py on ``port``, set up with a user and a bucket."""

    ca_bundle: str | None = None

    def _set_up(self, scheme: str, port: int, description: str) -> None:
        self._port = port
        endpoint = f"{scheme}://127.0.0.1:{port}"
        key_id, secret = _create_iam_user(endpoint, self.ca_bundle)
        S3Server.__init__(self, endpoint, key_id, secret, description=description)
        self.client().create_bucket(Bucket=self.bucket)
        # from now on every request must be signed by a known key
        _post(f"{endpoint}/moto-api/reset-auth", b"0", self.ca_bundle)

    def client(self, **overrides: Any) -> Any:
        if self.ca_bundle:
            overrides.setdefault("verify", self.ca_bundle)
        return super().client(**overrides)

    def _signal(self, signum: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Close the listener and every open connection; the state stays."""
        self._signal(signal.SIGUSR1)
        wait_for_port(self._port, up=False, timeout=15)

    def start(self) -> None:
        self._signal(signal.SIGUSR2)
        wait_for_port(self._port, timeout=15)


# -- native: moto_listener.py in a child process ---------------------------------------


class MotoServer(MotoListener):
    """moto_listener.py as a child process; over TLS with a fresh self-signed certificate when ``tls_dir`` is given."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        port = free_port()
        command = [sys.executable, "-u", str(LISTENER), "--port", str(port)]
        if tls_dir is not None:
            cert, key = make_certificate(tls_dir)
            command += ["--cert", str(cert), "--key", str(key)]
            self.ca_bundle = str(cert)
        # a file, not a pipe: nobody reads it until something fails, and a full pipe would block moto
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by close()
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_listening(port)
            scheme = "https" if tls_dir is not None else "http"
            self._set_up(scheme, port, f"native: moto {_moto_version()} in process {self._process.pid}, port {port}")
        except BaseException:
            self.close()
            raise

    def _wait_listening(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not _accepts(port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"moto_listener.py did not listen on port {port}:\n{output}")

    def _signal(self, signum: int) -> None:
        self._process.send_signal(signum)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


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


# -- Docker: the s3 service of compose.yaml --------------------------------------------


class DockerS3Server(MotoListener):
    """The ``s3`` service of compose.yaml: moto_listener.py as the container's PID 1; over
    TLS with a fresh self-signed certificate (mounted read-only) when ``tls_dir`` is given."""

    TLS_MOUNT = "/etc/gaia/tls"

    def __init__(self, tls_dir: Path | None = None) -> None:
        from servers import containers

        port = free_port()
        command, mounts = None, None
        if tls_dir is not None:
            cert, key = make_certificate(tls_dir)
            self.ca_bundle = str(cert)
            mounts = {str(tls_dir.resolve()): {"bind": self.TLS_MOUNT, "mode": "ro"}}
            command = ["--cert", f"{self.TLS_MOUNT}/{cert.name}", "--key", f"{self.TLS_MOUNT}/{key.name}"]
        self._container = containers.run("s3", {"S3_PORT": str(port)}, command=command, mounts=mounts)
        try:
            containers.wait_until(self._container, lambda: _accepts(port), f"a listener on 127.0.0.1:{port}")
            scheme = "https" if tls_dir is not None else "http"
            self._set_up(scheme, port, f"docker: {containers.describe(self._container)}, port {port}")
        except BaseException:
            self.close()
            raise

    def _signal(self, signum: int) -> None:
        self._container.kill(signal=signal.Signals(signum).name)

    def close(self) -> None:
        from servers import containers

        containers.remove(self._container)


def _accepts(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.2)
        return True
    except TimeoutError:
        return False


def start_s3_server(tls_dir: Path | None = None) -> MotoListener:
    """The s3 service of compose.yaml under Docker, moto_listener.py natively otherwise;
    over TLS with a certificate made in ``tls_dir`` when it is given."""
    return DockerS3Server(tls_dir) if use_docker() else MotoServer(tls_dir)
