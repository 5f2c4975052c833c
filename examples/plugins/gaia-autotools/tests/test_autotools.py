"""gaia-autotools with the real autoconf, automake, make and cc. The fixtures come from gaia-core's
pytest plugin; the plugin is registered by the tests, so they run before it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gaia_autotools import plugin
from gaia_core import hookimpl

EXAMPLE = Path(__file__).resolve().parent.parent / "example"
TOOLS = ("autoreconf", "automake", "make", "cc", "git")
pytestmark = pytest.mark.skipif(not all(map(shutil.which, TOOLS)), reason=f"needs {', '.join(TOOLS)}")


@pytest.fixture
def pm(gaia_core_pm):
    gaia_core_pm.register(plugin, name="autotools")
    return gaia_core_pm


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                   check=True, capture_output=True)


def workspace(at: Path, store: Path) -> Path:
    """The example at ``at``: its sources a fresh git work tree, its checkpoints in ``store``."""
    shutil.copytree(EXAMPLE, at, ignore=shutil.ignore_patterns("build", "out"))
    git(at / "hello", "init", "-q")
    git(at / "hello", "add", ".")
    git(at / "hello", "commit", "-q", "-m", "hello")
    build = at / "build.toml"
    build.write_text(build.read_text() + f'\n[workspace]\ncheckpoints_dir = "{store}"\n')
    return build


def run(gaia_cli, pm, *args):  # type: ignore[no-untyped-def]
    result = gaia_cli(*args, pm=pm)
    assert result.exit_code == 0, result.output
    return result


def mtimes(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.lstat().st_mtime_ns for p in tree.rglob("*")}


def test_builds_with_autotools_captures_and_then_skips(gaia_cli, pm, tmp_path):
    build = workspace(tmp_path / "ws", tmp_path / "store")
    first = run(gaia_cli, pm, "run", build)
    assert "checkpoint:hello captured" in first.output
    hello = tmp_path / "ws" / "build" / "autotools" / "install" / "usr" / "bin" / "hello"
    assert subprocess.run([hello], capture_output=True, text=True).stdout == "Hello World!\nThis is hello 1.0.\n"
    assert not (tmp_path / "ws" / "hello" / "configure").exists()  # generated in the copy, not in your tree
    assert "SKIP: autotools.build" in run(gaia_cli, pm, "run", build).output


def test_restores_at_a_longer_path_in_a_fresh_clone_up_to_date_for_make(gaia_cli, pm, tmp_path):
    store = tmp_path / "store"
    run(gaia_cli, pm, "run", workspace(tmp_path / "a", store))
    (tmp_path / "a").rename(tmp_path / "a-moved-away")
    other = tmp_path / "a" / "much" / "longer" / "path" / "b"
    second = run(gaia_cli, pm, "run", workspace(other, store))  # sources just written: newer than the tree
    assert "SKIP: autotools.build" in second.output and "checkpoint:hello restored" in second.output
    out = other / "build" / "autotools"
    hello = subprocess.run([out / "install" / "usr" / "bin" / "hello"], capture_output=True, text=True)
    assert hello.stdout.startswith("Hello World!")
    assert not any(str(tmp_path / "a-moved-away") in p.read_text(errors="replace")
                   for p in out.resolve().rglob("*") if p.is_file())
    before = mtimes(out / "source")
    subprocess.run(["make"], cwd=out / "source", check=True, capture_output=True)
    assert mtimes(out / "source") == before  # make found nothing to do in the restored tree


def test_an_edit_is_named_by_explain_and_rebuilt(gaia_cli, pm, tmp_path):
    build = workspace(tmp_path / "ws", tmp_path / "store")
    run(gaia_cli, pm, "run", build)
    main_c = tmp_path / "ws" / "hello" / "src" / "main.c"
    main_c.write_text(main_c.read_text().replace("Hello World!", "Hello, gaia!"))
    explain = run(gaia_cli, pm, "checkpoints", "status", build, "--explain").output
    assert "reason=inputs_changed:autotools.source" in explain and "changed: src/main.c" in explain
    assert "checkpoint:hello captured" in run(gaia_cli, pm, "run", build).output
    hello = tmp_path / "ws" / "build" / "autotools" / "install" / "usr" / "bin" / "hello"
    assert subprocess.run([hello], capture_output=True, text=True).stdout.startswith("Hello, gaia!")


def test_files_git_ignores_are_no_input_an_untracked_one_is(gaia_cli, pm, tmp_path):
    build = workspace(tmp_path / "ws", tmp_path / "store")

    def fingerprint() -> str:
        return run(gaia_cli, pm, "checkpoints", "status", build, "--json").json["points"][0]["fingerprint"]

    clean = fingerprint()
    (tmp_path / "ws" / "hello" / "configure").write_text("#!/bin/sh\n")  # .gitignore names it
    assert fingerprint() == clean
    (tmp_path / "ws" / "hello" / "src" / "fix.patch").write_text("--- a\n+++ b\n")
    assert fingerprint() != clean


class InPlace(plugin.Autotools):
    """The same build run in the sources themselves, as a careless anchor would."""

    table = "inplace"
    copy_trees = False


class InPlacePlugin:
    @hookimpl
    def gaia_register_modules(self):  # type: ignore[no-untyped-def]
        return [InPlace]

    @hookimpl
    def gaia_register_anchors(self):  # type: ignore[no-untyped-def]
        return [InPlace.anchor]

    @hookimpl
    def gaia_register_fingerprint_sources(self):  # type: ignore[no-untyped-def]
        return [InPlace.fingerprint_source]


def test_a_build_that_writes_into_its_sources_is_not_captured_and_says_why(gaia_cli, gaia_core_pm, tmp_path):
    gaia_core_pm.register(InPlacePlugin(), name="inplace")
    shutil.copytree(EXAMPLE / "hello", tmp_path / "hello")
    os.remove(tmp_path / "hello" / ".gitignore")  # no git here: every file autoreconf writes is an input
    build = tmp_path / "build.toml"
    build.write_text('[inplace]\nsource = "hello"\n[checkpoints]\nenabled = true\n'
                     '[[checkpoints.points]]\nid = "inplace"\nanchor_task = "inplace.build"\n')
    output = run(gaia_cli, gaia_core_pm, "run", build).output
    [warning] = [line for line in output.splitlines() if "not captured" in line]
    assert "checkpoint:inplace not captured: its inputs changed while inplace.build ran" in warning, output
    assert "inplace.source (inplace.trees):" in warning and "added (Makefile, Makefile.in," in warning, warning
    assert "captured" not in output.replace("not captured", ""), output
