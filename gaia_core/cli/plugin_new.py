"""``gaia plugin new NAME [--anchor] [--dir DIR]``: a new plugin distribution from a template.

The templates are package data under ``gaia_core/templates/plugin/``: ``base/`` for every
plugin, then ``module/`` (a table and a task) or ``anchor/`` (a module, an anchor with a
target, a fingerprint source and a runnable example). Every template file ends in
``.tmpl``, which is dropped; ``{{key}}`` in file names and contents is replaced by the
names below. ``examples/plugins/gaia-toolchain`` is exactly the output of
``gaia plugin new toolchain --anchor`` (tests/test_plugin_template.py checks it).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import tempfile
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from gaia_core.errors import ConfigError, GaiaError

SUFFIX = ".tmpl"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
#: top-level tables gaia itself owns; a plugin's table cannot be one of them
RESERVED = ("build", "checkpoints", "core", "imports", "workspace")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")

DESCRIPTIONS = {
    "module": "a [{name}] table that adds a task to the plan",
    "anchor": "a checkpointable [{name}] build",
}


def template_names(name: str, *, anchor: bool = False) -> dict[str, str]:
    """The values of the placeholders for plugin ``name`` (``toolchain`` or ``gaia-toolchain``)."""
    from gaia_core.plugins import CORE_DISTRIBUTION, compatible_range

    short = name.removeprefix("gaia-")
    if not NAME_PATTERN.match(short):
        raise ConfigError(
            f"plugin name '{name}': use lower-case letters, digits and single hyphens, starting with a letter "
            "(e.g. 'cmake' or 'my-tool')"
        )
    if short in RESERVED:
        raise ConfigError(f"plugin name '{name}': [{short}] is gaia's own table; choose another name")
    ident = short.replace("-", "_")
    return {
        "name": short,
        "ident": ident,
        "dist": f"gaia-{short}",
        "package": f"gaia_{ident}",
        "Class": "".join(part.capitalize() for part in short.split("-")),
        "core_requirement": f"{CORE_DISTRIBUTION}{compatible_range()}",
        "description": DESCRIPTIONS["anchor" if anchor else "module"].format(name=short),
    }


def render(name: str, *, anchor: bool = False) -> dict[str, str]:
    """Relative path -> text of every file of the new plugin."""
    values = template_names(name, anchor=anchor)
    root = importlib.resources.files("gaia_core") / "templates" / "plugin"
    files: dict[str, str] = {}
    for layer in ("base", "anchor" if anchor else "module"):
        for rel, item in _walk(root / layer, ""):
            if not rel.endswith(SUFFIX):
                continue
            files[_fill(rel[: -len(SUFFIX)], values)] = _fill(item.read_text(encoding="utf-8"), values)
    return dict(sorted(files.items()))


def create(name: str, directory: Path, *, anchor: bool = False) -> list[str]:
    """Write the plugin into the new ``directory``; refuse one that exists. Returns the files."""
    files = render(name, anchor=anchor)
    if directory.exists() or directory.is_symlink():
        raise GaiaError(f"{directory} already exists; gaia plugin new writes only into a new directory "
                        "(choose another with --dir)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        os.chmod(staging, 0o777 & ~_umask())
        if directory.exists():
            raise GaiaError(f"{directory} appeared while the plugin was written; nothing was changed")
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return list(files)


def _walk(node: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            if child.name != "__pycache__":
                out += _walk(child, rel + "/")
        else:
            out.append((rel, child))
    return out


def _fill(text: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise GaiaError(f"template placeholder '{{{{{key}}}}}' has no value (a bug in gaia's templates)")
        return values[key]

    return _PLACEHOLDER.sub(replace, text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@click.group("plugin")
def plugin_group() -> None:
    """Create plugins (gaia plugins lists the installed ones)."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--anchor", is_flag=True,
              help="Include an anchor with a target, a fingerprint source, an example build and a "
                   "test that the second run restores.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="The directory to create (default: ./gaia-NAME). It must not exist.")
def new_cmd(name: str, anchor: bool, directory: Path | None) -> None:
    """Create a new plugin distribution NAME (e.g. cmake -> gaia-cmake, module gaia_cmake).

    It is installable and tested from the start: pyproject.toml with its entry point in
    group gaia and the supported gaia-core range, the package with plugin.py, tests using
    the gaia_cli and write_build fixtures, and a README.
    """
    values = template_names(name, anchor=anchor)
    target = directory if directory is not None else Path(values["dist"])
    files = create(name, target, anchor=anchor)
    kind = "anchor plugin" if anchor else "plugin"
    click.echo(f"created {target}/: {kind} {values['dist']} (package {values['package']}, "
               f"entry point '{values['name']}', requires {values['core_requirement']})")
    for rel in files:
        click.echo(f"  {rel}")
    click.echo(f"next: cd {target} && pip install -e '.[test]' && pytest")
