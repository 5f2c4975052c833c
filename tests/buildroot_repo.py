"""A git repository holding the fake Buildroot tree, tagged like a Buildroot release.

gaia's `buildroot.fetch` clones, fetches tags, resolves `<tag>^{commit}` and checks out,
so the tests give it a real repository to do that against, offline. The author and
committer are fixed through the environment so no global git config is needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUILDROOT_TREE = Path(__file__).resolve().parent / "buildroot_tree"

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
