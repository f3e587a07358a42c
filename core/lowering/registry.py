"""What the plugins registered: lowerings keyed by OneFlow op type and opset, patterns keyed by name
and opset, post-passes, verifiers.

A :class:`Registry` is built for each export from the plugins loaded for it (see
:func:`flow2onnx.lowering.plugin_manager.load_plugins`); nothing here is global.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Callable

import onnx

from ..errors import PluginError

# The oldest opset an export may ask for. Each lowering says from which opset it is valid
# (since_opset): most from 11, ONNX 1.6's opset, where Resize, Pad and Clip took their input-based
# forms and axes may be negative; those that can be expressed in opset 9 or 10 (the convolutions,
# pooling, normalisation, activations and arithmetic of CNNs and transformer blocks) say so.
MIN_OPSET = 9
#: The ``since_opset`` of a lowering or pattern registered without one.
DEFAULT_SINCE_OPSET = 11
# The default: opset 17 brings LayerNormalization and is accepted by TensorRT 8.6+ and ONNX Runtime
# 1.12+, so it covers today's deployment targets without needing the newest runtime.
DEFAULT_OPSET = 17

OP_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Pattern names may read like distribution names ("lstm-gru-rnn", "fused.layer_norm").
PATTERN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def max_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` knows."""
    return onnx.defs.onnx_opset_version()


class _OpsetRange:
    """What a lowering and a pattern share: an opset range, and the words that describe them."""

    since_opset: int
    until_opset: int | None
    plugin: str
    origin: str

    def covers(self, opset: int) -> bool:
        """Whether the registration's opset range includes ``opset``."""
        return self.since_opset <= opset and (self.until_opset is None or opset <= self.until_opset)

    def overlaps(self, other: "_OpsetRange") -> bool:
        """Whether the two registrations' opset ranges share an opset."""
        low = max(self.since_opset, other.since_opset)
        highs = [h for h in (self.until_opset, other.until_opset) if h is not None]
        return not highs or low <= min(highs)

    def _describe(self, what: str) -> str:
        until = "" if self.until_opset is None else str(self.until_opset)
        origin = f" ({self.origin})" if self.origin else ""
        return f"{what} [opset {self.since_opset}..{until}] from plugin {self.plugin!r}{origin}"


@dataclass(frozen=True)
class Lowering(_OpsetRange):
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

    def describe(self) -> str:
        """``op_type [opset since..until] from plugin 'name' (dist version)``, for messages."""
        return self._describe(self.op_type)


@dataclass(frozen=True)
class Pattern(_OpsetRange):
    """One registered pattern, valid for ``since_opset..until_opset``: ``match(graph)`` finds groups
    of ops and ``function(ctx, match)`` lowers each group as a whole (see
    :func:`flow2onnx.lowering.hookspecs.flow2onnx_register_patterns`).

    ``overrides`` names the plugins whose pattern of the same name this one replaces.
    """

    name: str
    match: Callable
    function: Callable
    since_opset: int
    until_opset: int | None
    plugin: str
    origin: str = ""
    override: bool = False
    overrides: tuple[str, ...] = ()

    def describe(self) -> str:
        """``pattern 'name' [opset since..until] from plugin 'name' (dist version)``, for messages."""
        return self._describe(f"pattern {self.name!r}")


