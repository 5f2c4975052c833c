"""gaia_core.safefs: every operation stays under its root, follows no link and never blocks,
through openat2 and through the openat chain it falls back on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gaia_core import safefs
from gaia_core.safefs import Root, UnsafePath


@pytest.fixture(params=["openat2", "openat chain"])
def resolver(request, monkeypatch):
    if request.param == "openat chain":
        monkeypatch.setattr(safefs, "use_openat2", False)
    return request.param


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``store/`` with a file, a FIFO, links to a host dir and file; ``host/`` outside it."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host\n")
    store = tmp_path / "store"
    (store / "a" / "b").mkdir(parents=True)
    (store / "a" / "b" / "file").write_text("data\n")
    os.mkfifo(store / "a" / "fifo")
    os.symlink(host, store / "a" / "hostdir")
    os.symlink(host / "secret", store / "a" / "hostfile")
    os.symlink("b", store / "a" / "inside")  # even a link inside the root is not followed
    return store


def untouched(tmp_path: Path) -> None:
    assert sorted(p.name for p in (tmp_path / "host").iterdir()) == ["secret"]
    assert (tmp_path / "host" / "secret").read_text() == "host\n"


def test_openat2_reaches_a_directory_in_one_step_where_the_kernel_has_it(tree):
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = safefs._openat2(fd, "a/b")
        assert found is not None or not safefs.use_openat2  # an old kernel: the chain serves
        if found is not None:
            assert sorted(os.listdir(found)) == ["file"]
            os.close(found)
        assert safefs._openat2(fd, "a/inside") is None  # a link: the chain names it
    finally:
        os.close(fd)


def test_reads_a_regular_file(tree, resolver):
    with Root(tree) as root:
        assert root.read_bytes("a/b/file", 100) == b"data\n"
        with root.open_read("a/b/file") as f:
            f.seek(2)
            assert f.read() == b"ta\n"


@pytest.mark.parametrize(("rel", "why"), [
    ("a/fifo", "is a FIFO, not a regular file"),
    ("a/b", "is a directory, not a regular file"),
    ("a/hostfile", "is a symbolic link where a file should be"),
    ("a/hostdir/secret", "is a symbolic link where a directory should be"),
    ("a/inside/file", "is a symbolic link where a directory should be"),
])
def test_refuses_what_is_not_a_regular_file_reached_without_links(tree, resolver, rel, why):
    with Root(tree) as root, pytest.raises(UnsafePath, match=why) as info:
        root.read_bytes(rel, 100)
    assert info.value.filename.startswith(str(tree))


@pytest.mark.parametrize("rel", ["../host/secret", "/etc/passwd", "a//b", "a/./b", "a/\0"])
def test_refuses_names_that_are_not_plain_relative_paths(tree, rel):
    with Root(tree) as root, pytest.raises(UnsafePath, match="not a plain relative path"):
        root.lstat(rel)


def test_a_read_is_bounded(tree, resolver):
    with Root(tree) as root, pytest.raises(UnsafePath, match="larger than 3 bytes"):
        root.read_bytes("a/b/file", 3)


def test_read_regular_does_not_block_on_a_fifo_nor_follow_a_final_link(tree):
    with pytest.raises(UnsafePath, match="FIFO"):
        safefs.read_regular(tree / "a" / "fifo", 100)
    with pytest.raises(OSError) as info:
        safefs.read_regular(tree / "a" / "hostfile", 100)
    assert info.value.errno == errno.ELOOP


def test_lstat_and_kind_never_follow(tree, resolver):
    with Root(tree) as root:
        assert root.kind("a/hostdir") == "symbolic link"
        assert root.kind("a/fifo") == "FIFO"
        assert root.kind("a/b/file") == "file"
        assert root.kind("a/nothing") is None
        assert root.kind("nothing/either") is None
        with pytest.raises(UnsafePath):
            root.kind("a/hostdir/secret")


def test_listings_show_regular_files_and_real_directories_only(tree, resolver):
    with Root(tree) as root:
        assert [(i.name, i.kind) for i in root.listdir("a")] == [("b", "directory")]
        assert [path for path, _ in root.walk_files("")] == ["a/b/file"]
        assert list(root.walk_files("a/hostdir")) == []


def test_writes_never_go_through_a_link(tree, tmp_path, resolver):
    with Root(tree) as root:
        for attempt in (lambda: root.makedirs("a/hostdir/x"),
                        lambda: root.create("a/hostdir/new"),
                        lambda: root.subdir("a/hostdir", create=True),
                        lambda: root.replace("a/b/file", "a/hostdir/secret"),
                        lambda: root.link("a/b/file", "a/hostdir/linked")):
            with pytest.raises(UnsafePath):
                attempt()
        with pytest.raises(FileExistsError):
            root.create("a/hostfile")  # create-only: a link there is a taken name
    untouched(tmp_path)


def test_create_replace_link_within_the_root(tree, resolver):
    with Root(tree) as root:
        root.makedirs("x/y")
        with root.subdir("x/y") as folder:
            with folder.create("tmp") as f:
                f.write(b"new")
            folder.link("tmp", "final")
            with pytest.raises(FileExistsError):
                folder.link("tmp", "final")
            folder.replace("tmp", "moved")
            folder.fsync()
        assert [p for p, _ in root.walk_files("x")] == ["x/y/final", "x/y/moved"]
        root.replace("x/y/moved", "a/hostfile")  # the link is replaced, its target untouched
        assert root.kind("a/hostfile") == "file"
    assert (tree.parent / "host" / "secret").read_text() == "host\n"


def test_removal_stays_inside_the_root(tree, tmp_path, resolver):
    with Root(tree) as root:
        root.unlink("a/hostfile")
        root.rmtree("a/hostdir")  # the link goes, the host directory stays
        with pytest.raises(UnsafePath):
            root.rmtree("a/inside/file")
        root.rmtree("a")
        root.rmtree("a")  # missing is fine
        assert root.listdir() == []
    untouched(tmp_path)


def test_rmtree_removes_links_inside_a_tree_without_following_them(tmp_path):
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "secret").write_text("host\n")
    store = tmp_path / "store"
    (store / "doomed" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "host", store / "doomed" / "sub" / "escape")
    with Root(store) as root:
        root.rmtree("doomed")
        assert root.kind("doomed") is None
    untouched(tmp_path)
