"""The gaia-parts example plugin (examples/plugins/gaia-parts), imported without installing it."""

from __future__ import annotations

import sys
from pathlib import Path

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "gaia-parts"
if str(_EXAMPLE) not in sys.path:
    sys.path.insert(0, str(_EXAMPLE))

from gaia_parts import plugin  # noqa: E402

__all__ = ["plugin"]
