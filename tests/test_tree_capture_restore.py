"""Store format 4: trees captured into content-addressed chunks in packs and written back.

capture_tree -> PackStore -> write_tree, as capture and restore use them: what a restored
tree keeps (content, modes, ns mtimes, links, hard links, empty things, odd names), what
capture stores again and what it reads again (receipts), what it refuses, and what
write_tree guarantees (no set-id bits, nothing through a link, progress, bounded memory).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import stat
import threading
import tracemalloc
from pathlib import Path

import pytest
from tree_store import (
    MARKER,
    OLD,
    Store,
    describe,
    dir_entry,
    file_entry,
    link_entry,
    manifest_of,
    run_isolated,
    set_distinct_mtimes,
    write,
)

from gaia_core.anchors import Target
from gaia_core.checkpoints import chunking, tree, treecapture, treewrite
from gaia_core.checkpoints.chunking import SMALL_FILE
from gaia_core.checkpoints.entries import UnsafeEntry
from gaia_core.checkpoints.packs import ChunkCorrupt, compress
from gaia_core.checkpoints.receipt import records
from gaia_core.checkpoints.treewrite import write_tree
from gaia_core.errors import CheckpointError

EXCLUDED = (MARKER, ".gaia-receipt.jsonl.zst")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    root.mkdir()
    return root


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def build_tree(root: Path) -> None:
    """A small build tree with every kind of entry capture keeps."""
    stamp = write(root / "build" / "pkg" / ".stamp_built", "built\n")
    (root / "empty").mkdir()
    write(root / "build" / "pkg" / "empty-file", b"")
    script = write(root / "host" / "bin" / "tool", "#!/bin/sh\n")
    script.chmod(0o750)
    (root / "host" / "bin" / "tool-alias").hardlink_to(script)
    (root / "host" / "lib").symlink_to("bin")  # relative
    (root / "staging").symlink_to(root / "host")  # absolute, inside the target
    (root / "host" / "ar").symlink_to("/opt/toolchain/bin/ar")  # absolute, outside
    (root / "host" / "dangling").symlink_to("missing/file")
    (root / "host" / "loop-a").symlink_to("loop-b")
    (root / "host" / "loop-b").symlink_to("loop-a")
    (root / "host" / "self").symlink_to(".")
    long_dir = root / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    write(long_dir / ("f" * 150), "long name\n")
    write(root / "big.img", random_bytes(3 * SMALL_FILE + 12345))  # several chunks
    odd = os.fsencode(root / "names")
    os.mkdir(odd)
    for name in (b"caf\xe9", b"new\nline", b"back\\slash", b'quo"te', "\u00fcml\u00e4ut".encode()):
        with open(os.path.join(odd, name), "wb") as f:
            f.write(name)
    os.symlink(b"\xff\xfe-target", os.path.join(odd, b"link-\xff"))  # a link text that is not UTF-8
    (root / "ro").mkdir()
    write(root / "ro" / "inside", "read-only dir\n")
    for path in [stamp, script, root / "empty", root / "build" / "pkg"]:
        os.utime(path, (OLD, OLD))
    (root / "ro").chmod(0o555)


def store_chunks(store: Store, contents: list[bytes]) -> None:
    """Put ``contents`` into the store as chunks of a new pack."""
    writer = store.new_pack()
    for data in contents:
        writer.add(chunking.chunk_id(data), compress(data), len(data))
    store.packs.add(writer.finish())


def capture_restore(store: Store, tmp_path: Path, targets: list[Target], **options) -> Path:
    dest = tmp_path / "restored"
    store.round_trip(targets, dest, **options)
    return dest


# -- round trips --------------------------------------------------------------------------


def test_round_trip_keeps_every_entry_to_the_nanosecond(store, tmp_path, out):
    build_tree(out)
    set_distinct_mtimes(out)
    before = describe(out)
    dest = capture_restore(store, tmp_path, [Target("out", out)])
    assert describe(dest / "out") == before
    assert os.readlink(dest / "out" / "staging") == str(out / "host")  # links are data


def test_round_trip_of_several_targets(store, tmp_path, out):
    build_tree(out)
    images = tmp_path / "images"
    write(images / "sdcard.img", b"\0" * 4096)
    write(images / "boot" / "zImage", random_bytes(5000, 1))
    targets = [Target("images", images), Target("out", out)]
    expected = {t.name: describe(t.path) for t in targets}
    dest = capture_restore(store, tmp_path, targets)
    assert sorted(os.listdir(dest)) == ["images", "out"]
    assert {name: describe(dest / name) for name in expected} == expected


def test_targets_are_captured_and_restored_in_the_order_the_anchor_gives(store, tmp_path, out):
    # Anchor.targets() is a list in the anchor's order; nothing asks it to be sorted by name
    write(out / "build" / "x", "x")
    images = tmp_path / "images"
    write(images / "sdcard.img", b"\1" * 100)
    targets = [Target("out", out), Target("images", images)]
    dest = capture_restore(store, tmp_path, targets)
    assert (dest / "out" / "build" / "x").read_text() == "x"
    assert (dest / "images" / "sdcard.img").read_bytes() == b"\1" * 100


def test_a_target_root_that_is_no_directory_is_refused(store, tmp_path, out):
    with pytest.raises(CheckpointError, match="'out'.*missing"):
        store.capture([Target("out", tmp_path / "missing")])
    write(tmp_path / "file", "x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        store.capture([Target("out", tmp_path / "file")])
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(CheckpointError, match="is not a directory"):
        store.capture([Target("out", tmp_path / "link")])


@pytest.mark.parametrize("name", ["a/b", "..", "", ".hidden"])
def test_capture_refuses_unsafe_target_names(store, out, name):
    with pytest.raises(CheckpointError, match="invalid target name"):
        store.capture([Target(name, out)])


def test_capture_refuses_a_target_name_used_twice(store, tmp_path, out):
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(CheckpointError, match="twice"):
        store.capture([Target("o", out), Target("o", other)])


def test_exclude_names_entries_at_each_target_root_only(store, tmp_path, out):
    write(out / MARKER, "{}")
    write(out / "build" / MARKER, "nested, kept")
    images = tmp_path / "images"
    write(images / MARKER, "{}")
    write(images / "x", "x")
    dest = capture_restore(store, tmp_path, [Target("images", images), Target("out", out)], exclude=EXCLUDED)
    assert not (dest / "out" / MARKER).exists()
    assert not (dest / "images" / MARKER).exists()
    assert (dest / "out" / "build" / MARKER).read_text() == "nested, kept"
    assert (dest / "images" / "x").read_text() == "x"


def test_hard_linked_symlinks_come_back_as_symlinks_with_their_text(store, tmp_path, out):
    # rsync --link-dest makes them (Buildroot's per-package dirs); links are data, so each
    # name is a symlink of its own with the same text (not the same inode)
    os.symlink("/opt/toolchain/bin/ar", out / "ar")
    os.link(out / "ar", out / "ar-again", follow_symlinks=False)
    assert os.lstat(out / "ar-again").st_nlink == 2
    dest = capture_restore(store, tmp_path, [Target("out", out)])
    assert os.readlink(dest / "out" / "ar") == os.readlink(dest / "out" / "ar-again") == "/opt/toolchain/bin/ar"


def test_hard_links_across_directories_and_to_an_excluded_name(store, tmp_path, out):
    head = write(out / "a" / "lib.so", "lib")
    os.link(head, out / "z-lib.so")
    os.link(head, out / "a" / "b-lib.so")
    os.link(head, out / MARKER)  # the excluded name holds another link to it
    dest = capture_restore(store, tmp_path, [Target("out", out)], exclude=EXCLUDED)
    inodes = {os.lstat(dest / "out" / rel).st_ino for rel in ("a/lib.so", "a/b-lib.so", "z-lib.so")}
    assert len(inodes) == 1
    assert os.lstat(dest / "out" / "a" / "lib.so").st_nlink == 3
    assert (dest / "out" / "z-lib.so").read_text() == "lib"


def test_a_hard_link_across_targets_is_restored_as_one(store, tmp_path, out):
    # targets are written into one staging dir, so a link to an earlier target's file holds
    head = write(out / "lib.so", "lib")
    images = tmp_path / "zimages"
    images.mkdir()
    os.link(head, images / "lib.so")
    dest = capture_restore(store, tmp_path, [Target("out", out), Target("zimages", images)])
    assert (dest / "zimages" / "lib.so").stat().st_ino == (dest / "out" / "lib.so").stat().st_ino
    assert (dest / "zimages" / "lib.so").read_text() == "lib"


def test_a_file_of_several_chunks_and_an_empty_tree(store, tmp_path, out):
    data = random_bytes(9 * SMALL_FILE, 2)
    write(out / "big", data)
    info = store.capture([Target("out", out)])
    entries = {e.path: e for e in tree.entries(store.packs, manifest_of(info, ["out"]))}
    chunks = entries["out/big"].chunks
    assert chunks is not None and len(chunks) > 3
    assert b"".join(store.packs.read(c, store.packs.locate([c])[c], n) for c, n in chunks) == data
    assert entries["out/big"].digest == chunking.chunk_id(data)

    empty = tmp_path / "empty"
    empty.mkdir()
    dest = capture_restore(store, tmp_path, [Target("empty", empty)])
    assert list((dest / "empty").iterdir()) == []


# -- what capture stores ------------------------------------------------------------------


def test_capture_of_an_unchanged_tree_is_deterministic_and_stores_nothing(store, tmp_path, out):
    build_tree(out)
    targets = [Target("out", out)]
    first = store.capture(targets)
    assert first.new_bytes > 0 and first.packs
    for path in out.rglob("*"):  # new atimes; utime changes the ctimes too
        st = path.lstat()
        os.utime(path, ns=(st.st_atime_ns + 5 * 10**9, st.st_mtime_ns), follow_symlinks=False)
    second = store.capture(targets)
    assert second.parts == first.parts
    assert (second.entries, second.files, second.size, second.chunks) == \
        (first.entries, first.files, first.size, first.chunks)
    assert second.new_bytes == 0 and second.packs == []
    assert second.packed == first.packed


def test_capture_after_a_one_file_change_stores_only_that_file(store, out):
    for index in range(40):
        write(out / "pkg" / f"file-{index:02}", random_bytes(100_000, index))
    targets = [Target("out", out)]
    first = store.capture(targets)
    write(out / "pkg" / "file-17", random_bytes(100_000, 1000))
    second = store.capture(targets)
    assert second.parts != first.parts
    part_bytes = sum(p["size"] for p in second.parts)
    assert 100_000 <= second.new_bytes <= 100_000 + part_bytes + 1024
    assert second.new_bytes < first.new_bytes / 20


def test_an_insertion_in_a_large_file_changes_only_the_chunks_around_it(store, out):
    data = random_bytes(24 * SMALL_FILE, 3)
    write(out / "rootfs.ext2", data)
    targets = [Target("out", out)]
    first = store.capture(targets)
    middle = len(data) // 2
    write(out / "rootfs.ext2", data[:middle] + b"inserted" * 100 + data[middle:])
    second = store.capture(targets)

    def chunks_of(info):
        (entry,) = [e for e in tree.entries(store.packs, manifest_of(info, ["out"])) if e.type == "f"]
        return entry.chunks

    before, after = chunks_of(first), chunks_of(second)
    assert len(before) >= 12
    changed = [c for c in after if c not in before]
    assert 1 <= len(changed) <= 3  # FastCDC: only the cut around the insertion moves
    assert after[:2] == before[:2] and after[-2:] == before[-2:]
    assert second.new_bytes <= sum(n for _, n in changed) + 64 * 1024 + sum(p["size"] for p in second.parts)


# -- receipts -----------------------------------------------------------------------------


def refuse_reads(monkeypatch) -> None:
    def no_read(*args, **kwargs):
        raise AssertionError("capture read a file its receipt vouches for")

    monkeypatch.setattr(chunking, "cut", no_read)


def test_a_capture_with_the_receipt_reads_no_file(store, tmp_path, out, monkeypatch):
    build_tree(out)
    targets = [Target("out", out)]
    read = []
    first = store.capture(targets, progress=read.append)
    assert sum(read) == first.size  # the first capture reads every byte
    read.clear()
    refuse_reads(monkeypatch)
    second = store.capture(targets, receipts={"out": first.receipts["out"]}, progress=read.append)
    assert read == []
    assert second.parts == first.parts and second.new_bytes == 0
    monkeypatch.undo()
    dest = tmp_path / "restored"
    store.restore(manifest_of(second, ["out"]), dest)
    assert describe(dest / "out") == describe(out)


def test_a_capture_with_the_receipt_writes_again_the_lines_of_the_files_it_vouches_for(store, tmp_path, out,
                                                                                    monkeypatch):
    """A file the receipt vouches for, recorded at its captured mtime and with its mode, gets
    the receipt's line as it is, not one made anew; one recorded otherwise gets a new line."""
    from gaia_core.checkpoints import receipt

    build_tree(out)
    targets = [Target("out", out)]
    first = store.capture(targets)
    files = {r.path for r in records(first.receipts["out"]) if r.type == "f" and r.size}
    files.remove("out/host/bin/tool-alias")  # a hard link's second name: no content of its own to vouch for
    encoded: list[str] = []
    encode = receipt._encode
    monkeypatch.setattr(receipt, "_encode", lambda r: encoded.append(r.path) or encode(r))
    second = store.capture(targets, receipts={"out": first.receipts["out"]})
    assert list(receipt.lines(second.receipts["out"])) == list(receipt.lines(first.receipts["out"]))
    assert files and not files & set(encoded)

    # as a restore records them: each says which captured mtime its placed one stands for,
    # which the capture of that tree records no more
    placed = tmp_path / "placed-receipt"
    writer = receipt.ReceiptWriter(placed, {})
    for r in records(first.receipts["out"]):
        writer.add(receipt.Record(**{**{f: getattr(r, f) for f in r.__slots__}, "captured_ns": r.mtime_ns - 1}))
    writer.commit()
    assert any(b'"o":' in line for line in receipt.lines(placed))
    encoded.clear()
    third = store.capture(targets, receipts={"out": placed})
    assert files <= set(encoded) and not any(b'"o":' in line for line in receipt.lines(third.receipts["out"]))
    assert third.parts == first.parts

    # a mode the record does not say (a chmod within the ctime's tick): the line is made anew
    stamp = out / "build" / "pkg" / ".stamp_built"
    stamp.chmod(0o600)
    monkeypatch.setattr(receipt.Record, "matches", lambda self, st: True)
    encoded.clear()
    fourth = store.capture(targets, receipts={"out": second.receipts["out"]})
    assert "out/build/pkg/.stamp_built" in encoded and not (files - {"out/build/pkg/.stamp_built"}) & set(encoded)
    (record,) = [r for r in records(fourth.receipts["out"]) if r.path == "out/build/pkg/.stamp_built"]
    assert record.mode == 0o600


