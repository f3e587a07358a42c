"""Building the plugin manager and the registry, once per export.

Built-in plugins are listed by module name in :data:`BUILTIN_PLUGINS` and go through the same
:func:`_register` as the plugins found in the ``flow2onnx`` entry-point group, so they are loaded,
listed, disabled and reported alike. The op-handler families (``flow2onnx-conv``, …) are
distributions of their own and arrive through the entry-point group, as third-party plugins do.

Which plugins load:

- every built-in, every installed entry point (the families among them), then the plugin objects
  passed to one export;
- minus those named in ``disable`` (and in ``$FLOW2ONNX_DISABLE_PLUGINS``, comma-separated), which
  are not even imported;
- restricted, when ``only`` (or ``$FLOW2ONNX_PLUGINS``) names a set, to that set plus the essential
  plugins; an essential plugin asked to be disabled refuses.

Order is explicit, never the order in which packages happen to be found: built-ins in the order
of :data:`BUILTIN_PLUGINS`, then the op-handler families flow2onnx ships (see
:mod:`flow2onnx.lowering.families`) and the other entry-point plugins, each group sorted by name,
then per-export plugins in the order given. Registration clashes are errors unless a lowering
says ``override=True``, so the order decides nothing silently.

Hooks are called through pluggy, with keyword arguments, once per plugin: each plugin's call goes
through ``manager.subset_hook_caller`` and receives a ``register`` stamped with that plugin, so
errors, ``flow2onnx plugins`` and export results say who registered what. Plugins are called in the
order above; an implementation marked ``tryfirst`` or ``trylast`` moves its plugin's call to the
front or the back, as pluggy orders it. A plugin that implements one hook twice (``specname``) has
both run in one call, in pluggy's order, placed where pluggy puts the first. Wrappers
(``wrapper=True``, ``hookwrapper=True``) are refused: a call covers one plugin, so a wrapper would
wrap nothing but its own plugin. ``$FLOW2ONNX_TRACE=1`` prints every hook call (through pluggy's
hook-call monitoring) and registration.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pluggy

from . import hookspecs
from ..errors import Flow2OnnxError, PluginError
from .families import family_names
from .registry import Registry

ENTRY_POINT_GROUP = "flow2onnx"
CORE_DISTRIBUTION = "flow2onnx-core"
DISABLE_ENV = "FLOW2ONNX_DISABLE_PLUGINS"
ONLY_ENV = "FLOW2ONNX_PLUGINS"
TRACE_ENV = "FLOW2ONNX_TRACE"

# The plugins inside flow2onnx-core. The op-handler families are distributions of their own
# (flow2onnx-conv, …; see flow2onnx.lowering.families) and arrive through the entry-point group like any plugin.
BUILTIN_PLUGINS = (
    "flow2onnx.plugins.onnxruntime_verifier",
    "flow2onnx.plugins.onnxsim_pass",
    "flow2onnx.plugins.onnxoptimizer_pass",
)

# Plugins flow2onnx cannot work without: verification runs on every export unless the caller turns
# verification off, which is the way to do without this one.
ESSENTIAL_PLUGINS = {
    "flow2onnx.plugins.onnxruntime_verifier": "it verifies every export; pass verify=False (CLI: --no-verify) to skip verification instead",
}

# Each registration hook, the Registry method its ``register`` adds to, and the PluginInfo tally.
REGISTRATION_HOOKS = (
    ("flow2onnx_register_lowerings", "add_lowering", "lowerings"),
    ("flow2onnx_register_patterns", "add_pattern", "patterns"),
    ("flow2onnx_register_post_passes", "add_post_pass", "post_passes"),
    ("flow2onnx_register_verifiers", "add_verifier", "verifiers"),
    ("flow2onnx_register_runtime_libraries", "add_runtime_library", "runtime_libraries"),
)
REGISTRATION_HOOK_NAMES = tuple(hook for hook, _, _ in REGISTRATION_HOOKS)


@dataclass
class PluginInfo:
    """One loaded plugin: its name, the distribution that provides it, and what it registered."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    lowerings: int = 0
    patterns: list[str] = field(default_factory=list)
    post_passes: list[str] = field(default_factory=list)
    verifiers: list[str] = field(default_factory=list)
    runtime_libraries: list[str] = field(default_factory=list)
    #: op type (``pattern NAME`` for a pattern) -> plugins whose lowering this plugin overrides
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}".strip()

    @property
    def essential(self) -> bool:
        return self.name in ESSENTIAL_PLUGINS


