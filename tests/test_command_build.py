"""CommandBuild: a declared command build is a checkpointed anchor with a padded output
directory, its trees copied and hashed per file; a build that changes its own inputs is
not captured; ``--explain`` names the files; ``fingerprint_exclude`` leaves files out."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from gaia_core import hookimpl
from gaia_core.command_build import CommandBuild, CommandConfig, expand_argv
from gaia_core.config.workspace import Workspace
from gaia_core.errors import ConfigError
from gaia_core.treecopy import STATE_FILE, sync_inputs


class ToolConfig(CommandConfig):
    flags: list[str] = []
    jobs_hint: int = 1


class Tool(CommandBuild):
    """Copies the sources' files into {out}/bin and embeds its own path in a binary, as a
    compiler with ``-g`` would."""

    table = "tool"
    config_model = ToolConfig
    unhashed = ("jobs_hint",)
    commands = (
        ["sh", "-c", 'mkdir -p bin && cp source/*.sh bin/ && echo "built $0 $*" >> build.log', "{flags}"],
        ["sh", "-c", r'printf "\177ELF\0\0%s/bin\0" "$PWD" > bin/where'],
    )


class InPlace(CommandBuild):
    """Builds in its sources and writes a file there, as ``autoreconf`` does."""

    table = "inplace"
    copy_trees = False
    cwd = "{source}"
    commands = (["sh", "-c", "echo generated > generated.h && cp main.sh {out}/main.sh"],)


class Plugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [Tool, InPlace]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [Tool.anchor, InPlace.anchor]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        return [Tool.fingerprint_source, InPlace.fingerprint_source]


@pytest.fixture
def pm(gaia_core_pm):  # type: ignore[no-untyped-def]
    gaia_core_pm.register(Plugin(), name="commands")
    return gaia_core_pm


def project(root: Path, table: str = "tool", point: str = "", extra: str = "") -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "main.sh").write_text("echo main\n")
    (root / "src" / "README.md").write_text("docs\n")
    build = root / "build.toml"
    build.write_text(f'[{table}]\n{extra}\n[checkpoints]\nenabled = true\n[[checkpoints.points]]\nid = "{table}"\n'
                     f'anchor_task = "{table}.build"\n{point}\n')
    return build


def run(gaia_cli, pm, *args, code=0):  # type: ignore[no-untyped-def]
    result = gaia_cli(*args, pm=pm)
    assert result.exit_code == code, result.output
    return result


def status(gaia_cli, pm, build, *args):  # type: ignore[no-untyped-def]
    return run(gaia_cli, pm, "checkpoints", "status", build, "--json", *args).json["points"][0]


# -- the declaration ------------------------------------------------------------------------------


def test_the_class_makes_its_anchor_and_source():
    assert Tool.anchor.task == "tool.build" and Tool.anchor.__qualname__ == "Tool.anchor"
    assert Tool.anchor.default_fingerprint_paths == ("tool.source", "tool.flags")  # jobs_hint is unhashed
    assert Tool.fingerprint_source.kind == "tool.trees" and Tool.fingerprint_source.paths == ("tool.source",)


def test_a_wrong_declaration_fails_when_the_plugin_is_imported():
    with pytest.raises(TypeError) as info:
        class Wrong(CommandBuild):  # noqa: F841
            table = "wrong"
            trees = ("sources",)
            commands = (["make", "{target}", "-C", "{out}"],)
    assert str(info.value) == ("test_a_wrong_declaration_fails_when_the_plugin_is_imported.<locals>.Wrong: 'sources' "
                               "is no field of CommandConfig; {target} is neither a setting nor one of out, jobs")


def test_placeholders_expand_and_a_whole_list_argument_becomes_several():
    values = {"flags": ["-a", "-b"], "out": "/o", "n": 3, "on": True}
    assert expand_argv(["x", "{flags}", "--out={out}/i", "-j{n}", "{on}", "${HOME}"], values) == [
        "x", "-a", "-b", "--out=/o/i", "-j3", "true", "${HOME}"]


def test_the_plan_has_the_build_and_the_link(gaia_cli, pm, tmp_path):
    plan = run(gaia_cli, pm, "plan", project(tmp_path), "--json").json
    ids = [t["id"] for t in plan["tasks"]]
    assert ids.index("tool.link") < ids.index("checkpoints.restore.tool-build") < ids.index("tool.build") < ids.index(
        "checkpoints.capture.tool-build")


# -- the padded output directory (gaia_core.padding is tested in test_padding.py) ---------------------


def _build_at(root: Path) -> SimpleNamespace:
    """What output_dir needs of a build: the workspace at ``root``."""
    return SimpleNamespace(workspace=Workspace(root, root / "build", root / "out", root / "build" / "checkpoints", {}))


def test_build_link_points_at_the_output_and_a_foreign_file_there_is_refused(gaia_cli, pm, tmp_path):
    build = project(tmp_path)
    run(gaia_cli, pm, "run", build)
    link = tmp_path / "build" / "tool"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert (link / "bin" / "main.sh").read_text() == "echo main\n"
    link.unlink()
    link.mkdir()
    result = run(gaia_cli, pm, "run", build, code=1)
    assert f"{link} is a directory, where gaia keeps a link to its padded directory" in result.output


# -- runs, restores, explains --------------------------------------------------------------------


def test_capture_restore_and_explain_naming_the_file(gaia_cli, pm, tmp_path):
    build = project(tmp_path, extra='flags = ["-x"]')
    first = run(gaia_cli, pm, "run", build)
    assert "checkpoint:tool captured" in first.output
    assert "source: " in first.output and "2 copied, 0 updated, 0 removed, 0 kept" in first.output
    out = Tool.output_dir(_build_at(tmp_path))
    assert (out / "build.log").read_text().startswith("built -x")
    (tmp_path / "src" / "main.sh").write_text("echo changed\n")
    (tmp_path / "src" / "new.sh").write_text("echo new\n")
    explained = run(gaia_cli, pm, "checkpoints", "status", build, "--explain").output
    assert "tool.source (tool.trees): 1 changed, 1 added (local " in explained
    assert "    changed: main.sh\n" in explained and "    added: new.sh\n" in explained
    second = run(gaia_cli, pm, "run", build)
    assert "1 copied, 1 updated, 0 removed, 1 kept" in second.output  # the copy follows the tree
    assert (out / "bin" / "main.sh").read_text() == "echo changed\n"


def test_explain_json_lists_the_files_without_the_listing(gaia_cli, pm, tmp_path):
    build = project(tmp_path)
    run(gaia_cli, pm, "run", build)
    (tmp_path / "src" / "main.sh").unlink()
    [change] = status(gaia_cli, pm, build, "--explain")["explain"]["nearest"]["diff"]
    assert change["key"] == "tool.source (tool.trees)"
    assert change["files"] == {"added": [], "removed": ["main.sh"], "changed": []}
    assert "listing" not in change["old"] and change["old"]["files"] == 2


def test_fingerprint_exclude_of_the_point_leaves_files_out(gaia_cli, pm, tmp_path):
    build = project(tmp_path, point='fingerprint_exclude = ["*.md"]')
    run(gaia_cli, pm, "run", build)
    (tmp_path / "src" / "README.md").write_text("more docs\n")
    assert status(gaia_cli, pm, build)["reason"] == "hit"
    (tmp_path / "src" / "main.sh").write_text("echo changed\n")
    assert status(gaia_cli, pm, build)["reason"] == "inputs_changed:tool.source"


def test_fingerprint_exclude_is_validated_and_recorded(gaia_cli, pm, tmp_path):
    bad = project(tmp_path / "bad", point='fingerprint_exclude = ["../x", ""]')
    result = run(gaia_cli, pm, "checkpoints", "status", bad, code=2)
    assert "checkpoints.points[0].fingerprint_exclude" in result.output and "leaves the tree" in result.output
    build = project(tmp_path / "ok", point='fingerprint_exclude = ["docs/**"]')
    run(gaia_cli, pm, "run", build)
    [manifest] = (tmp_path / "ok" / "build" / "checkpoints").rglob("manifest.json")
    assert json.loads(manifest.read_text())["fingerprint_inputs"]["gaia.fingerprint_exclude"] == ["docs/**"]


def test_a_build_that_writes_into_its_inputs_is_not_captured_and_says_why(gaia_cli, pm, tmp_path):
    build = project(tmp_path, table="inplace")
    first = run(gaia_cli, pm, "run", build)
    assert ("checkpoint:inplace not captured: its inputs changed while inplace.build ran (inplace.source "
            "(inplace.trees): 1 added (generated.h))") in first.output
    assert "checkpoint:inplace captured" not in first.output
    assert status(gaia_cli, pm, build)["reason"] == "missing"  # nothing stored under either fingerprint
    second = run(gaia_cli, pm, "run", build)  # generated.h is there now: the inputs hold still
    assert "checkpoint:inplace captured" in second.output


def test_restored_at_a_longer_path_even_a_binary_is_relocated(gaia_cli, pm, tmp_path):
    store = tmp_path / "store"
    first = project(tmp_path / "a")
    first.write_text(first.read_text() + f'[workspace]\ncheckpoints_dir = "{store}"\n')
    run(gaia_cli, pm, "run", first)
    out_a = Tool.output_dir(_build_at(tmp_path / "a"))
    assert str(out_a).encode() in (out_a / "bin" / "where").read_bytes()
    (tmp_path / "a").rename(tmp_path / "gone")
    second_root = tmp_path / "a" / "a much longer path" / "b"
    second = project(second_root)
    second.write_text((tmp_path / "gone" / "build.toml").read_text())
    result = run(gaia_cli, pm, "run", second)
    assert "SKIP: tool.build" in result.output and "checkpoint:tool restored" in result.output
    out_b = Tool.output_dir(_build_at(second_root))
    where = (out_b / "bin" / "where").read_bytes()
    assert where == b"\177ELF\0\0" + str(out_b).encode() + b"/bin\0"  # rewritten at equal length
    assert (second_root / "build" / "tool" / "bin" / "main.sh").read_text() == "echo main\n"


# -- the copy of a tree ----------------------------------------------------------------------------


def test_the_copy_keeps_unchanged_files_dates_changed_ones_and_drops_removed_ones(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "copy"
    src.mkdir()
    (src / "same.c").write_text("same\n")
    (src / "edit.c").write_text("old\n")
    (src / "gone.c").write_text("gone\n")
    os.symlink("same.c", src / "link.c")
    assert sync_inputs(src, dest) == {"copied": 4, "updated": 0, "removed": 0, "kept": 0}
    (dest / "made-by-the-build.o").write_text("object\n")
    os.utime(dest / "same.c", ns=(1, 1))
    os.utime(dest / "edit.c", ns=(1, 1))
    os.utime(src / "edit.c", ns=(2, 2))  # an old mtime in the source must not hide the edit from make
    (src / "edit.c").write_text("new\n")
    os.utime(src / "edit.c", ns=(2, 2))
    (src / "gone.c").unlink()
    os.utime(src / "same.c")  # checked out again: newer, same content
    assert sync_inputs(src, dest) == {"copied": 0, "updated": 1, "removed": 1, "kept": 2}
    assert (dest / "same.c").stat().st_mtime_ns == 1  # same content: make sees nothing new
    assert (dest / "edit.c").read_text() == "new\n" and (dest / "edit.c").stat().st_mtime_ns > 10**18
    assert not (dest / "gone.c").exists() and (dest / "made-by-the-build.o").exists()
    assert json.loads((dest / STATE_FILE).read_text()) == ["edit.c", "link.c", "same.c"]
