"""docs/hooks.md documents every hook of gaia_core/hookspecs.py (datasette's test_docs.py idea).

Each hook has a heading that is its exact signature (``### gaia_extend_plan(build, tasks)``),
and its section states the spec's pluggy options; no heading names a hook that does not exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gaia_core import hookspecs
from gaia_core.plugins import get_plugin_manager

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "hooks.md").read_text()
SPECS = ast.parse(Path(hookspecs.__file__).read_text())
HEADING = re.compile(r"^#{2,4} (gaia_\w+)\((.*)\)$", re.M)
OPTIONS = ("firstresult", "historic", "warn_on_impl", "warn_on_impl_args")


def spec_functions() -> dict[str, list[str]]:
    """Hook name -> parameter names, read from the module's source."""
    return {
        node.name: [a.arg for a in node.args.args]
        for node in SPECS.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("gaia_")
    }


def sections() -> dict[str, tuple[list[str], str]]:
    """Heading hook name -> (parameters in the heading, text of its section)."""
    found = {}
    matches = list(HEADING.finditer(DOC))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(DOC)
        params = [p.strip() for p in match.group(2).split(",") if p.strip()]
        assert match.group(1) not in found, f"two sections for {match.group(1)}"
        found[match.group(1)] = (params, DOC[match.end():end])
    return found


def test_the_source_and_the_plugin_manager_agree_on_the_hooks():
    assert set(spec_functions()) == {name for name in dir(get_plugin_manager(False).hook) if name.startswith("gaia_")}


@pytest.mark.parametrize("name", sorted(spec_functions()))
def test_hook_is_documented_with_its_signature(name):
    documented = sections()
    assert name in documented, f"docs/hooks.md has no section '### {name}(...)'"
    params, _ = documented[name]
    assert params == spec_functions()[name], f"docs/hooks.md shows {name}({', '.join(params)})"


@pytest.mark.parametrize("name", sorted(spec_functions()))
def test_hook_section_states_its_pluggy_options(name):
    _, text = sections()[name]
    opts = getattr(getattr(hookspecs, name), "gaia_spec")
    enabled = [opt for opt in OPTIONS if opts.get(opt)]
    line = next((ln for ln in text.splitlines() if ln.startswith("- **pluggy options:**")), None)
    assert line is not None, f"the section of {name} has no '- **pluggy options:**' line"
    if enabled:
        assert all(f"`{opt}`" in line for opt in enabled), line
    else:
        assert line == "- **pluggy options:** none.", line
    assert "- **Called:**" in text and "- **Returns:**" in text, f"say when {name} is called and what it returns"


def test_no_section_documents_a_hook_that_does_not_exist():
    assert set(sections()) <= set(spec_functions())


def test_the_order_of_the_hooks_in_a_command_names_every_hook():
    start = DOC.index("When one `gaia` command runs")
    listed = re.findall(r"`(gaia_\w+)\(", DOC[start:DOC.index("## Registration hooks")])
    assert sorted(listed) == sorted(spec_functions())
