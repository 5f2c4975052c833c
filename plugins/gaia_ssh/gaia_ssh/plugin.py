"""Entry point of gaia-ssh; import-light so that ``gaia plugins`` never loads paramiko."""

from __future__ import annotations

from gaia_core import hookimpl


@hookimpl
def gaia_register_backends():
    from gaia_ssh.backend import SSHBackend

    return [SSHBackend]
