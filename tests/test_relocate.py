"""Relocation: roots found at capture, plans, and rewrites of a restored staging tree."""

from __future__ import annotations

import os
import random
import stat
import tracemalloc
from pathlib import Path

import pytest
from tree_store import Store, manifest_of

from gaia_core.anchors import Target
from gaia_core.checkpoints import tree
from gaia_core.checkpoints.chunking import MAX_CHUNK
from gaia_core.checkpoints import relocate as relocate_module
from gaia_core.checkpoints.relocate import (
    BOUNDARY,
    CHUNK,
    FileScanner,
    RelocationPlan,
    Rewrite,
    RootMatcher,
    apply_relocation,
    plan_relocation,
)
from gaia_core.errors import CheckpointError

MTIME = 1_600_000_000_123_456_789


# -- matcher -----------------------------------------------------------------------------


def whole(matcher: RootMatcher, data: bytes) -> list[tuple[int, int]]:
    return matcher.scan(data, 0, len(data), True)[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"/ws/a", [(0, 0)]),  # end of file is a boundary
        (b"x=/ws/a/bin", [(2, 0)]),
        (b"/ws/ab/bin /ws/abc", []),  # a root that is a prefix of another name
        (b"/ws/a, /ws/a- /ws/a.", []),
    ],
)
def test_a_root_is_found_only_before_a_boundary(data, expected):
    assert whole(RootMatcher([b"/ws/a"]), data) == expected


@pytest.mark.parametrize("boundary", list(b"/\0\"' \t\n\r\v\f:;=)"))
def test_every_boundary_byte_ends_a_root(boundary):
    data = b"x" + b"/ws/a" + bytes([boundary]) + b"y"
    assert whole(RootMatcher([b"/ws/a"]), data) == [(1, 0)]


def test_nested_roots_the_longest_match_wins():
    matcher = RootMatcher([b"/ws", b"/ws/out"])
    data = b"/ws/out/host /ws/src /ws/outside /ws/out"
    assert whole(matcher, data) == [(0, 1), (13, 0), (21, 0), (33, 1)]


def test_matches_never_overlap():
    matcher = RootMatcher([b"/a/b", b"/b"])
    assert whole(matcher, b"/a/b/b/x") == [(0, 0), (4, 1)]


def test_feeding_in_pieces_finds_what_one_scan_finds():
    roots = [b"/ws", b"/ws/out", b"/dl/cache"]
    matcher = RootMatcher(roots)
    data = b"x/ws/out/y\0/dl/cache /ws/outx /ws/o /ws\n/dl/cache"
    expected = whole(matcher, data)
    assert len(expected) == 6
    for first in range(len(data) + 1):  # every split in two, and every split in three
        for second in range(first, len(data) + 1, 3):
            matcher.reset()
            found = []
            for start, end in ((0, first), (first, second), (second, len(data))):
                buffer = b"#" * 5 + data + b"#" * 5  # pieces are ranges of a buffer
                found += matcher.feed(buffer, start + 5, end + 5, end == len(data))
            assert found == expected, (first, second)


def test_roots_that_share_a_prefix_are_each_found():
    # searched as one prefix, /home/user/, then told apart
    roots = [b"/home/user/ws", b"/home/user/dl", b"/home/user/ws/out", b"/srv/cache"]
    data = (
        b"/home/user/dl/a /home/user/ws/out/b /home/user/wsx /home/user/ws /srv/cache"
    )
    expected = [
        (0, 1),
        (16, 2),
        (data.rindex(b"/home/user/ws "), 0),
        (data.rindex(b"/srv"), 3),
    ]
    assert whole(RootMatcher(roots), data) == expected


@pytest.mark.parametrize("kind", [bytearray, bytes])
def test_large_pieces_give_the_same_matches_as_small_ones(kind: type) -> None:
    # pieces from 64 KiB on are searched with libc's memmem, bytes (a small file's or a
    # chunk's) as well as bytearray (the relocation's read buffer)
    rng = random.Random(3)
    data = bytearray(rng.randbytes(300_000))
    spots = sorted(rng.sample(range(0, len(data) - 20), 40)) + [len(data) - 7]
    for at in spots:
        data[at : at + 7] = b"/ws/out"
    matcher = RootMatcher([b"/ws/out", b"/ws"])
    small = []
    for start in range(0, len(data), 1000):
        end = min(start + 1000, len(data))
        small += matcher.feed(bytes(data), start, end, end == len(data))
    matcher.reset()
    large = matcher.feed(kind(data), 0, len(data), True)
    assert large == small and len(large) >= 30
    assert all(data[at : at + 7] == b"/ws/out" for at, _ in large)


