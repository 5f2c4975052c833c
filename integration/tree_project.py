"""Workspaces of the ``[tree]`` anchor (tree_anchor.py) for the end-to-end tests of store
format 4: a source tree of incompressible files, a build file whose point uses the
backend under test, and the CLI run in-process with the tree plugin registered."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gaia_core.backends import PACKS, Backend

POINT = "tree"
#: a script that is ``gaia`` with the ``[tree]`` anchor, for runs in a process of their own
#: (a run that really exits): ``python <script> run build.toml``
TREE_CLI = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from tree_anchor import TreePlugin
    from gaia_core.cli import main
    from gaia_core.plugins import get_plugin_manager
    pm = get_plugin_manager()
    pm.register(TreePlugin(), name="tree")
    main(sys.argv[1:], pm=pm)
""")


def make_source(root: Path, files: int, size: int) -> Path:
    """``files`` incompressible files of ``size`` bytes in two directories, plus a link."""
    for n in range(files):
        path = root / f"dir{n % 2}" / f"file{n:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / "link").symlink_to("dir0/file000.bin")
    return root


def changed_copy(source: Path, dest: Path, *names: str) -> Path:
    """A copy of ``source`` (mtimes kept) whose files ``names`` hold new bytes of the same size."""
    shutil.copytree(source, dest, symlinks=True)
    for name in names:
        path = dest / name
        path.write_bytes(os.urandom(path.stat().st_size))
    return dest


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> the sha256 of a file, or the target of a link (gaia's marker and
    receipt of a restored tree left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(".gaia-"):
            continue
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def remote_packs(backend: Backend) -> dict[str, int]:
    """Pack id -> size of the complete packs (with their index) the backend holds."""
    files = {e.key.rpartition("/")[2]: e.size or 0 for e in backend.list_files(PACKS) if not e.temporary}
    return {name[:-5]: size for name, size in files.items()
            if name.endswith(".pack") and f"{name[:-5]}.idx" in files}


def remote_index_bytes(backend: Backend) -> int:
    return sum(e.size or 0 for e in backend.list_files(PACKS) if e.key.endswith(".idx") and not e.temporary)


class TreeProject:
    """A workspace whose ``[tree]`` anchor is checkpointed to the backend of ``table``."""

    def __init__(self, root: Path, table: str, env: dict[str, str], *, backend_options: str = "",
                 chain: list[str] | None = None, checkpoints: str = ""):
        """``chain``: the point's tiers (``backends``), every one of them in ``table``; without
        it, ``table`` holds one backend and the point names it (``backend``). ``checkpoints``:
        more ``[checkpoints]`` keys."""
        self.root = root
        self.table = table
        self.env = env
        self.backend_options = backend_options
        self.chain = chain
        self.checkpoints = checkpoints
        self.build = root / "build.toml"
        self.store = root / "build" / "checkpoints"
        self.out = root / "build" / "tree-out"
        root.mkdir(parents=True, exist_ok=True)

    @property
    def ref(self) -> str:
        ((kind, named),) = tomllib.loads(self.table)["checkpoints"]["backends"].items()
        ((name, _),) = named.items()
        return f"{kind}:{name}"

    def write(self, source: Path, version: str) -> None:
        tiers = f"backends = {json.dumps(self.chain)}" if self.chain is not None else f'backend = "{self.ref}"'
        self.build.write_text(
            f'[tree]\nsource = "{source}"\nversion = "{version}"\n\n'
            f"[checkpoints]\nenabled = true\n{self.checkpoints}\n"
            f'[[checkpoints.points]]\nid = "{POINT}"\nanchor_task = "tree.build"\n{tiers}\n'
            'upload_policy = "always"\n\n'
            f"{self.table.strip()}\n{self.backend_options}"
        )

    def builds(self) -> int:
        log = self.root / "builds.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def gaia(self, gaia_cli: Callable[..., Any], pm: Any, *args: Any, env: dict[str, str] | None = None) -> Any:
        """``gaia <args>`` in-process with the tree plugin, in this workspace's environment."""
        return gaia_cli(*args, pm=pm, env={**self.env, **(env or {})})

    def run(self, gaia_cli: Callable[..., Any], pm: Any, env: dict[str, str] | None = None) -> Any:
        result = self.gaia(gaia_cli, pm, "run", self.build, env=env)
        assert result.exit_code == 0, result.output
        return result