def test_the_receipt_records_every_entry_as_lstat_shows_it(store, out):
    build_tree(out)
    info = store.capture([Target("out", out)], exclude=EXCLUDED)
    recorded = {r.path: r for r in records(info.receipts["out"])}
    entries = list(tree.entries(store.packs, manifest_of(info, ["out"])))
    assert list(recorded) == [e.path for e in entries]
    for entry in entries:
        rel = entry.path.partition("/")[2]
        st = os.lstat(os.path.join(os.fsencode(out), os.fsencode(rel)) if rel else out)
        assert recorded[entry.path].matches(st), entry.path
        if entry.type == "f":
            assert (recorded[entry.path].digest, recorded[entry.path].chunks) == (entry.digest, entry.chunks)


def test_a_file_rewritten_with_its_size_and_mtime_is_read_again(store, tmp_path, out):
    stamp = write(out / "build" / ".stamp", "aaaa")
    write(out / "big", random_bytes(3 * SMALL_FILE, 4))
    targets = [Target("out", out)]
    first = store.capture(targets)
    st = stamp.lstat()
    stamp.write_text("bbbb")  # same size; the old mtime put back: only the ctime tells
    os.utime(stamp, ns=(st.st_atime_ns, st.st_mtime_ns))
    big = random_bytes(3 * SMALL_FILE, 5)
    big_st = (out / "big").lstat()
    write(out / "big", big, mtime=None)
    os.utime(out / "big", ns=(big_st.st_atime_ns, big_st.st_mtime_ns))
    assert stamp.lstat().st_mtime_ns == st.st_mtime_ns and stamp.lstat().st_ctime_ns != st.st_ctime_ns
    read = []
    second = store.capture(targets, receipts={"out": first.receipts["out"]}, progress=read.append)
    assert sum(read) == 4 + len(big)
    dest = tmp_path / "restored"
    store.restore(manifest_of(second, ["out"]), dest)
    assert (dest / "out" / "build" / ".stamp").read_text() == "bbbb"
    assert (dest / "out" / "big").read_bytes() == big


