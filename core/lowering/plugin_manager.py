"""Building the plugin manager and the registry, once per export.

Built-in plugins are listed by module name in :data:`BUILTIN_PLUGINS` and go through the same
:func:`_register` as third-party plugins found in the ``flow2onnx`` entry-point group, so they are
loaded, listed, disabled and reported alike.

Which plugins load:

- every built-in, every installed entry point, then the plugin objects passed to one export;
- minus those named in ``disable`` (and in ``$FLOW2ONNX_DISABLE_PLUGINS``, comma-separated), which
  are not even imported;
- restricted, when ``only`` (or ``$FLOW2ONNX_PLUGINS``) names a set, to that set plus the essential
  plugins; an essential plugin asked to be disabled refuses.

Order is explicit, never the order in which packages happen to be found: built-ins in the order
of :data:`BUILTIN_PLUGINS`, then entry-point plugins sorted by name, then per-export plugins in the
order given. Registration clashes are errors unless a lowering says ``override=True``, so the order
decides nothing silently. ``$FLOW2ONNX_TRACE=1`` prints every hook call and registration.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable

import pluggy

from . import hookspecs
from ..errors import Flow2OnnxError, PluginError
from .registry import Registry

ENTRY_POINT_GROUP = "flow2onnx"
DISABLE_ENV = "FLOW2ONNX_DISABLE_PLUGINS"
ONLY_ENV = "FLOW2ONNX_PLUGINS"
TRACE_ENV = "FLOW2ONNX_TRACE"

BUILTIN_PLUGINS = (
    "flow2onnx.op_handlers.activations",
    "flow2onnx.op_handlers.conv",
    "flow2onnx.op_handlers.indexing",
    "flow2onnx.op_handlers.math",
    "flow2onnx.op_handlers.normalization",
    "flow2onnx.op_handlers.pooling",
    "flow2onnx.op_handlers.quantization",
    "flow2onnx.op_handlers.reduce",
    "flow2onnx.op_handlers.resize",
    "flow2onnx.op_handlers.shape",
    "flow2onnx.op_handlers.tensor",
    "flow2onnx.plugins.onnxruntime_verifier",
    "flow2onnx.plugins.onnxsim_pass",
    "flow2onnx.plugins.onnxoptimizer_pass",
)

# Plugins flow2onnx cannot work without: verification runs on every export unless the caller turns
# verification off, which is the way to do without this one.
ESSENTIAL_PLUGINS = {
    "flow2onnx.plugins.onnxruntime_verifier": "it verifies every export; pass verify=False (CLI: --no-verify) to skip verification instead",
}


@dataclass
class PluginInfo:
    """One loaded plugin: its name, the distribution that provides it, and what it registered."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    lowerings: int = 0
    post_passes: list[str] = field(default_factory=list)
    verifiers: list[str] = field(default_factory=list)
    runtime_libraries: list[str] = field(default_factory=list)
    #: op type -> plugins whose lowering this plugin overrides
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


def own_version() -> str:
    """The installed flow2onnx's version (``unknown`` when running from an uninstalled tree)."""
    try:
        return importlib.metadata.version("flow2onnx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _names_from_env(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


def _trace(message: str) -> None:
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        print(f"flow2onnx trace: {message}", file=sys.stderr)


def _register(manager: pluggy.PluginManager, infos: dict, plugin, name: str, distribution: str, version: str) -> None:
    try:
        manager.register(plugin, name=name)
    except ValueError as error:  # pluggy: already registered under another name, or name taken
        raise PluginError(f"plugin {name!r} ({f'{distribution} {version}'.strip()}) could not be registered: {error}") from error
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {name!r} ({f'{distribution} {version}'.strip()}) is invalid: {error}") from error
    infos[name] = PluginInfo(name, distribution, version)
    _trace(f"loaded plugin {name!r} ({infos[name].origin})")


def available_plugin_names(extra_plugins: Iterable = ()) -> list[str]:
    """Names of every plugin that could load: built-ins, entry points, per-export plugins (nothing imported)."""
    names = list(BUILTIN_PLUGINS)
    names += sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.value not in BUILTIN_PLUGINS)
    names += [_extra_name(plugin, index) for index, plugin in enumerate(extra_plugins)]
    return names


