"""Checkpoint payload: capture/extract round trips and refusal of hostile archives."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from gaia_core.anchors import Target
from gaia_core.checkpoints.archive import (
    ExtractInfo,
    PayloadCorrupt,
    PayloadInfo,
    UnsafeArchive,
    capture,
    extract,
    payload_file_name,
)
from gaia_core.checkpoints.tarscan import TarScanner
from gaia_core.errors import CheckpointError

OLD = 1_600_000_000  # a fixed mtime in the past


# -- helpers -----------------------------------------------------------------------------


def build_tree(root: Path) -> None:
    (root / "build" / "pkg").mkdir(parents=True)
    stamp = root / "build" / "pkg" / ".stamp_built"
    stamp.write_text("built\n")
    (root / "empty").mkdir()
    script = root / "host" / "bin" / "tool"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    (root / "host" / "bin" / "tool-alias").hardlink_to(script)
    (root / "host" / "lib").symlink_to("bin")
    long_dir = root / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 150)).write_bytes(b"long name\n")
    (root / "staging").symlink_to(root / "host")  # absolute, inside the target
    (root / ".gaia-checkpoint.json").write_text("{}")
    (root / "build" / ".gaia-checkpoint.json").write_text("nested, kept")
    for path in [stamp, script, root / "empty", root / "build" / "pkg"]:
        os.utime(path, (OLD, OLD))
    os.utime(root / "staging", (OLD, OLD), follow_symlinks=False)


def capture_to_file(targets, path: Path, **options) -> PayloadInfo:
    with open(path, "wb") as dest:
        return capture(targets, dest, **options)


def extract_file(
    path: Path, staging: Path, targets, info: PayloadInfo | None, compression="zstd",
    **options,
) -> ExtractInfo:  # fmt: skip
    staging.mkdir(exist_ok=True)
    with open(path, "rb") as source:
        return extract(
            source, staging, targets, compression=compression,
            expected_sha256=info.sha256 if info else None,
            expected_size=info.size if info else None, **options,
        )  # fmt: skip


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields
) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = OLD
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def hostile_payload(tmp_path: Path, members, fmt=tarfile.GNU_FORMAT, root="t") -> Path:
    """A zstd payload whose tar members are written verbatim by Python's tarfile."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        if root:
            tar.addfile(*member(root, tarfile.DIRTYPE))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    path = tmp_path / "hostile.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


@pytest.fixture
def target_dir(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    root.mkdir()
    return root


def refuse(tmp_path: Path, members, match: str, targets=None, **options) -> None:
    targets = targets or [Target("t", tmp_path / "final" / "t")]
    payload = hostile_payload(tmp_path, members, **options)
    staging = tmp_path / "staging"
    with pytest.raises(UnsafeArchive, match=match):
        extract_file(payload, staging, targets, None)


def accept(tmp_path: Path, members, targets, **options) -> Path:
    payload = hostile_payload(tmp_path, members, **options)
    staging = tmp_path / "staging"
    extract_file(payload, staging, targets, None)
    return staging


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_round_trip_keeps_content_modes_mtimes_links_and_empty_dirs(
    tmp_path, target_dir, compression
):
    build_tree(target_dir)
    other = tmp_path / "images"
    other.mkdir()
    (other / "sdcard.img").write_bytes(b"\0" * 4096)
    targets = [Target("out", target_dir), Target("images", other)]
    payload = tmp_path / payload_file_name(compression)
    info = capture_to_file(targets, payload, compression=compression)
    assert info.size == payload.stat().st_size
    staging = tmp_path / "staging"
    extract_file(payload, staging, targets, info, compression)

    out = staging / "out"
    stamp = out / "build" / "pkg" / ".stamp_built"
    assert stamp.read_text() == "built\n"
    assert int(stamp.stat().st_mtime) == OLD
    assert int((out / "build" / "pkg").stat().st_mtime) == OLD
    tool = out / "host" / "bin" / "tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o750
    assert tool.stat().st_ino == (out / "host" / "bin" / "tool-alias").stat().st_ino
    assert os.readlink(out / "host" / "lib") == "bin"
    assert os.readlink(out / "staging") == str(target_dir / "host")
    assert (out / "empty").is_dir() and not any((out / "empty").iterdir())
    assert int((out / "empty").stat().st_mtime) == OLD
    long_file = out / ("d" * 120) / ("e" * 120) / ("f" * 150)
    assert long_file.read_bytes() == b"long name\n"
    assert (staging / "images" / "sdcard.img").read_bytes() == b"\0" * 4096
    if compression == "none":
        assert tarfile.is_tarfile(payload)
    else:
        assert payload.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_exclude_is_anchored_at_each_target_root(tmp_path, target_dir):
    build_tree(target_dir)
    targets = [Target("out", target_dir)]
    info = capture_to_file(targets, tmp_path / "p.tar.zst")
    extract_file(tmp_path / "p.tar.zst", tmp_path / "staging", targets, info)
    assert not (tmp_path / "staging" / "out" / ".gaia-checkpoint.json").exists()
    assert (tmp_path / "staging" / "out" / "build" / ".gaia-checkpoint.json").exists()

    info = capture_to_file(targets, tmp_path / "q.tar.zst", exclude=("build/pkg",))
    extract_file(tmp_path / "q.tar.zst", tmp_path / "staging2", targets, info)
    assert (tmp_path / "staging2" / "out" / ".gaia-checkpoint.json").exists()
    assert not (tmp_path / "staging2" / "out" / "build" / "pkg").exists()


def test_capture_is_deterministic_for_an_unchanged_tree(tmp_path, target_dir):
    build_tree(target_dir)
    targets = [Target("out", target_dir)]
    first = capture_to_file(targets, tmp_path / "a", compression="none")
    second = capture_to_file(targets, tmp_path / "b", compression="none")
    assert first == second


def test_capture_reports_tar_failure_with_its_message(
    tmp_path, target_dir, monkeypatch
):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tar").write_text(
        "#!/bin/sh\necho 'tar: ./x: Cannot open: Permission denied' >&2\nexit 2\n"
    )
    (fake / "tar").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(CheckpointError, match="exit status 2: tar: ./x: Cannot open"):
        capture_to_file([Target("out", target_dir)], tmp_path / "p")