def test_a_capture_with_the_receipt_keeps_the_roots_the_files_embed(store, tmp_path, out, monkeypatch):
    write(out / "build" / "config.status", f"prefix='{out}/host'\n")
    write(out / "host" / "lib" / "libfoo.so", b"\x7fELF\0" + f"{out}/host/lib".encode() + b"\0")
    write(out / "plain", "nothing to see\n")
    targets = [Target("out", out)]
    first = store.capture(targets, roots={"out": out})
    assert [e["path"] for e in first.embedded] == ["out/build/config.status", "out/host/lib/libfoo.so"]
    refuse_reads(monkeypatch)
    second = store.capture(targets, roots={"out": out}, receipts={"out": first.receipts["out"]})
    assert second.embedded == first.embedded
    assert [(r.path, r.embedded) for r in records(second.receipts["out"]) if r.embedded] == \
        [("out/build/config.status", ("text", ("out",))), ("out/host/lib/libfoo.so", ("binary", ("out",)))]


def test_a_file_a_restore_rewrote_for_other_paths_is_read_again(store, tmp_path, out):
    # its receipt gives the captured content's digest, not what relocation made of it
    from gaia_core.checkpoints.receipt import ReceiptWriter, record_of

    captured = b"prefix='/old/ws/out'\n"
    store_chunks(store, [captured])  # the store has what the receipt names
    config = write(out / "config.status", "prefix='/new/ws/out'\n")
    receipt = tmp_path / "receipt"
    writer = ReceiptWriter(receipt, {})
    writer.add(record_of("out", out.lstat()))
    writer.add(record_of("out/config.status", config.lstat(), digest=chunking.chunk_id(captured), relocated=True))
    writer.commit()
    read = []
    info = store.capture([Target("out", out)], receipts={"out": receipt}, progress=read.append)
    assert sum(read) == config.stat().st_size
    dest = tmp_path / "restored"
    store.restore(manifest_of(info, ["out"]), dest)
    assert (dest / "out" / "config.status").read_text() == "prefix='/new/ws/out'\n"