def _extra_name(plugin, index: int) -> str:
    return getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"


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
    essential ones always load). Then every registration hook is called, each implementation with
    a ``register`` callback stamped with its plugin's name, and the filled registry is returned.
    """
    extra_plugins = list(extra_plugins)
    found = sorted(
        (ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points and ep.value not in BUILTIN_PLUGINS),
        key=lambda ep: ep.name,
    )
    candidates = list(BUILTIN_PLUGINS) + [ep.name for ep in found] + [_extra_name(p, i) for i, p in enumerate(extra_plugins)]
    skipped = _selection(disable, only, candidates)

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    own = own_version()

    for module_name in BUILTIN_PLUGINS:
        if module_name not in skipped:
            _register(manager, infos, importlib.import_module(module_name), module_name, "flow2onnx", own)

    for entry_point in found:
        if entry_point.name in skipped:
            _trace(f"skipped disabled plugin {entry_point.name!r}")
            continue
        if manager.get_plugin(entry_point.name) is not None:
            raise PluginError(f"two installed plugins are named {entry_point.name!r}; uninstall one of them")
        dist = getattr(entry_point, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
        dist_version = dist.version if dist is not None else "unknown"
        try:
            plugin = entry_point.load()
        except Exception as error:
            raise PluginError(
                f'Error importing plugin "{entry_point.name}" ({dist_name} {dist_version}, '
                f"{entry_point.value}): {type(error).__name__}: {error}"
            ) from error
        _register(manager, infos, plugin, entry_point.name, dist_name, dist_version)

    for index, plugin in enumerate(extra_plugins):
        name = _extra_name(plugin, index)
        if name not in skipped:
            _register(manager, infos, plugin, name, "passed to export", "")

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        plugin_name = manager.get_name(error.plugin) if error.plugin is not None else "?"
        info = infos.get(plugin_name)
        origin = f" ({info.origin})" if info else ""
        raise PluginError(f"plugin {plugin_name!r}{origin}: {error}") from error

    registry = Registry()
    _call_registration_hook(manager, infos, "flow2onnx_register_lowerings", registry.add_lowering, "lowerings")
    _call_registration_hook(manager, infos, "flow2onnx_register_post_passes", registry.add_post_pass, "post_passes")
    _call_registration_hook(manager, infos, "flow2onnx_register_verifiers", registry.add_verifier, "verifiers")
    _call_registration_hook(manager, infos, "flow2onnx_register_runtime_libraries", registry.add_runtime_library, "runtime_libraries")
    return LoadedPlugins(manager, registry, infos)


def _call_registration_hook(manager, infos, hook_name: str, add, tally: str) -> None:
    """Call each implementation of ``hook_name``, in plugin order, with ``register`` bound to its plugin."""
    caller = getattr(manager.hook, hook_name)
    order = {name: index for index, name in enumerate(infos)}
    for impl in sorted(caller.get_hookimpls(), key=lambda impl: order[impl.plugin_name]):
        info = infos[impl.plugin_name]
        info.hooks.append(hook_name)
        _trace(f"calling {hook_name} of plugin {impl.plugin_name!r} ({info.origin})")
        register = functools.partial(_stamped, add, info, tally)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Flow2OnnxError:
            raise
        except Exception as error:
            raise PluginError(
                f"plugin {impl.plugin_name!r} ({info.origin}) failed in {hook_name}: {type(error).__name__}: {error}"
            ) from error


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
    else:
        getattr(info, tally).append(args[0] if args else kwargs.get("name"))
