"""Fixtures around the Buildroot-compatible test tree: a git repository holding it, and a
pre-installed external toolchain for it to link into its out dir.

gaia's `buildroot.fetch` clones, fetches tags, resolves `<tag>^{commit}` and checks out,
so the tests give it a real repository to do that against, offline. The author and
committer are fixed through the environment so no global git config is needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: the one copy of the tree, shipped with the quickstart
BUILDROOT_TREE = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "buildroot-tree"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "gaia tests",
    "GIT_AUTHOR_EMAIL": "tests@gaia.invalid",
    "GIT_COMMITTER_NAME": "gaia tests",
    "GIT_COMMITTER_EMAIL": "tests@gaia.invalid",
    "GIT_AUTHOR_DATE": "2025-11-01T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2025-11-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with the fixed identity; return its stdout."""
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def make_buildroot_repo(dest: Path, tag: str = "2025.11", tree: Path | None = None) -> Path:
    """Copy `tree` (default: the fake Buildroot tree) to `dest`, commit it, tag it `tag`."""
    dest = Path(dest)
    shutil.copytree(tree or BUILDROOT_TREE, dest, symlinks=True, dirs_exist_ok=True)
    git(dest, "init", "--quiet", "--initial-branch=master")
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--no-gpg-sign", "-m", f"Buildroot {tag} (gaia test tree)")
    git(dest, "tag", "-a", tag, "-m", tag)
    return dest


#: what real Buildroot links from host/bin into a preinstalled toolchain (binutils and
#: friends); gcc, g++ and cpp go through its toolchain-wrapper instead
TOOLCHAIN_COMPILERS = ("gcc", "g++", "cpp")
TOOLCHAIN_TOOLS = (
    "addr2line", "ar", "as", "c++filt", "elfedit", "gcov", "gprof", "ld", "ld.bfd",
    "nm", "objcopy", "objdump", "ranlib", "readelf", "size", "strings", "strip",
)


def make_external_toolchain(root: Path, prefix: str = "x86_64-linux") -> Path:
    """A toolchain directory like /opt/<vendor>-toolchain, made under ``root`` (a tmp_path).

    ``bin/<prefix>-gcc``, ``-g++`` and ``-cpp`` are scripts running the host's ``cc``,
    ``c++`` and ``cpp``; every other tool is a link to the host's program of that name,
    or a script that says it is missing.
    """
    bin_dir = Path(root) / "bin"
    bin_dir.mkdir(parents=True)
    host = {"gcc": "cc", "g++": "c++", "cpp": "cpp"}
    for tool in TOOLCHAIN_COMPILERS:
        script = bin_dir / f"{prefix}-{tool}"
        script.write_text(f'#!/bin/sh\nexec {host[tool]} "$@"\n')
        script.chmod(0o755)
    for tool in TOOLCHAIN_TOOLS:
        found = shutil.which(tool)
        name = bin_dir / f"{prefix}-{tool}"
        if found:
            os.symlink(found, name)
        else:
            name.write_text(f'#!/bin/sh\necho "{tool}: not on this host" >&2\nexit 127\n')
            name.chmod(0o755)
    return Path(root)