def test_unchanged_files_are_looked_up_in_the_store_a_window_at_a_time(store, out, monkeypatch):
    # one query for many files the receipt vouches for, not one a file (500k entries)
    for n in range(600):
        write(out / f"d{n % 7}" / f"f{n}", f"content {n}")
    targets = [Target("out", out)]
    first = store.capture(targets)
    queries = []
    real = type(store.packs).locate

    def locate(self, chunks):
        queries.append(len(chunks))
        return real(self, chunks)

    monkeypatch.setattr(type(store.packs), "locate", locate)
    refuse_reads(monkeypatch)
    second = store.capture(targets, receipts={"out": first.receipts["out"]})
    assert second.parts == first.parts
    assert sum(queries) >= 600 and len(queries) <= 10, queries


def test_a_receipt_naming_chunks_the_store_lost_reads_the_files(tmp_path, out):
    # the receipt vouches for the tree, but its chunks are gone (gc, another store): read after all
    write(out / "small", "small")
    big = random_bytes(6 * SMALL_FILE, 6)
    write(out / "big", big)
    targets = [Target("out", out)]
    first_store = Store(tmp_path / "first")
    other = Store(tmp_path / "other")
    try:
        first = first_store.capture(targets)
        second = other.capture(targets, receipts={"out": first.receipts["out"]})
        assert second.parts == first.parts
        dest = tmp_path / "restored"
        other.restore(manifest_of(second, ["out"]), dest)
        assert (dest / "out" / "big").read_bytes() == big
        assert (dest / "out" / "small").read_text() == "small"
    finally:
        first_store.close()
        other.close()


