"""``buildroot.fetch`` against a real local git repository of the test tree (offline)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from buildroot_repo import BUILDROOT_TREE, git, make_buildroot_repo
from gaia_buildroot.fetch import fetch
from gaia_buildroot.layout import buildroot_config

from gaia_core.config.loader import load_build
from gaia_core.errors import TaskFailed
from gaia_core.run import RunState, TaskContext
from gaia_core.tasks import Task


def run_fetch(build_file: Path, *overrides: str) -> tuple[Path, list[str]]:
    build = load_build(build_file, list(overrides))
    lines: list[str] = []
    ctx = TaskContext(
        Task("buildroot.fetch"),
        build,
        dry_run=False,
        state=RunState(),
        echo=lines.append,
    )
    fetch(ctx, buildroot_config(build))
    return build.workspace.build_dir / "buildroot" / "src", lines


def head(src: Path) -> str:
    return git(src, "rev-parse", "HEAD").strip()


def commit_to(repo: Path, name: str, text: str, tag: str | None = None) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", f"change {name}")
    if tag:
        git(repo, "tag", "-a", tag, "-m", tag)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_buildroot_repo(tmp_path / "origin", tag="2025.11")


@pytest.fixture
def build_file(tmp_path: Path, origin: Path) -> Path:
    path = tmp_path / "project" / "build.toml"
    path.parent.mkdir()
    path.write_text(
        f'[buildroot]\nrepo = "{origin}"\nversion = "2025.11"\ndefconfig = "gaia_qemu_defconfig"\n'
    )
    return path


def test_first_run_clones_and_checks_out_the_version(build_file: Path, origin: Path):
    tagged = git(origin, "rev-parse", "2025.11^{commit}").strip()
    commit_to(origin, "NEWS", "after the release\n")  # master moves past the tag
    src, lines = run_fetch(build_file)
    assert (src / "Makefile").is_file()
    assert head(src) == tagged
    assert any(line.startswith("[buildroot.fetch] cloning") for line in lines)


def test_second_run_fetches_new_tags_from_the_remote(build_file: Path, origin: Path):
    src, _ = run_fetch(build_file)
    newer = commit_to(origin, "NEWS", "2026.02\n", tag="2026.02")
    src, lines = run_fetch(build_file, 'buildroot.version="2026.02"')
    assert head(src) == newer
    assert not any("cloning" in line for line in lines)
    assert (src / "NEWS").read_text() == "2026.02\n"


def test_a_branch_version_follows_the_remote_branch(build_file: Path, origin: Path):
    src, _ = run_fetch(build_file, 'buildroot.version="master"')
    moved = commit_to(origin, "NEWS", "moved\n")
    src, _ = run_fetch(build_file, 'buildroot.version="master"')
    assert head(src) == moved


def test_local_edits_and_commits_in_the_checkout_are_reset(build_file: Path):
    src, _ = run_fetch(build_file)
    makefile = (src / "Makefile").read_text()
    (src / "Makefile").write_text("broken\n")
    src, lines = run_fetch(build_file)
    assert (src / "Makefile").read_text() == makefile
    assert any(
        "resetting local changes" in line and "Makefile" in line for line in lines
    )

    tagged = head(src)
    commit_to(src, "LOCAL", "x\n")
    src, _ = run_fetch(build_file)
    assert head(src) == tagged
    assert not (src / "LOCAL").exists()


def test_an_unknown_version_fails_with_the_repo_named(build_file: Path, origin: Path):
    with pytest.raises(
        TaskFailed,
        match=r"buildroot.version '1999.02' is not a tag, branch or commit of .*origin",
    ):
        run_fetch(build_file, 'buildroot.version="1999.02"')


def test_a_pinned_tag_survives_an_unreachable_remote_but_a_branch_does_not(
    build_file: Path, origin: Path
):
    src, _ = run_fetch(build_file)
    tagged = head(src)
    shutil.rmtree(origin)
    src, lines = run_fetch(build_file)
    assert any("WARN: git fetch failed" in line for line in lines)
    assert head(src) == tagged
    with pytest.raises(TaskFailed, match="command failed"):
        run_fetch(build_file, 'buildroot.version="master"')


def test_src_dir_that_is_not_a_checkout_is_refused(build_file: Path):
    src, _ = run_fetch(build_file)
    shutil.rmtree(src / ".git")
    (src / "precious").write_text("x")
    with pytest.raises(TaskFailed, match="exists but is not a git checkout"):
        run_fetch(build_file)
    assert (src / "precious").exists()


def test_the_clone_lives_in_a_padded_dir_behind_the_known_path(build_file: Path):
    build = load_build(build_file)
    padded = build.workspace.padded_dir("buildroot/src")
    known, _ = run_fetch(build_file)
    assert len(str(padded)) == build.workspace.padded_length == 192
    assert known.is_symlink() and not os.path.isabs(os.readlink(known))
    assert known.resolve() == padded and (padded / ".git").exists()
    out = build.workspace.build_dir / "buildroot" / "output"
    assert out.resolve() == build.workspace.padded_dir("buildroot/output")


def test_a_link_removed_or_left_by_another_padding_is_made_again(build_file: Path):
    known, _ = run_fetch(build_file)
    padded = known.resolve()
    known.unlink()  # as `rm -rf build/buildroot/src` would: the clone is made again
    _, lines = run_fetch(build_file)
    assert known.resolve() == padded and (padded / ".git").is_dir()
    assert any("was removed" in line for line in lines) and any("cloning" in line for line in lines), lines
    # padded_length changed (or the workspace moved): the old link is ours, re-pointed
    _, lines = run_fetch(build_file, "workspace.padded_length=200")
    assert len(str(known.resolve())) == 200
    assert any(f"{known} now points to" in line for line in lines), lines


@pytest.mark.parametrize("what", ["directory", "link elsewhere", "file"])
def test_something_else_at_a_known_path_is_refused_untouched(build_file: Path, tmp_path: Path, what: str):
    out = build_file.parent / "build" / "buildroot" / "output"
    out.parent.mkdir(parents=True)
    if what == "directory":
        out.mkdir()
        (out / ".config").write_text("an out dir of an older gaia\n")
    elif what == "file":
        out.write_text("x")
    else:
        (tmp_path / "mine").mkdir()
        out.symlink_to(tmp_path / "mine")
    with pytest.raises(TaskFailed, match=f"{out} is (a directory|a file|a link to)") as refused:
        run_fetch(build_file)
    assert "padded" in str(refused.value)
    if what == "directory":
        assert (out / ".config").read_text() == "an out dir of an older gaia\n"
    elif what == "link elsewhere":
        assert os.readlink(out) == str(tmp_path / "mine")


def test_source_dir_is_used_as_is_without_git(tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(BUILDROOT_TREE, tree)
    path = tmp_path / "build.toml"
    path.write_text(
        '[buildroot]\nsource_dir = "tree"\nversion = "2025.11"\ndefconfig = "gaia_qemu_defconfig"\n'
        'repo = "https://git.invalid/buildroot.git"\n'
    )
    src, lines = run_fetch(path)
    assert not src.exists()  # nothing cloned
    assert any(
        f"using Buildroot source tree {tree}" in line and "not checked out" in line
        for line in lines
    )

    (tree / "Makefile").unlink()
    with pytest.raises(TaskFailed, match="is not a Buildroot tree: no Makefile"):
        run_fetch(path)
