"""A real OpenSSH server for the SSH backend's tests.

Native (no Docker engine): Debian's ``/usr/sbin/sshd`` on a free loopback port with a
generated host key, config and authorized_keys, running as the current user (root in CI).
With a Docker engine: the OpenSSH service of ``integration/compose.yaml`` started through
the ``docker`` package. Either way the server offers the same attributes: ``host``,
``port``, ``user``, ``base_dir`` (where tests put objects), ``client_key`` (authorized),
``encrypted_key`` (authorized, protected by ``passphrase``), ``wrong_key`` (not
authorized, protected by ``passphrase``), ``known_hosts`` (the real host key),
``stop()`` / ``start()`` and ``pause()`` / ``resume()`` (a server that hangs).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from servers import COMPOSE_FILE, INSTALL_HINT, free_port, wait_for_port

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"


def keygen(path: Path, passphrase: str = "") -> Path:
    """An ed25519 key pair at ``path`` / ``path.pub``."""
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise RuntimeError(f"ssh-keygen is missing; {INSTALL_HINT}")
    subprocess.run(
        [tool, "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def public_key(path: Path) -> str:
    """``<type> <base64>`` of a key pair, without the comment."""
    kind, blob, *_ = Path(f"{path}.pub").read_text().split()
    return f"{kind} {blob}"


def known_hosts_line(port: int, host_public_key: str) -> str:
    return f"[{HOST}]:{port} {host_public_key}\n"


class SSHServer:
    """What both flavours share: keys and files in ``workdir``."""

    user: str
    base_dir: str

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.host = HOST
        self.port = free_port()
        self.passphrase = f"pass-{secrets.token_hex(8)}"
        self.client_key = keygen(workdir / "client_ed25519")
        self.encrypted_key = keygen(workdir / "encrypted_ed25519", self.passphrase)
        self.wrong_key = keygen(workdir / "wrong_ed25519", self.passphrase)
        self.known_hosts = workdir / "known_hosts"

    def authorized_keys(self) -> str:
        return "".join(public_key(k) + "\n" for k in (self.client_key, self.encrypted_key))

    def target(self, subdir: str) -> str:
        return f"{self.user}@{self.host}:{self.base_dir}/{subdir}"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing answers."""
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()


class NativeSSHServer(SSHServer):
    """``sshd -D -e -f <generated config>`` with SFTP served by ``internal-sftp``."""

    def __init__(self, workdir: Path):
        if not SSHD.is_file():
            raise RuntimeError(f"{SSHD} is missing (Debian package openssh-server); {INSTALL_HINT}")
        super().__init__(workdir)
        self.user = getpass.getuser()
        objects = workdir / "objects"
        objects.mkdir()
        self.base_dir = str(objects)
        self.host_key = keygen(workdir / "host_ed25519")
        (workdir / "authorized_keys").write_text(self.authorized_keys())
        self.known_hosts.write_text(known_hosts_line(self.port, public_key(self.host_key)))
        self.config = workdir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {HOST}",
                    f"HostKey {self.host_key}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        self.log = workdir / "sshd.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is not None:
            return
        try:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation dir
        except PermissionError:
            pass  # not root: sshd runs without privilege separation for the current user
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"sshd did not start:\n{self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """Stop the listener and every session it forked (they run in their own sessions)."""
        if self.process is None:
            return
        for pid in descendants(self.process.pid):
            _kill(pid)
        _kill(self.process.pid)
        self.process.wait(timeout=10)
        self.process = None
        wait_for_port(self.port, timeout=10, up=False)

    def _signal_all(self, signum: int) -> None:
        assert self.process is not None, "the server is not running"
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found[::-1]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class DockerSSHServer(SSHServer):
    """The compose file's OpenSSH service, run through the docker package.

    The container is created by the fixture, so the first host key it shows is trusted
    and written to ``known_hosts``.
    """

    def __init__(self, workdir: Path):
        import docker

        super().__init__(workdir)
        service = compose_service("ssh", "openssh")
        # "127.0.0.1::2222" -> 2222 (the image's sshd listens there)
        container_port = str((service.get("ports") or ["2222"])[0]).rsplit(":", 1)[-1]
        self.user = service.get("environment", {}).get("USER_NAME", "gaia")
        self.base_dir = "/config/checkpoints"
        environment = {
            "PUID": "1000",
            "PGID": "1000",
            "TZ": "UTC",
            "USER_NAME": self.user,
            "PASSWORD_ACCESS": "false",
            **service.get("environment", {}),
            "PUBLIC_KEY": self.authorized_keys(),
        }
        self.client = docker.from_env()
        self.container = self.client.containers.run(
            service.get("image", "lscr.io/linuxserver/openssh-server:latest"),
            detach=True,
            environment=environment,
            ports={f"{container_port}/tcp": (HOST, self.port)},
            name=f"gaia-ssh-{os.getpid()}-{self.port}",
        )
        self.running = True
        self._wait_ready()
        self.known_hosts.write_text(known_hosts_line(self.port, self._scan_host_key()))

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import paramiko

        deadline = time.monotonic() + timeout
        while True:
            try:
                with paramiko.SSHClient() as client:
                    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                    client.connect(
                        HOST,
                        self.port,
                        self.user,
                        key_filename=str(self.client_key),
                        look_for_keys=False,
                        allow_agent=False,
                        timeout=2,
                    )
                    client.exec_command(f"mkdir -p {self.base_dir}")[1].channel.recv_exit_status()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _scan_host_key(self) -> str:
        import socket

        import paramiko

        with socket.create_connection((HOST, self.port), timeout=5) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.start_client(timeout=10)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
        return f"{key.get_name()} {key.get_base64()}"

    def start(self) -> None:
        if not self.running:
            self.container.start()
            self.running = True
            self._wait_ready()

    def stop(self) -> None:
        if self.running:
            self.container.stop(timeout=5)
            self.running = False

    def pause(self) -> None:
        self.container.pause()

    def resume(self) -> None:
        self.container.unpause()

    def close(self) -> None:
        self.container.remove(force=True)
        self.client.close()


def compose_service(name: str, image_hint: str) -> dict:
    """The service called ``name`` (or whose image mentions ``image_hint``) in compose.yaml."""
    if not COMPOSE_FILE.is_file():
        return {}
    import yaml

    services = (yaml.safe_load(COMPOSE_FILE.read_text()) or {}).get("services", {})
    service = services.get(name) or next((s for s in services.values() if image_hint in str(s.get("image", ""))), {})
    environment = service.get("environment", {})
    if isinstance(environment, list):  # ["KEY=value", ...]
        environment = dict(item.split("=", 1) for item in environment)
    return {**service, "environment": environment}


def start_ssh_server(workdir: Path, *, use_docker: bool) -> SSHServer:
    server = DockerSSHServer(workdir) if use_docker else NativeSSHServer(workdir)
    server.start()
    return server