def test_a_receipt_of_another_tree_vouches_for_nothing_it_does_not_match(store, tmp_path, out):
    write(out / "a", "one")
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "a", "two")
    first = store.capture([Target("out", elsewhere)])
    read = []
    second = store.capture([Target("out", out)], receipts={"out": first.receipts["out"]}, progress=read.append)
    assert sum(read) == 3
    dest = tmp_path / "restored"
    store.restore(manifest_of(second, ["out"]), dest)
    assert (dest / "out" / "a").read_text() == "one"


# -- what capture refuses -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "what"), [("fifo", "a fifo"), ("character device", "a device"),
                                           ("block device", "a device")])
def test_capture_refuses_devices_and_fifos_naming_the_member(store, out, kind, what):
    (out / "build").mkdir()
    node = out / "build" / "node"
    if kind == "fifo":
        os.mkfifo(node)
    else:
        mode = stat.S_IFCHR if kind == "character device" else stat.S_IFBLK
        os.mknod(node, mode | 0o600, os.makedev(1, 3))
    with pytest.raises(UnsafeEntry, match=f"member 'out/build/node': {what} is not allowed"):
        store.capture([Target("out", out)])
    assert store.packs.local_packs() == {}  # nothing entered the store


def test_capture_refuses_a_socket_naming_the_member(store, out, monkeypatch):
    (out / "run").mkdir()
    monkeypatch.chdir(out / "run")  # a short socket path, whatever tmp_path is
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("control")
        with pytest.raises(UnsafeEntry, match="member 'out/run/control': a socket is not allowed"):
            store.capture([Target("out", out)])


def test_capture_refusing_a_fifo_after_a_large_file_does_not_hang(tmp_path):
    # the large file's reader streams its chunks into a small queue that nobody drains
    # once the walk has failed: the capture must still end (and name the fifo)
    out = tmp_path / "out"
    write(out / "big", random_bytes(24 * SMALL_FILE, 7))
    os.mkfifo(out / "zz-fifo")
    code = f"""
from pathlib import Path
from tree_store import Store
from gaia_core.anchors import Target
store = Store(Path({str(tmp_path / 'store')!r}))
try:
    store.capture([Target("out", Path({str(out)!r}))])
except Exception as exc:
    print(type(exc).__name__, exc)
store.close()
"""
    done = run_isolated(code)
    assert "member 'out/zz-fifo': a fifo is not allowed" in done.stdout, done.stderr


class GrowingWalk:
    """Runs ``change(path)`` on the file ``name`` right after the walk took its lstat,
    before capture reads it: a file that changes while it is captured."""

    def __init__(self, monkeypatch, name: str, change):
        real = treecapture.walk

        def walk(*args, **kwargs):
            for item in real(*args, **kwargs):
                if item[0].endswith("/" + name):
                    change(Path(os.fsdecode(item[1])))
                yield item

        monkeypatch.setattr(treecapture, "walk", walk)


@pytest.mark.parametrize("size", [1000, 3 * SMALL_FILE])
@pytest.mark.parametrize("how", ["grows", "shrinks"])
def test_capture_refuses_a_file_that_changes_size_while_read(store, out, monkeypatch, size, how):
    write(out / "log", random_bytes(size, 8))

    def change(path: Path) -> None:
        if how == "grows":
            with open(path, "ab") as f:
                f.write(b"more")
        else:
            os.truncate(path, size - 10)

    GrowingWalk(monkeypatch, "log", change)
    with pytest.raises(CheckpointError, match="'out/log': it changed while it was read"):
        store.capture([Target("out", out)])
    assert store.packs.local_packs() == {}


