"""``python -m gaia_core.cli`` runs ``gaia``."""

from gaia_core.cli import main

main()
