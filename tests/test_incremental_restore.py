"""An update in place (issue 17 point 3): a tree that holds checkpoint A, with its receipt,
brought to checkpoint B by writing only what differs.

What it owes the tree beyond the content: every mtime in B's captured order (what make
sees), newer than the inputs, with the entries it left alone keeping the mtimes the last
placement gave them (no second write of every entry); and a receipt that matches ``lstat``
of every entry afterwards, taken without walking the tree again.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest
from mtime_order import filesystem_now, mtimes, ranks
from tree_store import OLD, Store, describe, manifest_of, write

from gaia_core.anchors import Target
from gaia_core.checkpoints import tree, treewrite
from gaia_core.checkpoints.mtimes import place_mtimes
from gaia_core.checkpoints.receipt import RECEIPT, records
from gaia_core.checkpoints.treewrite import receipts_of_restored, update_tree, write_tree

EXCLUDED = (RECEIPT,)
NS = 10**9


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "store")
    yield store
    store.close()


def stamp(path: Path, seconds: float) -> None:
    ns = OLD * NS + int(seconds * NS)
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def build_a(src: Path) -> None:
    """A small out dir: packages with stamps, a hard-linked tool, links, mtimes spread out."""
    for index in range(6):
        pkg = src / "build" / f"pkg{index}"
        write(pkg / "file.c", f"source {index}\n")
        write(pkg / ".stamp_built", "")
        stamp(pkg / "file.c", 10 * index)
        stamp(pkg / ".stamp_built", 10 * index + 5)
        stamp(pkg, 10 * index + 6)
    tool = write(src / "host" / "bin" / "tool", "#!/bin/sh\n")
    tool.chmod(0o755)
    (src / "host" / "bin" / "tool-alias").hardlink_to(tool)
    (src / "host" / "lib").symlink_to("bin")
    stamp(tool, 70)
    stamp(src / "host" / "lib", 71)
    stamp(src / "host" / "bin", 72)
    stamp(src / "host", 73)
    stamp(src / "build", 74)
    stamp(src, 75)


def captured_ranks(store: Store, manifest: dict) -> dict[str, int]:
    """Each entry's rank among the checkpoint's distinct captured mtimes (the top directory
    left out: gaia's marker and receipt are written into it after every restore)."""
    times = {}
    for entry in tree.raw_entries(store.packs, manifest):
        if "/" in entry.path:
            times[entry.path.partition("/")[2]] = entry.mtime_ns
    return ranks(times)


def disk_ranks(root: Path) -> dict[str, int]:
    times = mtimes(root, skip=EXCLUDED)
    del times["."]
    return ranks(times)


class Consumer:
    """A tree restored from A as a full restore leaves it: placed mtimes and a receipt."""

    def __init__(self, store: Store, tmp_path: Path, manifest: dict):
        self.store = store
        self.target = Target("out", tmp_path / "consumer" / "out")
        staged = tmp_path / "consumer" / "staged"
        staged.mkdir(parents=True)
        write_tree(tree.entries(store.packs, manifest), staged, store.packs)
        os.replace(staged / "out", self.target.path)
        place_mtimes([self.target.path], clock_dir=tmp_path / "consumer")
        receipts_of_restored([self.target], tree.raw_entries(store.packs, manifest), {}, EXCLUDED, set(), [])

    def update(self, manifest: dict, not_before_ns: int | None = None, relocating: frozenset[str] = frozenset()):
        packs = self.store.packs
        update = update_tree(tree.entries(packs, manifest), [self.target], packs,
                             receipts={"out": self.target.path / RECEIPT},
                             unchanged=lambda e, r: r.relocated == (e.path in relocating),
                             exclude=EXCLUDED, again=lambda: tree.raw_entries(packs, manifest),
                             relocating=relocating)
        placement = update.place(self.target.path.parent, not_before_ns)
        update.commit_receipts({}, set())
        return update, placement


def capture(store: Store, src: Path) -> dict:
    targets = [Target("out", src)]
    return manifest_of(store.capture(targets, exclude=EXCLUDED), targets)


def assert_receipt_true(target: Target, store: Store, manifest: dict) -> None:
    """The receipt lists every entry, each matching its lstat, with the content and captured
    mtime the checkpoint gives it."""
    recorded = {r.path: r for r in records(target.path / RECEIPT)}
    entries = list(tree.raw_entries(store.packs, manifest))
    assert list(recorded) == [e.path for e in entries]
    for entry in entries:
        rel = entry.path.partition("/")[2]
        st = os.lstat(target.path / rel if rel else target.path)
        record = recorded[entry.path]
        assert record.matches(st) or not rel, entry.path  # the receipt itself changes the top directory
        assert record.captured == entry.mtime_ns, entry.path
        if entry.type == "f":
            assert (record.digest, record.chunks) == (entry.digest, entry.chunks)


@pytest.fixture
def two(store: Store, tmp_path: Path):
    """Checkpoints A and B of one out dir: B rebuilt pkg2 (new content, newer mtimes), made
    pkg4's stamp again with the same content, dropped pkg5 and the tool's second name,
    and made a file read-only."""
    src = tmp_path / "src"
    build_a(src)
    a = capture(store, src)
    write(src / "build" / "pkg2" / "file.c", "source 2, changed\n")
    stamp(src / "build" / "pkg2" / "file.c", 100)
    stamp(src / "build" / "pkg2" / ".stamp_built", 101)
    stamp(src / "build" / "pkg4" / ".stamp_built", 102)  # same (empty) content, a new mtime
    for path in (src / "build" / "pkg5").iterdir():
        path.unlink()
    (src / "build" / "pkg5").rmdir()
    (src / "host" / "bin" / "tool-alias").unlink()
    (src / "build" / "pkg1" / "file.c").chmod(0o444)
    stamp(src / "build" / "pkg2", 103)
    stamp(src / "host" / "bin", 104)
    stamp(src / "build", 105)
    stamp(src, 106)
    b = capture(store, src)
    return src, a, b


def test_an_update_leaves_the_untouched_entries_alone_and_keeps_the_captured_order(store, tmp_path, two):
    src, a, b = two
    consumer = Consumer(store, tmp_path, a)
    before = {p.relative_to(consumer.target.path).as_posix(): p.lstat()
              for p in consumer.target.path.rglob("*") if p.name != RECEIPT}
    update, placement = consumer.update(b)
    out = consumer.target.path
    assert describe(out, skip=EXCLUDED).keys() == describe(src).keys()
    assert (out / "build" / "pkg2" / "file.c").read_text() == "source 2, changed\n"
    assert disk_ranks(out) == captured_ranks(store, b)  # make sees B's order
    # what the update did not touch was not written again, not even its mtime
    for rel in ("build/pkg0/file.c", "build/pkg0/.stamp_built", "build/pkg3/file.c", "host/lib"):
        st = (out / rel).lstat()
        assert (st.st_mtime_ns, st.st_ctime_ns) == (before[rel].st_mtime_ns, before[rel].st_ctime_ns), rel
    # what B made anew (even with the same content) is newer than everything A had, up to now
    newest_kept = max(before[rel].st_mtime_ns for rel in ("build/pkg3/file.c", "host/lib"))
    assert (out / "build" / "pkg4" / ".stamp_built").lstat().st_mtime_ns > newest_kept
    assert (out / "build" / "pkg2" / "file.c").lstat().st_mtime_ns > newest_kept
    assert placement.at_ns <= filesystem_now(out.parent)
    assert stat.S_IMODE((out / "build" / "pkg1" / "file.c").lstat().st_mode) == 0o444
    # the tool is written anew too: it had a second name, which B drops
    assert update.written == {"out/build/pkg2/file.c", "out/host/bin/tool"}
    assert_receipt_true(consumer.target, store, b)


def test_the_receipt_after_an_update_lets_the_next_one_keep_as_much(store, tmp_path, two):
    src, a, b = two
    consumer = Consumer(store, tmp_path, a)
    consumer.update(b)
    write(src / "build" / "pkg0" / "file.c", "source 0, changed\n")
    stamp(src / "build" / "pkg0" / "file.c", 200)
    stamp(src / "build" / "pkg0", 201)
    stamp(src / "build", 202)
    stamp(src, 203)
    c = capture(store, src)
    kept_st = (consumer.target.path / "build" / "pkg2" / "file.c").lstat()
    update, _ = consumer.update(c)
    assert update.info.files_written == 1
    st = (consumer.target.path / "build" / "pkg2" / "file.c").lstat()
    assert (st.st_mtime_ns, st.st_ctime_ns) == (kept_st.st_mtime_ns, kept_st.st_ctime_ns)
    assert disk_ranks(consumer.target.path) == captured_ranks(store, c)
    assert_receipt_true(consumer.target, store, c)


def test_a_captured_mtime_between_two_kept_ones_places_every_entry_in_order(store, tmp_path):
    src = tmp_path / "src"
    build_a(src)
    a = capture(store, src)
    # pkg1's stamp is 15 s after its source; B's new one lies between A's stamps of pkg1 and pkg2
    write(src / "build" / "pkg1" / "file.c", "source 1, older\n")
    stamp(src / "build" / "pkg1" / "file.c", 18)
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    untouched = (consumer.target.path / "build" / "pkg0" / "file.c").lstat()
    consumer.update(b)
    assert disk_ranks(consumer.target.path) == captured_ranks(store, b)
    # no room between the kept mtimes: every entry was placed again, ending now
    assert (consumer.target.path / "build" / "pkg0" / "file.c").lstat().st_mtime_ns > untouched.st_mtime_ns
    assert_receipt_true(consumer.target, store, b)


def test_an_input_newer_than_the_kept_mtimes_moves_the_whole_tree_past_it(store, tmp_path, two):
    src, a, b = two
    consumer = Consumer(store, tmp_path, a)
    checked_out = filesystem_now(tmp_path)  # an input written after A was restored
    _, placement = consumer.update(b, not_before_ns=checked_out)
    for path in [consumer.target.path, *consumer.target.path.rglob("*")]:
        if path.name != RECEIPT:
            assert path.lstat().st_mtime_ns > checked_out, path
    assert placement.oldest_ns > checked_out
    assert disk_ranks(consumer.target.path) == captured_ranks(store, b)
    assert_receipt_true(consumer.target, store, b)


def test_past_the_touched_entries_it_tracks_an_update_places_and_records_every_entry(store, tmp_path, two,
                                                                                    monkeypatch):
    monkeypatch.setattr(treewrite, "MAX_TOUCHED", 2)
    src, a, b = two
    consumer = Consumer(store, tmp_path, a)
    update, _ = consumer.update(b)
    assert update.drafts is None
    assert disk_ranks(consumer.target.path) == captured_ranks(store, b)
    assert_receipt_true(consumer.target, store, b)


def test_hard_links_made_and_dropped_by_an_update_leave_a_true_receipt(store, tmp_path):
    src = tmp_path / "src"
    build_a(src)
    a = capture(store, src)
    (src / "host" / "bin" / "tool-alias").unlink()  # the tool loses a name ...
    (src / "build" / "pkg0" / "linked.c").hardlink_to(src / "build" / "pkg3" / "file.c")  # ... a file gains one
    stamp(src / "build" / "pkg0", 6)
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    consumer.update(b)
    out = consumer.target.path
    assert (out / "host" / "bin" / "tool").lstat().st_nlink == 1
    assert (out / "build" / "pkg0" / "linked.c").samefile(out / "build" / "pkg3" / "file.c")
    assert_receipt_true(consumer.target, store, b)
    assert disk_ranks(out) == captured_ranks(store, b)


def test_a_receipt_records_the_captured_mtime_of_an_entry_placed_elsewhere(tmp_path):
    from gaia_core.checkpoints.receipt import ReceiptWriter, keep_across, record_of

    root = tmp_path / "out"
    path = write(root / "f", "x")
    writer = ReceiptWriter(root / RECEIPT, {})
    st = path.lstat()
    writer.add(record_of("out/f", st, captured_ns=st.st_mtime_ns - 5))
    writer.add(record_of("out/g", st, captured_ns=st.st_mtime_ns))  # the same: not written
    writer.commit()
    first, second = records(root / RECEIPT)
    assert first.captured == st.st_mtime_ns - 5 and second.captured_ns is None
    # mtimes placed again in place: the receipt keeps what each one stands for
    keep_across([Target("out", root)], EXCLUDED, lambda: os.utime(path, ns=(5, 5)))
    (kept,) = records(root / RECEIPT)
    assert (kept.mtime_ns, kept.captured) == (5, st.st_mtime_ns - 5) and kept.matches(path.lstat())


def test_the_receipt_of_a_full_restore_records_what_is_there_and_never_what_lies_behind_a_link(
        store, tmp_path):
    """The receipt is taken by an ``lstat`` of each entry where the entry list says it is:
    what is not there is left out, and so is everything under a directory that something
    else replaced, a link to elsewhere above all (nothing is read through it)."""
    src = tmp_path / "src"
    build_a(src)
    manifest = capture(store, src)
    consumer = Consumer(store, tmp_path, manifest)
    root = consumer.target.path
    outside = tmp_path / "elsewhere"
    write(outside / "file.c", "not the tree's\n")
    write(outside / ".stamp_built", "")
    (root / "build" / "pkg0" / "file.c").unlink()  # gone
    for path in (root / "build" / "pkg1").iterdir():
        path.unlink()
    (root / "build" / "pkg1").rmdir()
    (root / "build" / "pkg1").symlink_to(outside)  # a directory replaced by a link out of the tree
    for path in (root / "build" / "pkg2").iterdir():
        path.unlink()
    (root / "build" / "pkg2").rmdir()
    write(root / "build" / "pkg2", "a file where a directory was\n")
    write(root / "build" / "extra", "not in the checkpoint\n")
    (root / RECEIPT).unlink()
    receipts_of_restored([consumer.target], tree.raw_entries(store.packs, manifest), {}, EXCLUDED, set(), [])
    recorded = {r.path: r for r in records(root / RECEIPT)}
    expected = [e.path for e in tree.raw_entries(store.packs, manifest)
                if e.path not in ("out/build/pkg0/file.c", "out/build/extra")
                and not e.path.startswith(("out/build/pkg1/", "out/build/pkg2/"))]
    assert list(recorded) == expected
    assert recorded["out/build/pkg1"].type == "l" and recorded["out/build/pkg2"].type == "f"
    for path, record in recorded.items():
        rel = path.partition("/")[2]
        assert record.matches(os.lstat(root / rel if rel else root)) or not rel, path


def test_a_receipt_is_read_up_to_its_first_line_that_is_not_one_record(tmp_path):
    import zstandard

    from gaia_core.checkpoints.receipt import ReceiptWriter, record_of

    root = tmp_path / "out"
    path = write(root / "f", "x")
    writer = ReceiptWriter(root / RECEIPT, {})
    writer.add(record_of("out/f", path.lstat()))
    writer.add_line(b'{"p":"out/g","t":"f","m":420,"n":1,"i":2,"c":3} {"p":"out/h"}\n')
    writer.add(record_of("out/i", path.lstat()))
    writer.commit()
    assert [r.path for r in records(root / RECEIPT)] == ["out/f"]
    data = zstandard.ZstdDecompressor().decompress((root / RECEIPT).read_bytes(), max_output_size=1 << 20)
    (root / RECEIPT).write_bytes(zstandard.ZstdCompressor().compress(data[:-5]))  # the last line cut short
    assert [r.path for r in records(root / RECEIPT)] == ["out/f"]


def test_a_draft_receipt_leaves_out_a_touched_entry_that_is_gone(tmp_path):
    from gaia_core.checkpoints.receipt import ReceiptDraft, Record, record_of

    root = tmp_path / "out"
    kept, touched = write(root / "a", "x"), write(root / "b", "y")
    draft = ReceiptDraft()
    draft.add(record_of("out/a", kept.lstat()))
    draft.add(Record("out/b", "?", 0, 0, 0, 0, digest=b"\1" * 32), os.fsencode(touched))
    draft.add(Record("out/c", "?", 0, 0, 0, 0), os.fsencode(root / "c"))
    os.chmod(touched, 0o600)
    draft.commit(root / RECEIPT, {"h": 1}, relocated={"out/b"})
    a, b = records(root / RECEIPT)
    assert a.matches(kept.lstat()) and b.matches(touched.lstat()) and (b.relocated, b.digest) == (True, b"\1" * 32)


def test_a_file_the_receipt_no_longer_vouches_for_is_read_and_kept_when_it_holds_the_content(store, tmp_path, two):
    src, a, b = two
    consumer = Consumer(store, tmp_path, a)
    out = consumer.target.path
    chmodded, edited, relocated = out / "build" / "pkg3" / "file.c", out / "build" / "pkg0" / "file.c", \
        out / "build" / "pkg1" / ".stamp_built"
    for path in (chmodded, relocated):
        path.chmod(stat.S_IMODE(path.lstat().st_mode))  # a build's chmod: only the ctime changes
    st = edited.lstat()
    edited.write_text("source X\n")  # the same size, its mtime put back: only the ctime tells
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    inodes = {p: p.lstat().st_ino for p in (chmodded, edited, relocated)}
    update, _ = consumer.update(b, relocating=frozenset({"out/build/pkg1/.stamp_built"}))
    assert chmodded.lstat().st_ino == inodes[chmodded]  # read, found whole, kept
    assert edited.read_text() == "source 0\n" and edited.lstat().st_ino != inodes[edited]
    assert relocated.lstat().st_ino != inodes[relocated]  # rewritten for other paths: cannot be told by its hash
    assert {"out/build/pkg0/file.c", "out/build/pkg1/.stamp_built"} <= update.written
    assert "out/build/pkg3/file.c" not in update.written
    assert disk_ranks(out) == captured_ranks(store, b)
    assert_receipt_true(consumer.target, store, b)


def test_a_large_file_the_receipt_no_longer_vouches_for_is_checked_by_its_entry_s_cuts_not_cut_again(
        store, tmp_path, monkeypatch):
    from gaia_core.checkpoints import chunking

    src = tmp_path / "src"
    build_a(src)
    rng = random.Random(5)
    kept_bytes, edited_bytes = rng.randbytes(5 << 20), rng.randbytes(5 << 20)
    write(src / "host" / "lib.a", "").write_bytes(kept_bytes)
    write(src / "host" / "lib.so", "").write_bytes(edited_bytes)
    a = capture(store, src)
    write(src / "build" / "pkg2" / "file.c", "source 2, changed\n")
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    out = consumer.target.path
    kept, edited = out / "host" / "lib.a", out / "host" / "lib.so"
    kept.chmod(stat.S_IMODE(kept.lstat().st_mode))  # only the ctime changes
    st = edited.lstat()
    with open(edited, "r+b") as f:  # one byte of its last chunk, the same size and mtime
        f.seek(len(edited_bytes) - 10)
        f.write(bytes([edited_bytes[-10] ^ 1]))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    inodes = {p: p.lstat().st_ino for p in (kept, edited)}
    monkeypatch.setattr(chunking, "_cut_large", lambda fd: pytest.fail("a file checked against its entry was cut"))
    update, _ = consumer.update(b)
    assert kept.lstat().st_ino == inodes[kept] and "out/host/lib.a" not in update.written
    assert edited.read_bytes() == edited_bytes and "out/host/lib.so" in update.written
    assert_receipt_true(consumer.target, store, b)


def test_a_restore_in_place_looks_chunks_up_once_and_reads_the_entry_list_once_whether_downloaded_or_local(
        gaia_cli, pm, project, monkeypatch):
    import shutil

    from counter_project import run

    from gaia_core.checkpoints import tree as tree_module

    project.shared.mkdir()
    for value in ("a", "b"):
        project.write(value=value, backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
        run(gaia_cli, pm, "run", project.build)
    lookups, reads = [], []
    needed, decode = tree_module.needed_chunks, tree_module.decode_part
    monkeypatch.setattr(tree_module, "needed_chunks",
                        lambda packs, manifest, held: lookups.append(1) or needed(packs, manifest, held))
    monkeypatch.setattr(tree_module, "decode_part", lambda data, where: reads.append(1) or decode(data, where))
    monkeypatch.setattr(tree_module, "chunks_of_part", lambda data, where: pytest.fail("the list read for chunks"))
    project.write(value="a", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    local = run(gaia_cli, pm, "run", project.build)  # A from the local store, over B
    assert "from local store" in local.output and "(in place)" in local.output
    assert len(lookups) == 1  # the check that every chunk is there before the tree is touched
    assert len(reads) == 1  # one part, read once: for that check, the update and the receipt
    shutil.rmtree(project.store)
    lookups.clear()
    reads.clear()
    project.write(value="b", backend=True, point='backend = "dir:shared"\nupload_policy = "always"')
    fetched = run(gaia_cli, pm, "run", project.build)  # B downloaded, over A
    assert "downloaded" in fetched.output and "(in place)" in fetched.output
    assert len(lookups) == 1  # the download's: it brought every chunk in, the update does not look again
    assert len(reads) == 1  # the download read and checked the list; the update uses what it read
    assert (project.out / "value.txt").read_text() == "b"
    shutil.rmtree(project.out)
    lookups.clear()
    reads.clear()
    full = run(gaia_cli, pm, "run", project.build)  # B from the local store, in full
    assert "from local store" in full.output and "(in place)" not in full.output
    assert len(reads) == 1  # for the write and the receipt
    assert (project.out / "value.txt").read_text() == "b"


def test_an_entry_list_longer_than_a_restore_holds_is_streamed(store, tmp_path, monkeypatch):
    src = tmp_path / "src"
    build_a(src)
    target = Target("out", src)
    info = store.capture([target], exclude=EXCLUDED)
    manifest = manifest_of(info, [target])
    held = tree.entry_list(store.packs, manifest)
    assert held is not None and [e.path for e in held] == [e.path for e in tree.entries(store.packs, manifest)]
    assert list(tree.needed_chunks(store.packs, manifest, held)) == list(tree.chunks(store.packs, manifest))
    stream, kept = tree.entries_held(store.packs, manifest)  # filled as a full restore reads it
    assert kept == [] and [e.path for e in stream] == [e.path for e in held] and kept == held
    monkeypatch.setattr(tree, "HELD_ENTRIES", len(held) - 1)
    assert tree.entry_list(store.packs, manifest) is None
    stream, kept = tree.entries_held(store.packs, manifest)
    assert kept is None and [e.path for e in stream] == [e.path for e in held]


def test_an_update_over_a_captured_tree_strips_the_setid_bits_its_receipt_vouches_for(store, tmp_path):
    # a CI runner builds and captures (the receipt records a set-uid file as it is), then
    # restores over its own tree: the file is kept, but never with its set-id bits
    src = tmp_path / "src"
    build_a(src)
    su = write(src / "build" / "pkg0" / "su", "#!/bin/sh\n")
    su.chmod(0o4755)
    target = Target("out", src)
    info = store.capture([target], exclude=EXCLUDED)
    manifest = manifest_of(info, [target])
    packs = store.packs
    inode = su.lstat().st_ino
    update = update_tree(tree.entries(packs, manifest), [target], packs, receipts={"out": info.receipts["out"]},
                         unchanged=lambda e, r: not r.relocated, exclude=EXCLUDED,
                         again=lambda: tree.raw_entries(packs, manifest))
    update.place(tmp_path, None)
    update.commit_receipts({}, set())
    assert su.lstat().st_ino == inode and stat.S_IMODE(su.lstat().st_mode) == 0o755
    assert update.info.stripped_setid == ["out/build/pkg0/su"] and update.info.files_written == 0


def test_a_receipt_is_read_as_text_up_to_a_line_that_is_not(tmp_path):
    from gaia_core.checkpoints.receipt import ReceiptWriter, record_of

    root = tmp_path / "out"
    path = write(root / "f", "x")
    writer = ReceiptWriter(root / RECEIPT, {})
    writer.add(record_of("out/f", path.lstat()))
    writer.add_line('{"p":"out/g\u00e9","t":"f","m":420,"n":1,"i":2,"c":3}\n'.encode())  # UTF-8, not ASCII
    writer.add_line(b'{"p":"out/h\xff","t":"f","m":420,"n":1,"i":2,"c":3}\n')  # not UTF-8
    writer.add(record_of("out/i", path.lstat()))
    writer.commit()
    assert [r.path for r in records(root / RECEIPT)] == ["out/f", "out/g\u00e9"]


_HEX = "63246074ac32fcbc9e188b0b35bb69db495d05dbed5cb2e3aab54ae4cfcdf9bb"
#: receipt lines as a receipt writes them, and odd ones: each is read alike both ways
_RECEIPT_LINES = [
    b'{"p":"out/f","t":"f","m":420,"n":1,"i":2,"c":3,"s":5,"d":"' + _HEX.encode() + b'"}\n',
    b'{"p":"out/f","t":"f","m":420,"n":1,"i":2,"c":3,"s":5,"k":[["' + _HEX.encode() + b'",5]],"x":1,"o":7}\n',
    b'{"p":"out/l","t":"l","m":511,"n":1,"i":2,"c":3,"l":"../x","r":["symlink",["out","src"]]}\n',
    b'{"p":"out/l","t":"l","m":511,"n":1,"i":2,"c":3,"l":""}\n',
    b'{"p":"out/d","t":"d","m":493,"n":-5,"i":18446744073709551615,"c":0}\n',
    b'{ "p" : "out/d", "t":"d","m":493,"n":1,"i":2,"c":3 }\n',
    b'{"p":"a","p":"b","t":"f","m":420,"n":1,"i":2,"c":3}\n',  # a key twice
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"m":421}\n',
    b'{"p":"a\\udc80b\\u0000\\ud83d\\ude00","t":"f","m":420,"n":1,"i":2,"c":3}\n',  # escapes, a lone surrogate
    b'{"p":"a\\ud800","t":"f","m":420,"n":1,"i":2,"c":3}\n',
    b'{"p":"a","t":"f","m":4.0,"n":1,"i":2,"c":3}\n',  # numbers json's reading takes and msgspec's not
    b'{"p":"a","t":"f","m":true,"n":1e3,"i":2,"c":3,"x":0.5}\n',
    b'{"p":"a","t":"f","m":420,"n":99999999999999999999,"i":2,"c":3}\n',
    b'{"p":"a","t":"f","m":"420","n":1,"i":2,"c":3}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"d":"ab cd"}\n',  # not a digest
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"d":null}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"k":[["' + _HEX.encode() + b'",5,6]]}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"r":["k","ab"]}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"r":[]}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3,"l":5,"unknown":[1]}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2}\n',  # no ctime
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3} \n',
    b' {"p":"a","t":"f","m":420,"n":1,"i":2,"c":3}\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3}\r\n',
    b'{"p":"a","t":"f","m":420,"n":1,"i":2,"c":3}{}\n',
    b'["p"]\n',
    b'\n',
]


