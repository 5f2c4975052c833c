"""Helpers of the format-4 tree tests: capture trees into a local pack store and write them
back as restore does, describe a tree on disk, and build hostile objects by hand."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gaia_core.anchors import Target
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.chunking import chunk_id
from gaia_core.checkpoints.entries import Entry, encode
from gaia_core.checkpoints.packs import PackWriter, compress
from gaia_core.checkpoints.packstore import PackStore
from gaia_core.checkpoints.treecapture import TreeInfo, capture_tree
from gaia_core.checkpoints.treewrite import WriteInfo, write_tree

OLD = 1_600_000_000  # a fixed mtime in the past, in seconds
OLD_NS = OLD * 10**9 + 123_456_789
MARKER = ".gaia-checkpoint.json"


class Store:
    """A local pack store in ``root``: what capture and restore of the checkpoint engine use,
    without the engine (no manifest file, no signature, no swap)."""

    def __init__(self, root: Path):
        self.root = root
        self.packs = PackStore(root)
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._receipts = 0

    def capture(self, targets: Sequence[Target], **options: Any) -> TreeInfo:
        """``capture_tree`` into a staging dir, then its packs into the store (as publish does);
        the receipts it wrote are moved out of staging and kept in ``info.receipts``."""
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=self.tmp))
        try:
            info = capture_tree(targets, self.packs, staging, **options)
            for pack in info.packs:
                self.packs.add(pack)
            self._receipts += 1
            kept = {}
            for name, path in info.receipts.items():
                kept[name] = self.root / "receipts" / f"{self._receipts}-{name}"
                kept[name].parent.mkdir(exist_ok=True)
                os.replace(path, kept[name])
            info.receipts = kept
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return info

    def restore(self, manifest: dict[str, Any], dest: Path, **options: Any) -> WriteInfo:
        """The object's entries, checked, written under the new empty directory ``dest``."""
        dest.mkdir(parents=True)
        return write_tree(tree.entries(self.packs, manifest), dest, self.packs, **options)

    def round_trip(self, targets: Sequence[Target], dest: Path, **options: Any) -> tuple[TreeInfo, WriteInfo]:
        info = self.capture(targets, **options)
        return info, self.restore(manifest_of(info, targets), dest)

    def new_pack(self) -> PackWriter:
        return PackWriter(self.tmp)

    def close(self) -> None:
        self.packs.close()


def manifest_of(info: TreeInfo, targets: Sequence[Target] | Sequence[str]) -> dict[str, Any]:
    """The parts of a manifest that reading a tree needs."""
    names = [t if isinstance(t, str) else t.name for t in targets]
    return {"tree": info.tree(), "targets": [{"name": n} for n in names]}


# -- hostile objects ----------------------------------------------------------------------


def dir_entry(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "d", mode, OLD_NS)


def file_entry(path: str, data: bytes = b"x", mode: int = 0o644, **fields: Any) -> Entry:
    return Entry(path, "f", mode, OLD_NS, size=len(data), digest=chunk_id(data) if data else None, **fields)


def link_entry(path: str, text: str) -> Entry:
    return Entry(path, "l", 0o777, OLD_NS, link=text)


def hard_entry(path: str, head: str) -> Entry:
    return Entry(path, "h", 0o644, OLD_NS, link=head)


def store_object(store: Store, entries: Sequence[Entry], contents: Iterable[bytes] = (),
                 targets: Sequence[str] = ("t",), frames: Iterable[tuple[bytes, bytes, int]] = (),
                 totals: dict[str, int] | None = None) -> dict[str, Any]:
    """An object whose entry list is ``entries`` verbatim (one part), with the chunks
    ``contents`` (and the raw ``frames``: chunk id, frame, plain size the index gives) in one
    new pack of the store. The tree's totals are those of ``entries`` unless ``totals`` says."""
    part = b"".join(encode(e) for e in entries)
    writer = store.new_pack()
    for data in dict.fromkeys(contents):
        writer.add(chunk_id(data), compress(data), len(data))
    for chunk, frame, plen in frames:
        writer.add(chunk, frame, plen)
    writer.add(chunk_id(part), compress(part), len(part))
    store.packs.add(writer.finish())
    fields = {"entries": len(entries), "size": sum(e.size for e in entries if e.type == "f"), **(totals or {})}
    return {"tree": {**fields, "parts": [{"id": chunk_id(part).hex(), "size": len(part), "entries": len(entries)}]},
            "targets": [{"name": n} for n in targets]}


# -- trees on disk ------------------------------------------------------------------------


def write(path: Path, data: bytes | str, mtime: int | None = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def describe(root: Path, skip: Sequence[str] = ()) -> dict[bytes, tuple]:
    """Everything a restore must keep of the tree at ``root``, per relative path (bytes):
    type, permission bits, mtime to the ns, content or link text, and the other names of
    a hard-linked file. ``skip`` names entries at the root that are left out."""
    top = os.fsencode(root)
    found: dict[bytes, tuple] = {}
    inodes: dict[int, list[bytes]] = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(top, rel) if rel else top
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            found[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            for name in os.listdir(path):
                if rel or os.fsdecode(name) not in skip:
                    stack.append(os.path.join(rel, name) if rel else name)
        elif stat.S_ISLNK(st.st_mode):
            found[rel] = ("l", st.st_mtime_ns, os.readlink(path))
        else:
            with open(path, "rb") as f:
                found[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(rel)
    for names in inodes.values():
        for name in names:
            found[name] = (*found[name], tuple(sorted(n for n in names if n != name)))
    return found


def set_distinct_mtimes(root: Path) -> None:
    """Give every entry its own mtime with a sub-second part (one a whole second), children
    before their directory."""
    entries = [root, *sorted(root.rglob("*"))]
    for index, path in enumerate(reversed(entries)):
        mtime = 1_600_000_000_000_000_000 + index * 1_000_000_007 + 123_456_789
        if index == 3:
            mtime = 1_600_000_000_000_000_000
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def run_isolated(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter: a hang fails the test instead of hanging the suite."""
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=Path(__file__).parent)
    except subprocess.TimeoutExpired:
        import pytest

        pytest.fail(f"hung: still running after {timeout:.0f}s", pytrace=False)


__all__ = ["MARKER", "OLD", "OLD_NS", "Store", "describe", "dir_entry", "file_entry", "hard_entry",
           "link_entry", "manifest_of", "run_isolated", "set_distinct_mtimes", "store_object", "write"]
