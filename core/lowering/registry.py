"""What the plugins registered: lowerings keyed by OneFlow op type and opset, post-passes, verifiers.

A :class:`Registry` is built for each export from the plugins loaded for it (see
:func:`flow2onnx.lowering.plugin_manager.load_plugins`); nothing here is global.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

import onnx

from ..errors import PluginError

# The oldest opset flow2onnx lowers to: ONNX 1.6's opset 11 is where Resize, Pad and Clip took their
# modern input-based forms, and every runtime still in use accepts it.
MIN_OPSET = 11
# The default: opset 17 brings LayerNormalization and is accepted by TensorRT 8.6+ and ONNX Runtime
# 1.12+, so it covers today's deployment targets without needing the newest runtime.
DEFAULT_OPSET = 17

_OP_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def max_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` knows."""
    return onnx.defs.onnx_opset_version()


@dataclass(frozen=True)
class Lowering:
    """One registered lowering of a OneFlow op type, valid for ``since_opset..until_opset``.

    ``origin`` is the plugin's distribution and version; ``overrides`` names the plugins whose
    lowerings of the same op type this one replaces (only when registered with ``override=True``).
    """

    op_type: str
    function: Callable
    since_opset: int
    until_opset: int | None
    plugin: str
    origin: str = ""
    override: bool = False
    overrides: tuple[str, ...] = ()

    def covers(self, opset: int) -> bool:
        """Whether the registration's opset range includes ``opset``."""
        return self.since_opset <= opset and (self.until_opset is None or opset <= self.until_opset)

    def overlaps(self, other: "Lowering") -> bool:
        """Whether the two registrations' opset ranges share an opset."""
        low = max(self.since_opset, other.since_opset)
        highs = [h for h in (self.until_opset, other.until_opset) if h is not None]
        return not highs or low <= min(highs)

    def describe(self) -> str:
        """``op_type [opset since..until] from plugin 'name' (dist version)``, for messages."""
        until = "" if self.until_opset is None else str(self.until_opset)
        origin = f" ({self.origin})" if self.origin else ""
        return f"{self.op_type} [opset {self.since_opset}..{until}] from plugin {self.plugin!r}{origin}"


@dataclass(frozen=True)
class NamedFunction:
    """A post-pass or verifier, with the plugin that registered it."""

    name: str
    function: Callable
    plugin: str
    origin: str = ""

    def describe(self) -> str:
        """``'name' from plugin 'plugin' (dist version)``, for messages."""
        origin = f" ({self.origin})" if self.origin else ""
        return f"{self.name!r} from plugin {self.plugin!r}{origin}"


@dataclass(frozen=True)
class RuntimeLibrary:
    """A shared library that teaches a runtime the ops of a custom ONNX domain."""

    domain: str
    path: str
    plugin: str
    origin: str = ""


