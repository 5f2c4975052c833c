"""Read-only git queries on a Buildroot checkout (never a network access)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_output(src: Path, *args: str) -> str | None:
    """stdout of a read-only git query in ``src``; None when git says no."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(src), *args],
            capture_output=True,
            text=True,
            env=None,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.rstrip("\n") if proc.returncode == 0 else None


def resolve_commit(src: Path, ref: str) -> str | None:
    return git_output(src, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def resolve_version(src: Path, version: str) -> str | None:
    """The commit ``version`` names: a tag, else the fetched remote branch, else any rev."""
    for ref in (f"refs/tags/{version}", f"refs/remotes/origin/{version}", version):
        commit = resolve_commit(src, ref)
        if commit:
            return commit
    return None


def is_pinned(src: Path, version: str) -> bool:
    """A tag or a full commit id: something a failed fetch cannot have moved."""
    return resolve_commit(src, f"refs/tags/{version}") is not None or (
        len(version) == 40 and resolve_commit(src, version) == version
    )


def is_git_checkout(src: Path) -> bool:
    return (src / ".git").exists()