def test_capture_refuses_bad_targets_and_excludes(tmp_path, target_dir):
    with pytest.raises(CheckpointError, match="is not a directory"):
        capture_to_file([Target("out", tmp_path / "missing")], tmp_path / "p")
    with pytest.raises(CheckpointError, match="invalid checkpoint target name"):
        capture_to_file([Target("a/b", target_dir)], tmp_path / "p")
    with pytest.raises(CheckpointError, match="used twice"):
        capture_to_file(
            [Target("o", target_dir), Target("o", target_dir)], tmp_path / "p"
        )
    with pytest.raises(CheckpointError, match="relative to the target root"):
        capture_to_file([Target("o", target_dir)], tmp_path / "p", exclude=("../x",))
    with pytest.raises(CheckpointError, match="unknown compression"):
        capture_to_file([Target("o", target_dir)], tmp_path / "p", compression="gzip")


# -- corruption --------------------------------------------------------------------------


@pytest.fixture
def captured(tmp_path, target_dir):
    build_tree(target_dir)
    (target_dir / "data.bin").write_bytes(os.urandom(300_000))
    targets = [Target("out", target_dir)]
    payloads = {}
    for compression in ("zstd", "none"):
        path = tmp_path / payload_file_name(compression)
        payloads[compression] = (
            path,
            capture_to_file(targets, path, compression=compression),
        )
    return targets, payloads


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("where", [0.0, 0.3, 0.7, 0.999])
def test_flipped_byte_is_payload_corrupt_in_verify_mode(
    tmp_path, captured, compression, where
):
    targets, payloads = captured
    path, info = payloads[compression]
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x20
    path.write_bytes(data)
    with pytest.raises(PayloadCorrupt):
        extract_file(path, tmp_path / "staging", targets, info, compression)


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("keep", [0.5, 0.99, -4, -1])
def test_truncated_payload_is_corrupt(tmp_path, captured, compression, verify, keep):
    targets, payloads = captured
    path, info = payloads[compression]
    data = path.read_bytes()
    if compression == "none" and keep in (-4, -1):
        keep = (
            -5000
        )  # inside the end-of-archive zero blocks tar pads with is still complete
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    path.write_bytes(data[:cut])
    with pytest.raises(PayloadCorrupt):
        extract_file(
            path, tmp_path / "staging", targets, info if verify else None, compression
        )


def test_hash_mismatch_found_after_tar_finished_still_raises(tmp_path, captured):
    targets, payloads = captured
    path, info = payloads["zstd"]
    wrong = dataclasses.replace(info, sha256="0" * 64)
    with pytest.raises(PayloadCorrupt, match="sha256"):
        extract_file(path, tmp_path / "staging", targets, wrong)
    with pytest.raises(PayloadCorrupt, match="size"):
        extract_file(
            path,
            tmp_path / "staging2",
            targets,
            dataclasses.replace(info, size=info.size + 1),
        )
    with pytest.raises(PayloadCorrupt, match="larger than the expected"):
        extract_file(
            path,
            tmp_path / "staging3",
            targets,
            dataclasses.replace(info, size=info.size - 1),
        )


def test_permissive_mode_extracts_without_a_hash(tmp_path, captured):
    targets, payloads = captured
    path, _ = payloads["zstd"]
    extract_file(path, tmp_path / "staging", targets, None)
    assert (tmp_path / "staging" / "out" / "build" / "pkg" / ".stamp_built").exists()


def test_payload_missing_a_target_is_corrupt(tmp_path, captured):
    targets, payloads = captured
    path, info = payloads["zstd"]
    more = [*targets, Target("images", tmp_path / "images")]
    with pytest.raises(PayloadCorrupt, match="no directory for target 'images'"):
        extract_file(path, tmp_path / "staging", more, info)


def test_trailing_garbage_is_corrupt(tmp_path, captured):
    targets, payloads = captured
    path, _ = payloads["zstd"]
    path.write_bytes(path.read_bytes() + b"garbage")
    with pytest.raises(PayloadCorrupt):
        extract_file(path, tmp_path / "staging", targets, None)


