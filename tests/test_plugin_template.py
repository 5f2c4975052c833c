"""``gaia plugin new``: a working, tested plugin distribution; the example plugin is its output.

``examples/plugins/gaia-toolchain`` is exactly what ``gaia plugin new toolchain --anchor``
writes, with no edits: :func:`test_the_example_plugin_is_the_template_output` compares
every file. After changing a template, regenerate it::

    rm -rf examples/plugins/gaia-toolchain
    GAIA_LOAD_PLUGINS= gaia plugin new toolchain --anchor --dir examples/plugins/gaia-toolchain
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gaia_core
from gaia_core.cli.plugin_new import render, template_names
from gaia_core.plugins import compatible_range

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "plugins" / "gaia-toolchain"
#: what running, installing and testing the example leaves in it (its .gitignore)
LEFT_BY_USE = {"__pycache__", ".pytest_cache", "build", "out"}


def new(gaia_cli, gaia_core_pm, *args):  # type: ignore[no-untyped-def]
    return gaia_cli("plugin", "new", *map(str, args), pm=gaia_core_pm)


def files_under(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in LEFT_BY_USE and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = path.read_text()
    return dict(sorted(out.items()))


def install_in_place(plugin: Path, site: Path) -> None:
    """What ``pip install -e`` leaves, offline: setuptools writes the distribution's metadata
    (entry points, Requires-Dist) into ``site``, and the sources stay importable from ``plugin``."""
    site.mkdir()
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base", str(site)],
        cwd=plugin, check=True, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("name", "options"), [("widget", []), ("my-tool", ["--anchor"])])
def test_the_generated_plugin_installs_and_passes_its_own_tests(gaia_cli, gaia_core_pm, tmp_path, name, options):
    result = new(gaia_cli, gaia_core_pm, name, *options, "--dir", tmp_path / "plugin")
    assert result.exit_code == 0, result.output
    plugin = tmp_path / "plugin"
    install_in_place(plugin, tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(plugin), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=plugin, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout, run.stdout


def test_the_output_is_a_distribution_with_its_entry_point_and_core_range(gaia_cli, gaia_core_pm, tmp_path):
    result = new(gaia_cli, gaia_core_pm, "cmake", "--anchor", "--dir", tmp_path / "gaia-cmake")
    assert result.exit_code == 0, result.output
    root = tmp_path / "gaia-cmake"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "gaia-cmake"
    assert project["dependencies"] == [f"gaia-core{compatible_range()}"]
    assert project["entry-points"]["gaia"] == {"cmake": "gaia_cmake.plugin"}
    assert "gaia-plugin" in project["keywords"]
    assert sorted(files_under(root)) == [
        ".gitignore", "README.md", "example/build.toml", "example/src/build.sh", "example/src/tool.sh",
        "gaia_cmake/__init__.py", "gaia_cmake/plugin.py", "pyproject.toml", "tests/test_cmake.py",
    ]
    plugin = (root / "gaia_cmake" / "plugin.py").read_text()
    for piece in ("class CmakeConfig(StrictModel)", "class CmakeModule(Module)", "class CmakeAnchor(Anchor)",
                  "class CmakeSources(FingerprintSource)", 'Target("cmake", output_dir(self.build))',
                  "def gaia_register_anchors()"):
        assert piece in plugin
    assert "gaia plugin new cmake --anchor" in (root / "README.md").read_text()
    assert "created" in result.stdout and "tests/test_cmake.py" in result.stdout


def test_without_anchor_it_is_a_module_only(gaia_cli, gaia_core_pm, tmp_path):
    assert new(gaia_cli, gaia_core_pm, "gaia-hello", "--dir", tmp_path / "p").exit_code == 0
    assert sorted(files_under(tmp_path / "p")) == [
        ".gitignore", "README.md", "gaia_hello/__init__.py", "gaia_hello/plugin.py", "pyproject.toml",
        "tests/test_hello.py",
    ]
    assert "Anchor" not in (tmp_path / "p" / "gaia_hello" / "plugin.py").read_text()


def test_the_default_directory_is_gaia_name_in_the_current_directory(gaia_cli, gaia_core_pm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert new(gaia_cli, gaia_core_pm, "widget").exit_code == 0
    assert (tmp_path / "gaia-widget" / "gaia_widget" / "plugin.py").is_file()


@pytest.mark.parametrize("existing", ["empty dir", "dir", "file"])
def test_an_existing_directory_is_never_overwritten(gaia_cli, gaia_core_pm, tmp_path, existing):
    target = tmp_path / "gaia-widget"
    if existing == "file":
        target.write_text("mine")
    else:
        target.mkdir()
        if existing == "dir":
            (target / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = new(gaia_cli, gaia_core_pm, "widget", "--dir", target)
    assert result.exit_code == 1
    assert f"error: {target} already exists" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging directory left either
    if existing == "dir":
        assert (target / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["Widget", "my_tool", "1tool", "tool-", "a--b", "checkpoints", "gaia-workspace"])
def test_names_that_cannot_be_a_table_entry_point_and_package_are_refused(gaia_cli, gaia_core_pm, tmp_path, name):
    result = new(gaia_cli, gaia_core_pm, name, "--dir", tmp_path / "p")
    assert result.exit_code == 2
    assert f"plugin name '{name}'" in result.stderr
    assert not (tmp_path / "p").exists()


def test_a_hyphenated_name_gives_python_names():
    names = template_names("my-tool")
    assert (names["name"], names["dist"], names["package"], names["ident"], names["Class"]) == (
        "my-tool", "gaia-my-tool", "gaia_my_tool", "my_tool", "MyTool")


def test_every_placeholder_is_filled():
    for anchor in (False, True):
        for rel, text in render("my-tool", anchor=anchor).items():
            assert "{{" not in rel and "{{" not in text, rel


def test_the_templates_are_package_data():
    """Every template file matches the package-data patterns, so a wheel of gaia-core ships it."""
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gaia_core"]
    root = Path(gaia_core.__file__).parent
    shipped = {p for pattern in patterns for p in glob.glob(pattern, root_dir=root, recursive=True)}
    templates = {str(p.relative_to(root)) for p in (root / "templates").rglob("*") if p.is_file()
                 and "__pycache__" not in p.parts}
    assert templates and templates <= shipped


def test_the_example_plugin_is_the_template_output():
    expected = render("toolchain", anchor=True)
    actual = files_under(EXAMPLE)
    assert sorted(actual) == sorted(expected), (
        "examples/plugins/gaia-toolchain differs from `gaia plugin new toolchain --anchor`; regenerate it "
        "(see this module's docstring)")
    for rel, text in expected.items():
        assert actual[rel] == text, f"{rel} differs from the template's output; regenerate the example"
