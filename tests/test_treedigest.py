"""Per-file digests of input trees: which files count, what the listing holds, what it costs."""

from __future__ import annotations

import base64
import json
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from gaia_core import treedigest
from gaia_core.fingerprints import digest_files, digest_paths, file_changes, is_file_digest
from gaia_core.treedigest import decode_listing, exclude_matcher, exclude_problem, input_files


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                          check=True, capture_output=True, text=True).stdout


def repo(root: Path, files: dict[str, str], ignore: str = "") -> Path:
    for name, text in files.items():
        write(root / name, text)
    if ignore:
        write(root / ".gitignore", ignore)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_the_digest_names_every_file_with_a_short_digest(tmp_path: Path):
    write(tmp_path / "t" / "a.txt", "a\n")
    write(tmp_path / "t" / "sub" / "b.txt", "b\n")
    os.symlink("a.txt", tmp_path / "t" / "link")
    value = digest_files(tmp_path / "t")
    assert is_file_digest(value) and value["files"] == 3 and value["sha256"].startswith("sha256:")
    listing = decode_listing(value)
    assert sorted(listing) == ["a.txt", "link", "sub/b.txt"]
    assert all(len(short) == 8 for short in listing.values())
    assert digest_files(tmp_path / "t") == value  # deterministic
    assert digest_files(tmp_path / "nowhere") == "missing"


def test_content_mode_and_names_count_times_do_not(tmp_path: Path):
    tree = tmp_path / "t"
    path = write(tree / "tool.sh", "echo 1\n")
    first = digest_files(tree)
    os.utime(path, (1, 1))
    assert digest_files(tree) == first
    path.chmod(0o755)
    moded = digest_files(tree)
    assert moded != first and file_changes(first, moded).changed == ["tool.sh"]
    path.write_text("echo 2\n")
    assert file_changes(moded, digest_files(tree)).changed == ["tool.sh"]
    path.rename(tree / "renamed.sh")
    changes = file_changes(moded, digest_files(tree))
    assert (changes.added, changes.removed, changes.changed) == (["renamed.sh"], ["tool.sh"], [])


def test_a_single_file_and_a_link_to_a_directory_are_digested_by_what_they_name(tmp_path: Path):
    real = write(tmp_path / "real" / "a.txt", "a\n").parent
    os.symlink(real, tmp_path / "alias")
    assert decode_listing(digest_files(tmp_path / "alias")) == decode_listing(digest_files(real))
    one = write(tmp_path / "defconfig", "X=y\n")
    before = digest_files(one)
    one.write_text("X=n\n")
    assert file_changes(before, digest_files(one)).changed == ["."]


def test_a_fifo_counts_by_its_type_without_blocking(tmp_path: Path):
    write(tmp_path / "t" / "a", "a\n")
    before = digest_files(tmp_path / "t")
    os.mkfifo(tmp_path / "t" / "pipe")
    after = digest_files(tmp_path / "t")  # would block forever if it opened the fifo
    assert file_changes(before, after).added == ["pipe"]


def test_in_a_work_tree_ignored_files_do_not_count_untracked_ones_do(tmp_path: Path):
    root = repo(tmp_path / "ext", {"package/acme/acme.mk": "ACME_VERSION = 1\n", "Config.in": ""},
                ignore="*.o\n/output/\n")
    clean = digest_files(root)
    write(root / "package" / "acme" / "acme.o", "binary")
    write(root / "output" / "deep" / "log", "noise")
    assert digest_files(root) == clean  # what .gitignore names is no input
    write(root / "package" / "acme" / "0001-fix.patch", "--- a\n+++ b\n")  # untracked: Buildroot applies it
    with_patch = digest_files(root)
    assert file_changes(clean, with_patch).added == ["package/acme/0001-fix.patch"]
    (root / "package" / "acme" / "acme.mk").write_text("ACME_VERSION = 2\n")  # uncommitted: read from the tree
    assert file_changes(with_patch, digest_files(root)).changed == ["package/acme/acme.mk"]
    (root / "Config.in").unlink()  # deleted in the work tree, still in the index
    assert file_changes(with_patch, digest_files(root)).removed == ["Config.in"]
    assert ".git/HEAD" not in decode_listing(digest_files(root))


