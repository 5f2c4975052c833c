"""A real OpenSSH server for the SSH backend's tests.

Native: Debian's ``/usr/sbin/sshd`` on a free loopback port with a generated host key,
config and authorized_keys, running as the current user (root in CI). Docker: the
``ssh`` service of ``integration/compose.yaml`` (Debian's sshd too, user ``gaia``) started
through the ``docker`` package with the same generated host key and authorized keys, so
``known_hosts`` is right before the first connection. Either way the server offers the
same attributes: ``host``,
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
from pathlib import Path

from servers import INSTALL_HINT, free_port, wait_for_port
from servers.server_set import use_docker as server_set_uses_docker

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
    #: which server this is, for the report: ``native: ...`` or ``docker: ...``
    description: str = ""

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
        self.description = f"native: {SSHD} -f {self.config}, port {self.port}"

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
    """The compose file's ``ssh`` service, run through the docker package.

    The fixture makes the host key and hands it to the container, so ``known_hosts``
    holds the real key from the start (no trust on first use). ``stop()`` stops the
    container, ``start()`` starts it again with its files; ``pause()`` freezes it.
    """

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.user = "gaia"
        self.base_dir = "/home/gaia/objects"
        self.host_key = keygen(workdir / "host_ed25519")
        self.known_hosts.write_text(known_hosts_line(self.port, public_key(self.host_key)))
        self.container = None
        self.running = False

    def start(self) -> None:
        from servers import containers

        if self.running:
            return
        if self.container is None:
            environment = {
                "SSH_PORT": str(self.port),
                "SSH_AUTHORIZED_KEYS": self.authorized_keys(),
                "SSH_HOST_KEY": self.host_key.read_text(),
            }
            self.container = containers.run("ssh", environment)
            self.description = f"docker: {containers.describe(self.container)}, port {self.port}"
        else:
            self.container.start()
        self.running = True
        containers.wait_until(self.container, self._logs_in, f"a login of {self.user} on 127.0.0.1:{self.port}")

    def _logs_in(self) -> bool:
        import paramiko

        try:
            with paramiko.SSHClient() as client:
                client.load_host_keys(str(self.known_hosts))
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
                client.connect(
                    HOST,
                    self.port,
                    self.user,
                    key_filename=str(self.client_key),
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=2,
                    banner_timeout=2,
                    auth_timeout=2,
                )
            return True
        except (OSError, paramiko.SSHException):
            return False

    def stop(self) -> None:
        if self.running and self.container is not None:
            self.container.stop(timeout=5)
            self.running = False
            wait_for_port(self.port, timeout=10, up=False)

    def pause(self) -> None:
        assert self.container is not None, "the server is not running"
        self.container.pause()

    def resume(self) -> None:
        assert self.container is not None, "the server is not running"
        self.container.unpause()

    def close(self) -> None:
        from servers import containers

        if self.container is not None:
            containers.remove(self.container)
            self.container = None
            self.running = False


def start_ssh_server(workdir: Path, *, use_docker: bool | None = None) -> SSHServer:
    """The ssh service of compose.yaml under Docker, Debian's sshd natively otherwise; started.

    ``use_docker`` None: the run's server set (servers/server_set.py) decides."""
    docker = server_set_uses_docker() if use_docker is None else use_docker
    server = DockerSSHServer(workdir) if docker else NativeSSHServer(workdir)
    server.start()
    return server