@pytest.mark.parametrize("line", _RECEIPT_LINES)
def test_a_receipt_line_is_read_by_msgspec_only_as_json_reads_it(line):
    """A receipt is read whole by every capture that has one: its lines as a receipt writes
    them are read by msgspec, the others as before, and both give the same record (or none)."""
    from gaia_core.checkpoints.receipt import Record, _block_records

    fast = next(_block_records(line))
    slow = Record.from_line(line)
    assert fast == slow
    assert fast is None or fast.raw == line


def test_a_receipt_s_lines_as_written_are_read_by_msgspec(tmp_path, monkeypatch):
    from gaia_core.checkpoints.receipt import Record, ReceiptWriter, record_of

    root = tmp_path / "out"
    path = write(root / "f", "x")
    writer = ReceiptWriter(root / RECEIPT, {})
    for name in ("a", "b", "c"):
        writer.add(record_of(f"out/{name}", path.lstat(), digest=bytes(32), chunks=((bytes(32), 1),)))
    writer.add_line(b'{"p":"out/d","t":"f","m":4.0,"n":1,"i":2,"c":3}\n')  # read as before
    writer.commit()
    before = [(r, r.raw) for r in records(root / RECEIPT)]
    assert [r.path for r, _ in before] == ["out/a", "out/b", "out/c", "out/d"] and before[3][0].mode == 4
    taken = []
    monkeypatch.setattr(Record, "from_item", classmethod(lambda cls, item, line: taken.append(line)))
    assert [r.path for r in records(root / RECEIPT)] == ["out/a", "out/b", "out/c"]  # from_item: None
    assert taken == [before[3][1]]