@pytest.mark.parametrize("by", ["file", "fifo", "symlink"])
def test_capture_refuses_a_file_replaced_after_the_walk_saw_it(store, tmp_path, out, monkeypatch, by):
    write(out / "f", "original")
    secret = write(tmp_path / "secret", "secret")

    def replace(path: Path) -> None:
        if by == "file":  # same size, another inode (made while the first still exists)
            write(path.with_name("new"), "replaced").replace(path)
            return
        path.unlink()
        if by == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(secret)

    GrowingWalk(monkeypatch, "f", replace)
    with pytest.raises(CheckpointError, match="'out/f'"):
        store.capture([Target("out", out)])


# -- write_tree ---------------------------------------------------------------------------


def test_restore_strips_setid_bits_and_reports_them(store, tmp_path, out):
    (out / "bin").mkdir()
    su = write(out / "bin" / "su", "#!/bin/sh\n")
    mail = write(out / "bin" / "mail", "x")
    plain = write(out / "bin" / "plain", "y")
    os.link(su, out / "bin" / "su-again")
    su.chmod(0o4755)
    mail.chmod(0o6711)
    plain.chmod(0o750)
    (out / "bin").chmod(0o2755)
    dest = tmp_path / "restored"
    _, result = store.round_trip([Target("out", out)], dest)
    expected = {"bin": 0o755, "bin/su": 0o755, "bin/su-again": 0o755, "bin/mail": 0o711, "bin/plain": 0o750}
    for rel, mode in expected.items():
        assert stat.S_IMODE((dest / "out" / rel).lstat().st_mode) == mode, rel
    assert sorted(result.stripped_setid) == ["out/bin", "out/bin/mail", "out/bin/su"]


def test_restore_gives_every_entry_to_the_restoring_user(store, tmp_path, out):
    foreign = 3_000_000
    write(out / "d" / "f", "x")
    (out / "d" / "l").symlink_to("f")
    for path in [out / "d", out / "d" / "f", out / "d" / "l"]:
        os.chown(path, foreign, foreign, follow_symlinks=False)
    dest = tmp_path / "restored"
    store.round_trip([Target("out", out)], dest)
    for rel in ("d", "d/f", "d/l"):
        st = (dest / "out" / rel).lstat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), rel


def test_write_tree_refuses_a_staging_dir_that_is_not_empty(store, tmp_path, out):
    write(out / "f", "x")
    info = store.capture([Target("out", out)])
    dest = tmp_path / "restored"
    write(dest / "leftover", "x")
    with pytest.raises(CheckpointError, match="not empty"):
        write_tree(tree.entries(store.packs, manifest_of(info, ["out"])), dest, store.packs)
    assert sorted(os.listdir(dest)) == ["leftover"]


def test_write_tree_never_creates_a_file_through_a_link(store, tmp_path):
    # write_tree trusts checked entries for their parents; its own last line of defence is
    # O_EXCL | O_NOFOLLOW: a name that exists (here a link written first) is never opened
    victim = write(tmp_path / "victim", "untouched")
    entries = [dir_entry("t"), link_entry("t/f", str(victim)), file_entry("t/f", b"owned")]
    store_chunks(store, [b"owned"])
    dest = tmp_path / "restored"
    dest.mkdir()
    with pytest.raises(FileExistsError):
        write_tree(iter(entries), dest, store.packs)
    assert victim.read_text() == "untouched"


