"""Building the plugin manager and the registry, once per export.

Built-in plugins are listed by module name in :data:`BUILTIN_PLUGINS` and go through the same
:func:`_register` as third-party plugins found in the ``flow2onnx`` entry-point group, so they are
loaded, listed and reported alike.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from typing import Iterable

import pluggy

from . import hookspecs
from .errors import Flow2OnnxError, PluginError
from .registry import Registry

ENTRY_POINT_GROUP = "flow2onnx"

BUILTIN_PLUGINS = (
    "flow2onnx.op_handlers.activations",
    "flow2onnx.op_handlers.conv",
    "flow2onnx.op_handlers.math",
    "flow2onnx.op_handlers.normalization",
    "flow2onnx.op_handlers.pooling",
    "flow2onnx.op_handlers.shape",
    "flow2onnx.plugins.onnxruntime_verifier",
    "flow2onnx.plugins.onnxsim_pass",
    "flow2onnx.plugins.onnxoptimizer_pass",
)


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

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass
class LoadedPlugins:
    """The plugin manager of one export, the registry its plugins filled, and what each provided."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]


def _own_version() -> str:
    try:
        return importlib.metadata.version("flow2onnx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _register(manager: pluggy.PluginManager, infos: dict, plugin, name: str, distribution: str, version: str) -> None:
    try:
        manager.register(plugin, name=name)
    except ValueError as error:  # pluggy: already registered under another name, or name taken
        raise PluginError(f"plugin {name!r} ({distribution} {version}) could not be registered: {error}") from error
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {name!r} ({distribution} {version}) is invalid: {error}") from error
    infos[name] = PluginInfo(name, distribution, version)


def load_plugins(extra_plugins: Iterable = (), entry_points: bool = True) -> LoadedPlugins:
    """Build a plugin manager with the built-ins, the installed entry points and ``extra_plugins``.

    Then call every registration hook, each implementation with a ``register`` callback stamped with
    its plugin's name, and return the filled registry.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    own = _own_version()

    for module_name in BUILTIN_PLUGINS:
        _register(manager, infos, importlib.import_module(module_name), module_name, "flow2onnx", own)

    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry_point.value in BUILTIN_PLUGINS or manager.get_plugin(entry_point.name) is not None:
                continue
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
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        _register(manager, infos, plugin, name, "(passed to export)", "-")

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
    return LoadedPlugins(manager, registry, infos)


def _call_registration_hook(manager, infos, hook_name: str, add, tally: str) -> None:
    """Call each implementation of ``hook_name`` with a ``register`` bound to its own plugin's name."""
    caller = getattr(manager.hook, hook_name)
    # get_hookimpls() lists implementations in pluggy's call order reversed; registration order is
    # what we want so that errors about duplicates name the earlier plugin first.
    for impl in caller.get_hookimpls():
        info = infos[impl.plugin_name]
        info.hooks.append(hook_name)
        register = functools.partial(_stamped, add, impl.plugin_name, info, tally)
        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Flow2OnnxError:
            raise
        except Exception as error:
            raise PluginError(
                f"plugin {impl.plugin_name!r} ({info.origin}) failed in {hook_name}: {type(error).__name__}: {error}"
            ) from error


def _stamped(add, plugin_name: str, info: PluginInfo, tally: str, *args, **kwargs) -> None:
    add(plugin_name, *args, **kwargs)
    if tally == "lowerings":
        info.lowerings += 1
    else:
        getattr(info, tally).append(args[0] if args else kwargs.get("name"))