@dataclass(frozen=True)
class NamedFunction:
    """A post-pass or verifier, with the plugin that registered it."""

    name: str
    function: Callable
    plugin: str
    origin: str = ""
    #: A verifier's session opener, ``session(model_path, custom_op_libraries) -> run(feeds)``, if it has one.
    session: Callable | None = None

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
    """Lowerings, patterns, post-passes and verifiers registered by the plugins of one export."""

    lowerings: dict[str, list[Lowering]] = field(default_factory=dict)
    patterns: dict[str, list[Pattern]] = field(default_factory=dict)
    post_passes: dict[str, NamedFunction] = field(default_factory=dict)
    verifiers: dict[str, NamedFunction] = field(default_factory=dict)
    runtime_libraries: dict[str, "RuntimeLibrary"] = field(default_factory=dict)

    # ---- registration (validated when made, so a plugin's mistake names the plugin) ----

    def add_lowering(
        self, plugin: str, op_type, function, since_opset=DEFAULT_SINCE_OPSET, until_opset=None, override=False, *, origin: str = ""
    ) -> Lowering:
        """Register a lowering; a clash with another plugin's lowering is an error unless ``override``.

        Two lowerings clash when they are for the same op type and their opset ranges overlap. One
        plugin may stack several lowerings of an op type with different ``since_opset``.
        """
        who = _who(plugin, origin)
        if not isinstance(op_type, str) or not OP_TYPE.match(op_type):
            raise PluginError(f"{who} registered a lowering for {op_type!r}, which is not a OneFlow op type name")
        if not callable(function):
            raise PluginError(f"{who} registered a lowering for {op_type!r} that is not callable: {function!r}")
        new = Lowering(op_type, function, since_opset, until_opset, plugin, origin, bool(override))
        return self._add_ranged(self.lowerings, op_type, new, f"lowering for {op_type!r}", "lowerings for")

    def add_pattern(
        self, plugin: str, name, match, lowering, since_opset=DEFAULT_SINCE_OPSET, until_opset=None, override=False, *, origin: str = ""
    ) -> Pattern:
        """Register pattern ``name``: ``match(graph)`` finds groups of ops, ``lowering(ctx, match)`` lowers each.

        The rules of :meth:`add_lowering` apply, with the pattern's name in place of the op type:
        a clash with another plugin's pattern of that name over an overlapping opset range is an
        error unless ``override``, and one plugin may stack registrations for different opsets.
        """
        who = _who(plugin, origin)
        if not isinstance(name, str) or not PATTERN_NAME.match(name):
            raise PluginError(f"{who} registered a pattern named {name!r}; use letters, digits, '_', '.' and '-'")
        for role, function in (("match", match), ("lowering", lowering)):
            if not callable(function):
                raise PluginError(f"{who} registered pattern {name!r} whose {role} is not callable: {function!r}")
        new = Pattern(name, match, lowering, since_opset, until_opset, plugin, origin, bool(override))
        return self._add_ranged(self.patterns, name, new, f"pattern {name!r}", "patterns named")

    @staticmethod
    def _add_ranged(table: dict, key: str, new, what: str, plural: str):
        """Add ``new`` (a :class:`Lowering` or :class:`Pattern`) under ``key``, by the rules of
        :meth:`add_lowering`; the stored entry, marked with the plugins it overrides."""
        who = _who(new.plugin, new.origin)
        since_opset, until_opset = new.since_opset, new.until_opset
        if not isinstance(since_opset, int) or since_opset < 1:
            raise PluginError(f"{who}: {what} has since_opset={since_opset!r}; use an int >= 1")
        if until_opset is not None and (not isinstance(until_opset, int) or until_opset < since_opset):
            raise PluginError(f"{who}: {what} has until_opset={until_opset!r} below since_opset={since_opset}")
        existing = table.setdefault(key, [])
        replaced = []
        for old in existing:
            if old.plugin == new.plugin:
                if old.since_opset == since_opset:
                    raise PluginError(f"{who} registered two {plural} {key!r} from opset {since_opset}")
                if old.function is new.function:
                    raise PluginError(
                        f"{who} registered the same {what} from opset {old.since_opset} and from opset "
                        f"{since_opset}; register it once: a lowering that only emits an ONNX operator in the form of "
                        "the target opset uses flow2onnx.lowering.helpers (or ctx.opset), and separate registrations "
                        "are for lowerings that differ"
                    )
                continue
            if not new.overlaps(old):
                continue
            if not new.override:
                raise PluginError(
                    f"two {plural} {key!r}: {old.describe()} and {new.describe()}. If the second is meant to "
                    f"replace the first, register it with override=True; otherwise disable one of the plugins"
                )
            replaced.append(old.plugin)
        if replaced:
            new = replace(new, override=True, overrides=tuple(dict.fromkeys(replaced)))
        existing.append(new)
        existing.sort(key=lambda entry: entry.since_opset)
        return new

    def add_post_pass(self, plugin: str, name, function, *, origin: str = "") -> None:
        """Register post-pass ``name``; a name registered twice is an error naming both plugins."""
        self._add_named(self.post_passes, "post-pass", plugin, origin, name, function)

    def add_verifier(self, plugin: str, name, function, session=None, *, origin: str = "") -> None:
        """Register verifier ``name``; a name registered twice is an error naming both plugins.

        ``session``, when given, opens the model once for several runs (see the hook's spec).
        """
        if session is not None and not callable(session):
            raise PluginError(f"{_who(plugin, origin)} registered verifier {name!r} with a session opener that is not callable")
        self._add_named(self.verifiers, "verifier", plugin, origin, name, function)
        if session is not None:
            self.verifiers[name] = replace(self.verifiers[name], session=session)

    def add_runtime_library(self, plugin: str, domain, library_path, *, origin: str = "") -> None:
        """Register the ONNX Runtime custom-op library of ``domain``; one library per domain."""
        who = _who(plugin, origin)
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
        who = _who(plugin, origin)
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
        return _chosen(self.lowerings.get(op_type, ()), opset)

    def pattern_for(self, name: str, opset: int) -> Pattern | None:
        """The registration of pattern ``name`` used at ``opset``, chosen as :meth:`lowering_for` chooses."""
        return _chosen(self.patterns.get(name, ()), opset)

    def patterns_at(self, opset: int) -> list[Pattern]:
        """Every pattern that applies at ``opset``, one registration per name, by name."""
        chosen = (self.pattern_for(name, opset) for name in sorted(self.patterns))
        return [pattern for pattern in chosen if pattern is not None]

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
        return _by_opset(lambda opset: self.lowering_for(op_type, opset))

    def patterns_by_opset(self, name: str) -> list[tuple[Pattern, int, int | None]]:
        """Which registration of pattern ``name`` applies at each opset, as :meth:`lowerings_by_opset` gives them."""
        return _by_opset(lambda opset: self.pattern_for(name, opset))


def _who(plugin: str, origin: str) -> str:
    return f"plugin {plugin!r}" + (f" ({origin})" if origin else "")


def _chosen(entries, opset: int):
    """Among ``entries`` that cover ``opset``, an overriding one first, then the highest ``since_opset``."""
    candidates = [entry for entry in entries if entry.covers(opset)]
    if not candidates:
        return None
    return max(candidates, key=lambda entry: (entry.override, entry.since_opset))


def _by_opset(chosen_at) -> list[tuple]:
    """``(entry, first, last)`` ranges of the opsets at which ``chosen_at(opset)`` gives the same entry."""
    newest = max_opset()
    ranges: list[list] = []
    for opset in range(MIN_OPSET, newest + 1):
        entry = chosen_at(opset)
        if ranges and ranges[-1][0] is entry and ranges[-1][2] == opset - 1:
            ranges[-1][2] = opset
        elif entry is not None:
            ranges.append([entry, opset, opset])
    return [(entry, first, None if last == newest and entry.until_opset is None else last) for entry, first, last in ranges]