def open_files_under(root: Path) -> list[str]:
    """The files under ``root`` this process holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{root}/"):
                held.append(target)
    return held


def large_file_tree(out: Path, chunks: int = 11) -> bytes:
    data = random_bytes(chunks * SMALL_FILE + 777, 5)
    big = write(out / "bin" / "big", data)
    big.chmod(0o751)
    os.utime(big, ns=(OLD * 10**9 + 123456789, OLD * 10**9 + 123456789))
    write(out / "bin" / "small", "small")
    return data


def test_a_large_file_is_written_in_pieces_at_their_offsets(store, tmp_path, out, monkeypatch):
    data = large_file_tree(out)
    before = describe(out)
    pieces = []
    real = treewrite._Writer._write_piece

    def piece(self, large, offset, run):
        pieces.append(offset)
        return real(self, large, offset, run)

    monkeypatch.setattr(treewrite._Writer, "_write_piece", piece)
    dest = capture_restore(store, tmp_path, [Target("out", out)])
    assert len(pieces) > 1 and 0 in pieces  # each piece a task the workers share
    assert (dest / "out" / "bin" / "big").read_bytes() == data
    assert describe(dest / "out") == before  # mode and ns mtime set once every piece was written


def test_a_damaged_chunk_of_a_large_file_fails_the_restore_and_leaves_it_closed(store, tmp_path, out):
    large_file_tree(out)
    info = store.capture([Target("out", out)])
    entries = {e.path: e for e in tree.entries(store.packs, manifest_of(info, ["out"]))}
    chunk = entries["out/bin/big"].chunk_list()[5][0]
    location = store.packs.locate([chunk])[chunk]
    path = store.packs.pack_path(location.pack)
    raw = bytearray(path.read_bytes())
    raw[location.offset + location.clen // 2] ^= 0x20
    path.write_bytes(raw)
    dest = tmp_path / "restored"
    with pytest.raises(ChunkCorrupt, match=f"chunk {chunk.hex()[:16]}"):
        store.restore(manifest_of(info, ["out"]), dest)
    assert open_files_under(dest) == []
    assert store.packs.locate([chunk]) == {}  # the damaged chunk is fetched again next time


@pytest.mark.parametrize("when", [1, 2])
def test_a_restore_cancelled_while_a_large_file_is_written_leaves_it_closed(store, tmp_path, out, when,
                                                                            monkeypatch):
    large_file_tree(out, chunks=24)
    info = store.capture([Target("out", out)])
    # one worker and pieces of a chunk: pieces are still queued when the cancel comes
    monkeypatch.setattr(treewrite, "_WORKERS", 1)
    monkeypatch.setattr(treewrite, "_GROUP_BYTES", SMALL_FILE)
    progress, cancel = cancel_on_call(when)
    dest = tmp_path / "restored"
    with pytest.raises(Cancelled):
        store.restore(manifest_of(info, ["out"]), dest, progress=progress)
    assert pool_threads("gaia-restore") == []
    assert open_files_under(dest) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000])
def test_files_get_their_modes_whatever_the_umask(store, tmp_path, out, umask):
    modes = {"a": 0o644, "b": 0o664, "c": 0o755, "d": 0o600, "e": 0o777, "f": 0o400, "g": 0o070}
    for name, mode in modes.items():
        write(out / name, name).chmod(mode)
    write(out / "big", random_bytes(6 * SMALL_FILE, 3)).chmod(0o664)  # written in pieces
    modes["big"] = 0o664
    info = store.capture([Target("out", out)])
    previous = os.umask(umask)
    try:
        assert treewrite._umask() == umask
        dest = tmp_path / "restored"
        store.restore(manifest_of(info, ["out"]), dest)
    finally:
        os.umask(previous)
    assert {name: stat.S_IMODE((dest / "out" / name).stat().st_mode) for name in modes} == modes


def test_a_directory_of_small_files_is_one_task_not_shared_with_the_next(store, tmp_path, out, monkeypatch):
    # threads creating files in one directory at once wait on its lock: each directory's
    # files go to one task when they fit
    for directory in ("a", "b", "c"):
        for index in range(30):
            write(out / directory / f"f{index:02}", f"{directory}{index}")
    tasks = []
    real = treewrite._Writer._write_files

    def spy(self, group):
        tasks.append(sorted({os.path.dirname(path) for path, *_ in group}))
        return real(self, group)

    monkeypatch.setattr(treewrite._Writer, "_write_files", spy)
    dest = capture_restore(store, tmp_path, [Target("out", out)])
    assert sorted(len(dirs) for dirs in tasks) == [1, 1, 1]
    assert sorted(os.listdir(dest / "out" / "b")) == [f"f{index:02}" for index in range(30)]


@pytest.mark.parametrize("at_once", [True, False])
def test_the_first_files_are_handed_out_after_a_small_batch_when_helpers_start_at_once(store, tmp_path, out,
                                                                                       monkeypatch, at_once):
    # helpers started at once wait for the first batch: it ends at the first directory that
    # takes it past _FIRST_BATCH files (a directory's files stay in one task), the next ones
    # at _BATCH; without them (an update's few files, a small restore) every batch is
    # _BATCH (threads writing the first files slowed an update's walk of the tree down)
    for directory, count in (("a", 40), ("b", 40), ("c", 600)):
        for index in range(count):
            write(out / directory / f"f{index:03}", f"{directory}{index}")
    batches = []
    real = treewrite._Writer.flush

    def spy(self):
        batches.append(len(self.batch))
        return real(self)

    monkeypatch.setattr(treewrite._Writer, "flush", spy)
    monkeypatch.setattr(treewrite, "PROCESS_AFTER", 600 if at_once else 10_000)
    info = store.capture([Target("out", out)])
    dest = tmp_path / "restored"
    store.restore(manifest_of(info, [Target("out", out)]), dest, files=info.files)
    expected = [80, treewrite._BATCH] if at_once else [treewrite._BATCH, 680 - treewrite._BATCH]
    assert [n for n in batches if n][:2] == expected
    assert len(os.listdir(dest / "out" / "c")) == 600


def test_directory_mtimes_are_set_after_their_content(store, tmp_path, out):
    # many files and links written into each directory after it was created, links made last
    for index in range(700):  # more than one batch of files
        write(out / "a" / f"f{index:03}", f"{index}")
    (out / "a" / "link").symlink_to("f000")
    os.link(out / "a" / "f000", out / "a" / "zz-hard")
    write(out / "a" / "b" / "c" / "deep", "deep")
    set_distinct_mtimes(out)
    (out / "a").chmod(0o555)  # written into before its mode is set
    before = describe(out)
    dest = capture_restore(store, tmp_path, [Target("out", out)])
    assert describe(dest / "out") == before


class Cancelled(BrokenPipeError):
    """An OSError on purpose: it must not be mistaken for a disk problem."""


def cancel_on_call(number: int):
    calls = []
    cancel = Cancelled("cancelled by the user")

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == number:
            raise cancel

    return progress, cancel


def pool_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


@pytest.mark.parametrize("when", [1, 2])
def test_an_exception_from_progress_ends_write_tree_unchanged_and_its_workers(store, tmp_path, out, when):
    for index in range(1200):  # several batches of files
        write(out / f"f{index:04}", f"file {index}")
    write(out / "big", random_bytes(3 * SMALL_FILE, 9))
    info = store.capture([Target("out", out)])
    progress, cancel = cancel_on_call(when)
    dest = tmp_path / "restored"
    dest.mkdir()
    with pytest.raises(Cancelled) as raised:
        write_tree(tree.entries(store.packs, manifest_of(info, ["out"])), dest, store.packs, progress=progress)
    assert raised.value is cancel
    assert pool_threads("gaia-restore") == []


@pytest.mark.parametrize("when", [1, 2])
def test_an_exception_from_progress_ends_capture_unchanged_and_its_workers(tmp_path, when):
    # a large file streams its chunks to the capture: cancelled in the middle of it
    out = tmp_path / "out"
    write(out / "a-small", "small")
    write(out / "big", random_bytes(24 * SMALL_FILE, 10))
    code = f"""