def test_a_file_read_whole_holds_the_roots_a_stream_of_pieces_finds():
    """FileScanner.whole (a small file, read in one piece) takes the roots in one regex pass;
    a large file is fed in pieces through RootMatcher.scan. Both must find the same roots
    (longest root, boundary, leftmost, no overlap), whatever the roots and the text."""
    roots = [b"/ws", b"/ws/out", b"/ws/outer", b"/opt/dl", b"/x/opt/dl"]
    words = [*roots, b"/ws/o", b"/opt/d", b"/ws/out2", b"/x", b"-", b"a", b"\0", *(bytes([b]) for b in BOUNDARY)]
    rng = random.Random(23)
    whole_scanner, streamed = FileScanner(RootMatcher(roots)), FileScanner(RootMatcher(roots))
    for _ in range(300):
        data = b"".join(rng.choice(words) for _ in range(rng.randrange(1, 40)))
        whole_scanner.whole(data)
        streamed.start()
        cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
        for start, end in zip([0, *cuts], [*cuts, len(data)]):
            streamed.feed(data[start:end], end == len(data))
        assert (whole_scanner.found, whole_scanner.binary) == (streamed.found, streamed.binary), data


def test_a_nul_byte_anywhere_in_a_large_piece_makes_the_file_binary():
    scanner = FileScanner(RootMatcher([b"/ws"]))
    for at in (0, 70_000, 299_999):
        data = bytearray(b"a" * 300_000)
        data[at] = 0
        scanner.start()
        scanner.feed(bytes(data), True)
        assert scanner.binary, at
    scanner.start()
    scanner.feed(b"a" * 300_000, True)
    assert not scanner.binary


# -- capture -----------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    ws = tmp_path / "ws"
    roots = {"workspace": ws, "out": ws / "out", "dl": tmp_path / "dl"}
    for path in roots.values():
        path.mkdir(parents=True, exist_ok=True)
    return roots


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def capture_tree(tmp_path, targets, roots, store=None):
    """Capture ``targets`` into a local pack store (``store``, or a new one in tmp_path)."""
    if store is not None:
        return store.capture(targets, roots=roots)
    store = Store(tmp_path / "store")
    try:
        return store.capture(targets, roots=roots)
    finally:
        store.close()


def test_capture_records_the_roots_files_and_links_embed(tmp_path, workspace):
    ws, out, dl = workspace["workspace"], workspace["out"], workspace["dl"]
    write(out / "build/pkg/config.status", f"prefix='{out}/host'\n")
    write(out / "build/pkg/Makefile", f"srcdir = {ws}/src\nDL_DIR={dl}\n")
    lib = write(
        out / "host/lib/libfoo.so", b"\x7fELF\0\0" + f"{out}/host/lib".encode() + b"\0"
    )
    os.link(lib, out / "host/lib/libfoo.so.1")  # same inode: listed once
    write(out / "build/eof", f"at the end: {out}")
    write(out / "build/prefix-only", f"{ws}b/x {dl}x")  # other directories
    write(out / "build/empty", "")
    os.symlink(f"{out}/host/x86_64-buildroot-linux-gnu/sysroot", out / "staging")
    os.link(out / "staging", out / "staging-again", follow_symlinks=False)
    os.symlink(f"{dl}/foo-1.0.tar.gz", out / "build/pkg/foo.tar.gz")
    os.symlink("/opt/toolchain/bin/x86_64-linux-gnu-ar", out / "host/bin-ar")
    os.symlink("toolchain-wrapper", out / "host/gcc")
    os.symlink("../../../../elsewhere/file", out / "host/lib/up")  # outside every root
    os.symlink("../../../src/file", out / "host/lib/src")  # in the workspace: a root
    write(out / "target/etc/hostname", "buildroot\n")
    os.symlink("/usr/lib/systemd/x", out / "target/etc/x")  # read inside the rootfs
    targets = [Target("out", out, rootfs_dirs=("target",))]

    info = capture_tree(tmp_path, targets, workspace)

    assert info.embedded == [
        {"path": "out/build/eof", "kind": "text", "roots": ["out"]},
        {
            "path": "out/build/pkg/Makefile",
            "kind": "text",
            "roots": ["dl", "workspace"],
        },
        {"path": "out/build/pkg/config.status", "kind": "text", "roots": ["out"]},
        {"path": "out/build/pkg/foo.tar.gz", "kind": "symlink", "roots": ["dl"]},
        {"path": "out/host/lib/libfoo.so", "kind": "binary", "roots": ["out"]},
        {"path": "out/staging", "kind": "symlink", "roots": ["out"]},
        {"path": "out/staging-again", "kind": "symlink", "roots": ["out"]},
    ]
    up = os.path.dirname(os.path.normpath(out / "host/lib/../../../../elsewhere/file"))
    assert info.external_links == sorted(["/opt/toolchain/bin", up])


