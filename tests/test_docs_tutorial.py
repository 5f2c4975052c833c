"""docs/plugins.md shows real code: each block headed ``# <file>`` is an excerpt of that file
of examples/plugins/gaia-toolchain, and each headed ``# <plugin>/<file>`` of that file of
examples/plugins/<plugin> (``...`` lines stand for skipped lines); those plugins are run and
tested by tests/test_example_plugin.py and tests/test_example_autotools.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "plugins"
EXAMPLE = EXAMPLES / "gaia-toolchain"
DOC = (REPO / "docs" / "plugins.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def named_file(header: str) -> Path | None:
    """The example file a block's ``# <file>`` header names: in gaia-toolchain, else under
    examples/plugins (``# gaia-autotools/gaia_autotools/plugin.py``)."""
    if not header.startswith("# "):
        return None
    name = header[2:].strip()
    for candidate in (EXAMPLE / name, EXAMPLES / name):
        if candidate.is_file():
            return candidate
    return None


def file_blocks() -> list[tuple[str, str, str]]:
    """(language, file, body) of every block whose first line names a file of an example."""
    found = []
    for language, body in BLOCK.findall(DOC):
        first, _, rest = body.partition("\n")
        if named_file(first) is not None:
            found.append((language, first[2:].strip(), rest))
    return found


def is_excerpt(body: str, text: str) -> bool:
    """The chunks of ``body`` between ``...`` lines appear in ``text`` whole, in order."""
    at = 0
    for chunk in re.split(r"^\.\.\.\n", body, flags=re.M):
        if not chunk.strip():
            continue
        found = text.find(chunk, at)
        if found < 0:
            return False
        at = found + len(chunk)
    return True


def test_every_python_block_is_an_excerpt_of_a_named_file():
    python = [body for language, body in BLOCK.findall(DOC) if language == "python"]
    checked = [body for language, _, body in file_blocks() if language == "python"]
    assert len(python) == len(checked) >= 6


@pytest.mark.parametrize(("language", "name", "body"), file_blocks(), ids=[b[1] + f"#{i}" for i, b in
                                                                         enumerate(file_blocks())])
def test_block_is_an_excerpt_of_the_example(language, name, body):
    path = named_file(f"# {name}")
    assert path is not None and is_excerpt(body, path.read_text()), (
        f"docs/plugins.md shows code that is not in {name}:\n{body}")


def test_the_autotools_anchor_is_shown_whole():
    shown = [body for _, name, body in file_blocks() if name == "gaia-autotools/gaia_autotools/plugin.py"]
    source = (EXAMPLES / "gaia-autotools" / "gaia_autotools" / "plugin.py").read_text()
    assert len(shown) == 1 and source.endswith(shown[0])  # everything but the module docstring


def test_the_excerpt_check_notices_a_difference():
    assert is_excerpt("a\n...\nc\n", "a\nb\nc\n")
    assert not is_excerpt("c\n...\na\n", "a\nb\nc\n")
    assert not is_excerpt("a\nc\n", "a\nb\nc\n")


def test_output_dir_is_defined_before_it_is_used():
    assert DOC.index("def output_dir(") < DOC.index("output_dir(ctx.build)")


def test_the_example_is_named_as_the_template_output():
    assert "gaia plugin new toolchain --anchor" in DOC