def test_a_subdirectory_of_a_work_tree_and_a_nested_repository(tmp_path: Path):
    root = repo(tmp_path / "repo", {"br2-external/external.desc": "name: X\n", "other/file": "o\n"},
                ignore="*.log\n")
    write(root / "br2-external" / "build.log", "ignored\n")
    listed = decode_listing(digest_files(root / "br2-external"))
    assert sorted(listed) == ["external.desc"]  # only the subdirectory, relative to it
    nested = repo(root / "br2-external" / "vendor", {"v.mk": "V=1\n"}, ignore="tmp/\n")
    write(nested / "tmp" / "x", "ignored by the nested repository\n")
    assert sorted(decode_listing(digest_files(root / "br2-external"))) == ["external.desc", "vendor/.gitignore",
                                                                          "vendor/v.mk"]


def test_an_ignored_directory_of_a_work_tree_is_walked_whole(tmp_path: Path):
    root = repo(tmp_path / "repo", {"README": "r\n"}, ignore="/local/\n")
    write(root / "local" / "overlay" / "etc" / "issue", "hi\n")
    assert sorted(decode_listing(digest_files(root / "local" / "overlay"))) == ["etc/issue"]


def test_without_git_awareness_ignored_files_count_but_vcs_dirs_never(tmp_path: Path):
    root = repo(tmp_path / "src", {"main.c": "int main;\n"}, ignore="*.o\n")
    write(root / "main.o", "obj")
    names = sorted(input_files(root, git_aware=False))
    assert names == [".gitignore", "main.c", "main.o"]


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("*.md", ["README.md", "docs/a/b.md"], ["README", "md"]),
    ("docs/**", ["docs/a", "docs/a/b.txt"], ["x/docs/a", "docs"]),
    ("autom4te.cache", ["autom4te.cache/output.0", "a/autom4te.cache/x"], ["autom4te.cachex"]),
    ("/top.txt", ["top.txt"], ["sub/top.txt"]),
    ("build/", ["build/x", "a/build/y"], ["build"]),
    ("package/*/README", ["package/acme/README"], ["package/a/b/README"]),
    ("**/test/*.c", ["test/a.c", "x/y/test/b.c"], ["test/sub/c.c"]),
    ("file[0-9].txt", ["file1.txt"], ["filex.txt"]),
])
def test_exclude_globs_read_like_gitignore(pattern: str, matches: list[str], misses: list[str]):
    excluded = exclude_matcher([pattern])
    assert [p for p in matches if not excluded(p)] == []
    assert [p for p in misses if excluded(p)] == []


def test_excluded_files_leave_the_digest(tmp_path: Path):
    write(tmp_path / "t" / "package" / "a.mk")
    write(tmp_path / "t" / "docs" / "manual.txt")
    write(tmp_path / "t" / "README.md")
    value = digest_files(tmp_path / "t", exclude=["docs/**", "*.md"])
    assert sorted(decode_listing(value)) == ["package/a.mk"]


def test_bad_exclude_patterns_are_named():
    assert exclude_problem("") == "an empty pattern"
    assert "leaves the tree" in str(exclude_problem("../secret"))
    assert exclude_problem("docs/**") is None


def test_the_changes_against_a_commit_are_digested_per_file(tmp_path: Path):
    root = repo(tmp_path / "r", {"a": "a\n", "b": "b\n"})
    value = digest_paths(root, ["a", "gone"])
    assert sorted(decode_listing(value)) == ["a", "gone"]
    assert digest_paths(root, ["a", "gone"]) == value


def test_ten_thousand_files_cost_about_a_hundred_kilobytes_of_manifest(tmp_path: Path):
    root = tmp_path / "ext"
    for i in range(10_000):
        write(root / "package" / f"pkg{i // 20}" / f"file{i % 20}.mk", f"{i}\n")
    value = digest_files(root)
    size = len(json.dumps(value))
    assert value["files"] == 10_000
    assert size < 150_000, size  # a JSON map of paths to hex digests would take over a megabyte
    assert len(decode_listing(value)) == 10_000


@pytest.mark.parametrize("listing", [
    "not base85 at all ~~~~",
    base64.b85encode(b"not xz").decode(),
    base64.b85encode(lzma.compress(b"\x05\x00\x01")).decode(),  # five entries announced, one cut short
    base64.b85encode(lzma.compress(b"\x01\x09\x01a" + b"\x00" * 4)).decode(),  # shares more than there is
    base64.b85encode(lzma.compress(b"\x00" * (3 << 20))).decode(),  # a bomb (past the bound set below)
])
def test_a_damaged_or_hostile_listing_is_refused_not_believed(listing: str, monkeypatch):
    monkeypatch.setattr(treedigest, "MAX_LISTING_BYTES", 2 << 20)
    with pytest.raises(ValueError):
        decode_listing({"format": "gaia.files/1", "listing": listing})
