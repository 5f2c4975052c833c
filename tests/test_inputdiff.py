"""What ``--explain`` and the capture's warning say differs: one line per real change."""

from __future__ import annotations

from pathlib import Path

from gaia_core.checkpoints.inputdiff import FILES_SHOWN, input_changes, summary
from gaia_core.fingerprints import digest_files


def sourced(value, digest="sha256:same"):  # type: ignore[no-untyped-def]
    return {"value": value, "contents": {"buildroot.package_override": digest}}


def test_the_first_symbol_reads_as_that_symbol_not_also_as_its_empty_parent():
    changes = input_changes({"buildroot.symbols": sourced({})}, {"buildroot.symbols": sourced({"BR2_X": "y"})})
    assert [c.lines() for c in changes] == [['buildroot.symbols.BR2_X: "<absent>" -> "y"']]
    removed = input_changes({"buildroot.symbols": sourced({"BR2_X": "y"})}, {"buildroot.symbols": sourced({})})
    assert [c.key for c in removed] == ["buildroot.symbols.BR2_X"]


def test_a_value_that_becomes_a_table_still_shows_both_sides():
    changes = input_changes({"a": {"b": "x"}}, {"a": {"b": {"c": 1}}})
    assert [c.lines()[0] for c in changes] == ['a.b: "x" -> "<absent>"', 'a.b.c: "<absent>" -> 1']


def test_a_source_digest_is_named_after_its_path_and_kind():
    changes = input_changes({"buildroot.symbols": sourced({}, "sha256:a")}, {"buildroot.symbols": sourced({}, "sha256:b")})
    assert changes[0].key == "buildroot.symbols (buildroot.package_override)"
    same_kind = input_changes({"x.defconfig": {"value": "d", "contents": {"x.defconfig": "1"}}},
                              {"x.defconfig": {"value": "d", "contents": {"x.defconfig": "2"}}})
    assert same_kind[0].key == "x.defconfig (contents)"


def test_a_tree_lists_its_files_and_cuts_long_lists(tmp_path: Path):
    tree = tmp_path / "t"
    tree.mkdir()
    before = digest_files(tree)
    for i in range(FILES_SHOWN + 3):
        (tree / f"f{i:02d}").write_text("x")
    [change] = input_changes({"p": [before]}, {"p": [digest_files(tree)]})
    lines = change.lines("local abc")
    assert lines[0] == f"p[0]: {FILES_SHOWN + 3} added (local abc)"
    assert lines[1:3] == ["  added: f00", "  added: f01"] and lines[-1] == "  ... and 3 more added"
    assert summary([change]) == f"p[0]: {FILES_SHOWN + 3} added (f00, f01, f02, ...)"


def test_a_damaged_listing_is_said_not_trusted(tmp_path: Path):
    (tmp_path / "a").write_text("a")
    good = digest_files(tmp_path)
    bad = {**good, "sha256": "sha256:other", "listing": "%%%"}
    [change] = input_changes({"p": bad}, {"p": good})
    assert change.files is None and change.lines() == ["p: 1 files -> 1 files, files not listed"]