@dataclass
class Registry:
    """Lowerings, post-passes and verifiers registered by the plugins of one export."""

    lowerings: dict[str, list[Lowering]] = field(default_factory=dict)
    post_passes: dict[str, NamedFunction] = field(default_factory=dict)
    verifiers: dict[str, NamedFunction] = field(default_factory=dict)
    runtime_libraries: dict[str, "RuntimeLibrary"] = field(default_factory=dict)

    # ---- registration (validated when made, so a plugin's mistake names the plugin) ----

    def add_lowering(
        self, plugin: str, op_type, function, since_opset=MIN_OPSET, until_opset=None, override=False, *, origin: str = ""
    ) -> Lowering:
        """Register a lowering; a clash with another plugin's lowering is an error unless ``override``.

        Two lowerings clash when they are for the same op type and their opset ranges overlap. One
        plugin may stack several lowerings of an op type with different ``since_opset``.
        """
        who = f"plugin {plugin!r}" + (f" ({origin})" if origin else "")
        if not isinstance(op_type, str) or not _OP_TYPE.match(op_type):
            raise PluginError(f"{who} registered a lowering for {op_type!r}, which is not a OneFlow op type name")
        if not callable(function):
            raise PluginError(f"{who} registered a lowering for {op_type!r} that is not callable: {function!r}")
        if not isinstance(since_opset, int) or since_opset < 1:
            raise PluginError(f"{who}: lowering for {op_type!r} has since_opset={since_opset!r}; use an int >= 1")
        if until_opset is not None and (not isinstance(until_opset, int) or until_opset < since_opset):
            raise PluginError(f"{who}: lowering for {op_type!r} has until_opset={until_opset!r} below since_opset={since_opset}")
        new = Lowering(op_type, function, since_opset, until_opset, plugin, origin, bool(override))
        existing = self.lowerings.setdefault(op_type, [])
        replaced = []
        for old in existing:
            if old.plugin == plugin:
                if old.since_opset == since_opset:
                    raise PluginError(f"{who} registered two lowerings for {op_type!r} from opset {since_opset}")
                if old.function is function:
                    raise PluginError(
                        f"{who} registered the same lowering for {op_type!r} from opset {old.since_opset} and from opset "
                        f"{since_opset}; register it once: a lowering that only emits an ONNX operator in the form of "
                        "the target opset uses flow2onnx.lowering.helpers (or ctx.opset), and separate registrations "
                        "are for lowerings that differ"
                    )
                continue
            if not new.overlaps(old):
                continue
            if not override:
                raise PluginError(
                    f"two lowerings for {op_type!r}: {old.describe()} and {new.describe()}. If the second is meant to "
                    f"replace the first, register it with override=True; otherwise disable one of the plugins"
                )
            replaced.append(old.plugin)
        if replaced:
            new = Lowering(op_type, function, since_opset, until_opset, plugin, origin, True, tuple(dict.fromkeys(replaced)))
        existing.append(new)
        existing.sort(key=lambda lowering: lowering.since_opset)
        return new

    def add_post_pass(self, plugin: str, name, function, *, origin: str = "") -> None:
        """Register post-pass ``name``; a name registered twice is an error naming both plugins."""
        self._add_named(self.post_passes, "post-pass", plugin, origin, name, function)

    def add_verifier(self, plugin: str, name, function, *, origin: str = "") -> None:
        """Register verifier ``name``; a name registered twice is an error naming both plugins."""
        self._add_named(self.verifiers, "verifier", plugin, origin, name, function)

    def add_runtime_library(self, plugin: str, domain, library_path, *, origin: str = "") -> None:
        """Register the ONNX Runtime custom-op library of ``domain``; one library per domain."""
        who = f"plugin {plugin!r}" + (f" ({origin})" if origin else "")
        if not isinstance(domain, str) or not domain or domain in ("ai.onnx",):
            raise PluginError(f"{who} registered a runtime library for domain {domain!r}; name a custom ONNX domain")
        if not isinstance(library_path, (str, os.PathLike)) or not os.path.isfile(library_path):
            raise PluginError(f"{who} registered runtime library {library_path!r} for domain {domain!r}, which is not a file")
        if domain in self.runtime_libraries:
            old = self.runtime_libraries[domain]
            raise PluginError(f"two runtime libraries for domain {domain!r}: from plugin {old.plugin!r} and from {who}")
        self.runtime_libraries[domain] = RuntimeLibrary(domain, os.fspath(library_path), plugin, origin)

    @staticmethod
    def _add_named(table: dict, what: str, plugin: str, origin: str, name, function) -> None:
        who = f"plugin {plugin!r}" + (f" ({origin})" if origin else "")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{who} registered a {what} with an invalid name {name!r}")
        if not callable(function):
            raise PluginError(f"{who} registered {what} {name!r} that is not callable")
        if name in table:
            old = table[name]
            raise PluginError(f"{what} {name!r} is registered twice: by plugin {old.plugin!r} ({old.origin}) and by {who}")
        table[name] = NamedFunction(name, function, plugin, origin)

    # ---- lookup ----

    def lowering_for(self, op_type: str, opset: int) -> Lowering | None:
        """The lowering used for ``op_type`` at ``opset``.

        Among the registrations that cover ``opset``, overriding ones come first; then the one with
        the highest ``since_opset`` wins.
        """
        candidates = [lowering for lowering in self.lowerings.get(op_type, ()) if lowering.covers(opset)]
        if not candidates:
            return None
        return max(candidates, key=lambda lowering: (lowering.override, lowering.since_opset))

    def opset_range(self, op_type: str) -> tuple[int, int | None] | None:
        """Lowest and highest opset any registration of ``op_type`` covers (``None`` high: unbounded)."""
        entries = self.lowerings.get(op_type)
        if not entries:
            return None
        highs = [lowering.until_opset for lowering in entries]
        return min(lowering.since_opset for lowering in entries), None if None in highs else max(highs)

    def lowerings_by_opset(self, op_type: str) -> list[tuple[Lowering, int, int | None]]:
        """Which registration lowers ``op_type`` at each opset flow2onnx exports to, as ranges.

        Each entry is ``(lowering, first, last)``: ``lowering`` is what :meth:`lowering_for` returns
        for every opset from ``first`` to ``last`` (``None``: up to the newest opset the installed
        onnx knows, and on). ``flow2onnx ops`` and docs/supported_ops.md show exactly this, so a
        listing can never claim a lowering that an export would not use.
        """
        newest = max_opset()
        ranges: list[list] = []
        for opset in range(MIN_OPSET, newest + 1):
            lowering = self.lowering_for(op_type, opset)
            if ranges and ranges[-1][0] is lowering and ranges[-1][2] == opset - 1:
                ranges[-1][2] = opset
            elif lowering is not None:
                ranges.append([lowering, opset, opset])
        return [
            (lowering, first, None if last == newest and lowering.until_opset is None else last)
            for lowering, first, last in ranges
        ]