def test_capture_without_roots_still_reports_external_links(tmp_path, workspace):
    out = workspace["out"]
    os.symlink("/opt/toolchain/bin/ar", out / "ar")
    os.symlink(f"{out}/host", out / "staging")  # into the target itself: not external
    info = capture_tree(tmp_path, [Target("out", out)], {})
    assert info.embedded == [] and info.external_links == ["/opt/toolchain/bin"]


@pytest.mark.parametrize("data", [b"x", b"\0"], ids=["text", "binary"])
def test_capture_finds_a_root_across_a_chunk_boundary_of_a_large_file(
    tmp_path, workspace, data
):
    out = workspace["out"]
    root = str(out).encode()
    store = Store(tmp_path / "store")
    try:
        for shift in range(0, len(root) + 1, 4):
            # a file of one repeated byte is cut at MAX_CHUNK (FastCDC finds no cut point
            # in it), so the root straddles the first cut: the scanner sees it in two pieces
            at = MAX_CHUNK - shift
            content = data * at + root + b"/x" + data * 4000
            write(out / "big", content)
            info = capture_tree(tmp_path, [Target("out", out)], {"out": out}, store)
            entries = tree.entries(store.packs, manifest_of(info, ["out"]))
            (entry,) = [e for e in entries if e.path == "out/big"]
            assert entry.chunks is not None and entry.chunks[0][1] == MAX_CHUNK  # the premise
            assert at <= MAX_CHUNK <= at + len(root)
            kind = "binary" if data == b"\0" else "text"
            assert info.embedded == [{"path": "out/big", "kind": kind, "roots": ["out"]}], (
                shift
            )
    finally:
        store.close()


def test_capture_refuses_a_relative_or_root_directory_root(tmp_path, workspace):
    out = workspace["out"]
    with pytest.raises(CheckpointError, match="not absolute"):
        capture_tree(tmp_path, [Target("out", out)], {"out": Path("rel/out")})
    with pytest.raises(CheckpointError, match="must not be '/'"):
        capture_tree(tmp_path, [Target("out", out)], {"out": Path("/")})


# -- plan --------------------------------------------------------------------------------


OLD = {"workspace": "/ws", "out": "/ws/out", "dl": "/dl"}


def record(path: str, kind: str, *roots: str) -> dict:
    return {"path": path, "kind": kind, "roots": list(roots)}


def test_a_plan_with_nothing_to_do_is_empty():
    embedded = [record("out/a", "text", "out")]
    plan = plan_relocation(embedded, OLD, dict(OLD))
    assert plan.empty and plan.rewrite == [] and plan.unrewritable == []


def test_plan_rewrites_text_and_links_and_binaries_whose_root_does_not_grow():
    embedded = [
        record("out/a.txt", "text", "out"),
        record("out/b.so", "binary", "out"),
        record("out/c.so", "binary", "dl"),
        record("out/staging", "symlink", "out"),
        record("out/unmoved.so", "binary", "dl"),
    ]
    new = {"workspace": "/w", "out": "/w/out", "dl": "/dl"}  # shorter; dl stays
    plan = plan_relocation(embedded, OLD, new)
    assert [item.path for item in plan.rewrite] == [
        "out/a.txt",
        "out/b.so",
        "out/staging",
    ]
    assert plan.rewrite[1] == Rewrite("out/b.so", "binary", ("out",))
    assert plan.unrewritable == [] and not plan.empty


def test_plan_reports_binaries_whose_root_gets_longer():
    embedded = [record("out/a.txt", "text", "out"), record("out/b.so", "binary", "out")]
    new = {"workspace": "/builds/ws", "out": "/builds/ws/out", "dl": "/dl"}
    plan = plan_relocation(embedded, OLD, new)
    assert [item.path for item in plan.rewrite] == ["out/a.txt"]
    [(path, reason)] = plan.unrewritable
    assert path == "out/b.so"
    assert (
        "root 'out'" in reason
        and "'/builds/ws/out' is longer than the old '/ws/out'" in reason
    )


