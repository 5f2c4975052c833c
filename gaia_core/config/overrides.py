"""``--set dotted.key=VALUE``: command-line overrides applied after all imports.

VALUE is read as a TOML value (``3``, ``true``, ``"text"``, ``[1, 2]``,
``{ a = 1 }``); text that is not valid TOML is taken as a plain string. So ``--set
name=demo`` gives the string ``"demo"``, but ``--set buildroot.version=2025.11`` gives
the float ``2025.11``: quote strings that look like numbers or booleans
(``--set 'buildroot.version="2025.11"'``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from gaia_core.config.merge import Origins, merge_origins
from gaia_core.errors import ConfigError

#: what ``Build.origins`` records for a key set on the command line
SET_ORIGIN = Path("--set")

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=VALUE"`` -> ``("a.b", value)``; a malformed override is a :class:`ConfigError`."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"invalid --set '{text}': expected KEY=VALUE")
    if not key or not all(_SEGMENT.match(part) for part in key.split(".")):
        raise ConfigError(
            f"invalid --set '{text}': the key must be dotted names made of letters, digits, '_' and '-' (e.g. buildroot.version)"
        )
    return key, parse_value(raw.strip())


def parse_value(raw: str) -> Any:
    """A TOML value, or the raw text when it is not one."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(
    doc: dict[str, Any], origins: Origins, overrides: list[str] | tuple[str, ...]
) -> tuple[dict[str, Any], Origins]:
    """Apply ``--set`` overrides in order (later wins); returns new document and origins."""
    for text in overrides:
        key, value = parse_override(text)
        doc, origins = _set(doc, origins, key, value, text)
    return doc, origins


def _set(doc: dict[str, Any], origins: Origins, key: str, value: Any, text: str) -> tuple[dict[str, Any], Origins]:
    parts = key.split(".")
    root = dict(doc)
    node = root
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"invalid --set '{text}': '{where}' is a {type(child).__name__}, not a table")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value

    prefix = ".".join(parts[:-1])
    new_origins = {".".join(parts[: i + 1]): SET_ORIGIN for i in range(len(parts))}
    if isinstance(value, dict):
        new_origins.update({f"{key}.{sub}": SET_ORIGIN for sub in _dotted_keys(value)})
    # a --set value replaces whatever was at the key, table or not
    stale = key + "."
    kept = {k: v for k, v in origins.items() if not k.startswith(stale)}
    return root, merge_origins(kept, new_origins, {parts[-1]: value}, prefix)


def _dotted_keys(table: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in table.items():
        out.append(key)
        if isinstance(value, dict):
            out += [f"{key}.{sub}" for sub in _dotted_keys(value)]
    return out
