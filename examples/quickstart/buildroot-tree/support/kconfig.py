#!/usr/bin/env python3
"""Kconfig stand-in for the fake Buildroot tree (stdlib only).

Buildroot runs the real Kconfig `conf` for `<name>_defconfig` and `olddefconfig`; this
script implements the part of its behaviour that gaia relies on, for the subset of the
Kconfig language used by ../Config.in (config, bool/int/string, prompt, default,
depends on `A && !B`, choice, menu). Like Kconfig it drops symbols the table does not
declare, leaves out symbols whose dependencies are not met, keeps exactly one member of
each choice, and writes the full .config in Kconfig's own format.

Usage: kconfig.py CONFIG_IN (--defconfig FILE | --olddefconfig) DOT_CONFIG
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

SET_LINE = re.compile(r"^(BR2_\w+)=(.*)$")
UNSET_LINE = re.compile(r"^# (BR2_\w+) is not set$")
INT_VALUE = re.compile(r"^-?\d+$")


@dataclass
class Choice:
    default: str | None = None
    depends: list[tuple[bool, str]] = field(default_factory=list)
    members: list[Symbol] = field(default_factory=list)


@dataclass
class Symbol:
    name: str
    type: str = ""
    prompt: bool = False
    default: str | None = None
    depends: list[tuple[bool, str]] = field(default_factory=list)
    choice: Choice | None = None


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_depends(expr: str) -> list[tuple[bool, str]]:
    """`A && !B` -> [(False, "A"), (True, "B")]; anything richer is not supported."""
    terms = []
    for term in expr.split("&&"):
        term = term.strip()
        if not re.fullmatch(r"!?\w+", term):
            raise SyntaxError(f"unsupported dependency expression: {expr!r}")
        terms.append((term.startswith("!"), term.lstrip("!")))
    return terms


def parse_config_in(path: str) -> list[Symbol | tuple[str, str]]:
    """Symbols and ("menu"|"endmenu", title) markers, in declaration order."""
    entries: list[Symbol | tuple[str, str]] = []
    menus: list[str] = []
    current: Symbol | Choice | None = None
    choice: Choice | None = None
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            rest = rest.strip()
            if keyword == "config":
                current = Symbol(rest, choice=choice)
                entries.append(current)
                if choice is not None:
                    choice.members.append(current)
            elif keyword in ("bool", "int", "string") and isinstance(current, Symbol):
                current.type, current.prompt = keyword, bool(rest)
            elif keyword == "prompt" and current is not None:
                if isinstance(current, Symbol):
                    current.prompt = True
            elif keyword == "default" and current is not None:
                current.default = unquote(rest)
            elif keyword == "depends" and rest.startswith("on ") and current is not None:
                current.depends += parse_depends(rest[3:])
            elif keyword == "choice":
                current = choice = Choice()
            elif keyword == "endchoice":
                current = choice = None
            elif keyword == "menu":
                menus.append(unquote(rest))
                entries.append(("menu", menus[-1]))
            elif keyword == "endmenu":
                entries.append(("endmenu", menus.pop()))
            else:
                raise SyntaxError(f"{path}:{number}: unsupported Kconfig line: {line!r}")
    return entries


def read_user_values(path: str) -> dict[str, str]:
    """Values assigned in a defconfig or .config; insertion order is assignment order."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if match := SET_LINE.match(line):
                name, value = match.group(1), unquote(match.group(2))
            elif match := UNSET_LINE.match(line):
                name, value = match.group(1), "n"
            else:
                continue
            values.pop(name, None)  # a later assignment wins, and moves to the end
            values[name] = value
    return values


def resolve(symbols: list[Symbol], user: dict[str, str]) -> dict[str, str]:
    """Value of every symbol whose dependencies are met; the others are absent."""
    values: dict[str, str] = {}
    order = {name: index for index, name in enumerate(user)}

    def met(depends: list[tuple[bool, str]]) -> bool:
        return all((values.get(name) == "y") != negated for negated, name in depends)

    def valid(symbol: Symbol, value: str) -> bool:
        if symbol.type == "bool":
            return value in ("y", "n")
        return symbol.type == "string" or bool(INT_VALUE.match(value))

    for symbol in symbols:
        if not met(symbol.depends) or (symbol.choice and not met(symbol.choice.depends)):
            continue
        if symbol.choice is not None:
            choice = symbol.choice
            if choice.members[0] is symbol:  # decide the whole choice at its first member
                picked = [m.name for m in choice.members if user.get(m.name) == "y" and met(m.depends)]
                picked.sort(key=order.__getitem__)
                winner = picked[-1] if picked else choice.default or choice.members[0].name
                for member in choice.members:
                    if met(member.depends):
                        values[member.name] = "y" if member.name == winner else "n"
            continue
        value = user.get(symbol.name)
        if value is not None and symbol.prompt and valid(symbol, value):
            values[symbol.name] = value
        else:
            if value is not None and symbol.prompt:
                print(f"warning: symbol value '{value}' invalid for {symbol.name}", file=sys.stderr)
            values[symbol.name] = symbol.default or ("n" if symbol.type == "bool" else "")
    return values


def render(entries: list[Symbol | tuple[str, str]], values: dict[str, str]) -> str:
    version = os.environ.get("BR2_VERSION_FULL", "(unknown version)")
    lines = ["#", "# Automatically generated file; DO NOT EDIT.", f"# Buildroot {version} Configuration", "#"]
    for entry in entries:
        if isinstance(entry, tuple):
            kind, title = entry
            lines += ["", "#", f"# {title}", "#"] if kind == "menu" else [f"# end of {title}"]
            continue
        if entry.name not in values:
            continue
        value = values[entry.name]
        if entry.type == "bool":
            lines.append(f"{entry.name}=y" if value == "y" else f"# {entry.name} is not set")
        elif entry.type == "string":
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{entry.name}="{escaped}"')
        else:
            lines.append(f"{entry.name}={value}")
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".config.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_in")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--defconfig", metavar="FILE")
    mode.add_argument("--olddefconfig", action="store_true")
    parser.add_argument("dot_config")
    args = parser.parse_args(argv)

    source = args.defconfig or args.dot_config
    if args.defconfig and not os.path.isfile(source):
        print(f'*** Can\'t find default configuration "{source}"!', file=sys.stderr)
        return 1
    user = read_user_values(source) if os.path.isfile(source) else {}
    if args.defconfig:  # as Buildroot's BR2_DEFCONFIG_FROM_ENV: the defconfig used, by its absolute path
        user.setdefault("BR2_DEFCONFIG", os.path.abspath(args.defconfig))
    entries = parse_config_in(args.config_in)
    symbols = [entry for entry in entries if isinstance(entry, Symbol)]
    write_atomically(args.dot_config, render(entries, resolve(symbols, user)))
    if args.defconfig:
        print(f"#\n# configuration written to {args.dot_config}\n#")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
