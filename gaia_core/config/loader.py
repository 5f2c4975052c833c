"""Load a build file into a validated :class:`~gaia_core.build.Build`.

Order: read the file and its imports (:mod:`gaia_core.config.merge`), apply ``--set``
overrides (:mod:`gaia_core.config.overrides`), then validate everything and report
every problem at once, each naming the file that set the key, the dotted key and what
is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gaia_core.build import Build
from gaia_core.config.fields import allowed_keys
from gaia_core.config.merge import Origins, read_layers
from gaia_core.config.overrides import apply_overrides
from gaia_core.config.workspace import Workspace, WorkspaceModel
from gaia_core.errors import ConfigError
from gaia_core.plugins import (
    KNOWN_PROVIDERS,
    Registry,
    get_plugin_manager,
    install_hint,
)

#: top-level keys the core owns; every other one belongs to a module or a feature plugin
CORE_KEYS = ("build", "imports", "workspace")


def merge_build_file(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Origins]:
    """The merged document (imports and ``--set`` applied) and its origins, unvalidated."""
    doc, origins = read_layers(Path(path))
    return apply_overrides(doc, origins, overrides)


def load_build(
    path: Path | str,
    overrides: list[str] | tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Build:
    """Read, merge, override and validate a build file; raise :class:`ConfigError` with every problem."""
    path = Path(path)
    doc, origins = merge_build_file(path, overrides)
    if registry is None:
        registry = Registry(get_plugin_manager())

    problems: list[str] = []
    workspace = _workspace(doc, origins, path, problems)
    build = Build(path=path, name=path.stem, doc=doc, origins=origins, workspace=workspace, registry=registry)

    problems += _check_top_level(build)
    build.settings = _validate_modules(build, problems)
    for found in registry.pm.hook.gaia_validate_config(build=build):
        problems += list(found or ())
    if problems:
        raise ConfigError(problems)
    return build


# -- workspace --------------------------------------------------------------------------


def _workspace(doc: dict[str, Any], origins: Origins, path: Path, problems: list[str]) -> Workspace:
    """``[workspace]``; paths are relative to the top-level build file's directory, not the cwd."""
    base_dir = path.absolute().parent
    table = doc.get("workspace", {})
    fallback = Workspace.from_model(WorkspaceModel(), base_dir)
    if not isinstance(table, dict):
        problems.append(f"{_origin(origins, 'workspace', path)}: workspace: expected a table")
        return fallback
    try:
        model = WorkspaceModel.model_validate(table)
    except ValidationError as exc:
        problems += render_validation_error(exc, "workspace", WorkspaceModel, origins, path)
        return fallback
    try:
        workspace = Workspace.from_model(model, base_dir)
    except ConfigError as exc:
        where = _origin(origins, "workspace", path)
        problems += [f"{where}: {p}" for p in exc.problems]
        return fallback
    padding_problem = workspace.padding_problem()
    if padding_problem:
        where = _origin(origins, "workspace.padded_length", path)
        problems.append(f"{where}: workspace.padded_length: {padding_problem}")
    return workspace


# -- top level --------------------------------------------------------------------------


def _check_top_level(build: Build) -> list[str]:
    known_modules = {table.split(".")[0] for table in build.registry.modules}
    feature_tables = set(build.registry.config_tables)
    allowed = sorted({*CORE_KEYS, *known_modules, *feature_tables})
    problems: list[str] = []
    for key, value in build.doc.items():
        where = f"{build.origin(key)}: {key}"
        if key in known_modules or key in feature_tables:
            continue
        if key in CORE_KEYS:
            if key == "build" and not isinstance(value, dict):
                problems.append(f"{where}: expected a table of build metadata ([build])")
            continue
        if key == "extends":
            problems.append(f"{where}: 'extends' is not supported; use imports = [\"base.toml\"]")
            continue
        what = "table" if isinstance(value, dict) else "key"
        if key in KNOWN_PROVIDERS["table"]:
            hint = install_hint("table", key)
        else:
            hint = f"; allowed: {', '.join(allowed)} (plugins add more, see `gaia plugins`)"
        problems.append(f"{where}: unknown top-level {what}{hint}")
    return problems


# -- modules ----------------------------------------------------------------------------


def _validate_modules(build: Build, problems: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    tables = list(build.registry.modules)
    for table, provided in build.registry.modules.items():
        if not build.has(table):
            continue
        value = build.get(table)
        if not isinstance(value, dict):
            problems.append(f"{build.origin(table)}: {table}: expected a table")
            continue
        owned_by_others = [other[len(table) + 1 :] for other in tables if other.startswith(table + ".")]
        data = _without(value, owned_by_others)
        model: type[BaseModel] = provided.cls.config_model
        try:
            settings[table] = model.model_validate(data)
        except ValidationError as exc:
            problems += render_validation_error(exc, table, model, build.origins, build.path)
    return settings


def _without(table: dict[str, Any], relative_keys: list[str]) -> dict[str, Any]:
    """A copy of ``table`` minus the sub-tables at ``relative_keys`` (dotted)."""
    out = copy.deepcopy(table)
    for dotted in relative_keys:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


# -- rendering pydantic errors ----------------------------------------------------------


def render_validation_error(
    exc: ValidationError, table: str, model: type[BaseModel], origins: Origins, path: Path
) -> list[str]:
    """``file: dotted.key: message`` per error; input values (maybe secrets) are never shown."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        dotted = ".".join([table, *loc]) if loc else table
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = allowed_keys(model, loc[:-1])
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        problems.append(f"{_origin(origins, dotted, path)}: {dotted}: {message}")
    return problems


def _origin(origins: Origins, dotted: str, default: Path) -> Path:
    parts = dotted.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return default
