"""The ``dir`` backend: a shared directory (an NFS mount, a synced folder) as remote store."""
