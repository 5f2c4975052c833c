"""Hook specifications of gaia. Implement them with :data:`gaia_core.hookimpl`.

Registration hooks take no arguments and return a class or a list of classes; the core
keys them by ``table`` (modules), ``task`` (anchors) or ``kind`` (fingerprint sources,
backends) and refuses a key claimed twice, naming both providers. Implementations may
accept any subset of a hook's parameters; call hooks with keyword arguments only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from gaia_core.anchors import Anchor
    from gaia_core.backends import Backend
    from gaia_core.fingerprints import FingerprintSource
    from gaia_core.tasks import Module

_spec = pluggy.HookspecMarker("gaia")

# ----- Registration ----------------------------------------------------------------------


@_spec
def gaia_register_modules() -> type[Module] | Sequence[type[Module]]:
    """Return :class:`gaia_core.tasks.Module` classes.

    A module is active when its ``table`` exists in the build file; it validates that
    table with its ``config_model`` and returns the tasks it adds to the plan.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_anchors() -> type[Anchor] | Sequence[type[Anchor]]:
    """Return :class:`gaia_core.anchors.Anchor` classes.

    An anchor names a task (``task``), the directories it produces (``targets()``), its
    default fingerprint paths and the tasks a restore lets skip. Checkpoint points whose
    ``anchor_task`` equals ``task`` get restore and capture tasks around it.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_fingerprint_sources() -> type[FingerprintSource] | Sequence[type[FingerprintSource]]:
    """Return :class:`gaia_core.fingerprints.FingerprintSource` classes.

    Each handles the config ``paths`` it lists and turns the value there into a digest
    of what it names (a file, a tree), so that editing the file changes the fingerprint.

    .. versionadded:: 0.1
    """


@_spec
def gaia_register_backends() -> type[Backend] | Sequence[type[Backend]]:
    """Return :class:`gaia_core.backends.Backend` classes.

    ``kind`` is the key under ``[checkpoints.backends.<kind>.<name>]``; ``config_model``
    validates one such table.

    .. versionadded:: 0.1
    """


# ----- CLI -------------------------------------------------------------------------------


@_spec
def gaia_register_commands(cli: click.Group) -> None:
    """Attach extra commands or groups to the ``gaia`` command group.

    :param cli: the root click group.

    .. versionadded:: 0.1
    """
