"""Padded directories: one path length wherever the workspace is, and the links users know."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gaia_core.config.loader import load_build
from gaia_core.errors import ConfigError, TaskFailed
from gaia_core.padding import PLACEHOLDER, padded_path


def build_file(root: Path, text: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "build.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("ws", ["w", "a/much/longer/workspace/path/of/a/ci/runner/checkout"])
@pytest.mark.parametrize("name", ["out", "buildroot/output", "my-anchor/build.dir"])
def test_a_padded_dir_has_the_configured_length_wherever_the_workspace_is(tmp_path: Path, ws: str, name: str):
    workspace = load_build(build_file(tmp_path / ws)).workspace
    padded = workspace.padded_dir(name)
    assert len(str(padded)) == workspace.padded_length == 192
    assert str(padded).startswith(str(tmp_path / ws / "build" / "padded") + "/")
    assert str(padded).endswith("/" + name)
    between = str(padded)[len(str(tmp_path / ws / "build" / "padded")) + 1 : -len(name) - 1]
    assert between and all(part and set(part) <= set(PLACEHOLDER) for part in between.split("/"))


def test_padded_length_is_configurable(tmp_path: Path):
    workspace = load_build(build_file(tmp_path, "[workspace]\npadded_length = 300\n")).workspace
    assert len(str(workspace.padded_dir("buildroot/output"))) == 300


def test_the_padded_dir_is_computed_from_the_resolved_build_dir(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    padded = load_build(build_file(tmp_path / "link")).workspace.padded_dir("out")
    assert str(padded).startswith(str(tmp_path / "real" / "build" / "padded") + "/")
    assert len(str(padded)) == 192


def test_a_workspace_too_deep_for_the_padded_length_is_a_config_error(tmp_path: Path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with pytest.raises(ConfigError) as refused:
        load_build(build_file(deep, "[workspace]\npadded_length = 100\n"))
    message = str(refused.value)
    assert str(deep / "build.toml") in message and "workspace.padded_length" in message
    assert "raise workspace.padded_length to" in message
    with pytest.raises(ConfigError, match="padded_length"):
        load_build(build_file(tmp_path, "[workspace]\npadded_length = 10\n"))


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", ".hidden", "a//b", "with space"])
def test_a_padded_dir_name_is_plain_relative_parts(tmp_path: Path, name: str):
    with pytest.raises(ValueError, match="padded directory name"):
        padded_path(tmp_path, name, 192)


def test_a_name_that_does_not_fit_names_the_key_to_raise(tmp_path: Path):
    with pytest.raises(ConfigError, match="raise workspace.padded_length to"):
        padded_path(tmp_path, "n" * 200, 192)


def test_the_link_is_relative_and_survives_a_moved_workspace(tmp_path: Path):
    workspace = load_build(build_file(tmp_path / "ws")).workspace
    padded = workspace.padded_dir("tool/out")
    link = workspace.build_dir / "tool" / "out"
    assert workspace.link_padded_dir(link, padded) is None
    padded.mkdir(parents=True)
    assert not os.path.isabs(os.readlink(link)) and link.resolve() == padded
    assert workspace.link_padded_dir(link, padded) is None  # already right: left alone

    (tmp_path / "ws").rename(tmp_path / "moved-to-a-longer-path")
    moved = load_build(tmp_path / "moved-to-a-longer-path" / "build.toml").workspace
    new_padded = moved.padded_dir("tool/out")
    new_link = moved.build_dir / "tool" / "out"
    note = moved.link_padded_dir(new_link, new_padded)
    assert note and "now points to" in note and str(new_padded) in note
    assert os.path.normpath(new_link.parent / os.readlink(new_link)) == str(new_padded)


def test_anything_but_gaia_s_link_is_refused_and_left_alone(tmp_path: Path):
    workspace = load_build(build_file(tmp_path / "ws")).workspace
    padded = workspace.padded_dir("out")
    link = workspace.build_dir / "out"
    link.mkdir(parents=True)
    (link / "keep").write_text("mine")
    with pytest.raises(TaskFailed, match="is a directory, where gaia keeps a link"):
        workspace.link_padded_dir(link, padded)
    assert (link / "keep").read_text() == "mine"
    (link / "keep").unlink()
    link.rmdir()
    link.symlink_to(tmp_path)
    with pytest.raises(TaskFailed, match="is a link to .*, not to gaia's padded directory"):
        workspace.link_padded_dir(link, padded)
    assert os.readlink(link) == str(tmp_path)


def test_removing_the_link_starts_its_padded_dir_over(tmp_path: Path):
    workspace = load_build(build_file(tmp_path / "ws")).workspace
    padded = workspace.padded_dir("tool/out")
    link = workspace.build_dir / "tool" / "out"
    workspace.link_padded_dir(link, padded)
    padded.mkdir(parents=True)
    (link / "old-object.o").write_text("built before")
    link.unlink()  # rm -rf build/tool/out: what users do to start an out dir over
    note = workspace.link_padded_dir(link, padded)
    assert note == f"{link} was removed: {padded} behind it is started over"
    assert link.is_symlink() and not padded.exists()