def test_staging_must_be_empty(tmp_path, captured):
    targets, payloads = captured
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "x").touch()
    with pytest.raises(CheckpointError, match="not empty"):
        extract_file(payloads["zstd"][0], tmp_path / "staging", targets, None)


# -- hostile archives --------------------------------------------------------------------


def test_refuses_dot_dot(tmp_path):
    refuse(tmp_path, [member("t/../x", data=b"x")], "contains '..'")


def test_refuses_absolute_name(tmp_path):
    refuse(tmp_path, [member("/abs", data=b"x")], "absolute name")


def test_refuses_member_outside_every_target(tmp_path):
    refuse(tmp_path, [member("other/x", data=b"x")], "not inside a target")


def test_refuses_member_through_a_symlink(tmp_path):
    refuse(
        tmp_path,
        [
            member("t/link", tarfile.SYMTYPE, linkname="sub"),
            member("t/link/x", data=b"x"),
        ],
        "goes through the symlink 't/link'",
    )


def test_refuses_directory_over_an_earlier_symlink(tmp_path):
    refuse(
        tmp_path,
        [
            member("t/link", tarfile.SYMTYPE, linkname="sub"),
            member("t/link", tarfile.DIRTYPE),
        ],
        "replaces an earlier symlink",
    )


def test_refuses_a_symlink_over_an_earlier_symlink(tmp_path):
    refuse(
        tmp_path,
        [
            member("t/link", tarfile.SYMTYPE, linkname="a"),
            member("t/link", tarfile.SYMTYPE, linkname="/etc"),
        ],
        "replaces an earlier symlink",
    )


def test_refuses_a_file_over_an_earlier_symlink(tmp_path):
    # tar would unlink the link first, but a member that takes a link's place is never
    # what capture writes: refuse it rather than reason about what tar does
    refuse(
        tmp_path,
        [
            member("t/link", tarfile.SYMTYPE, linkname="/etc/passwd"),
            member("t/link", data=b"x"),
        ],
        "replaces an earlier symlink",
    )


def test_refuses_a_symlink_over_an_earlier_directory(tmp_path):
    refuse(
        tmp_path,
        [
            member("t/d", tarfile.DIRTYPE),
            member("t/d", tarfile.SYMTYPE, linkname="/etc"),
        ],
        "symlink replaces a directory",
    )


@pytest.mark.parametrize(
    "text",
    ["../../etc", "../../../../../../../../etc/passwd", "/etc/passwd",
     "/opt/toolchain/bin/x86_64-linux-gnu-ar", "dangling/nowhere", "."],
)  # fmt: skip
def test_links_are_data_whatever_they_point_to(tmp_path, text):
    staging = accept(
        tmp_path,
        [
            member("t/a", tarfile.DIRTYPE),
            member("t/a/link", tarfile.SYMTYPE, linkname=text),
        ],
        [Target("t", tmp_path / "final" / "t")],
    )
    assert os.readlink(staging / "t" / "a" / "link") == text


def test_symlink_chains_and_loops_are_data(tmp_path):
    staging = accept(
        tmp_path,
        [
            member("t/d", tarfile.SYMTYPE, linkname="."),
            member("t/e", tarfile.SYMTYPE, linkname="d/.."),
            member("t/loop-a", tarfile.SYMTYPE, linkname="loop-b"),
            member("t/loop-b", tarfile.SYMTYPE, linkname="loop-a"),
        ],
        [Target("t", tmp_path / "final" / "t")],
    )
    assert os.readlink(staging / "t" / "e") == "d/.."
    assert os.readlink(staging / "t" / "loop-a") == "loop-b"


def test_refuses_a_member_through_a_chain_of_symlinks(tmp_path):
    refuse(
        tmp_path,
        [
            member("t/d", tarfile.SYMTYPE, linkname="."),
            member("t/e", tarfile.SYMTYPE, linkname="d/.."),
            member("t/e/x", data=b"x"),
        ],
        "goes through the symlink 't/e'",
    )


def test_absolute_symlink_leaving_a_rootfs_dir_is_data(tmp_path):
    targets = [Target("t", tmp_path / "final" / "t", rootfs_dirs=("target",))]
    members = [member("t/target", tarfile.DIRTYPE),
               member("t/target/x", tarfile.SYMTYPE, linkname="/../../../etc")]  # fmt: skip
    staging = accept(tmp_path, members, targets)
    assert os.readlink(staging / "t" / "target" / "x") == "/../../../etc"


def test_refuses_hard_link_to_dot_dot(tmp_path):
    refuse(
        tmp_path,
        [member("t/h", tarfile.LNKTYPE, linkname="../x")],
        "hard link target '../x'",
    )


def test_refuses_hard_link_into_another_target(tmp_path):
    targets = [Target("t", tmp_path / "t"), Target("u", tmp_path / "u")]
    members = [member("u", tarfile.DIRTYPE), member("u/f", data=b"x"),
               member("t/h", tarfile.LNKTYPE, linkname="u/f")]  # fmt: skip
    refuse(tmp_path, members, "in another target", targets=targets)


