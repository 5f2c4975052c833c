"""Text edits of a Buildroot ``.config``, with Kconfig's own spelling of "unset".

Editing the text (instead of appending fragments) keeps the file readable and lets a later
``olddefconfig`` see exactly one line per symbol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from gaia_buildroot.config import SymbolValue

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def symbol_name(name: str, prefix: str = "") -> str:
    """Upper-case, every non-alphanumeric character as ``_``, with ``prefix`` unless present."""
    normalized = _NOT_ALNUM.sub("_", name).upper()
    if prefix and not normalized.startswith(prefix):
        normalized = prefix + normalized
    return normalized


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(raw: str) -> str:
    """The string a quoted ``.config`` value stands for (a bare value as it is)."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def render_value(value: SymbolValue) -> str | None:
    """The right-hand side of ``KEY=...``; None means "is not set"."""
    if isinstance(value, bool):
        return "y" if value else None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"unsupported Kconfig value type {type(value).__name__}")


class DotConfig:
    """The lines of a ``.config`` file, edited in place."""

    def __init__(self, text: str = ""):
        self.lines = text.splitlines()

    @classmethod
    def read(cls, path: Path) -> DotConfig:
        return cls(Path(path).read_text())

    def write(self, path: Path) -> None:
        Path(path).write_text(self.text())

    def text(self) -> str:
        return "\n".join(self.lines) + "\n" if self.lines else ""

    @staticmethod
    def _is_line_of(line: str, key: str) -> bool:
        return line.startswith(key + "=") or line.strip() == f"# {key} is not set"

    def set(self, key: str, raw: str) -> None:
        """``KEY=raw``: replace the first line of ``KEY`` in place, drop duplicates, else append."""
        new = f"{key}={raw}"
        out: list[str] = []
        placed = False
        for line in self.lines:
            if self._is_line_of(line, key):
                if not placed:
                    out.append(new)
                    placed = True
                continue
            out.append(line)
        if not placed:
            out.append(new)
        self.lines = out

    def unset(self, key: str) -> None:
        """Remove every line of ``KEY`` and append ``# KEY is not set``."""
        self.lines = [line for line in self.lines if not self._is_line_of(line, key)]
        self.lines.append(f"# {key} is not set")

    def apply(self, key: str, value: SymbolValue) -> None:
        raw = render_value(value)
        if raw is None:
            self.unset(key)
        else:
            self.set(key, raw)

    def get(self, key: str) -> str | None:
        """The raw value, ``"n"`` for ``# KEY is not set``, None when absent."""
        for line in self.lines:
            if line.startswith(key + "="):
                return line[len(key) + 1 :]
            if line.strip() == f"# {key} is not set":
                return "n"
        return None


def requested_symbols(
    packages: Mapping[str, bool],
    package_versions: Mapping[str, str],
    symbols: Mapping[str, SymbolValue],
) -> dict[str, SymbolValue]:
    """The user's overrides as ``BR2_*`` symbols, in the order they are applied (last wins)."""
    wanted: dict[str, SymbolValue] = {}
    for name, enabled in packages.items():
        wanted[symbol_name(name, "BR2_PACKAGE_")] = enabled
    for name, version in package_versions.items():
        wanted[symbol_name(name, "BR2_PACKAGE_") + "_VERSION"] = version
    for name, value in symbols.items():
        wanted[symbol_name(name, "BR2_")] = value
    return wanted


def unrealized(config: DotConfig, wanted: Mapping[str, SymbolValue]) -> list[str]:
    """Requested symbols that ``olddefconfig`` dropped (for example an unmet ``depends on``)."""
    missing = []
    for key, value in wanted.items():
        actual = config.get(key)
        if value is True:
            ok = actual == "y"
        elif value is False:
            ok = actual in (None, "n")
        else:
            ok = actual is not None and actual != "n"
        if not ok:
            missing.append(key)
    return missing