import threading
from pathlib import Path
from tree_store import Store
from gaia_core.anchors import Target

class Cancelled(BrokenPipeError):
    pass

cancel = Cancelled("cancelled by the user")
calls = []

def progress(n):
    calls.append(n)
    if len(calls) == {when}:
        raise cancel

store = Store(Path({str(tmp_path / 'store')!r}))
try:
    store.capture([Target("out", Path({str(out)!r}))], progress=progress)
except Cancelled as exc:
    print("same" if exc is cancel else "other")
print("workers", len([t for t in threading.enumerate() if t.name.startswith("gaia-capture")]))
print("packs", len(store.packs.local_packs()))
store.close()
"""
    done = run_isolated(code)
    assert done.stdout.split("\n")[:3] == ["same", "workers 0", "packs 0"], done.stderr


def test_progress_counts_bytes_read_at_capture_and_written_at_restore(store, tmp_path, out):
    build_tree(out)
    seen = []
    info = store.capture([Target("out", out)], progress=seen.append)
    assert sum(seen) == info.size and len(seen) > 1 and all(seen)
    seen.clear()
    dest = tmp_path / "restored"
    result = store.restore(manifest_of(info, ["out"]), dest, progress=seen.append)
    assert sum(seen) == info.size == result.written and all(seen)
    assert result.entries == info.entries and result.files_written == info.files


# -- bounded memory -----------------------------------------------------------------------


@pytest.mark.slow
def test_capture_and_restore_of_a_200_mib_file_keep_memory_bounded(store, tmp_path, out):
    with open(out / "big.img", "wb") as f:  # half random (stored), half zeros
        f.writelines(random_bytes(1 << 20, index) if index % 2 else bytes(1 << 20) for index in range(200))
    targets = [Target("out", out)]
    tracemalloc.start()
    try:
        info = store.capture(targets)
        _, capture_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        dest = tmp_path / "restored"
        store.restore(manifest_of(info, targets), dest)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (dest / "out" / "big.img").stat().st_size == 200 << 20
    assert capture_peak < 64 << 20, capture_peak
    assert restore_peak < 64 << 20, restore_peak


def test_small_files_before_large_ones_never_wait_behind_the_large_ones_streams(store, tmp_path, monkeypatch):
    """Two workers, both streaming a large file whose pieces only the walk takes: a batch of
    small files that the walk finishes first must already be queued before them."""
    import threading

    from gaia_core.checkpoints import treecapture

    monkeypatch.setattr(treecapture, "_WORKERS", 2)
    monkeypatch.setattr(treecapture, "WINDOW", 2)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a-small.txt").write_text("small\n")
    for name in ("b-large.bin", "c-large.bin", "d-large.bin"):
        (root / name).write_bytes(os.urandom(6 << 20))
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(store.capture([Target("t", root)])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "capture deadlocked: a small file's batch waited behind streams nobody read"
