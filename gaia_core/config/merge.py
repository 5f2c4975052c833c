"""Read build files: ``imports`` at any table level, deep merge, and where each key came from.

Merge rule: a table merged into a table merges key by key; any other value (arrays and
arrays of tables included) replaces what was there. Import paths are relative to the
file that names them. ``origins`` maps every dotted key to the file that set it last, so
validation errors can name the file a user has to edit.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gaia_core.errors import ConfigError

IMPORTS_KEY = "imports"

Origins = dict[str, Path]


def read_layers(path: Path) -> tuple[dict[str, Any], Origins]:
    """The merged document of ``path`` and everything it imports, with origins."""
    return _load_file(Path(path), prefix="", stack=[], importer=None)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A new table: ``overlay`` over ``base`` (tables merge, everything else replaces)."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_origins(base: Origins, overlay: Origins, overlay_doc: dict[str, Any], prefix: str) -> Origins:
    """Origins after merging ``overlay_doc`` (at ``prefix``) over a document with ``base`` origins.

    A key the overlay replaces with a non-table drops the base origins below it, so no
    stale origin outlives the value it described.
    """
    merged = dict(base)
    for dotted in _replaced_keys(overlay_doc, prefix):
        below = dotted + "."
        for key in [k for k in merged if k.startswith(below)]:
            del merged[key]
    merged.update(overlay)
    return merged


def join_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# -- internals --------------------------------------------------------------------------


def _load_file(path: Path, *, prefix: str, stack: list[Path], importer: Path | None) -> tuple[dict[str, Any], Origins]:
    identity = path.resolve()
    if identity in stack:
        chain = [str(p) for p in stack[stack.index(identity) :]] + [str(identity)]
        raise ConfigError(f"{path}: import cycle: {' -> '.join(chain)}")
    where = f"{importer}: imports: " if importer else ""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{where}{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}{path}: is a directory, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{where}{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _expand_table(doc, path, prefix, [*stack, identity])


def _expand_table(table: dict[str, Any], path: Path, prefix: str, stack: list[Path]) -> tuple[dict[str, Any], Origins]:
    """Resolve ``imports`` of this table (then of its child tables) defined in ``path``."""
    imports = table.get(IMPORTS_KEY)
    acc: dict[str, Any] = {}
    acc_origins: Origins = {}
    if imports is not None:
        where = join_key(prefix, IMPORTS_KEY)
        if not isinstance(imports, list):
            raise ConfigError(f"{path}: {where}: expected an array of file paths")
        for entry in imports:
            if not isinstance(entry, str):
                raise ConfigError(f"{path}: {where}: expected file paths (strings), got {entry!r}")
            if not entry.strip():
                continue
            target = Path(entry).expanduser()
            if not target.is_absolute():
                target = path.parent / target
            doc, origins = _load_file(target, prefix=prefix, stack=stack, importer=path)
            acc_origins = merge_origins(acc_origins, origins, doc, prefix)
            acc = deep_merge(acc, doc)

    local: dict[str, Any] = {}
    local_origins: Origins = {}
    for key, value in table.items():
        if key == IMPORTS_KEY:
            continue
        dotted = join_key(prefix, key)
        if isinstance(value, dict):
            value, child_origins = _expand_table(value, path, dotted, stack)
            local_origins.update(child_origins)
        local[key] = value
        local_origins[dotted] = path

    origins = merge_origins(acc_origins, local_origins, local, prefix)
    return deep_merge(acc, local), origins


def _replaced_keys(doc: dict[str, Any], prefix: str) -> list[str]:
    """Dotted keys of ``doc`` whose value is not a table (they replace, not merge)."""
    out: list[str] = []
    for key, value in doc.items():
        dotted = join_key(prefix, key)
        if isinstance(value, dict):
            out += _replaced_keys(value, dotted)
        else:
            out.append(dotted)
    return out
