"""Offline: the identity file is refused like OpenSSH refuses it, and a wrong passphrase
says so and names the file. No connection is attempted for either."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from gaia_ssh.backend import SSHBackend
from gaia_ssh.config import SSHConfig

from gaia_core.errors import BackendError

PASSPHRASE = "correct-horse-battery"


def write_key(path: Path, passphrase: str | None = None, mode: int = 0o600) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    path.write_bytes(pem)
    path.chmod(mode)
    return path


def backend_with(key: Path, environ: dict[str, str] | None = None, **fields) -> SSHBackend:
    # port 9 (discard) on loopback: nothing there; these checks fail before any connection
    config = SSHConfig(target="u@127.0.0.1:/srv", port=9, identity_file=str(key), **fields)
    return SSHBackend("box", config, environ=environ or {})


def failure_of(backend: SSHBackend) -> str:
    with pytest.raises(BackendError) as info:
        backend.exists("p/f/manifest.json")
    return str(info.value)


needs_posix_owner = pytest.mark.skipif(not hasattr(os, "getuid"), reason="file ownership is POSIX")


@needs_posix_owner
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_a_key_others_can_access_is_refused_with_openssh_words(tmp_path: Path, mode: int) -> None:
    key = write_key(tmp_path / "id_ed25519", mode=mode)
    message = failure_of(backend_with(key))
    assert "checkpoints.backends.ssh.box.identity_file" in message
    assert f"Permissions {mode:04o} for '{key}' are too open." in message
    assert "It is required that your private key files are NOT accessible by others." in message


@needs_posix_owner
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_passes_the_permission_check(tmp_path: Path, mode: int) -> None:
    key = write_key(tmp_path / "id_ed25519", mode=mode)
    backend = backend_with(key)
    assert backend._identity() is not None


def test_an_encrypted_key_without_a_passphrase_says_where_to_put_it(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id_ed25519", PASSPHRASE)
    message = failure_of(backend_with(key))
    assert str(key) in message and "encrypted" in message and "identity_passphrase_env" in message


def test_a_wrong_passphrase_says_so_and_names_the_file_and_variable(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id_ed25519", PASSPHRASE)
    wrong = "not-the-passphrase"
    message = failure_of(backend_with(key, {"PASS": wrong}, identity_passphrase_env="PASS"))
    assert "wrong passphrase" in message and str(key) in message and "'PASS'" in message
    assert wrong not in message and PASSPHRASE not in message


def test_the_right_passphrase_opens_the_key(tmp_path: Path) -> None:
    key = write_key(tmp_path / "id_ed25519", PASSPHRASE)
    backend = backend_with(key, {"PASS": PASSPHRASE}, identity_passphrase_env="PASS")
    assert backend._identity() is not None


def test_a_file_that_is_no_key_is_named(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not a key\n")
    key.chmod(0o600)
    message = failure_of(backend_with(key))
    assert f"{key} is not a private key" in message