def test_hard_link_to_a_symlink_is_another_symlink_with_its_text(tmp_path):
    # GNU tar writes hard-linked symlinks this way (rsync --link-dest makes them, as in
    # Buildroot's per-package directories); link(2) does not follow the symlink
    members = [member("t/a", tarfile.DIRTYPE), member("t/a/up", tarfile.SYMTYPE, linkname="../x"),
               member("t/up", tarfile.LNKTYPE, linkname="t/a/up")]  # fmt: skip
    staging = accept(tmp_path, members, [Target("t", tmp_path / "final" / "t")])
    assert os.readlink(staging / "t" / "up") == "../x"


def test_refuses_a_member_through_a_hard_link_to_a_symlink(tmp_path):
    members = [member("t/link", tarfile.SYMTYPE, linkname="/etc"),
               member("t/copy", tarfile.LNKTYPE, linkname="t/link"),
               member("t/copy/passwd", data=b"x")]  # fmt: skip
    refuse(tmp_path, members, "goes through the symlink 't/copy'")


def test_refuses_hard_link_to_a_directory(tmp_path):
    members = [
        member("t/d", tarfile.DIRTYPE),
        member("t/h", tarfile.LNKTYPE, linkname="t/d"),
    ]
    refuse(tmp_path, members, "hard link target 't/d' is a directory")


def test_refuses_hard_link_to_no_earlier_member(tmp_path):
    # GNU tar would link to whatever is at that path when it gets there
    members = [member("t/h", tarfile.LNKTYPE, linkname="t/later"),
               member("t/later", data=b"x")]  # fmt: skip
    refuse(tmp_path, members, "hard link target 't/later' is no earlier file")


def test_refuses_hard_link_through_a_symlink(tmp_path):
    members = [member("t/d", tarfile.DIRTYPE), member("t/d/f", data=b"x"),
               member("t/link", tarfile.SYMTYPE, linkname="d"),
               member("t/h", tarfile.LNKTYPE, linkname="t/link/f")]  # fmt: skip
    refuse(tmp_path, members, "hard link target goes through the symlink 't/link'")


def test_a_file_replaced_by_a_symlink_is_a_symlink_for_later_hard_links(tmp_path):
    members = [member("t/f", data=b"x"),
               member("t/f", tarfile.SYMTYPE, linkname="/etc"),
               member("t/h", tarfile.LNKTYPE, linkname="t/f"),
               member("t/h/passwd", data=b"owned")]  # fmt: skip
    refuse(tmp_path, members, "goes through the symlink 't/h'")


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.CHRTYPE, "character device"), (tarfile.BLKTYPE, "block device"),
     (tarfile.FIFOTYPE, "FIFO")],
)  # fmt: skip
def test_refuses_devices_and_fifos(tmp_path, kind, what):
    refuse(tmp_path, [member("t/dev", kind, devmajor=1, devminor=3)], what)


def test_refuses_pax_path_override(tmp_path):
    info, data = member("t/harmless", data=b"x")
    info.pax_headers = {"path": "t/../../escape"}
    refuse(tmp_path, [(info, data)], "contains '..'", fmt=tarfile.PAX_FORMAT)


def test_refuses_pax_global_path(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "/etc/x"}) as tar:  # fmt: skip
        tar.addfile(*member("t", tarfile.DIRTYPE))
    path = tmp_path / "g.tar"
    path.write_bytes(raw.getvalue())
    with pytest.raises(UnsafeArchive, match="global pax header sets 'path'"):
        extract_file(
            path, tmp_path / "staging", [Target("t", tmp_path / "t")], None, "none"
        )


def test_refuses_long_gnu_name_with_dot_dot(tmp_path):
    refuse(
        tmp_path, [member("t/" + "a" * 120 + "/../../../x", data=b"x")], "contains '..'"
    )