@dataclass
class LoadedPlugins:
    """The plugin manager of one export, the registry its plugins filled, and what each provided."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]


@dataclass(frozen=True)
class _Candidate:
    """A plugin that could load, before it is imported: its name, origin and how to get it."""

    name: str
    distribution: str
    version: str
    load: Callable[[], object]


def own_version() -> str:
    """The installed flow2onnx core's version (``unknown`` when running from an uninstalled tree)."""
    try:
        return importlib.metadata.version(CORE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


#: Libraries whose versions ``flow2onnx --version`` reports beside flow2onnx's own.
REPORTED_LIBRARIES = ("oneflow", "onnx", "onnxruntime", "pluggy", "numpy")


def installed_versions() -> list[tuple[str, str, str]]:
    """(distribution, version, what it is) for the core, each installed plugin distribution (the
    families and third parties, with their entry-point names) and the libraries flow2onnx runs on;
    read from the installed metadata, without importing any plugin."""
    rows = [(CORE_DISTRIBUTION, own_version(), "core")]
    by_distribution: dict[tuple[str, str], list[str]] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        key = (dist.metadata["Name"], dist.version) if dist is not None else (entry_point.value, "unknown")
        by_distribution.setdefault(key, []).append(entry_point.name)
    families = set(family_names())
    for (name, version), names in sorted(by_distribution.items(), key=lambda item: (not set(item[1]) & families, item[0])):
        kind = "family" if set(names) <= families else "plugin"
        shown = [n for n in sorted(names) if n != name]  # entry-point names where they differ from the distribution's
        rows.append((name, version, f"{kind} ({', '.join(shown)})" if shown else kind))
    for library in REPORTED_LIBRARIES:
        try:
            rows.append((library, importlib.metadata.version(library), "library"))
        except importlib.metadata.PackageNotFoundError:
            rows.append((library, "not installed", "library"))
    return rows


def _names_from_env(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


def _tracing() -> bool:
    return os.environ.get(TRACE_ENV, "") not in ("", "0")


def _trace(message: str) -> None:
    if _tracing():
        print(f"flow2onnx trace: {message}", file=sys.stderr)


def _extra_name(plugin, index: int) -> str:
    return getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"


def _entry_point_candidate(entry_point, described: dict) -> _Candidate:
    """``described``: distribution -> its (name, version), filled as distributions are met (each
    lookup parses the distribution's METADATA file again, and one distribution has many plugins)."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        distribution, version = "unknown distribution", "unknown"
    else:
        known = described.get(dist)
        if known is None:
            known = described[dist] = (dist.metadata["Name"], dist.version)
        distribution, version = known

    def load():
        try:
            return entry_point.load()
        except Exception as error:
            raise PluginError(
                f'Error importing plugin "{entry_point.name}" ({distribution} {version}, '
                f"{entry_point.value}): {type(error).__name__}: {error}"
            ) from error

    return _Candidate(entry_point.name, distribution, version, load)


def _candidates(extra_plugins: list, entry_points: bool = True) -> list[_Candidate]:
    """Every plugin that could load, in plugin order; nothing is imported yet."""
    own = own_version()
    found = [_Candidate(name, CORE_DISTRIBUTION, own, functools.partial(importlib.import_module, name)) for name in BUILTIN_PLUGINS]
    if entry_points:
        # flow2onnx's own families first, so that any other installed plugin may override their
        # lowerings whatever its name: an override=True registration must come after what it replaces.
        families = set(family_names())
        installed = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name not in families, ep.name))
        described: dict = {}
        found += [_entry_point_candidate(ep, described) for ep in installed if ep.value not in BUILTIN_PLUGINS]
    found += [_extra_candidate(plugin, index) for index, plugin in enumerate(extra_plugins)]
    return found


def _extra_candidate(plugin, index: int) -> _Candidate:
    """A plugin passed to one export: a module, an object with hook implementations, or a dotted
    module name to import; anything else is refused now rather than ignored."""
    if isinstance(plugin, str):
        def load(name=plugin):
            try:
                module = importlib.import_module(name)
            except Exception as error:
                raise PluginError(
                    f"plugins[{index}] = {name!r}: cannot import that module ({type(error).__name__}: {error}); pass an "
                    "importable module name, or the plugin module or object itself"
                ) from error
            return _checked_plugin(module, index)

        return _Candidate(plugin, "passed to export", "", load)
    _checked_plugin(plugin, index)
    return _Candidate(_extra_name(plugin, index), "passed to export", "", lambda: plugin)


def _checked_plugin(plugin, index: int):
    """``plugin`` if it implements at least one flow2onnx hook; a :class:`PluginError` otherwise."""
    if plugin is None or isinstance(plugin, (int, float, bool, bytes, list, tuple, dict, set)):
        raise PluginError(
            f"plugins[{index}] is {plugin!r}, not a plugin: pass a module or an object whose functions are marked "
            "@flow2onnx.hookimpl, or a dotted module name"
        )
    marker = f"{hookspecs.PROJECT}_impl"
    names = [name for name in dir(plugin) if not name.startswith("__")]
    if any(hasattr(getattr(plugin, name, None), marker) for name in names):
        return plugin
    unmarked = [name for name in names if name in REGISTRATION_HOOK_NAMES]
    hint = (
        f"its {', '.join(unmarked)} {'is' if len(unmarked) == 1 else 'are'} not marked: decorate with @flow2onnx.hookimpl"
        if unmarked
        else f"it has no function marked @flow2onnx.hookimpl named after a hook ({', '.join(REGISTRATION_HOOK_NAMES)})"
    )
    raise PluginError(f"plugins[{index}] ({_extra_name(plugin, index)}) implements no flow2onnx hook: {hint}")


def available_plugin_names(extra_plugins: Iterable = ()) -> list[str]:
    """Names of every plugin that could load: built-ins, entry points, per-export plugins (nothing imported)."""
    return [candidate.name for candidate in _candidates(list(extra_plugins))]


def _selection(disable: Iterable[str], only: Iterable[str] | None, candidates: list[str]):
    """The set of plugin names to skip, after checking every name the caller gave."""
    disabled = set(disable) | set(_names_from_env(DISABLE_ENV))
    only = set(only) if only is not None else (set(_names_from_env(ONLY_ENV)) or None)
    known = set(candidates)
    for label, names in (("disable", disabled), ("restrict loading to", only or set())):
        unknown = sorted(names - known)
        if unknown:
            raise PluginError(
                f"cannot {label} plugin {', '.join(map(repr, unknown))}: no such plugin. "
                f"Available: {', '.join(candidates)}"
            )
    for name in sorted(disabled & set(ESSENTIAL_PLUGINS)):
        raise PluginError(f"plugin {name!r} is essential and cannot be disabled: {ESSENTIAL_PLUGINS[name]}")
    skipped = set(disabled)
    if only is not None:
        skipped |= known - only - set(ESSENTIAL_PLUGINS)
    return skipped


def load_plugins(
    extra_plugins: Iterable = (),
    entry_points: bool = True,
    disable: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> LoadedPlugins:
    """Build a plugin manager with the built-ins, the installed entry points and ``extra_plugins``.

    ``disable`` names plugins not to load; ``only`` restricts loading to the named plugins (the
    essential ones always load). Then every registration hook is called through pluggy, each plugin
    with a ``register`` callback stamped with its name, and the filled registry is returned.
    """
    candidates = _candidates(list(extra_plugins), entry_points)
    skipped = _selection(disable, only, [candidate.name for candidate in candidates])
    for name in sorted(skipped):
        _trace(f"skipped disabled plugin {name!r}")
    manager, infos = _build_manager([candidate for candidate in candidates if candidate.name not in skipped])
    registry = Registry()
    for hook_name, method, tally in REGISTRATION_HOOKS:
        _call_registration_hook(manager, infos, hook_name, getattr(registry, method), tally)
    return LoadedPlugins(manager, registry, infos)


def _build_manager(chosen: list[_Candidate]) -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """Import the chosen plugins in plugin order and register them with a new pluggy manager."""
    infos: dict[str, PluginInfo] = {}
    plugins = []
    for candidate in chosen:
        if candidate.name in infos:
            first = infos[candidate.name]
            if candidate.distribution == first.distribution == "passed to export":
                raise PluginError(
                    f"plugin {candidate.name!r} is passed to export twice (plugins=[...] lists it, or two plugins of that "
                    "name, more than once); pass each plugin once"
                )
            raise PluginError(
                f"two installed plugins are named {candidate.name!r} ({first.origin} and "
                f"{candidate.distribution} {candidate.version}); uninstall one of them"
            )
        plugins.append(candidate.load())
        infos[candidate.name] = PluginInfo(candidate.name, candidate.distribution, candidate.version)
        _trace(f"loaded plugin {candidate.name!r} ({infos[candidate.name].origin})")
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    # pluggy calls the implementation registered last first: registering in reverse plugin order
    # makes unmarked implementations run in plugin order and leaves tryfirst/trylast to pluggy.
    for plugin, info in reversed(list(zip(plugins, infos.values()))):
        _register(manager, plugin, info)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        name = manager.get_name(error.plugin) if error.plugin is not None else "?"
        origin = f" ({infos[name].origin})" if name in infos else ""
        raise PluginError(f"plugin {name!r}{origin}: {error}") from error
    _refuse_wrappers(manager, infos)
    if _tracing():
        manager.add_hookcall_monitoring(functools.partial(_trace_call, infos), lambda *args: None)
    return manager, infos


def _register(manager: pluggy.PluginManager, plugin, info: PluginInfo) -> None:
    other = manager.get_name(plugin) if manager.is_registered(plugin) else None
    if other is not None:
        raise PluginError(
            f"plugin {info.name!r} ({info.origin}) and plugin {other!r} are the same module or object, so it would load "
            "twice: it is probably installed (found through its entry point) and also passed to export(plugins=[...]). "
            "Load it one way only: leave it out of plugins=, or uninstall it (or disable the installed one by name)"
        )
    try:
        manager.register(plugin, name=info.name)
    except ValueError as error:  # pluggy: the name is taken
        raise PluginError(f"plugin {info.name!r} ({info.origin}) could not be registered: {error}") from error
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {info.name!r} ({info.origin}) is invalid: {error}") from error


def _refuse_wrappers(manager: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    for hook_name, _, _ in REGISTRATION_HOOKS:
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                marker = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                raise PluginError(
                    f"plugin {impl.plugin_name!r} ({infos[impl.plugin_name].origin}) implements {hook_name} with "
                    f"{marker}, which registration hooks do not support: each plugin's hook is called on its own, "
                    f"with a register callback stamped with that plugin, so a wrapper would wrap only its own "
                    f"plugin. Drop {marker} and call register directly"
                )


def _trace_call(infos: dict[str, PluginInfo], hook_name: str, hook_impls, kwargs) -> None:
    for name in dict.fromkeys(impl.plugin_name for impl in hook_impls):
        _trace(f"calling {hook_name}({', '.join(kwargs)}) of plugin {name!r} ({infos[name].origin})")


def _call_registration_hook(manager, infos, hook_name: str, add, tally: str) -> None:
    """Call ``hook_name`` through pluggy once per implementing plugin, in pluggy's call order.

    Each call goes through a subset hook caller that holds only that plugin's implementations, so
    its ``register`` is stamped with that plugin.
    """
    impls = getattr(manager.hook, hook_name).get_hookimpls()
    plugins = {impl.plugin_name: impl.plugin for impl in impls}
    # A hook caller lists its implementations in the reverse of the order it calls them in.
    for name in dict.fromkeys(impl.plugin_name for impl in reversed(impls)):
        info = infos[name]
        info.hooks.append(hook_name)
        call = manager.subset_hook_caller(hook_name, remove_plugins=[p for other, p in plugins.items() if other != name])
        try:
            call(register=functools.partial(_stamped, add, info, tally))
        except Flow2OnnxError:
            raise
        except Exception as error:
            raise PluginError(f"plugin {name!r} ({info.origin}) failed in {hook_name}: {type(error).__name__}: {error}") from error


def _stamped(add, info: PluginInfo, tally: str, *args, **kwargs) -> None:
    try:
        registered = add(info.name, *args, origin=info.origin, **kwargs)
    except TypeError as error:  # wrong arguments to register(): name the plugin, not our internals
        raise PluginError(f"plugin {info.name!r} ({info.origin}) called register() wrongly: {error}") from error
    _trace(f"  {info.name!r} registered {tally[:-1].replace('_', '-')} {args[0] if args else kwargs}")
    if tally == "lowerings":
        info.lowerings += 1
        if registered.overrides:
            info.overrides[registered.op_type] = registered.overrides
    elif tally == "patterns":
        if registered.name not in info.patterns:
            info.patterns.append(registered.name)
        if registered.overrides:
            info.overrides[f"pattern {registered.name}"] = registered.overrides
    else:
        getattr(info, tally).append(args[0] if args else kwargs.get("name"))
