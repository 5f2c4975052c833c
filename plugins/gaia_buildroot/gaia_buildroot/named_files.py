"""The files and directories that string symbols name, digested by content.

``BR2_PACKAGE_BUSYBOX_CONFIG_FRAGMENT_FILES="$(BR2_EXTERNAL_ACME_PATH)/board/busybox.fragment"``,
``BR2_ROOTFS_OVERLAY``, ``BR2_GLOBAL_PATCH_DIR``, a kernel defconfig: the build reads what
the value names, so an edit there must change the keys that cover the symbol, wherever the
file lies (a file in the workspace outside every tree too). Values are split into words as
Buildroot splits lists; a word is a path when it holds a ``/`` and exists, made-variables
expanded and relative to the Buildroot tree, as make sees it. What lies in the out dir is
the tree's own, and what these symbols name is counted elsewhere or by its path: the
download dir, the host dir, a preinstalled toolchain, the override file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gaia_buildroot.dotconfig import unquote
from gaia_buildroot.package_overrides import make_path
from gaia_core.fingerprints import digest_files

if TYPE_CHECKING:
    from gaia_buildroot.layout import BuildrootLayout

#: named by value, not content: what is there is someone else's input or too large to read
BY_PATH = frozenset({"BR2_DL_DIR", "BR2_HOST_DIR", "BR2_TOOLCHAIN_EXTERNAL_PATH", "BR2_PACKAGE_OVERRIDE_FILE",
                     "BR2_CCACHE_DIR"})


def named_files(symbols: Mapping[str, str | None], layout: BuildrootLayout,
                exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``<symbol>[<word>]`` -> the digest of what that word names; a word that names nothing
    counts by the value alone."""
    found: dict[str, Any] = {}
    for symbol, value in sorted(symbols.items()):
        if value is None or not value.startswith('"') or symbol in BY_PATH:
            continue
        for position, word in enumerate(unquote(value).split()):
            if "/" not in word:
                continue
            path = make_path(word, layout)
            if layout.out_dir == path or layout.out_dir in path.parents or not path.exists():
                continue
            found[f"{symbol}[{position}]"] = digest_files(path, exclude=exclude)
    return found


__all__ = ["BY_PATH", "named_files"]
