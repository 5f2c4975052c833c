"""Directories whose absolute path has one fixed length wherever the workspace is.

A build embeds the absolute path of its output directory in binaries (``-g``, rpaths). A
restore at another path rewrites them only at equal length. When gaia chooses the directory,
it pads its path to ``PADDED_LENGTH`` characters (Spack's ``padded_length``), so every
restore can rewrite every embedded path.

This module is the one place the command-build anchor asks for such a directory
(:func:`padded_dir`); the core function for padded directories of issue 19 item 1 replaces
it (the lead reconciles the two).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from gaia_core.errors import ConfigError

if TYPE_CHECKING:
    from gaia_core.build import Build

#: the length of every padded absolute path: long enough for any sane workspace
PADDED_LENGTH = 192
#: what a padded path is filled with, one component after the other, the last one cut
PLACEHOLDER = "__gaia_path_placeholder__"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def padded_dir(build: Build, name: str, length: int = PADDED_LENGTH) -> Path:
    """``<build_dir>/padded/<name>/__gaia_path_placeholder__/...``, exactly ``length`` characters long.

    Raises ConfigError when the workspace's build dir is too deep for ``length``."""
    if not _NAME.match(name):
        raise ValueError(f"padded directory name '{name}': use letters, digits, '.', '_', '-'")
    base = build.workspace.build_dir / "padded" / name
    room = length - len(str(base))
    if room < 2:
        raise ConfigError(
            f"workspace: the build dir {build.workspace.build_dir} is too deep for a padded path of {length} "
            f"characters ({len(str(base)) + 2} needed for '{name}'); use a workspace at a shorter path"
        )
    path = base
    while room > 0:
        part = min(room - 1, len(PLACEHOLDER))
        if room - 1 - part == 1:  # never leave room for a lone separator
            part -= 1
        path /= PLACEHOLDER[:part]
        room -= part + 1
    return path
