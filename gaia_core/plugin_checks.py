"""Plugin mistakes caught where they are made, each naming the plugin and its distribution.

Three kinds: a hook name gaia does not have (``gaia_register_anchor``) or a hook function
not marked ``@hookimpl``, refused when the plugin is registered; a registration hook that
returns something gaia cannot use (an instance instead of a class, no ``kind``, a missing
method), refused when the registry is built; and an exception raised inside a plugin's code
while gaia uses it, which becomes a :class:`PluginMethodError` naming the method.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from gaia_core.errors import GaiaError, PluginError, PluginMethodError

#: hooks the registry calls itself, one implementation at a time
REGISTRATION_HOOKS = (
    "gaia_register_modules", "gaia_register_anchors", "gaia_register_fingerprint_sources",
    "gaia_register_backends", "gaia_register_config_tables",
)


def describe(name: str, info: Any = None) -> str:
    """``plugin 'cmake' (gaia-cmake 1.0)``, or ``plugin 'cmake'`` for one not from a distribution."""
    dist = getattr(info, "distribution", None)
    if not dist:
        return f"plugin '{name}'"
    version = getattr(info, "version", None)
    return f"plugin '{name}' ({dist}{' ' + version if version else ''})"


# -- hook names ---------------------------------------------------------------------------------


def hook_name_problems(plugin: Any, origin: str, hooks: list[str], is_marked: Callable[[str], bool]) -> list[str]:
    """Functions of ``plugin`` named ``gaia_*`` that gaia would never call: unknown names
    (with the nearest hook) and hooks not marked ``@hookimpl``."""
    problems = []
    for attr in sorted(dir(plugin)):
        if not attr.startswith("gaia_"):
            continue
        try:
            value = inspect.getattr_static(plugin, attr)
        except AttributeError:
            continue
        value = getattr(value, "__func__", value)
        if not inspect.isfunction(value):
            continue
        if attr not in hooks:
            close = difflib.get_close_matches(attr, hooks, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; gaia's hooks: {', '.join(hooks)}"
            problems.append(f"{origin} defines {attr}, which is no gaia hook{hint}")
        elif not is_marked(attr):
            problems.append(f"{origin} defines {attr} without @hookimpl (from gaia_core import hookimpl), "
                            "so gaia would never call it")
    return problems


# -- what registration hooks return ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Role:
    """What one registration hook must return."""

    what: str
    key: str
    base: str  # "module:Class", imported when checked
    required: tuple[str, ...]
    #: methods wrapped so that an exception in them names the plugin
    guarded: tuple[str, ...]
    has_config_model: bool = False

    def base_class(self) -> type:
        module, _, name = self.base.partition(":")
        return getattr(__import__(module, fromlist=[name]), name)


ROLES = {
    "gaia_register_modules": Role("module", "table", "gaia_core.tasks:Module", ("plan",), ("plan",),
                                  has_config_model=True),
    "gaia_register_anchors": Role(
        "anchor", "task", "gaia_core.anchors:Anchor", ("targets",),
        ("targets", "inactive_reason", "fingerprint_salt", "relocation_roots", "relocation_required",
         "units", "units_problem")),
    "gaia_register_fingerprint_sources": Role("fingerprint source", "kind", "gaia_core.fingerprints:FingerprintSource",
                                              ("digest",), ("digest",)),
    "gaia_register_backends": Role(
        "backend", "kind", "gaia_core.backends:Backend",
        ("exists", "upload", "publish", "download", "delete", "list_entries"),
        ("exists", "upload", "publish", "download", "delete", "list_entries", "list_fingerprints", "describe",
         "secrets", "close"),
        has_config_model=True),
}


def class_name(cls: type) -> str:
    """``Outer.Inner`` without the ``<locals>`` of a class made in a function."""
    return cls.__qualname__.rsplit("<locals>.", 1)[-1]


def registration_problems(role: Role, value: Any, origin: str, hook: str) -> list[str]:
    """Why ``value``, returned by ``hook``, is no class gaia can register as a ``role.what``."""
    base = role.base_class()
    where = f"{origin}: {hook}() returned"
    if not isinstance(value, type):
        if isinstance(value, base):
            return [f"{where} an instance of {class_name(type(value))}, not the class: return "
                    f"{class_name(type(value))} itself (gaia creates the instances)"]
        return [f"{where} {value!r} ({type(value).__name__}), not a {role.what} class "
                f"(a subclass of {base.__module__}.{base.__qualname__})"]
    name = class_name(value)
    if not issubclass(value, base):
        return [f"{where} {name}, which is not a subclass of {base.__module__}.{base.__qualname__}"]
    problems = []
    key = getattr(value, role.key, None)
    if not isinstance(key, str) or not key.strip():
        problems.append(f"{where} {name}, which sets no '{role.key}' (a non-empty string)")
    missing = [f"{m}()" for m in role.required if getattr(value, m, None) is getattr(base, m, None)]
    if missing:
        problems.append(f"{where} {name}, which does not implement {', '.join(missing)}")
    if role.has_config_model:
        model = getattr(value, "config_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            problems.append(f"{where} {name}, whose config_model is not a pydantic model class "
                            "(subclass gaia_core.tasks.StrictModel)")
    if role.key == "kind" and base.__name__ == "FingerprintSource":
        paths = getattr(value, "paths", None)
        if not (isinstance(paths, (tuple, list)) and paths and all(isinstance(p, str) and p for p in paths)):
            problems.append(f"{where} {name}, whose paths is not a non-empty tuple of dotted config paths")
    return problems


# -- exceptions inside plugin code ----------------------------------------------------------------


#: exceptions a plugin raises on purpose; they pass unchanged
def _deliberate() -> tuple[type[BaseException], ...]:
    from gaia_core.fingerprints import InputPending

    return (GaiaError, InputPending)


def guarded(func: Callable[..., Any], origin: str, method: str, *, passes: tuple[type[BaseException], ...] = (),
            error: type[GaiaError] = PluginMethodError, redact: Callable[[str], str] | None = None
            ) -> Callable[..., Any]:
    """``func`` raising what a plugin raises on purpose (a GaiaError, InputPending, ``passes``)
    unchanged, and anything else as ``error`` naming ``origin`` and ``method``."""
    deliberate = (*_deliberate(), *passes)

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except deliberate:
            raise
        except Exception as exc:
            message = str(exc)
            if redact is not None:
                try:
                    message = redact(message)
                except Exception:
                    message = "(message withheld: it could not be redacted)"
            if error is PluginMethodError:
                raise PluginMethodError(origin, method, exc, message) from exc
            raise error(f"{origin} failed in {method}: {type(exc).__name__}: {message}") from exc

    call.__gaia_guarded__ = True  # type: ignore[attr-defined]
    return call


def make_guarded(cls: type, args: tuple[Any, ...], role: Role, origin: str) -> Any:
    """An instance of a registered class whose documented methods name the plugin when they fail.

    A backend's I/O errors (``OSError``) pass unchanged, as the remote code degrades on them,
    and its messages are redacted with its own ``redact``."""
    name = class_name(cls)
    backend = role.what == "backend"
    passes: tuple[type[BaseException], ...] = (OSError,) if backend else ()
    instance = guarded(cls, origin, f"{name}()", passes=passes)(*args)
    redact = getattr(instance, "redact", None) if backend else None
    for method in role.guarded:
        bound = getattr(instance, method, None)
        if not callable(bound) or getattr(bound, "__gaia_guarded__", False):
            continue
        try:
            setattr(instance, method, guarded(bound, origin, f"{name}.{method}()", passes=passes, redact=redact))
        except (AttributeError, TypeError):  # __slots__ or a read-only attribute: left as it is
            continue
    return instance
