"""What the plugins registered: lowerings keyed by OneFlow op type and opset, post-passes, verifiers.

A :class:`Registry` is built for each export from the plugins loaded for it (see
``plugin_manager.build_registry``); nothing here is global.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import onnx

from .errors import PluginError

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
    """One registered lowering of a OneFlow op type, valid for ``since_opset..until_opset``."""

    op_type: str
    function: Callable
    since_opset: int
    until_opset: int | None
    plugin: str

    def covers(self, opset: int) -> bool:
        return self.since_opset <= opset and (self.until_opset is None or opset <= self.until_opset)

    def describe(self) -> str:
        until = "" if self.until_opset is None else str(self.until_opset)
        return f"{self.op_type} [opset {self.since_opset}..{until}] from plugin {self.plugin!r}"


@dataclass(frozen=True)
class NamedFunction:
    """A post-pass or verifier, with the plugin that registered it."""

    name: str
    function: Callable
    plugin: str


@dataclass
class Registry:
    """Lowerings, post-passes and verifiers registered by the plugins of one export."""

    lowerings: dict[str, list[Lowering]] = field(default_factory=dict)
    post_passes: dict[str, NamedFunction] = field(default_factory=dict)
    verifiers: dict[str, NamedFunction] = field(default_factory=dict)

    # ---- registration (validated when made, so a plugin's mistake names the plugin) ----

    def add_lowering(self, plugin: str, op_type, function, since_opset=MIN_OPSET, until_opset=None) -> None:
        if not isinstance(op_type, str) or not _OP_TYPE.match(op_type):
            raise PluginError(f"plugin {plugin!r} registered a lowering for {op_type!r}, which is not a OneFlow op type name")
        if not callable(function):
            raise PluginError(f"plugin {plugin!r} registered a lowering for {op_type!r} that is not callable: {function!r}")
        if not isinstance(since_opset, int) or since_opset < 1:
            raise PluginError(f"plugin {plugin!r}: lowering for {op_type!r} has since_opset={since_opset!r}; use an int >= 1")
        if until_opset is not None and (not isinstance(until_opset, int) or until_opset < since_opset):
            raise PluginError(
                f"plugin {plugin!r}: lowering for {op_type!r} has until_opset={until_opset!r} below since_opset={since_opset}"
            )
        new = Lowering(op_type, function, since_opset, until_opset, plugin)
        existing = self.lowerings.setdefault(op_type, [])
        for old in existing:
            if old.since_opset == new.since_opset:
                raise PluginError(
                    f"two lowerings for {op_type!r} from opset {since_opset}: {old.describe()} and {new.describe()}; "
                    "disable one of the plugins"
                )
        existing.append(new)
        existing.sort(key=lambda lowering: lowering.since_opset)

    def add_post_pass(self, plugin: str, name, function) -> None:
        self._add_named(self.post_passes, "post-pass", plugin, name, function)

    def add_verifier(self, plugin: str, name, function) -> None:
        self._add_named(self.verifiers, "verifier", plugin, name, function)

    @staticmethod
    def _add_named(table: dict, what: str, plugin: str, name, function) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {what} with an invalid name {name!r}")
        if not callable(function):
            raise PluginError(f"plugin {plugin!r} registered {what} {name!r} that is not callable")
        if name in table:
            raise PluginError(f"{what} {name!r} is registered by both {table[name].plugin!r} and {plugin!r}")
        table[name] = NamedFunction(name, function, plugin)

    # ---- lookup ----

    def lowering_for(self, op_type: str, opset: int) -> Lowering | None:
        """The lowering with the highest ``since_opset`` not above ``opset`` that covers ``opset``."""
        best = None
        for lowering in self.lowerings.get(op_type, ()):
            if lowering.covers(opset):
                best = lowering
        return best

    def opset_range(self, op_type: str) -> tuple[int, int | None] | None:
        """Lowest and highest opset any registration of ``op_type`` covers (``None`` high: unbounded)."""
        entries = self.lowerings.get(op_type)
        if not entries:
            return None
        highs = [lowering.until_opset for lowering in entries]
        return min(lowering.since_opset for lowering in entries), None if None in highs else max(highs)