def test_a_download_takes_from_the_tree_the_chunks_its_store_lacks_and_the_tree_holds(store, tmp_path):
    from gaia_core.checkpoints.chunking import chunk_id
    from gaia_core.checkpoints.packstore import PackStore
    from gaia_core.checkpoints.treeimport import import_from_tree

    src = tmp_path / "src"
    build_a(src)
    big = random.Random(17).randbytes(6 << 20)  # cut into chunks: the receipt lists their ids
    write(src / "host" / "lib.a", "").write_bytes(big)
    a = capture(store, src)
    write(src / "build" / "pkg2" / "file.c", "source 2, changed\n")
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    empty = PackStore(tmp_path / "empty-store")
    wanted = dict(empty.absent(tree.chunks(store.packs, b)))
    held, changed = chunk_id(b"source 0\n"), chunk_id(b"source 2, changed\n")
    (lib,) = [e for e in tree.raw_entries(store.packs, b) if e.path == "out/host/lib.a"]
    assert lib.chunks is not None and len(lib.chunks) > 1
    assert {held, changed, *(c for c, _ in lib.chunks)} <= wanted.keys()
    receipts = {"out": consumer.target.path / RECEIPT}
    (tmp_path / "tmp").mkdir()
    pieces = {c: n for c, n in lib.chunks}  # named by the receipt in its list of chunks only
    from gaia_core.checkpoints import chunking

    cut = chunking._cut_large
    chunking._cut_large = lambda fd: pytest.fail("a file checked against its record was cut")
    try:
        assert import_from_tree([consumer.target], receipts, empty, tmp_path / "tmp", dict(pieces)) == len(big)
    finally:
        chunking._cut_large = cut
    empty = PackStore(tmp_path / "empty-store-2")
    assert import_from_tree([consumer.target], receipts, empty, tmp_path / "tmp", pieces) == len(big)
    assert not pieces and len(empty.locate(list(dict(lib.chunks)))) == len(lib.chunks)
    assert import_from_tree([consumer.target], receipts, empty, tmp_path / "tmp", wanted) > 0
    assert changed in wanted and held not in wanted and held in empty.locate([held])
    # what is left, the tree does not hold: its receipt is searched, and nothing is read
    left = dict(wanted)
    assert import_from_tree([consumer.target], receipts, empty, tmp_path / "tmp", wanted) == 0
    assert wanted == left


