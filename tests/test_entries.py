"""The entry list of a format-4 object: its encoding, and the safety rules of extraction
(EntryChecker) applied to hostile lists before anything is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tree_store import (
    OLD_NS,
    Store,
    dir_entry,
    file_entry,
    hard_entry,
    link_entry,
    manifest_of,
    store_object,
    write,
)

from gaia_core.anchors import Target
from gaia_core.checkpoints import entries as entries_module
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.chunking import MAX_CHUNK, SMALL_FILE, chunk_id
from gaia_core.checkpoints.entries import (
    PART_BYTES,
    EntriesCorrupt,
    Entry,
    EntryChecker,
    Limits,
    PartWriter,
    UnsafeEntry,
    checked,
    chunks_of_part,
    decode_part,
    encode,
)
from gaia_core.errors import CheckpointError


def check_all(entries, targets=("t",), limits: Limits | None = None) -> list[Entry]:
    return list(checked(entries, list(targets), limits))


ID = chunk_id(b"x")


# -- encoding -----------------------------------------------------------------------------


def test_entries_survive_their_encoding():
    entries = [
        dir_entry("t", 0o2755),
        Entry("t/big", "f", 0o4755, -5, size=3 << 20, digest=ID, chunks=((ID, 1 << 20), (chunk_id(b"y"), 2 << 20)),
              head=True),
        file_entry("t/caf\udce9", b"x"),  # a name that is not UTF-8, as os.fsdecode gives it
        Entry("t/empty", "f", 0o600, OLD_NS),
        hard_entry("t/h", "t/big"),
        link_entry("t/l", "/opt/\udcff\n\"x"),
    ]
    data = b"".join(encode(e) for e in entries)
    assert data.isascii() and data.count(b"\n") == len(entries)
    assert list(decode_part(data, "part 1")) == entries


@pytest.mark.parametrize(("line", "match"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"p": "t", "t": "d", "m": 493}', "malformed entry"),
    (b'{"p": "t/c", "t": "c", "m": 420, "n": 0}', "unknown entry type 'c'"),
    (b'{"p": 7, "t": "d", "m": 493, "n": 0}', "not a string"),
    (b'{"p": "t", "t": "d", "m": -1, "n": 0}', "negative"),
    (b'{"p": "t", "t": "d", "m": true, "n": 0}', "not an integer"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "d": "00"}', "64 hex digits"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "d": "' + b"g" * 64 + b'"}', "not hex"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "d": "' + b"0" * 62 + b'  "}', "64 hex digits"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "c": {}}', "not a list"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "c": [["' + b"0" * 64 + b'"]]}', "not \\[id, size\\]"),
    (b'{"p": "t/l", "t": "l", "m": 511, "n": 0}', "malformed entry"),
    (b'{"p": "' + b"a" * (70 << 10) + b'", "t": "d", "m": 493, "n": 0}', "longer than"),
])
def test_a_part_that_does_not_parse_is_corrupt_naming_the_line(line, match):
    data = encode(dir_entry("t")) + line + b"\n"
    with pytest.raises(EntriesCorrupt, match=f"part 3: line 2.*{match}|part 3: line 2: .*{match}"):
        list(decode_part(data, "part 3"))


@pytest.mark.parametrize("line", [
    encode(dir_entry("t/a"))[:-1] + b"," + encode(dir_entry("t/b"))[:-1],  # two entries on one line
    encode(dir_entry("t/a"))[:-1] + encode(dir_entry("t/b"))[:-1],
    b'{"p": "t/a", "t": "d", "m": 493,',  # an entry that only the next line would close
])
def test_a_part_is_read_one_entry_a_line_however_it_is_scanned(line):
    data = encode(dir_entry("t")) + line + b"\n" + b'"n": 0}\n'
    with pytest.raises(EntriesCorrupt, match="part 3: line 2 is not JSON"):
        list(decode_part(data, "part 3"))


def test_a_part_reads_lines_as_json_reads_them_whitespace_and_escapes_included():
    entries = [dir_entry("t"), link_entry("t/l", "caf\u00e9")]
    second = encode(entries[1]).replace(b"caf\\u00e9", "café".encode())
    data = b" " + encode(entries[0]).replace(b"\n", b" \n") + b"\n" + second
    assert not data.isascii()
    assert list(decode_part(data, "p")) == entries


_REGULAR = encode(Entry("t/f", "f", 0o644, 7, size=3 << 20, digest=ID, chunks=((ID, 1 << 20), (ID, 2 << 20)),
                        head=True, twin="u/f"))


@pytest.mark.parametrize("line", [
    _REGULAR,
    encode(link_entry("t/l", "x")), encode(hard_entry("t/h", "t/f")), encode(dir_entry("t/d", 0o700)),
    _REGULAR.replace(b'"m":420', b'"m":-1'), _REGULAR.replace(b'"m":420', b'"m":true'),
    _REGULAR.replace(b'"n":7', b'"n":7.0'), _REGULAR.replace(b'"n":7', b'"n":null'),
    _REGULAR.replace(b'"n":7', b'"n":' + str(1 << 70).encode()),  # beyond 64 bits: json takes it
    _REGULAR.replace(b'"H":1', b'"H":true'), _REGULAR.replace(b'"H":1', b'"H":"yes"'),
    _REGULAR.replace(b'"L":"u/f"', b'"L":null'), _REGULAR.replace(b'"L":"u/f"', b'"L":3'),
    _REGULAR.replace(b'"s":3145728', b'"s":-3'),
    _REGULAR.replace(b'"d":"' + ID.hex().encode(), b'"d":"' + ID.hex().upper().encode()),
    _REGULAR.replace(b'"d":"' + ID.hex().encode(), b'"d":"' + b" " * 2 + ID.hex()[2:].encode()),
    _REGULAR.replace(b'"d":"' + ID.hex().encode(), b'"d":null'),
    _REGULAR.replace(b'"c":[', b'"c":[["' + ID.hex().encode() + b'",1,2],'),
    _REGULAR.replace(b'"t":"f"', b'"t":"d"'), _REGULAR.replace(b'"t":"f"', b'"t":"l"'),
    _REGULAR.replace(b'"t":"f"', b'"t":"x"'), _REGULAR.replace(b'"p":"t/f"', b'"p":"t/f","p":"t/g"'),
    _REGULAR.replace(b'"p":"t/f"', b'"p":"t/f","zz":[1]'), _REGULAR.replace(b"}\n", b"} \n"),
    encode(link_entry("t/l", "x")).replace(b'"l":"x"', b'"l":null'),
])
def test_a_part_is_read_fast_exactly_as_line_by_line(line):
    """The regular reading (msgspec) takes a line only as the line-by-line one does: the
    same entry, or it leaves the line to the line-by-line reading, which says what is wrong."""
    data = encode(dir_entry("t")) + line
    try:
        slow = list(entries_module._decode_lines(data.split(b"\n"), "p"))
    except EntriesCorrupt:
        slow = None
    fast = entries_module._read_regular(data.split(b"\n"))
    assert fast is None or fast == slow
    if line == _REGULAR:
        assert fast is not None and fast[1].chunks == ((ID, 1 << 20), (ID, 2 << 20)) and fast[1].twin == "u/f"


def test_a_long_part_read_a_slice_at_a_time_names_the_line_at_fault_and_repeats_none():
    """A part is read by msgspec a slice of lines at a time; from the slice of an irregular
    line on it is read line by line: each entry once, and the line at fault named."""
    entries = [dir_entry("t")] + [file_entry(f"t/{index:05}", b"x") for index in range(1500)]
    lines = [encode(e) for e in entries]
    irregular = lines[:]
    irregular[700] = b" " + lines[700]  # whitespace json takes: read line by line from its slice on
    assert list(decode_part(b"".join(irregular), "p")) == entries
    broken = lines[:]
    broken[1200] = b'{"p": "t/x", "t": "f"}\n'
    with pytest.raises(EntriesCorrupt, match="part 9: line 1201: malformed entry"):
        list(decode_part(b"".join(broken), "part 9"))


def test_the_chunks_of_a_part_are_those_of_its_entries():
    entries = [
        dir_entry("t"),
        Entry("t/big", "f", 0o644, 0, size=3 << 20, digest=ID, chunks=((ID, 1 << 20), (chunk_id(b"y"), 2 << 20)),
              head=True),
        file_entry("t/small", b"abc"),
        Entry("t/empty", "f", 0o600, OLD_NS),
        hard_entry("t/h", "t/big"),
        link_entry("t/l", "x"),
    ]
    data = b"".join(encode(e) for e in entries)
    assert list(chunks_of_part(data, "p")) == [c for e in entries for c in e.chunk_list()]


@pytest.mark.parametrize(("line", "match"), [
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1.5, "d": "' + b"0" * 64 + b'"}', "not an integer"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "d": "00"}', "64 hex digits"),
    (b'{"p": "t/f", "t": "f", "m": 420, "n": 0, "s": 1, "c": [["' + b"0" * 64 + b'", -1]]}', "negative"),
    (b'[1]', "not a JSON object"),
])
def test_the_chunks_of_a_part_that_is_wrong_are_refused_as_its_entries_are(line, match):
    with pytest.raises(EntriesCorrupt, match=f"line 2.*{match}"):
        list(chunks_of_part(encode(dir_entry("t")) + line + b"\n", "p"))


def test_part_writer_cuts_parts_of_about_part_bytes():
    parts: list[tuple[bytes, int]] = []
    writer = PartWriter(lambda data, count: parts.append((data, count)))
    entries = [dir_entry("t")] + [file_entry(f"t/{index:06}-{'n' * 150}") for index in range(20_000)]
    for entry in entries:
        writer.add(entry)
    writer.flush()
    assert len(parts) > 2
    assert all(PART_BYTES <= len(data) < PART_BYTES + 1024 for data, _ in parts[:-1])
    assert sum(count for _, count in parts) == len(entries)
    assert [e for data, _ in parts for e in decode_part(data, "p")] == entries


def test_part_writer_refuses_an_entry_too_long_to_read_back():
    writer = PartWriter(lambda data, count: None)
    with pytest.raises(UnsafeEntry, match="longer than"):
        writer.add(link_entry("t/l", "x" * (64 << 10)))


def test_a_tree_of_several_parts_round_trips(store, tmp_path):
    out = tmp_path / "out"
    for index in range(4000):
        write(out / f"d{index % 7}" / f"{index:05}-{'n' * 200}", str(index))
    info = store.capture([Target("out", out)])
    assert len(info.parts) >= 2
    assert sum(p["entries"] for p in info.parts) == info.entries == 4000 + 7 + 1
    dest = tmp_path / "restored"
    store.restore(manifest_of(info, ["out"]), dest)
    assert (dest / "out" / "d3" / f"{3:05}-{'n' * 200}").read_text() == "3"
    assert len(list((dest / "out").rglob("*"))) == 4007


# -- the safety rules -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "t/../x", "t/a/..", "t/./x", "t//x", "t/", "/t", "/etc/passwd", "t/a\0b", "..", "",
])
def test_refuses_names_that_are_not_plain_and_relative(path):
    entries = [dir_entry("t"), dir_entry("t/a"), file_entry(path)]
    with pytest.raises(UnsafeEntry, match="not a plain relative name|expected the directory of target"):
        check_all(entries)


@pytest.mark.parametrize("path", ["u/x", "u", "zz/x"])
def test_refuses_a_member_outside_every_target(path):
    with pytest.raises(UnsafeEntry, match="expected the directory of target None|parent is not a directory"):
        check_all([dir_entry("t"), file_entry("t/f"), file_entry(path)])


def test_refuses_a_tree_whose_first_entry_is_not_the_target_root():
    with pytest.raises(UnsafeEntry, match="'t/f': its parent is not a directory"):
        check_all([file_entry("t/f")])
    with pytest.raises(UnsafeEntry, match="expected the directory of target 't'"):
        check_all([file_entry("t")])
    with pytest.raises(UnsafeEntry, match="expected the directory of target 't'"):
        check_all([link_entry("t", "/etc")])


@pytest.mark.parametrize("entries", [
    [link_entry("t/link", "sub"), file_entry("t/link/x")],  # through a symlink
    [link_entry("t/d", "."), link_entry("t/e", "d/.."), file_entry("t/e/x")],  # through a chain
    [file_entry("t/f"), file_entry("t/f/x")],  # under a file
    [file_entry("t/a/x")],  # a directory never listed
    [dir_entry("t/a"), file_entry("t/b"), file_entry("t/a/x")],  # a directory closed already
], ids=["symlink", "chain", "file", "unlisted", "closed"])
def test_refuses_an_entry_whose_parent_is_not_a_listed_directory(entries):
    with pytest.raises((UnsafeEntry, EntriesCorrupt), match="parent is not a directory|out of order"):
        check_all([dir_entry("t"), *entries])


@pytest.mark.parametrize("second", [
    dir_entry("t/link"), link_entry("t/link", "/etc"), file_entry("t/link"), hard_entry("t/link", "t/f"),
], ids=["dir", "symlink", "file", "hard link"])
def test_refuses_an_entry_listed_twice_whatever_replaces_what(second):
    # a second entry of a name would replace (or write through) the first
    entries = [dir_entry("t"), file_entry("t/f", head=True), link_entry("t/link", "/etc"), second]
    with pytest.raises(EntriesCorrupt, match="'t/link' is out of order \\(or listed twice\\)"):
        check_all(entries)


def test_refuses_entries_out_of_canonical_order():
    with pytest.raises(EntriesCorrupt, match="'t/a' is out of order"):
        check_all([dir_entry("t"), file_entry("t/b"), file_entry("t/a")])
    # canonical order compares components, not strings: t/a/x comes before t/a-b
    check_all([dir_entry("t"), dir_entry("t/a"), file_entry("t/a/x"), file_entry("t/a-b")])
    with pytest.raises(EntriesCorrupt, match="out of order"):
        check_all([dir_entry("t"), file_entry("t/a-b"), dir_entry("t/a"), file_entry("t/a/x")])
    # and bytes, not code points: a name that is not UTF-8 sorts by its bytes
    check_all([dir_entry("t"), file_entry("t/z"), file_entry("t/\udce9")])


@pytest.mark.parametrize(("entries", "head"), [
    ([hard_entry("t/h", "t/later"), file_entry("t/later", head=True)], "t/later"),
    ([hard_entry("t/h", "t/none")], "t/none"),
    ([dir_entry("t/d"), hard_entry("t/h", "t/d")], "t/d"),
    ([link_entry("t/a", "/etc"), hard_entry("t/h", "t/a")], "t/a"),
    ([file_entry("t/a"), hard_entry("t/h", "t/a")], "t/a"),  # a file not marked as a link's head
    ([file_entry("t/a", head=True), hard_entry("t/h", "t/a/../a")], "t/a/../a"),
    ([hard_entry("t/h", "/etc/passwd")], "/etc/passwd"),
    ([dir_entry("t/d"), file_entry("t/d/f", head=True), link_entry("t/link", "d"), hard_entry("t/x", "t/link/f")],
     "t/link/f"),
], ids=["later", "nothing", "directory", "symlink", "no head", "dot-dot", "absolute", "through a symlink"])
def test_refuses_a_hard_link_to_anything_but_an_earlier_file(entries, head):
    with pytest.raises(UnsafeEntry, match=f"a hard link must join an earlier file \\('{head}'"):
        check_all([dir_entry("t"), *entries])


def test_accepts_a_hard_link_to_an_earlier_file_of_another_target():
    check_all([dir_entry("t"), file_entry("t/f", head=True), dir_entry("u"), hard_entry("u/h", "t/f")],
              targets=("t", "u"))


@pytest.mark.parametrize("kind", ["c", "b", "p", "s", "", "dir", "F"])
def test_refuses_unknown_types(kind):
    with pytest.raises(UnsafeEntry, match="is not allowed"):
        check_all([dir_entry("t"), Entry("t/x", kind, 0o644, OLD_NS)])


@pytest.mark.parametrize("mode", [0o10644, 0o170755, 0o20000, 1 << 40])
def test_refuses_mode_bits_beyond_permissions(mode):
    with pytest.raises(UnsafeEntry, match="bits beyond permissions"):
        check_all([dir_entry("t"), file_entry("t/f", mode=mode)])


@pytest.mark.parametrize("text", ["", "a\0b"])
def test_refuses_empty_or_nul_link_text(text):
    with pytest.raises(UnsafeEntry, match="empty link text"):
        check_all([dir_entry("t"), link_entry("t/l", text)])


def test_refuses_more_entries_or_bytes_than_the_limits_say():
    entries = [dir_entry("t"), file_entry("t/a", b"aaaa"), file_entry("t/b", b"bb")]
    check_all(entries, limits=Limits(3, 6))
    with pytest.raises(EntriesCorrupt, match="more than the 2 entries"):
        check_all(entries, limits=Limits(2, 6))
    with pytest.raises(EntriesCorrupt, match="more than the 5 bytes"):
        check_all(entries, limits=Limits(3, 5))
    with pytest.raises(EntriesCorrupt, match="holds 3 entries, its manifest says 4"):
        check_all(entries, limits=Limits(4, 6))
    with pytest.raises(EntriesCorrupt, match="holds 6 bytes, its manifest says 7"):
        check_all(entries, limits=Limits(3, 7))


def test_stops_at_the_first_entry_past_the_limit():
    seen = []

    def many():
        yield dir_entry("t")
        for index in range(1000):
            seen.append(index)
            yield file_entry(f"t/{index:010}")

    with pytest.raises(EntriesCorrupt, match="more than the 10 entries"):
        check_all(many(), limits=Limits(10, None))
    assert len(seen) == 10


def test_refuses_chunk_sizes_that_do_not_add_up():
    big = 3 * SMALL_FILE
    ok = Entry("t/f", "f", 0o644, 0, size=big, digest=ID, chunks=((ID, SMALL_FILE), (ID, 2 * SMALL_FILE)))
    check_all([dir_entry("t"), ok])
    for chunks in [((ID, SMALL_FILE), (ID, SMALL_FILE)),  # too few bytes
                   ((ID, big), (ID, 0)),  # an empty chunk
                   ((ID, big - 1), (ID, 1)) if big - 1 > MAX_CHUNK else ((ID, MAX_CHUNK + 1), (ID, big - MAX_CHUNK - 1)),
                   ((ID, big + 1),)]:
        bad = Entry("t/f", "f", 0o644, 0, size=big, digest=ID, chunks=chunks)
        with pytest.raises(EntriesCorrupt, match="chunk sizes do not add up"):
            check_all([dir_entry("t"), bad])


def test_refuses_a_large_file_without_its_chunks_and_a_file_without_a_digest():
    with pytest.raises(EntriesCorrupt, match="large file without its chunks"):
        check_all([dir_entry("t"), Entry("t/f", "f", 0o644, 0, size=SMALL_FILE + 1, digest=ID)])
    with pytest.raises(EntriesCorrupt, match="without a digest"):
        check_all([dir_entry("t"), Entry("t/f", "f", 0o644, 0, size=1)])
    check_all([dir_entry("t"), Entry("t/f", "f", 0o644, 0, size=SMALL_FILE, digest=ID)])


def test_refuses_a_missing_target_and_unsafe_target_names():
    with pytest.raises(EntriesCorrupt, match="no entries for target\\(s\\) u"):
        check_all([dir_entry("t")], targets=("t", "u"))
    for name in ["a/b", "..", ".", "", "-x", "a\0"]:
        with pytest.raises(UnsafeEntry, match="invalid target name"):
            EntryChecker([name])


def test_records_the_files_with_set_id_bits():
    checker = EntryChecker(["t"])
    for entry in [dir_entry("t", 0o2755), file_entry("t/su", mode=0o4755), file_entry("t/x", mode=0o755),
                  file_entry("t/y", mode=0o2711)]:
        checker.check(entry)
    assert checker.setid == ["t/su", "t/y"]


def test_accepts_what_capture_writes_for_a_real_tree(store, tmp_path):
    from test_tree_capture_restore import build_tree

    out = tmp_path / "out"
    out.mkdir()
    build_tree(out)
    images = tmp_path / "images"
    write(images / "sdcard.img", b"\0" * 4096)
    info = store.capture([Target("images", images), Target("out", out)])
    manifest = manifest_of(info, ["images", "out"])
    raw = list(tree.raw_entries(store.packs, manifest))
    assert {e.type for e in raw} == {"d", "f", "l", "h"}
    checker = EntryChecker(["images", "out"], Limits(info.entries, info.size))
    for entry in raw:
        checker.check(entry)
    checker.finish()
    assert checker.entries == len(raw) == info.entries


# -- hostile entry lists, through the whole restore ----------------------------------------


def restore_object(store: Store, tmp_path: Path, manifest) -> Path:
    dest = tmp_path / "restored"
    store.restore(manifest, dest)
    return dest


def test_nothing_is_written_outside_the_staging_dir(store, tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    attempts = [
        [dir_entry("t"), link_entry("t/link", str(sentinel)), file_entry("t/link/pwned", b"owned")],
        [dir_entry("t"), link_entry("t/d", "."), link_entry("t/e", "d/.."), dir_entry("t/e/sentinel"),
         file_entry("t/e/sentinel/pwned", b"owned")],
        [dir_entry("t"), link_entry("t/link", str(sentinel / "pwned")), file_entry("t/link", b"owned")],
        [dir_entry("t"), file_entry("t/f", b"owned", head=True), link_entry("t/link", str(sentinel)),
         hard_entry("t/link/pwned", "t/f")],
    ]
    for number, entries in enumerate(attempts):
        manifest = store_object(store, entries, [b"owned"])
        dest = tmp_path / f"restored-{number}"
        with pytest.raises(CheckpointError):
            store.restore(manifest, dest)
        assert list(sentinel.iterdir()) == [], number


@pytest.mark.parametrize("text", [
    "../../etc", "../../../../../../../../etc/passwd", "/etc/passwd", "/opt/toolchain/bin/x86_64-linux-gnu-ar",
    "dangling/nowhere", ".", "/../../../etc", "d/..", "loop",
])
def test_links_are_data_whatever_they_point_to(store, tmp_path, text):
    manifest = store_object(store, [dir_entry("t"), dir_entry("t/a"), link_entry("t/a/link", text),
                                    link_entry("t/loop", "loop")])
    dest = restore_object(store, tmp_path, manifest)
    assert os.readlink(dest / "t" / "a" / "link") == text
    assert os.readlink(dest / "t" / "loop") == "loop"
    assert [p.name for p in (dest / "t" / "a").iterdir()] == ["link"]


def test_a_hostile_list_is_refused_at_its_first_bad_entry_before_it_is_written(store, tmp_path):
    entries = [dir_entry("t"), file_entry("t/ok", b"fine"), file_entry("t/../evil", b"evil")]
    manifest = store_object(store, entries, [b"fine", b"evil"])
    with pytest.raises(UnsafeEntry, match="not a plain relative name"):
        store.restore(manifest, tmp_path / "restored")
    assert not (tmp_path / "evil").exists()


def test_an_object_with_more_entries_or_bytes_than_its_manifest_says_is_refused(store, tmp_path):
    entries = [dir_entry("t")] + [file_entry(f"t/f{index:03}", b"0123456789") for index in range(100)]
    manifest = store_object(store, entries, [b"0123456789"], totals={"entries": 50})
    manifest["tree"]["parts"][0]["entries"] = 50
    with pytest.raises(EntriesCorrupt, match="more than the 50 entries"):
        store.restore(manifest, tmp_path / "a")
    manifest = store_object(store, entries, [b"0123456789"], totals={"size": 500})
    with pytest.raises(EntriesCorrupt, match="more than the 500 bytes"):
        store.restore(manifest, tmp_path / "b")
    written = [p for p in (tmp_path / "b" / "t").iterdir()] if (tmp_path / "b" / "t").exists() else []
    assert sum(p.stat().st_size for p in written) <= 500


def test_an_entry_list_with_a_bad_type_line_is_corrupt(store, tmp_path):
    part = encode(dir_entry("t")) + json.dumps({"p": "t/dev", "t": "c", "m": 0o600, "n": 0}).encode() + b"\n"
    writer = store.new_pack()
    from gaia_core.checkpoints.packs import compress

    writer.add(chunk_id(part), compress(part), len(part))
    store.packs.add(writer.finish())
    manifest = {"tree": {"entries": 2, "size": 0, "parts": [{"id": chunk_id(part).hex(), "size": len(part),
                                                                "entries": 2}]},
                "targets": [{"name": "t"}]}
    with pytest.raises(EntriesCorrupt, match="unknown entry type 'c'"):
        store.restore(manifest, tmp_path / "restored")
