"""docs/api.md is true: every ``gaia_core....`` heading imports from its module, shows the
real parameter names, and every member in its table exists; the plugin-facing modules have
nothing public that the page leaves out.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "api.md").read_text()
HEADING = re.compile(r"^### `(gaia_core(?:\.\w+)*)(?:\((.*)\))?`$", re.M)
#: modules a plugin uses as a whole: each of their public classes and functions has a heading
COMPLETE_MODULES = (
    "gaia_core.tasks", "gaia_core.anchors", "gaia_core.build", "gaia_core.fingerprints",
    "gaia_core.backends", "gaia_core.errors", "gaia_core.atomic", "gaia_core.safefs", "gaia_core.command_build",
    "gaia_core.padding",
)


@dataclasses.dataclass
class Entry:
    dotted: str
    params: list[str] | None  # None: the heading shows no signature
    table: list[str]  # the first cells of its member table


def entries() -> list[Entry]:
    found = []
    matches = list(HEADING.finditer(DOC))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(DOC)
        section = DOC[match.end():end]
        section = section[: m.start()] if (m := re.search(r"^## ", section, re.M)) else section
        first_cells = [row.split(" | ")[0].lstrip("| ").strip() for row in section.splitlines()
                       if row.startswith("| `")]
        found.append(Entry(match.group(1), parse_params(match.group(2)), first_cells))
    return found


def parse_params(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = []
    for part in split_top_level(text):
        part = part.strip()
        if part in ("", "*", "/"):
            continue
        names.append(re.split(r"[=:]", part, maxsplit=1)[0].strip().lstrip("*"))
    return names


def split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def resolve(dotted: str) -> Any:
    """``gaia_core.a.b.Name`` -> the object: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def signature_names(obj: Any) -> list[str]:
    return [p.name for p in inspect.signature(obj).parameters.values()
            if p.name not in ("self", "cls") and not p.name.startswith("_")]


def has_member(cls: type, name: str) -> bool:
    if hasattr(cls, name):
        return True
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    if name in getattr(cls, "model_fields", {}):
        return True
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return True
        if klass.__module__.startswith("gaia_core") and name in assigned_on_self(klass):
            return True
    return False


def assigned_on_self(klass: type) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
    }


ENTRIES = entries()


def test_the_page_documents_many_names():
    assert len(ENTRIES) > 50


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.dotted for e in ENTRIES])
def test_documented_name_is_importable_from_its_module(entry):
    module, _, name = entry.dotted.rpartition(".")
    obj = resolve(entry.dotted)
    assert getattr(importlib.import_module(module), name) is obj


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.params is not None],
                         ids=[e.dotted for e in ENTRIES if e.params is not None])
def test_documented_signature_has_the_real_parameter_names(entry):
    assert entry.params == signature_names(resolve(entry.dotted))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.table], ids=[e.dotted for e in ENTRIES if e.table])
def test_every_member_in_the_table_exists_with_the_parameters_shown(entry):
    cls = resolve(entry.dotted)
    for cell in entry.table:
        for member in re.findall(r"`([^`]+)`", cell):
            name, _, params = member.partition("(")
            assert has_member(cls, name), f"{entry.dotted} has no member {name!r}"
            if params:
                shown = parse_params(params.rstrip(")"))
                assert shown == signature_names(getattr(cls, name)), f"{entry.dotted}.{member}"


@pytest.mark.parametrize("module_name", COMPLETE_MODULES)
def test_every_public_class_and_function_of_a_plugin_module_is_documented(module_name):
    module = importlib.import_module(module_name)
    documented = {e.dotted for e in ENTRIES}
    public = {
        f"{module_name}.{name}" for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module_name
    }
    assert public - documented == set()
