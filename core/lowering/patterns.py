"""Patterns: groups of ops lowered as a whole, and the host that claims them before ops are lowered one by one.

A pattern (registered through :func:`~flow2onnx.lowering.hookspecs.flow2onnx_register_patterns`)
has a ``match`` function, which returns the :class:`PatternMatch` groups it claims in a graph, and a
lowering, which turns one group into ONNX nodes. :func:`claim_groups` calls every pattern that
applies at the target opset, checks what they claim, and computes each group's boundary and its
place among the other ops; the converter then lowers each group where it belongs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from ..errors import Flow2OnnxError, PluginError
from .graph import FlowGraph, FlowOp
from .registry import Pattern, Registry


@dataclass(frozen=True)
class PatternMatch:
    """A group of ops that a pattern claims, and what its lowering needs to lower it.

    A pattern's ``match(graph)`` returns these: ``ops``, the :class:`~flow2onnx.lowering.graph.FlowOp`
    objects of the graph that the group is made of (any order; a list is fine); ``name``, a name
    that stays the same when the model is compiled at other sizes, from which the names of the
    nodes it becomes derive (by default the module scope that all its ops share, ``model.rnn``, or
    the first op's name); ``data``, anything the lowering needs (the module, what the pattern found
    out). Before the lowering runs, the host fills in the group's boundary: ``inputs``, the tensors
    its ops read that are produced outside it (weights left out), and ``outputs``, the tensors it
    makes that are read outside it or are graph outputs, each in execution order.
    """

    ops: tuple[FlowOp, ...]
    name: str = ""
    data: Any = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.name:
            object.__setattr__(self, "name", _default_name(self.ops))


def _default_name(ops) -> str:
    scopes = {op.scope for op in ops}
    if len(scopes) == 1:
        (scope,) = scopes
        if scope:
            return scope
    return ops[0].name if ops else ""


@dataclass(frozen=True)
class ClaimedGroup:
    """A group that a pattern claimed, with its boundary filled in, and where it is lowered."""

    pattern: Pattern
    match: PatternMatch
    #: The index of the graph's op before which the group's nodes go (``len(graph.ops)``: after the last).
    position: int


def claim_groups(graph: FlowGraph, registry: Registry, opset: int) -> list[ClaimedGroup]:
    """Run every pattern that applies at ``opset`` on ``graph`` and return the groups they claim.

    Patterns run in the order of their names. Groups get unique names: a name given twice takes a
    suffix the second time (``model_1``). An op claimed twice, a match that is not a
    :class:`PatternMatch` or holds an op of another graph, a pattern that raises, and a group that
    reads a tensor computed from one of its own outputs are :class:`PluginError` naming the
    pattern (both patterns, for an op claimed twice). Linear in the number of ops claimed, plus
    what the patterns' own ``match`` functions do, which run once per graph, registry and opset:
    an export converts a graph more than once, so the result is kept here, for as long as the
    graph lives (the graph itself holds nothing of it).
    """
    kept = _claims_of(graph)
    key = (id(registry), opset)
    found = kept.get(key)
    if found is not None and found[0] is registry:
        return found[1]
    groups = _claimed(graph, registry, opset)
    kept[key] = (registry, groups)
    return groups


#: id(graph) -> (a weak reference to it, {(id(registry), opset): (registry, groups)}): the groups
#: claimed in each live graph, dropped with the graph.
_CLAIMED: dict[int, tuple[weakref.ref, dict]] = {}


def _claims_of(graph: FlowGraph) -> dict:
    entry = _CLAIMED.get(id(graph))
    if entry is None or entry[0]() is not graph:
        key = id(graph)
        entry = _CLAIMED[key] = (weakref.ref(graph, lambda _, key=key: _CLAIMED.pop(key, None)), {})
    return entry[1]


def _claimed(graph: FlowGraph, registry: Registry, opset: int) -> list[ClaimedGroup]:
    patterns = registry.patterns_at(opset)
    if not patterns:
        return []
    index = {op.name: position for position, op in enumerate(graph.ops)}
    owners: dict[str, tuple[Pattern, PatternMatch]] = {}
    found: list[tuple[Pattern, PatternMatch]] = []
    for pattern in patterns:
        for match in _matches(pattern, graph):
            for op in match.ops:
                position = index.get(op.name) if isinstance(op, FlowOp) else None
                if position is None or graph.ops[position] is not op:
                    raise PluginError(f"{pattern.describe()} claimed {op!r}, which is not an op of the graph it was given")
                if op.name in owners:
                    other, other_match = owners[op.name]
                    raise PluginError(
                        f"op {op.name!r} ({op.type}) is claimed twice: by {other.describe()} (group {other_match.name!r}) "
                        f"and by {pattern.describe()} (group {match.name!r}). An op belongs to one group; disable one of the "
                        "plugins, or register a pattern of the same name with override=True to replace the other"
                    )
                owners[op.name] = (pattern, match)
            found.append((pattern, match))
    taken: set[str] = set()
    groups = []
    for pattern, match in found:
        name, count = match.name, 0
        while name in taken:
            count += 1
            name = f"{match.name}_{count}"
        taken.add(name)
        groups.append(_bounded(graph, index, pattern, match, name))
    return groups


def _matches(pattern: Pattern, graph: FlowGraph) -> list[PatternMatch]:
    try:
        matches = list(pattern.match(graph) or ())
    except Flow2OnnxError:
        raise
    except Exception as error:
        raise PluginError(f"{pattern.describe()} failed in its match function: {type(error).__name__}: {error}") from error
    for match in matches:
        if not isinstance(match, PatternMatch):
            raise PluginError(f"{pattern.describe()}: match returned {match!r}; return flow2onnx.lowering.patterns.PatternMatch objects")
        if not match.ops:
            raise PluginError(f"{pattern.describe()}: match returned group {match.name!r} without ops; leave such groups out")
    return matches


def _bounded(graph: FlowGraph, index: dict[str, int], pattern: Pattern, match: PatternMatch, group: str) -> ClaimedGroup:
    """The group (named ``group``) with its boundary, placed after the producers of its inputs and before
    the readers of its outputs."""
    ops = match.ops
    members = {op.name for op in ops}
    inputs, outputs = graph._boundary(ops, members)
    producers, consumers = graph._indexed()[:2]
    position = min(index[name] for name in members)
    for name in inputs:
        producer = producers.get(name)
        if producer is not None and index[producer.name] >= position:
            position = index[producer.name] + 1
    for name in outputs:
        early = next((reader for reader in consumers.get(name, ()) if reader.name not in members and index[reader.name] < position), None)
        if early is not None:
            raise PluginError(
                f"{pattern.describe()} claimed group {group!r}, which cannot be lowered as one piece: op "
                f"{early.name!r}, outside it, reads its output {name!r} and must run before the group can, as the group "
                "reads a tensor that depends on it. Claim every op in between, or none of the ops that follow it"
            )
    # Made directly: dataclasses.replace reads the fields' definitions each time (one group per LayerNorm).
    return ClaimedGroup(pattern, PatternMatch(match.ops, group, match.data, tuple(inputs), tuple(outputs)), position)


def output_aliases(groups: list[ClaimedGroup]) -> dict[str, str]:
    """Each group's boundary outputs -> the stable names they take in the model: ``<name>/output_<k>``."""
    return {name: f"{group.match.name}/output_{k}" for group in groups for k, name in enumerate(group.match.outputs)}
