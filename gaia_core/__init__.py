"""gaia: build OS images from layered TOML build files, with build checkpoints.

Plugins implement hooks with :data:`hookimpl`::

    from gaia_core import hookimpl

    @hookimpl
    def gaia_register_anchors():
        return [MyAnchor]

and are found through an entry point in group ``gaia``::

    [project.entry-points.gaia]
    myplugin = "my_package.plugin"
"""

from __future__ import annotations

import pluggy

__version__ = "0.2.0"
NAME = "gaia"

hookimpl = pluggy.HookimplMarker(NAME)
"""Marker for hook implementations in plugins."""

__all__ = ["NAME", "__version__", "hookimpl"]
