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

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
NAME = "gaia"

if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker  # marker for hook implementations in plugins


def __getattr__(name: str) -> Any:
    """``hookimpl``, the marker for hook implementations in plugins, made on first use: gaia's
    helper processes import this package and never need pluggy (a fifth of their start)."""
    if name == "hookimpl":
        import pluggy

        marker = globals()["hookimpl"] = pluggy.HookimplMarker(NAME)
        return marker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NAME", "__version__", "hookimpl"]
