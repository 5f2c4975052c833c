"""``gaia checkpoints status|list|retry``."""

from __future__ import annotations

import click


@click.group()
def checkpoints() -> None:
    """Inspect the checkpoint store and replay failed uploads."""