def test_chunks_taken_from_the_tree_are_stored_at_the_level_asked(store, tmp_path):
    from gaia_core.checkpoints.packs import compress
    from gaia_core.checkpoints.packstore import PackStore
    from gaia_core.checkpoints.treeimport import import_from_tree

    src = tmp_path / "src"
    build_a(src)
    text = " ".join(f"word{(i * i) % 251}" for i in range(300_000)).encode()  # large, compressible
    write(src / "host" / "notes.txt", "").write_bytes(text)
    a = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    (notes,) = [e for e in tree.raw_entries(store.packs, a) if e.path == "out/host/notes.txt"]
    assert notes.chunks is not None
    (tmp_path / "tmp").mkdir()
    for level in (1, 19):
        empty = PackStore(tmp_path / f"store-{level}")
        wanted = dict(notes.chunks)
        import_from_tree([consumer.target], {"out": consumer.target.path / RECEIPT}, empty, tmp_path / "tmp", wanted,
                         level)
        assert not wanted
        located = empty.locate([c for c, _ in notes.chunks])
        offset = 0
        for chunk, size in notes.chunks:
            assert empty.frame(chunk, located[chunk]) == compress(text[offset:offset + size], level)
            offset += size
    assert compress(text[:1 << 20], 1) != compress(text[:1 << 20], 19)