def test_plan_a_binary_counts_only_the_roots_it_holds():
    # the workspace grows but the out dir, which the binary holds, gets shorter
    embedded = [record("out/b.so", "binary", "out")]
    new = {"workspace": "/ws-longer", "out": "/o", "dl": "/dl"}
    assert plan_relocation(embedded, OLD, new).rewrite == [
        Rewrite("out/b.so", "binary", ("out",))
    ]


def test_plan_reports_members_of_a_root_with_no_new_path():
    embedded = [record("out/a.txt", "text", "dl"), record("out/b.txt", "text", "out")]
    plan = plan_relocation(embedded, OLD, {"workspace": "/ws", "out": "/ws/out"})
    assert plan.rewrite == []
    assert plan.unrewritable == [
        ("out/a.txt", "holds root 'dl', which has no path here")
    ]


def test_plan_reports_roots_it_cannot_map():
    embedded = [
        record("out/a.txt", "text", "cache"),
        record("out/b.txt", "text", "same"),
    ]
    old = {"out": "/ws/out", "same": "/ws/out"}  # two names for one directory ...
    new = {"out": "/o", "same": "/p"}  # ... that now are two
    plan = plan_relocation(embedded, old, new)
    assert plan.rewrite == []
    assert plan.unrewritable == [
        ("out/a.txt", "holds root 'cache', whose old path is unknown"),
        ("out/b.txt", "holds root 'same', whose old path now maps to several paths"),
    ]


# -- apply -------------------------------------------------------------------------------


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    (tmp_path / "staging" / "out").mkdir(parents=True)
    return tmp_path / "staging"


def plant(staging: Path, rel: str, data: bytes, mode: int = 0o644) -> Path:
    path = write(staging / "out" / rel, data)
    path.chmod(mode)
    os.utime(path, ns=(1, MTIME))
    return path


def relocate(staging: Path, embedded, old, new):
    plan = plan_relocation(embedded, old, new)
    return plan, apply_relocation(staging, plan)


@pytest.mark.parametrize("new_root", ["/w/o", "/ws/new", "/builds/ci/ws/out"])
def test_text_files_are_rewritten_in_place_whatever_the_length(staging, new_root):
    text = plant(
        staging, "build/Makefile", b"O=/ws/out\nX=/ws/out/host:/ws/outside\n", 0o640
    )
    alias = staging / "out" / "build" / "Makefile.alias"
    os.link(text, alias)
    inode = text.stat().st_ino
    _, result = relocate(staging, [record("out/build/Makefile", "text", "out")],
                         {"out": "/ws/out"}, {"out": new_root})  # fmt: skip
    assert result.rewritten == ["out/build/Makefile"] and result.failed == []
    expected = f"O={new_root}\nX={new_root}/host:/ws/outside\n".encode()
    assert text.read_bytes() == expected and alias.read_bytes() == expected
    info = text.stat()
    assert (info.st_ino, info.st_mtime_ns, stat.S_IMODE(info.st_mode)) == (
        inode,
        MTIME,
        0o640,
    )


@pytest.mark.parametrize(
    ("new_root", "replacement"), [("/w/o", b"////w/o"), ("/ws/new", b"/ws/new")]
)
def test_binaries_are_padded_to_the_old_length(staging, new_root, replacement):
    data = b"\x7fELF\0" + b"/ws/out/lib\0" + b"\1" * 100 + b"RPATH=/ws/out\0"
    binary = plant(staging, "host/lib/libfoo.so", data, 0o755)
    _, result = relocate(staging, [record("out/host/lib/libfoo.so", "binary", "out")],
                         {"out": "/ws/out"}, {"out": new_root})  # fmt: skip
    assert result.rewritten == ["out/host/lib/libfoo.so"]
    assert binary.read_bytes() == data.replace(b"/ws/out", replacement)
    assert binary.stat().st_mtime_ns == MTIME
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755


def test_a_binary_whose_root_gets_longer_is_left_alone(staging):
    data = b"\0/ws/out/lib\0"
    binary = plant(staging, "lib.so", data)
    plan, result = relocate(staging, [record("out/lib.so", "binary", "out")],
                            {"out": "/ws/out"}, {"out": "/longer/ws/out"})  # fmt: skip
    assert [path for path, _ in plan.unrewritable] == ["out/lib.so"]
    assert result.rewritten == [] and binary.read_bytes() == data
    # a stale record (the binary does hold a growing root) fails without a partial write
    forced = RelocationPlan([Rewrite("out/lib.so", "binary", ("out",))], [], plan.roots)
    result = apply_relocation(staging, forced)
    assert result.failed == [
        ("out/lib.so", "binary file holds '/ws/out', whose new path is longer")
    ]
    assert binary.read_bytes() == data


