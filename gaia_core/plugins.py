"""The plugin manager factory and the registries built from its hooks."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys
from typing import Any

import pluggy

from gaia_core import NAME, hookspecs
from gaia_core.errors import GaiaError, PluginError

#: built-in plugins (name -> module), registered through the same hooks as any other plugin
DEFAULT_PLUGINS = {
    "core": "gaia_core.builtin.core",
    "dir_backend": "gaia_core.builtin.dir_backend",
    "checkpoints": "gaia_core.checkpoints.plugin",
}

#: which distribution provides a kind the core has heard of, for "install X" hints
KNOWN_PROVIDERS = {
    "backend": {"s3": "gaia-s3", "http": "gaia-http", "ssh": "gaia-ssh"},
    "table": {"buildroot": "gaia-buildroot", "stage": "gaia-buildroot", "program": "gaia-buildroot"},
    "anchor": {"buildroot.build": "gaia-buildroot"},
}


def install_hint(category: str, key: str) -> str:
    dist = KNOWN_PROVIDERS.get(category, {}).get(key.split(".")[0] if category == "table" else key)
    if dist:
        return f"; install the '{dist}' distribution (pip install {dist})"
    return "; is the plugin that provides it installed? (see `gaia plugins`)"


#: the distribution plugins declare their range of supported cores on
CORE_DISTRIBUTION = "gaia-core"


@dataclasses.dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    #: the specifier of the distribution's ``Requires-Dist: gaia-core ...`` ("" when it sets
    #: no bound), None when it does not require gaia-core or is not a distribution
    requires_core: str | None = None

    @property
    def core_compatible(self) -> bool | None:
        """Whether the running gaia-core is in ``requires_core`` (None: nothing declared)."""
        return core_satisfies(self.requires_core)


# -- compatibility (docs/compatibility.md) ---------------------------------------------


def compatible_range(version: str | None = None) -> str:
    """The ``gaia-core`` specifier a plugin written against ``version`` (default: this one) declares.

    The contract holds within a minor series while the major is 0 and within a major from
    1.0 on: ``0.4.2`` gives ``>=0.4,<0.5``, ``1.4.2`` gives ``>=1.4,<2``.
    """
    from packaging.version import Version

    from gaia_core import __version__

    v = Version(version or __version__)
    if v.major == 0:
        return f">=0.{v.minor},<0.{v.minor + 1}"
    return f">={v.major}.{v.minor},<{v.major + 1}"


def core_requirement(requires: list[str] | None) -> str | None:
    """The specifier on gaia-core among ``Requires-Dist`` lines (``dist.requires``), if any.

    Requirements behind an extra (``; extra == "test"``) or a marker that does not hold
    here are not requirements of the plugin at run time and are ignored.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    found: list[str] = []
    required = False
    for line in requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != CORE_DISTRIBUTION:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        required = True
        found += sorted((str(s) for s in req.specifier), key=_bound_first)
    if not required:
        return None
    return ",".join(found)


def _bound_first(spec: str) -> tuple[int, str]:
    """``>=0.1,<0.2`` rather than packaging's ``<0.2,>=0.1``."""
    order = (">=", ">", "~=", "===", "==", "!=", "<=", "<")
    return next(i for i, op in enumerate(order) if spec.startswith(op)), spec


def core_satisfies(specifier: str | None, version: str | None = None) -> bool | None:
    """Whether ``version`` (default: the running gaia-core) is in ``specifier``; None for None."""
    if specifier is None:
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from gaia_core import __version__

    try:
        return SpecifierSet(specifier).contains(version or __version__, prereleases=True)
    except InvalidSpecifier:
        return None


def incompatibility(info: PluginInfo) -> str | None:
    """A sentence about a plugin whose declared gaia-core range excludes this core, else None."""
    from gaia_core import __version__

    if info.core_compatible is not False:
        return None
    dist = f"{info.distribution} {info.version}" if info.version else str(info.distribution)
    return (
        f"plugin '{info.name}' ({dist}) requires {CORE_DISTRIBUTION}{info.requires_core}, but this is "
        f"{CORE_DISTRIBUTION} {__version__}: it may fail or misbehave; install a release of "
        f"{info.distribution} that supports {CORE_DISTRIBUTION} {__version__}, or a {CORE_DISTRIBUTION} "
        f"in its range"
    )


class GaiaPluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__(NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: installed plugins not loaded, by entry point name -> why (for ``gaia plugins``)
        self.not_loaded: dict[str, str] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's register, refusing ``gaia_*`` functions gaia would never call, and making
        an exception in a hook implementation name the plugin."""
        from gaia_core.plugin_checks import hook_name_problems

        label = name or self.get_canonical_name(plugin)
        origin = self._origin(label)
        hooks = sorted(n for n in dir(hookspecs) if n.startswith("gaia_"))
        problems = hook_name_problems(plugin, origin, hooks,
                                      lambda attr: self.parse_hookimpl_opts(plugin, attr) is not None)
        if problems:
            raise PluginError("; ".join(problems) + " (see docs/hooks.md)")
        registered = super().register(plugin, name)
        if registered is not None:
            self._guard_hookimpls(plugin, origin)
        return registered

    def _origin(self, name: str) -> str:
        from gaia_core.plugin_checks import describe

        return describe(name, self.infos.get(name))

    def _guard_hookimpls(self, plugin: Any, origin: str) -> None:
        """Feature and CLI hook implementations raise a PluginMethodError naming the plugin."""
        from gaia_core.plugin_checks import REGISTRATION_HOOKS, guarded

        for caller in self.get_hookcallers(plugin) or []:
            if caller.name in REGISTRATION_HOOKS:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    impl.function = guarded(impl.function, origin, f"hook {caller.name}()")  # type: ignore[misc]

    def register_module(self, module_name: str, info: PluginInfo) -> None:
        module = importlib.import_module(module_name)
        self.infos[info.name] = info
        self.register(module, name=info.name)

    def load_entrypoints(self) -> None:
        only = os.environ.get("GAIA_LOAD_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        blocked = {n.strip() for n in os.environ.get("GAIA_DISABLE_PLUGINS", "").split(",") if n.strip()}
        seen: dict[str, str] = {}
        for ep in sorted(importlib.metadata.entry_points(group=NAME), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            if ep.name in seen and seen[ep.name] != dist:
                raise PluginError(
                    f"two plugins use the entry point name '{ep.name}': distributions "
                    f"'{seen[ep.name]}' and '{dist}'; uninstall one"
                )
            seen[ep.name] = dist
            if ep.name in blocked or dist in blocked:
                self.not_loaded[ep.name] = f"{dist}, disabled by GAIA_DISABLE_PLUGINS"
                continue
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                self.not_loaded[ep.name] = f"{dist}, not in GAIA_LOAD_PLUGINS"
                continue
            if self.get_plugin(ep.name) is not None:
                continue
            version = ep.dist.version if ep.dist else None
            requires = core_requirement(getattr(ep.dist, "requires", None)) if ep.dist else None
            info = PluginInfo(ep.name, ep.value, dist, version, requires_core=requires)
            try:
                plugin = ep.load()
            except Exception as exc:
                mismatch = incompatibility(info)
                raise PluginError(
                    f"plugin '{ep.name}' from distribution '{dist}' failed to import: "
                    f"{type(exc).__name__}: {exc} (disable it with GAIA_DISABLE_PLUGINS={ep.name}, "
                    f"or reinstall {dist})" + (f"; {mismatch}" if mismatch else "")
                ) from exc
            self.infos[ep.name] = info
            try:
                self.register(plugin, name=ep.name)
            except pluggy.PluginValidationError as exc:
                raise PluginError(
                    f"plugin '{ep.name}' from distribution '{dist}' implements a hook wrongly: {exc} "
                    f"(see docs/hooks.md; disable it with GAIA_DISABLE_PLUGINS={ep.name})"
                ) from exc
            except PluginError as exc:
                raise PluginError(f"{exc}; disable it with GAIA_DISABLE_PLUGINS={ep.name}") from None
        unknown = sorted((allowed or set()) - set(seen) - set(seen.values()))
        if unknown:
            from gaia_core.errors import ConfigError

            installed = ", ".join(f"{n} ({d})" for n, d in sorted(seen.items())) or "none"
            raise ConfigError(
                f"environment: GAIA_LOAD_PLUGINS={only!r} names {', '.join(repr(n) for n in unknown)}, which "
                f"is no installed plugin; installed plugins (entry point and distribution names both "
                f"work): {installed}"
            )
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements a hook gaia does not have: {exc} (see docs/hooks.md)") from exc


def get_plugin_manager(load_entrypoints: bool = True) -> GaiaPluginManager:
    """A fresh manager with the built-ins and (optionally) the installed plugins."""
    pm = GaiaPluginManager()
    from gaia_core import __version__

    for short, module_name in DEFAULT_PLUGINS.items():
        pm.register_module(module_name, PluginInfo(short, module_name, "gaia-core", __version__, builtin=True))
    if load_entrypoints:
        pm.load_entrypoints()
    if os.environ.get("GAIA_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


def _trace_before(hook_name: str, impls: Any, kwargs: Any) -> None:
    print(f"[gaia trace] {hook_name} -> {[i.plugin_name for i in impls]}", file=sys.stderr)


def _trace_after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
    pass


@dataclasses.dataclass
class Provided:
    """A registered class and the plugin that registered it."""

    cls: Any
    plugin: str
    #: ``plugin 'cmake' (gaia-cmake 1.0)``, for messages
    origin: str = ""
    #: the registration hook it came from
    hook: str = ""

    def make(self, *args: Any) -> Any:
        """``cls(*args)``, whose documented methods raise a PluginMethodError naming the plugin
        and the method instead of whatever went wrong inside them."""
        from gaia_core.plugin_checks import ROLES, make_guarded

        role = ROLES.get(self.hook)
        if role is None:
            return self.cls(*args)
        return make_guarded(self.cls, args, role, self.origin or f"plugin '{self.plugin}'")


class Registry:
    """``key -> class`` maps of everything the plugins registered."""

    def __init__(self, pm: GaiaPluginManager):
        self.pm = pm
        problems: list[str] = []
        self.modules = self._collect("gaia_register_modules", problems)
        self.anchors = self._collect("gaia_register_anchors", problems)
        self.fingerprint_sources = self._collect("gaia_register_fingerprint_sources", problems)
        self.backends = self._collect("gaia_register_backends", problems)
        if problems:
            raise PluginError(problems[0] if len(problems) == 1 else
                              f"{len(problems)} plugin problems:\n" + "\n".join(f"  - {p}" for p in problems))
        self.config_tables = self._collect_tables()
        #: config path -> the fingerprint sources that handle it
        self.sources_by_path: dict[str, list[Provided]] = {}
        for provided in self.fingerprint_sources.values():
            for path in provided.cls.paths:
                self.sources_by_path.setdefault(path, []).append(provided)

    def _collect(self, hook_name: str, problems: list[str]) -> dict[str, Provided]:
        from gaia_core.plugin_checks import ROLES, registration_problems

        role = ROLES[hook_name]
        out: dict[str, Provided] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            origin = self.pm._origin(impl.plugin_name)
            result = self._call(impl, hook_name)
            if result is None:
                continue
            classes = result if isinstance(result, (list, tuple)) else [result]
            for cls in classes:
                found = registration_problems(role, cls, origin, hook_name)
                if found:
                    problems += found
                    continue
                key = getattr(cls, role.key)
                if key in out:
                    other = out[key]
                    raise PluginError(
                        f"{role.what} '{key}' is registered twice: by {other.cls.__qualname__} "
                        f"(plugin '{other.plugin}') and by {cls.__qualname__} (plugin '{impl.plugin_name}')"
                    )
                out[key] = Provided(cls, impl.plugin_name, origin, hook_name)
        return dict(sorted(out.items()))

    def _call(self, impl: Any, hook_name: str) -> Any:
        """One registration hook implementation's result; an exception in it names the plugin."""
        try:
            return impl.function()
        except GaiaError:
            raise
        except Exception as exc:
            raise PluginError(f"{self.pm._origin(impl.plugin_name)} failed in hook {hook_name}(): "
                              f"{type(exc).__name__}: {exc}") from exc

    def _collect_tables(self) -> dict[str, str]:
        """Top-level table -> the plugin that owns it (``gaia_register_config_tables``)."""
        out: dict[str, str] = {}
        module_tables = {table.split(".")[0]: p.plugin for table, p in self.modules.items()}
        for impl in self.pm.hook.gaia_register_config_tables.get_hookimpls():
            result = self._call(impl, "gaia_register_config_tables")
            names = [result] if isinstance(result, str) else list(result or ())
            for name in names:
                other = out.get(name) or module_tables.get(name)
                if other is not None:
                    raise PluginError(
                        f"top-level table '{name}' is claimed twice: by plugin '{other}' "
                        f"and by plugin '{impl.plugin_name}'"
                    )
                out[name] = impl.plugin_name
        return dict(sorted(out.items()))

    def provided_by(self, plugin_name: str) -> dict[str, list[str]]:
        def keys(registry: dict[str, Provided]) -> list[str]:
            return [k for k, p in registry.items() if p.plugin == plugin_name]

        return {
            "modules": keys(self.modules),
            "anchors": keys(self.anchors),
            "fingerprint_sources": keys(self.fingerprint_sources),
            "backends": keys(self.backends),
        }