def test_the_line_an_update_expects_of_a_kept_entry_is_the_one_a_receipt_writes(tmp_path):
    # an update keeps an entry when the last receipt has, byte for byte, the line its lstat makes
    from gaia_core.checkpoints.receipt import ReceiptWriter, kept_line, lines, record_of

    root = tmp_path / "out"
    full, empty = write(root / "caf\u00e9 \"x\"", "x"), write(root / "empty", "")
    (root / "link").symlink_to("caf\u00e9 \"x\"")
    digest = b"\7" * 32
    cases = [("out/caf\u00e9 \"x\"", full.lstat(), 1, digest, None), ("out/empty", empty.lstat(), 0, None, None),
             ("out/link", (root / "link").lstat(), 0, None, "caf\u00e9 \"x\"")]
    writer = ReceiptWriter(root / RECEIPT, {})
    expected = []
    for path, st, size, content, link in cases:
        for captured in (st.st_mtime_ns, st.st_mtime_ns - 7):
            writer.add(record_of(path, st, digest=content, link=link, captured_ns=captured))
            expected.append(kept_line(path, st, size, content, link, captured))
    writer.commit()
    assert list(lines(root / RECEIPT)) == expected


def test_an_update_gives_a_kept_directory_the_mode_the_checkpoint_gives_it(store, tmp_path):
    src = tmp_path / "src"
    build_a(src)
    a = capture(store, src)
    (src / "build" / "pkg3").chmod(0o750)
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    update, _ = consumer.update(b)
    out = consumer.target.path
    assert stat.S_IMODE((out / "build" / "pkg3").lstat().st_mode) == 0o750
    assert stat.S_IMODE((out / "build" / "pkg2").lstat().st_mode) == stat.S_IMODE((src / "build" / "pkg2").lstat().st_mode)
    assert update.info.files_written == 0
    assert_receipt_true(consumer.target, store, b)


