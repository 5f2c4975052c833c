"""docs/testing.md: gaia_core.testing comes through its pytest11 entry point, once; every
public fixture is documented; the examples are real (the standalone one runs in a bare
directory, the template excerpts are the template's own test code).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import gaia_core.testing
from gaia_core.cli.plugin_new import render

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "testing.md").read_text()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def public_fixtures() -> list[str]:
    tree = ast.parse(Path(gaia_core.testing.__file__).read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) == "pytest.fixture":
                    names.append(node.name)
    return names


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GAIA_", "PYTEST_"))}


def test_the_pytest_plugin_is_an_entry_point_of_gaia_core():
    [ep] = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value == "gaia_core.testing"]
    assert ep.name == "gaia" and ep.dist is not None and ep.dist.name == "gaia-core"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"gaia": "gaia_core.testing"}
    addopts = pyproject["tool"]["pytest"]["ini_options"]["addopts"] if "pytest" in pyproject["tool"] else []
    assert "gaia_core.testing" not in addopts


def test_this_run_registered_it_once(pytestconfig):
    names = [name for name, plugin in pytestconfig.pluginmanager.list_name_plugin() if plugin is gaia_core.testing]
    assert names == ["gaia"]


def test_pytest_from_the_repository_root_loads_it_once(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", "tests/test_docs_testing.py"],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "already registered" not in run.stdout + run.stderr


def test_every_public_fixture_has_a_section():
    fixtures = public_fixtures()
    assert {"gaia_cli", "write_build", "gaia_pm", "gaia_core_pm"} <= set(fixtures)
    for name in fixtures:
        assert re.search(rf"^### {name}$", DOC, re.M), f"docs/testing.md has no section for fixture {name}"


def test_the_standalone_example_runs_in_a_bare_directory(tmp_path):
    """No conftest, no -p option: the fixtures come from the entry point."""
    match = re.search(r"<!-- testing: standalone example -->\n```python\n(.*?)```", DOC, re.S)
    assert match
    code = match.group(1)
    name = code.splitlines()[0].removeprefix("# ").strip()
    (tmp_path / name).write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", name],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{code.count(chr(10) + 'def test_')} passed" in run.stdout


def test_the_template_excerpts_are_the_template_test_code():
    generated = render("toolchain", anchor=True)["tests/test_toolchain.py"]
    excerpts = [block for block in python_blocks(DOC) if "gaia_cli(\"run\", project)" in block or
                "def project(" in block]
    assert len(excerpts) == 2
    for block in excerpts:
        assert block in generated, f"this excerpt is not in the template's tests:\n{block}"
