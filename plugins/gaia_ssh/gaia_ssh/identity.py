"""Loading the configured identity file the way OpenSSH does, with OpenSSH's reasons.

OpenSSH refuses a private key that group or others may access; so does gaia, with the
same words. An encrypted key is told apart from a wrong passphrase by structure (does it
load without one?), so the error says which it is and names the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import paramiko

from gaia_core.errors import BackendError


def permission_problem(path: Path) -> str | None:
    """OpenSSH's ``sshkey_perm_ok``: a key owned by us must be private to us."""
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid == os.getuid() and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        return (
            f"Permissions {mode:04o} for '{path}' are too open. It is required that your private key "
            f"files are NOT accessible by others. This private key will be ignored (chmod 600 '{path}')."
        )
    return None


def load(path: Path, passphrase: str | None, *, where: str, passphrase_env: str | None) -> paramiko.PKey:
    """The private key in ``path``; every reason it cannot be used is a BackendError.

    ``where`` names the config key of the file, ``passphrase_env`` the variable of the
    passphrase (never its value).
    """
    try:
        problem = permission_problem(path)
    except OSError as exc:
        raise BackendError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if problem:
        raise BackendError(f"{where}: {problem}")
    try:
        return paramiko.PKey.from_path(path)
    except TypeError:
        pass  # cryptography: "the key is encrypted but no password was given"
    except (ValueError, paramiko.SSHException, OSError) as exc:
        raise BackendError(f"{where}: {path} is not a private key gaia can read ({type(exc).__name__})") from None
    if not passphrase:
        raise BackendError(
            f"{where}: the identity file {path} is encrypted; name the variable holding its passphrase "
            "in identity_passphrase_env"
        )
    try:
        return paramiko.PKey.from_path(path, passphrase.encode())
    except (TypeError, ValueError, paramiko.SSHException):
        source = f"env var '{passphrase_env}'" if passphrase_env else "identity_passphrase_env"
        raise BackendError(
            f"{where}: wrong passphrase for the identity file {path}: the passphrase in {source} does not decrypt it"
        ) from None