def test_an_update_that_fails_leaves_the_garbage_collector_and_descriptors_as_it_found_them(store, tmp_path, two):
    import gc

    from gaia_core.checkpoints.entries import EntriesCorrupt

    src, a, b = two
    consumer = Consumer(store, tmp_path, a)

    def broken():
        yield from list(tree.entries(store.packs, b))[:3]
        raise EntriesCorrupt("cut short")

    assert gc.isenabled()
    list(tree.entries(store.packs, b))  # the store keeps its packs open
    descriptors = len(os.listdir("/proc/self/fd"))
    with pytest.raises(EntriesCorrupt) as failed:
        update_tree(broken(), [consumer.target], store.packs, receipts={"out": consumer.target.path / RECEIPT},
                    unchanged=lambda e, r: not r.relocated, exclude=EXCLUDED)
    assert gc.isenabled()
    assert failed.value and len(os.listdir("/proc/self/fd")) == descriptors  # the walk's directories closed


def test_a_directory_kept_as_it_was_is_placed_again_when_the_update_changes_what_it_holds(store, tmp_path):
    src = tmp_path / "src"
    build_a(src)
    a = capture(store, src)
    (src / "build" / "pkg0" / ".stamp_built").unlink()  # B drops a file: pkg0 keeps its captured mtime
    stamp(src / "build" / "pkg0", 6)
    (src / "build" / "pkg1" / "new.o").write_text("new\n")  # ... and gains one: pkg1 keeps its too
    stamp(src / "build" / "pkg1" / "new.o", 15)
    stamp(src / "build" / "pkg1", 16)
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    out = consumer.target.path
    untouched = (out / "build" / "pkg3").lstat()
    update, _ = consumer.update(b)
    assert not (out / "build" / "pkg0" / ".stamp_built").exists() and (out / "build" / "pkg1" / "new.o").exists()
    assert disk_ranks(out) == captured_ranks(store, b)
    assert_receipt_true(consumer.target, store, b)
    st = (out / "build" / "pkg3").lstat()  # nothing in it changed: not placed again
    assert (st.st_mtime_ns, st.st_ctime_ns) == (untouched.st_mtime_ns, untouched.st_ctime_ns)