def test_unsafe_archive_leaves_nothing_outside_staging(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    members = [member("t/link", tarfile.SYMTYPE, linkname=str(sentinel)),
               member("t/link/pwned", data=b"owned")]  # fmt: skip
    refuse(tmp_path, members, "goes through the symlink 't/link'")
    assert list(sentinel.iterdir()) == []
    members = [member("t/d", tarfile.SYMTYPE, linkname="."),
               member("t/e", tarfile.SYMTYPE, linkname="d/.."),
               member("t/e/sentinel/pwned", data=b"owned")]  # fmt: skip
    refuse(tmp_path, members, "goes through the symlink")
    assert list(sentinel.iterdir()) == []


def test_accepts_absolute_symlink_inside_a_rootfs_dir(tmp_path):
    targets = [
        Target("t", tmp_path / "final", rootfs_dirs=("target", "per-package/*/target"))
    ]
    members = [
        member("t/target/etc/x.wants/y", tarfile.SYMTYPE, linkname="/usr/lib/y"),
        member(
            "t/per-package/busybox/target/bin/sh",
            tarfile.SYMTYPE,
            linkname="/bin/busybox",
        ),
    ]
    staging = accept(tmp_path, members, targets)
    assert (
        os.readlink(staging / "t" / "target" / "etc" / "x.wants" / "y") == "/usr/lib/y"
    )


def test_accepts_absolute_symlink_into_the_final_target_path(tmp_path):
    final = tmp_path / "final" / "out"
    targets = [Target("t", final)]
    link = f"{final}/host/x86_64-buildroot-linux-gnu/sysroot"
    staging = accept(
        tmp_path, [member("t/staging", tarfile.SYMTYPE, linkname=link)], targets
    )
    assert os.readlink(staging / "t" / "staging") == link


def test_scanner_hands_tar_nothing_past_the_last_validated_header(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(*member("t", tarfile.DIRTYPE))
        tar.addfile(member("t/ok", data=b"fine")[0], io.BytesIO(b"fine"))
        bad_offset = raw.tell()
        tar.addfile(member("/etc/evil", data=b"evil")[0], io.BytesIO(b"evil"))
    stream = raw.getvalue()
    scanner = TarScanner([Target("t", tmp_path / "t")])
    passed = bytearray()
    with pytest.raises(Exception, match="absolute name"):
        for offset in range(
            0, len(stream), 7
        ):  # odd chunk size: headers split across chunks
            for piece in scanner.feed(stream[offset : offset + 7]):
                passed += piece
    assert bytes(passed) == stream[:bad_offset]


def test_bounded_memory_for_a_large_file(tmp_path, target_dir):
    block = os.urandom(1 << 20)
    with open(target_dir / "big.img", "wb") as out:
        out.writelines(
            block if index % 2 else bytes(len(block)) for index in range(200)
        )
    targets = [Target("out", target_dir)]
    tracemalloc.start()
    try:
        info = capture_to_file(targets, tmp_path / "p.tar.zst")
        _, capture_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        extract_file(tmp_path / "p.tar.zst", tmp_path / "staging", targets, info)
        _, extract_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "staging" / "out" / "big.img").stat().st_size == 200 << 20
    assert capture_peak < 64 << 20
    assert extract_peak < 64 << 20


def raw_header(
    name: bytes, typeflag: bytes, size: int = 0, linkname: bytes = b""
) -> bytes:
    """A GNU tar header block written by hand, for what tarfile refuses to produce."""
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"0000755\0"
    header[108:124] = b"0000000\0" * 2
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % OLD
    header[156:157] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar  \0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def raw_payload(tmp_path: Path, *blocks: bytes) -> Path:
    path = tmp_path / "raw.tar"
    path.write_bytes(b"".join(blocks) + bytes(1024))
    return path


@pytest.mark.parametrize("typeflag", [b"5", b"1", b"2"])
def test_refuses_non_regular_member_with_data(tmp_path, typeflag):
    # GNU tar reads no data after a hard link (and we would skip it): out of step, a
    # header hidden in the "data" would reach tar unchecked
    hidden = raw_header(b"/etc/evil", b"0", 4)
    path = raw_payload(
        tmp_path,
        raw_header(b"t", b"5"),
        raw_header(b"t/x", typeflag, 1024, linkname=b"t"),
        hidden,
        b"evil".ljust(512, b"\0"),
    )
    with pytest.raises(UnsafeArchive, match="must not carry data"):
        extract_file(
            path, tmp_path / "staging", [Target("t", tmp_path / "t")], None, "none"
        )


def test_bad_header_checksum_is_corrupt(tmp_path):
    header = bytearray(raw_header(b"t", b"5"))
    header[0:1] = b"u"
    path = raw_payload(tmp_path, bytes(header))
    with pytest.raises(PayloadCorrupt, match="checksum mismatch"):
        extract_file(
            path, tmp_path / "staging", [Target("t", tmp_path / "t")], None, "none"
        )


def test_refuses_unsupported_pax_keyword(tmp_path):
    info, data = member("t/f", data=b"x")
    info.pax_headers = {"GNU.sparse.name": "/etc/passwd"}
    refuse(
        tmp_path,
        [(info, data)],
        "unsupported 'GNU.sparse.name'",
        fmt=tarfile.PAX_FORMAT,
    )


def test_scanner_passes_a_valid_stream_through_unchanged_in_any_chunking(
    tmp_path, target_dir
):
    build_tree(target_dir)
    payload = tmp_path / "p.tar"
    capture_to_file([Target("out", target_dir)], payload, compression="none")
    stream = payload.read_bytes()
    for chunk in (1, 511, 513, 4096, len(stream)):
        scanner = TarScanner([Target("out", target_dir)])
        passed = bytearray()
        for offset in range(0, len(stream), chunk):
            for piece in scanner.feed(stream[offset : offset + chunk]):
                passed += piece
        scanner.finish()
        assert bytes(passed) == stream


# -- capture refuses what restore refuses ------------------------------------------------


def test_capture_and_restore_keep_links_pointing_anywhere(tmp_path, target_dir):
    (target_dir / "host" / "bin").mkdir(parents=True)
    texts = {
        "host/bin/x86_64-linux-gnu-ar": "/opt/toolchain/bin/x86_64-linux-gnu-ar",
        "host/bin/x86_64-linux-gnu-gcc": "toolchain-wrapper",
        "host/bin/up": "../../../outside/x",
        "host/bin/dangling": "missing/file",
        "staging": str(target_dir / "host" / "x86_64-buildroot-linux-gnu" / "sysroot"),
    }
    for rel, text in texts.items():
        os.symlink(text, target_dir / rel)
    targets = [Target("out", target_dir)]
    info = capture_to_file(targets, tmp_path / "p")
    extract_file(tmp_path / "p", tmp_path / "staging", targets, info)
    for rel, text in texts.items():
        assert os.readlink(tmp_path / "staging" / "out" / rel) == text


def test_capture_keeps_hard_linked_symlinks(tmp_path, target_dir):
    os.symlink("/opt/toolchain/bin/ar", target_dir / "ar")
    os.link(target_dir / "ar", target_dir / "ar-again", follow_symlinks=False)
    targets = [Target("out", target_dir)]
    info = capture_to_file(targets, tmp_path / "p.tar", compression="none")
    with tarfile.open(tmp_path / "p.tar") as tar:
        assert tar.getmember("out/ar-again").islnk()  # what GNU tar writes for them
    extract_file(tmp_path / "p.tar", tmp_path / "staging", targets, info, "none")
    assert (
        os.readlink(tmp_path / "staging" / "out" / "ar-again")
        == "/opt/toolchain/bin/ar"
    )


@pytest.mark.parametrize("kind", ["FIFO", "character device", "block device"])
def test_capture_refuses_what_restore_refuses_naming_the_member(
    tmp_path, target_dir, kind
):
    (target_dir / "build").mkdir()
    node = target_dir / "build" / "node"
    if kind == "FIFO":
        os.mkfifo(node)
    else:
        mode = stat.S_IFCHR if kind == "character device" else stat.S_IFBLK
        os.mknod(node, mode | 0o600, os.makedev(1, 3))
    with pytest.raises(
        UnsafeArchive, match=f"member 'out/build/node': {kind} is not allowed"
    ):
        capture_to_file([Target("out", target_dir)], tmp_path / "p")


def test_capture_refuses_a_socket_that_tar_would_leave_out(
    tmp_path, target_dir, monkeypatch
):
    (target_dir / "run").mkdir()
    monkeypatch.chdir(target_dir / "run")  # a short socket path, whatever tmp_path is
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("control")
        with pytest.raises(
            UnsafeArchive, match="member 'out/run/control': a socket is not allowed"
        ):
            capture_to_file([Target("out", target_dir)], tmp_path / "p")


# -- pax format, nanosecond mtimes ---------------------------------------------------------


def set_distinct_mtimes(root: Path) -> dict[str, int]:
    """Give every entry its own mtime with a sub-second part (one a whole second)."""
    entries = [root, *sorted(root.rglob("*"))]
    times = {}
    for index, path in enumerate(reversed(entries)):  # children before their directory
        mtime = 1_600_000_000_000_000_000 + index * 1_000_000_007 + 123_456_789
        if index == 3:
            mtime = 1_600_000_000_000_000_000
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
    for path in entries:
        times[str(path.relative_to(root))] = path.lstat().st_mtime_ns
    return times


def restored_mtimes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): path.lstat().st_mtime_ns
        for path in [root, *sorted(root.rglob("*"))]
    }