def test_symlinks_into_an_old_root_are_repointed_keeping_times(staging):
    link = staging / "out" / "staging"
    os.symlink("/ws/out/host/x86_64-buildroot-linux-gnu/sysroot", link)
    os.symlink("/ws/out", staging / "out" / "self")
    os.symlink("/ws/outside", staging / "out" / "other")
    for path in ("staging", "self", "other"):
        os.utime(staging / "out" / path, ns=(1, MTIME), follow_symlinks=False)
    os.utime(staging / "out", ns=(1, MTIME + 1))
    embedded = [
        record("out/self", "symlink", "out"),
        record("out/staging", "symlink", "out"),
    ]
    _, result = relocate(staging, embedded, {"out": "/ws/out"}, {"out": "/builds/out"})
    assert result.rewritten == ["out/self", "out/staging"]
    assert os.readlink(link) == "/builds/out/host/x86_64-buildroot-linux-gnu/sysroot"
    assert os.readlink(staging / "out" / "self") == "/builds/out"
    assert os.readlink(staging / "out" / "other") == "/ws/outside"
    assert link.lstat().st_mtime_ns == MTIME
    assert (staging / "out").stat().st_mtime_ns == MTIME + 1
    assert sorted(os.listdir(staging / "out")) == ["other", "self", "staging"]


def test_nested_roots_rewrite_each_occurrence_by_its_longest_root(staging):
    text = plant(staging, "a.txt", b"/ws/src /ws/out/host /ws/dl/x")
    old = {"workspace": "/ws", "out": "/ws/out", "dl": "/ws/dl"}
    new = {"workspace": "/new", "out": "/elsewhere/out", "dl": "/ws/dl"}  # dl stays
    embedded = [record("out/a.txt", "text", "dl", "out", "workspace")]
    plan, _ = relocate(staging, embedded, old, new)
    assert plan.unrewritable == []
    assert text.read_bytes() == b"/new/src /elsewhere/out/host /ws/dl/x"


def test_a_root_that_is_a_prefix_of_another_directory_is_not_rewritten(staging):
    text = plant(staging, "a.txt", b"/ws/a/x /ws/ab/x /ws/a")
    relocate(staging, [record("out/a.txt", "text", "w")], {"w": "/ws/a"}, {"w": "/z"})
    assert text.read_bytes() == b"/z/x /ws/ab/x /z"


def test_read_only_files_are_rewritten_and_stay_read_only(staging):
    text = plant(staging, "ro.txt", b"/ws/out\n", 0o444)
    _, result = relocate(staging, [record("out/ro.txt", "text", "out")],
                         {"out": "/ws/out"}, {"out": "/o"})  # fmt: skip
    assert result.rewritten == ["out/ro.txt"] and text.read_bytes() == b"/o\n"
    assert stat.S_IMODE(text.stat().st_mode) == 0o444


def test_large_files_stream_with_matches_across_read_chunks(staging):
    root, new = b"/ws/out", b"/somewhere/much/longer/out"
    pieces, expected = [], []
    for index in range(40):  # ~40 MiB, a root right at every chunk boundary
        filler = bytes([65 + index % 26]) * (CHUNK - 3)
        pieces += [filler, root, b"/x"]
        expected += [filler, new, b"/x"]
    text = plant(staging, "big.log", b"".join(pieces))
    tracemalloc.start()
    try:
        _, result = relocate(staging, [record("out/big.log", "text", "out")],
                             {"out": root.decode()}, {"out": new.decode()})  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rewritten == ["out/big.log"]
    assert text.read_bytes() == b"".join(expected)
    assert text.stat().st_mtime_ns == MTIME
    assert peak < 16 << 20


