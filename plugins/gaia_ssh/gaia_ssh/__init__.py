"""gaia-ssh: an SFTP remote store for gaia checkpoints, driven by paramiko."""

__version__ = "0.1.0"