def test_an_update_keeps_entries_whose_names_are_not_utf8_in_their_canonical_place(store, tmp_path):
    src = tmp_path / "src"
    build_a(src)
    odd = os.fsencode(src / "build" / "pkg3")
    for name in (b"\xff", "\ue000".encode(), b"a\xe9", b"b"):  # byte order, not the order of their decoded names
        with open(os.path.join(odd, name), "wb") as f:
            f.write(name)
    stamp(src / "build" / "pkg3", 36)
    a = capture(store, src)
    write(src / "build" / "pkg2" / "file.c", "source 2, changed\n")
    b = capture(store, src)
    consumer = Consumer(store, tmp_path, a)
    kept = os.fsencode(consumer.target.path / "build" / "pkg3")
    inodes = {name: os.lstat(os.path.join(kept, name)).st_ino for name in os.listdir(kept)}
    update, _ = consumer.update(b)
    assert "out/build/pkg2/file.c" in update.written and update.info.removed == 0
    assert not [path for path in update.written if path.startswith("out/build/pkg3/")]
    assert {name: os.lstat(os.path.join(kept, name)).st_ino for name in os.listdir(kept)} == inodes
    assert_receipt_true(consumer.target, store, b)


def test_a_draft_receipt_copies_the_runs_without_a_touched_entry_and_takes_the_others_again(tmp_path, monkeypatch):
    import zstandard

    from gaia_core.checkpoints import receipt
    from gaia_core.checkpoints.receipt import ReceiptDraft, Record, record_of, records_naming

    monkeypatch.setattr(receipt, "_RUN_MIN", 2)
    monkeypatch.setattr(receipt, "_RUN_MAX", 5)
    root = tmp_path / "out"
    files = [write(root / f"f{i:02}", str(i)) for i in range(23)]
    touched, gone, later = {3, 4, 11, 20}, {11}, 16  # later: kept first, touched after all (a directory)
    draft = ReceiptDraft()
    for i, path in enumerate(files):
        name = f"out/f{i:02}"
        if i in touched:
            draft.add(Record(name, "?", 0, 0, 0, 0, digest=bytes([i]) * 32), os.fsencode(path))
        else:
            draft.add(record_of(name, path.lstat(), digest=bytes([i]) * 32))
    draft.retake(later, Record("out/f16", "?", 0, 0, 0, 0, digest=bytes([16]) * 32), os.fsencode(files[later]))
    files[11].unlink()
    for i in (4, later):
        files[i].chmod(0o600)  # its lstat changed since it was noted
    draft.commit(root / RECEIPT, {"h": 1}, relocated=set())
    read = list(records(root / RECEIPT))
    assert [r.path for r in read] == [f"out/f{i:02}" for i in range(23) if i not in gone]
    for r in read:
        assert r.matches((root / r.path.split("/")[1]).lstat()) and r.digest == bytes([int(r.path[-2:])]) * 32
    raw = (root / RECEIPT).read_bytes()
    assert raw.count(zstandard.FRAME_HEADER) > 3  # the runs went in as the frames they were
    assert "out/f07" in [r.path for r in records_naming(root / RECEIPT, {(bytes([7]) * 32).hex().encode()})]