def test_restored_mtimes_equal_the_captured_tree_to_the_nanosecond(
    tmp_path, target_dir
):
    build_tree(target_dir)
    (target_dir / ".gaia-checkpoint.json").unlink()  # excluded: would be missing
    (target_dir / "host" / "ar").symlink_to("/opt/toolchain/bin/ar")  # tar delays these
    times = set_distinct_mtimes(target_dir)
    assert any(t % 10**9 for t in times.values()) and any(
        not t % 10**9 for t in times.values()
    )
    targets = [Target("out", target_dir)]
    info = capture_to_file(targets, tmp_path / "p.tar.zst")
    extract_file(tmp_path / "p.tar.zst", tmp_path / "staging", targets, info)
    assert restored_mtimes(tmp_path / "staging" / "out") == times


def test_capture_writes_pax_with_sub_second_mtimes_and_no_atime_or_ctime(
    tmp_path, target_dir
):
    (target_dir / "f").write_text("x")
    os.utime(target_dir / "f", ns=(1, 1_600_000_000_123_456_789))
    capture_to_file([Target("out", target_dir)], tmp_path / "p.tar", compression="none")
    with tarfile.open(tmp_path / "p.tar") as tar:
        headers = tar.getmember("out/f").pax_headers
    assert headers["mtime"] == "1600000000.123456789"
    assert "atime" not in headers and "ctime" not in headers


def test_capture_is_deterministic_when_only_atimes_and_ctimes_change(
    tmp_path, target_dir
):
    build_tree(target_dir)
    targets = [Target("out", target_dir)]
    first = capture_to_file(targets, tmp_path / "a", compression="none")
    for path in target_dir.rglob("*"):  # new atime; the utime call changes ctime too
        mtime = path.lstat().st_mtime_ns
        os.utime(path, ns=(mtime + 5_000_000_000, mtime), follow_symlinks=False)
    second = capture_to_file(targets, tmp_path / "b", compression="none")
    assert first == second