def test_a_text_file_rewritten_in_memory_reads_as_one_streamed_through_the_matcher(staging, monkeypatch):
    """Files up to WHOLE_TEXT are substituted in one regex pass; larger ones stream through
    RootMatcher, which capture uses: both must take the same occurrences (longest root,
    boundary, leftmost, no overlap), whatever the roots and the text."""
    old = {"ws": "/ws", "out": "/ws/out", "outer": "/ws/outer", "dl": "/opt/dl", "in": "/x/opt/dl"}
    new = {"ws": "/elsewhere/ws", "out": "/o", "outer": "/ws/outer", "dl": "/dl", "in": "/y/opt/dl"}
    words = [*(p.encode() for p in old.values()), b"/ws/o", b"/opt/d", b"/ws/out2", b"/x", b"-", b"a",
             *(bytes([b]) for b in BOUNDARY)]
    rng = random.Random(17)
    embedded = [record("out/t.txt", "text", *old)]
    in_memory = relocate_module.WHOLE_TEXT
    for _ in range(200):
        data = b"".join(rng.choice(words) for _ in range(rng.randrange(1, 40)))
        results = []
        for whole_text in (in_memory, -1):  # in memory, then streamed
            monkeypatch.setattr(relocate_module, "WHOLE_TEXT", whole_text)
            text = plant(staging, "t.txt", data)
            _, result = relocate(staging, embedded, old, new)
            results.append((result.rewritten, text.read_bytes()))
        assert results[0] == results[1], data


def test_apply_never_follows_a_link_out_of_the_staging_tree(tmp_path, staging):
    outside = write(tmp_path / "outside" / "victim.txt", "/ws/out\n")
    os.symlink(tmp_path / "outside", staging / "out" / "link")
    os.symlink(outside, staging / "out" / "file-link")
    embedded = [record("out/link/victim.txt", "text", "out"),
                record("out/file-link", "text", "out"),
                record("out/../outside/victim.txt", "text", "out")]  # fmt: skip
    _, result = relocate(staging, embedded, {"out": "/ws/out"}, {"out": "/o"})
    assert result.rewritten == [] and len(result.failed) == 3
    assert outside.read_text() == "/ws/out\n"


def test_missing_members_are_reported_not_fatal(staging):
    plant(staging, "there.txt", b"/ws/out")
    embedded = [
        record("out/gone.txt", "text", "out"),
        record("out/there.txt", "text", "out"),
    ]
    _, result = relocate(staging, embedded, {"out": "/ws/out"}, {"out": "/o"})
    assert result.rewritten == ["out/there.txt"]
    assert result.failed == [("out/gone.txt", "No such file or directory")]


# -- capture, restore, relocate ----------------------------------------------------------


def test_a_tree_captured_at_one_path_restores_relocated_at_another(tmp_path, workspace):
    out = workspace["out"]
    write(out / "build/pkg/config.status", f"abs_builddir='{out}/build/pkg'\n")
    write(out / "host/lib/libfoo.so", b"\0" + f"{out}/host/lib".encode() + b"\0")
    write(out / "host/x86_64-buildroot-linux-gnu/sysroot/.keep", "")
    os.symlink(f"{out}/host/x86_64-buildroot-linux-gnu/sysroot", out / "staging")
    os.symlink("/opt/toolchain/bin/ar", out / "host/ar")
    for path in [*out.rglob("*"), out]:
        os.utime(path, ns=(1, MTIME), follow_symlinks=False)
    targets = [Target("out", out)]
    store = Store(tmp_path / "store")
    try:
        info = store.capture(targets, roots={"out": out})
        new_out = tmp_path / "o"  # shorter: every member can be rewritten
        staging = tmp_path / "restore"
        store.restore(manifest_of(info, targets), staging)
    finally:
        store.close()
    plan = plan_relocation(info.embedded, {"out": str(out)}, {"out": str(new_out)})
    result = apply_relocation(staging, plan)
    assert plan.unrewritable == [] and result.failed == []
    assert sorted(result.rewritten) == [
        "out/build/pkg/config.status",
        "out/host/lib/libfoo.so",
        "out/staging",
    ]
    tree = staging / "out"
    assert (
        tree / "build/pkg/config.status"
    ).read_text() == f"abs_builddir='{new_out}/build/pkg'\n"
    padded = b"/" * (len(str(out)) - len(str(new_out))) + str(new_out).encode()
    assert (tree / "host/lib/libfoo.so").read_bytes() == b"\0" + padded + b"/host/lib\0"
    assert (
        os.readlink(tree / "staging")
        == f"{new_out}/host/x86_64-buildroot-linux-gnu/sysroot"
    )
    assert os.readlink(tree / "host/ar") == "/opt/toolchain/bin/ar"
    assert {p.lstat().st_mtime_ns for p in [*tree.rglob("*"), tree]} == {MTIME}
