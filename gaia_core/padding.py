"""Padded directories: build directories whose absolute path has one fixed length.

A tree built in a directory embeds that directory's path, in binaries too (an RPATH, debug
info, a compiled-in prefix). Relocation rewrites a binary only at equal or shorter length,
so a checkpoint captured at ``/a/ws`` could not move into ``/builds/ci/long/ws``. When the
directories gaia chooses all have the same length wherever the workspace is, every restore
rewrites every binary at equal length (Spack's ``padded_length`` does the same for its
install tree).

A padded directory lives under ``<build_dir>/padded/``: a chain of placeholder components
fills it up to ``workspace.padded_length`` characters, and ``name`` comes last, so a path
in a log still ends with something readable (``.../buildroot/output/host/bin/gcc``).
The names users know (``build/buildroot/output``) stay as relative links to it, made by
:func:`link_padded_dir`; gaia itself always uses the padded path it computes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from gaia_core.errors import ConfigError, TaskFailed

#: ``[workspace] padded_length`` when the build file does not set it
DEFAULT_PADDED_LENGTH = 192
#: the range allowed for ``padded_length``: room for a name, and far below PATH_MAX
MIN_PADDED_LENGTH, MAX_PADDED_LENGTH = 64, 1024
#: the directory under the build dir that holds every padded directory
PADDED_ROOT = "padded"
#: one component of the padding; the last one is cut to fit
PLACEHOLDER = "__gaia_padding__"
#: names up to this long always fit: a workspace without that much room is a config error
NAME_ROOM = 48
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def padded_root(build_dir: Path) -> Path:
    """``<build_dir>/padded`` with the build dir resolved: the path Buildroot and compilers
    see (they resolve ``O=``), so its length is the one that is padded."""
    return Path(os.path.realpath(build_dir)) / PADDED_ROOT


def room_problem(build_dir: Path, length: int) -> str | None:
    """Why ``build_dir`` is too deep for ``length`` (None when names of ``NAME_ROOM`` fit)."""
    base = len(str(padded_root(build_dir))) + 2  # "/" + at least one padding character
    needed = base + 1 + NAME_ROOM
    if needed <= length:
        return None
    return (
        f"{length} leaves no room for gaia's padded directories under "
        f"{padded_root(build_dir)} ({base - 2} characters; a padded directory needs up to {needed}): "
        f"raise workspace.padded_length to {needed} or more (at most {MAX_PADDED_LENGTH}), "
        "or use a workspace at a shorter path"
    )


def padded_path(build_dir: Path, name: str, length: int) -> Path:
    """``<build_dir>/padded/<padding>/<name>``, exactly ``length`` characters long."""
    parts = name.split("/")
    if not name or not all(_NAME_PART.match(part) for part in parts):
        raise ValueError(
            f"padded directory name {name!r} must be relative path parts of letters, digits, "
            "'.', '_' and '-' (no '..', not starting with '.')"
        )
    root = str(padded_root(build_dir))
    fill = length - len(root) - len(name) - 2  # the "/" before the padding and before name
    if fill < 1:
        raise ConfigError(
            f"workspace.padded_length = {length} is too short for the padded directory {name!r} "
            f"under {root}: raise workspace.padded_length to {length - fill + 1} or more"
        )
    padding = "/".join([PLACEHOLDER] * (fill // (len(PLACEHOLDER) + 1) + 1))[:fill]
    if padding.endswith("/"):
        padding = padding[:-1] + "_"
    return Path(root, padding, name)


def link_padded_dir(link: Path, padded: Path, build_dir: Path) -> str | None:
    """Make ``link`` a relative symlink to ``padded`` (creating its parent).

    A link already right stays; a link into another padded directory of this build dir
    (the workspace moved, or ``padded_length`` changed) is re-pointed. A link that is gone
    while its padded directory is there was removed by the user (``rm -rf
    build/buildroot/output``, as one starts a Buildroot out dir over): the padded directory is
    emptied too, so that removing the path users know keeps meaning what it always meant.
    Those two return a line saying what happened. Anything else at ``link`` (a directory, a
    file, a link elsewhere) is the user's: refused with :class:`TaskFailed`, nothing is touched.
    """
    real_parent = Path(os.path.realpath(link.parent))
    text = os.path.relpath(padded, real_parent)
    if os.path.islink(link):
        current = os.readlink(link)
        if current == text:
            return None
        pointed = os.path.normpath(os.path.join(real_parent, current))
        root = str(padded_root(build_dir))
        if not (pointed + "/").startswith(root + "/"):
            raise TaskFailed(
                f"{link} is a link to {current}, not to gaia's padded directory {padded}; "
                f"remove the link (gaia recreates it) or point the setting that names {link.name} elsewhere"
            )
        _replace_link(link, text)
        return f"{link} now points to {padded} (it pointed to {current}, which a run here no longer uses)"
    if link.exists():
        kind = "a directory" if link.is_dir() else "a file"
        raise TaskFailed(
            f"{link} is {kind}, where gaia keeps a link to its padded directory {padded} "
            "(workspace.padded_length); move it away or delete it and run again"
        )
    note = None
    if padded.is_dir():
        shutil.rmtree(padded)
        note = f"{link} was removed: {padded} behind it is started over"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(text, link)
    return note


def _replace_link(link: Path, text: str) -> None:
    temporary = link.with_name(f".{link.name}.gaia-link")
    if os.path.islink(temporary):
        temporary.unlink()
    os.symlink(text, temporary)
    os.replace(temporary, link)