def test_accepts_the_pax_records_capture_writes(tmp_path):
    long_dir = "t/" + "d" * 150
    info, data = member(long_dir + "/" + "f" * 120, data=b"data")
    info.pax_headers = {"mtime": "1600000000.5", "size": "4", "uid": "3000000",
                        "gid": "3000000", "uname": "builder", "gname": "builders"}  # fmt: skip
    link, _ = member("t/link", tarfile.SYMTYPE, linkname="/opt/" + "x" * 200)
    staging = accept(
        tmp_path, [member(long_dir, tarfile.DIRTYPE), (info, data), (link, b"")],
        [Target("t", tmp_path / "t")], fmt=tarfile.PAX_FORMAT,
    )  # fmt: skip
    restored = staging / long_dir / ("f" * 120)
    assert restored.read_bytes() == b"data"
    assert restored.stat().st_mtime_ns == 1_600_000_000_500_000_000
    assert os.readlink(staging / "t" / "link") == "/opt/" + "x" * 200


@pytest.mark.parametrize(
    "keyword", ["mode", "GNU.sparse.map", "SCHILY.devmajor", "GNU.dumpdir"]
)
def test_refuses_pax_keywords_that_change_what_tar_writes(tmp_path, keyword):
    info, data = member("t/f", data=b"x")
    info.pax_headers = {keyword: "4755"}
    refuse(tmp_path, [(info, data)], f"unsupported '{keyword}'", fmt=tarfile.PAX_FORMAT)


# -- counts and limits -------------------------------------------------------------------


def test_capture_and_extract_count_the_tar_stream_and_its_members(tmp_path, target_dir):
    build_tree(target_dir)
    images = tmp_path / "images"
    images.mkdir()
    (images / "sdcard.img").write_bytes(b"\1" * 5000)
    targets = [Target("out", target_dir), Target("images", images)]
    plain = capture_to_file(targets, tmp_path / "p.tar", compression="none")
    assert plain.unpacked_size == plain.size == (tmp_path / "p.tar").stat().st_size
    with tarfile.open(tmp_path / "p.tar", ignore_zeros=True) as tar:
        assert plain.entries == len(tar.getmembers())
    info = capture_to_file(targets, tmp_path / "p.tar.zst")
    assert (info.unpacked_size, info.entries) == (plain.unpacked_size, plain.entries)
    assert info.size < info.unpacked_size
    extracted = extract_file(
        tmp_path / "p.tar.zst", tmp_path / "staging", targets, info
    )
    assert extracted == ExtractInfo(info.unpacked_size, info.entries, [])


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_extract_stops_past_the_expected_unpacked_size_or_entry_count(
    tmp_path, captured, compression
):
    targets, payloads = captured
    path, info = payloads[compression]
    exact = {"max_unpacked": info.unpacked_size, "max_entries": info.entries}
    extract_file(path, tmp_path / "s1", targets, info, compression, **exact)
    with pytest.raises(PayloadCorrupt, match="unpacks to more than the expected"):
        extract_file(path, tmp_path / "s2", targets, info, compression,
                     max_unpacked=info.unpacked_size - 1)  # fmt: skip
    with pytest.raises(
        PayloadCorrupt, match=f"more than the expected {info.entries - 1} entries"
    ):
        extract_file(path, tmp_path / "s3", targets, info, compression,
                     max_entries=info.entries - 1)  # fmt: skip


