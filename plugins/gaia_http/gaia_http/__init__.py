"""HTTP / WebDAV remote store for gaia checkpoints."""

__version__ = "0.1.0"