def write_zstd_bomb(path: Path, size: int) -> PayloadInfo:
    """A small, well-formed payload whose one file decompresses to ``size`` zero bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(*member("t", tarfile.DIRTYPE))
        header = member("t/zeros")[0]
        header.size = size
        raw.write(header.tobuf(tarfile.GNU_FORMAT))
        head = raw.getvalue()
    zeros = bytes(1 << 20)
    with open(path, "wb") as out:
        with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as zst:
            zst.write(head)
            for _ in range(size >> 20):
                zst.write(zeros)
            zst.write(bytes(1024))
    data = path.read_bytes()
    return PayloadInfo(hashlib.sha256(data).hexdigest(), len(data), size, 2, [], [])


def test_a_zstd_bomb_stops_early_with_bounded_memory_and_disk(tmp_path):
    bomb = write_zstd_bomb(tmp_path / "bomb.tar.zst", 1 << 30)
    assert bomb.size < 1 << 20  # a small payload ...
    limit = 4 << 20  # ... whose manifest would claim a small tree
    targets = [Target("t", tmp_path / "t")]
    tracemalloc.start()
    try:
        with pytest.raises(PayloadCorrupt, match="unpacks to more than the expected"):
            extract_file(tmp_path / "bomb.tar.zst", tmp_path / "staging", targets, bomb,
                         max_unpacked=limit)  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = (tmp_path / "staging" / "t" / "zeros").stat().st_size
    assert written <= limit
    assert peak < 16 << 20


def test_too_many_entries_stop_before_tar_sees_the_next_one(tmp_path):
    members = [member(f"t/f{index}", data=b"x") for index in range(50)]
    payload = hostile_payload(tmp_path, members)
    with pytest.raises(PayloadCorrupt, match="more than the expected 10 entries"):
        extract_file(payload, tmp_path / "staging", [Target("t", tmp_path / "t")], None,
                     max_entries=10)  # fmt: skip
    assert len(list((tmp_path / "staging").rglob("*"))) <= 10


# -- de-privileged restore ---------------------------------------------------------------


FOREIGN = (
    3_000_000  # beyond the octal field: base-256 in GNU headers, a pax record in pax
)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_restore_strips_setid_bits_and_foreign_ownership(tmp_path, fmt):
    foreign = {"uid": FOREIGN, "gid": FOREIGN, "uname": "nobody", "gname": "nogroup"}
    members = [
        member("t/bin", tarfile.DIRTYPE, mode=0o2755, **foreign),
        member("t/bin/su", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0,
               uname="root", gname="root"),
        member("t/bin/mail", data=b"x", mode=0o6711, **foreign),
        member("t/bin/plain", data=b"x", mode=0o750, **foreign),
        member("t/bin/su-again", tarfile.LNKTYPE, linkname="t/bin/su"),
    ]  # fmt: skip
    payload = hostile_payload(tmp_path, members, fmt=fmt)
    staging = tmp_path / "staging"
    result = extract_file(payload, staging, [Target("t", tmp_path / "t")], None)
    expected = {"bin": 0o755, "bin/su": 0o755, "bin/mail": 0o711, "bin/plain": 0o750}
    for rel, mode in expected.items():
        info = (staging / "t" / rel).lstat()
        assert stat.S_IMODE(info.st_mode) == mode, rel
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), rel
    assert sorted(result.stripped_setid) == ["t/bin", "t/bin/mail", "t/bin/su"]


@pytest.mark.parametrize("chunk", [7, 100, 511, 512, 513, 4096])
def test_scanner_rewrites_only_the_mode_and_checksum_of_a_setid_header(tmp_path, chunk):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(*member("t", tarfile.DIRTYPE))
        for info, data in [member("t/" + "s" * 150, data=b"suid", mode=0o4755),  # long name
                           member("t/ok", data=b"ok", mode=0o644)]:  # fmt: skip
            tar.addfile(info, io.BytesIO(data))
    stream = raw.getvalue()
    scanner = TarScanner([Target("t", tmp_path / "t")], strip_setid=True)
    passed = bytearray()
    for offset in range(0, len(stream), chunk):
        for piece in scanner.feed(stream[offset : offset + chunk]):
            passed += piece
    scanner.finish()
    assert len(passed) == len(stream)
    changed = [i for i in range(len(stream)) if passed[i] != stream[i]]
    header = changed[0] // 512 * 512
    assert all(header + 100 <= i < header + 108 or header + 148 <= i < header + 156
               for i in changed)  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(bytes(passed))) as tar:  # checksum still valid
        assert stat.S_IMODE(tar.getmember("t/" + "s" * 150).mode) == 0o755
    assert scanner.stripped_setid == ["t/" + "s" * 150]


def test_tar_options_from_the_environment_do_not_reach_tar(
    tmp_path, target_dir, monkeypatch
):
    build_tree(target_dir)
    # would make capture fail (-c with --to-stdout) and restore write nothing to disk
    monkeypatch.setenv("TAR_OPTIONS", "--to-stdout")
    targets = [Target("out", target_dir)]
    info = capture_to_file(targets, tmp_path / "p")
    extract_file(tmp_path / "p", tmp_path / "staging", targets, info)
    assert (tmp_path / "staging" / "out" / "build" / "pkg" / ".stamp_built").exists()


# -- progress ----------------------------------------------------------------------------


def test_progress_counts_the_tar_stream_at_capture_and_the_payload_at_extract(
    tmp_path, target_dir
):
    build_tree(target_dir)
    (target_dir / "data.bin").write_bytes(os.urandom(3 << 20))
    targets = [Target("out", target_dir)]
    seen = []
    info = capture_to_file(targets, tmp_path / "p", progress=seen.append)
    assert sum(seen) == info.unpacked_size and len(seen) > 1
    seen.clear()
    extract_file(
        tmp_path / "p", tmp_path / "staging", targets, info, progress=seen.append
    )
    assert sum(seen) == info.size and all(seen)


class Cancelled(BrokenPipeError):
    """An OSError on purpose: it must not be mistaken for tar or disk trouble."""


@pytest.fixture
def started_tars(monkeypatch):
    from gaia_core.checkpoints import archive

    started = []

    class RecordingPopen(archive.subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(archive.subprocess, "Popen", RecordingPopen)
    return started


def cancel_on_call(number: int):
    calls = []

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == number:
            raise cancel

    cancel = Cancelled("cancelled by the user")
    return progress, cancel


@pytest.mark.parametrize("when", [1, 2])
def test_an_exception_from_progress_propagates_unchanged_and_tar_is_reaped(
    tmp_path, target_dir, started_tars, when
):
    (target_dir / "data.bin").write_bytes(os.urandom(5 << 20))
    targets = [Target("out", target_dir)]
    progress, cancel = cancel_on_call(when)
    with pytest.raises(Cancelled) as raised:
        capture_to_file(targets, tmp_path / "cancelled", progress=progress)
    assert raised.value is cancel
    info = capture_to_file(targets, tmp_path / "p")
    progress, cancel = cancel_on_call(when)
    with pytest.raises(Cancelled) as raised:
        extract_file(
            tmp_path / "p", tmp_path / "staging", targets, info, progress=progress
        )
    assert raised.value is cancel
    assert len(started_tars) == 3
    assert all(tar.returncode is not None for tar in started_tars)
