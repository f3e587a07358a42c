"""Patterns: a plugin claims groups of ops and lowers each as a whole; the host checks what it claims.

The pattern of these tests claims ``relu`` followed by ``negative`` (``-relu(x)``) and lowers the pair
to ``Min(-x, 0)``. Every export is verified against OneFlow on ONNX Runtime by the export itself
(tolerances by dtype: rtol 1e-3, atol 1e-4 for float32).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.cli.main import plugins_table
from flow2onnx.cli.ops import render_markdown, render_text
from flow2onnx.lowering.patterns import PatternMatch
from flow2onnx.lowering.plugin_manager import load_plugins
from flow2onnx.lowering.registry import Registry

from .helpers import Lambda, export_module, flow


def match_negated_relu(graph):
    """Each relu whose one reader is a negative, with the module behind it."""
    for op in graph.ops:
        if op.type != "relu" or op.output("y") in graph.output_sources:
            continue
        readers = graph.consumers(op.output("y"))
        if len(readers) == 1 and readers[0].type == "negative":
            yield PatternMatch([op, readers[0]], data=graph.module(op.scope))


def lower_negated_relu(ctx, match):
    """-relu(x) as Min(-x, 0)."""
    (x,) = match.inputs
    (y,) = match.outputs
    assert isinstance(match.data, flow.nn.Module) and ctx.match is match and ctx.op is None
    (negated,) = ctx.make_node("Neg", [x])
    ctx.make_node("Min", [negated, ctx.constant(np.zeros((), ctx.dtype(x)), "zero")], [y])


def pattern_plugin(name="NegatedRelu", match=match_negated_relu, lowering=lower_negated_relu, **options):
    @hookimpl
    def flow2onnx_register_patterns(register):
        register("negated-relu", match, lowering, **options)

    return type(name, (), {"flow2onnx_register_patterns": staticmethod(flow2onnx_register_patterns)})


NegatedRelu = pattern_plugin()


def two_negated_relus():
    """Two -relu(x) pairs, and a relu that no negative reads."""
    return Lambda(lambda self, x: -flow.relu(x) * 2 + (-flow.relu(x + 1)) + flow.relu(x - 1))


def test_a_pattern_lowers_its_groups_and_leaves_the_other_ops_to_their_lowerings(tmp_path):
    result = export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[NegatedRelu])
    assert result.report.passed
    assert result.patterns == {"negated-relu": "NegatedRelu"}
    assert result.pattern_groups == {"model": "negated-relu", "model_1": "negated-relu"}
    assert "negative" not in result.lowered_by and result.lowered_by["relu"] == "flow2onnx-activations"
    model = onnx.load(str(tmp_path / "m.onnx"))
    types = [node.op_type for node in model.graph.node]
    assert types.count("Min") == 2 and types.count("Relu") == 1 and "Neg" in types
    # Nodes are named after the group; its output takes a stable name.
    mins = [node for node in model.graph.node if node.op_type == "Min"]
    assert [(node.name, list(node.output)) for node in mins] == [("model/Min", ["model/output_0"]), ("model_1/Min", ["model_1/output_0"])]


def test_the_groups_claimed_are_computed_once_per_graph_and_dropped_with_it(tmp_path):
    import gc

    from flow2onnx.lowering import patterns

    calls = []

    def counting_match(graph):
        calls.append(graph)
        return list(match_negated_relu(graph))

    plugin = pattern_plugin("Counting", match=counting_match)
    registry = load_plugins(extra_plugins=[plugin]).registry
    result = export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[plugin])
    assert result.report.passed and len(calls) == len({id(graph) for graph in calls})
    graph = calls[0]
    first = patterns.claim_groups(graph, registry, 17)
    assert calls.count(graph) == 2  # another registry than the export's: computed again
    assert patterns.claim_groups(graph, registry, 17) is first and calls.count(graph) == 2  # the same: kept
    assert [group.match.name for group in first] == ["model", "model_1"]
    calls.clear()
    del result, graph, first
    gc.collect()
    assert patterns._CLAIMED == {}  # nothing kept past the graphs it was computed for


def test_claimed_ops_need_no_lowering_of_their_own(tmp_path):
    model = Lambda(lambda self, x: -flow.relu(x))
    without = ["flow2onnx-activations", "flow2onnx-math"]  # relu and negative
    with pytest.raises(flow2onnx.UnsupportedOpsError, match="relu: 1 op"):
        export_module(model, [(2, 5)], tmp_path / "m.onnx", disable_plugins=without)
    result = export_module(model, [(2, 5)], tmp_path / "m.onnx", disable_plugins=without, plugins=[NegatedRelu])
    assert result.report.passed and result.lowered_by == {} and result.pattern_groups == {"model": "negated-relu"}


def test_a_pattern_keeps_dynamic_axes_dynamic(tmp_path):
    result = export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[NegatedRelu], dynamic_axes={"input": {0: "n", 1: "m"}})
    assert result.report.passed and len(result.pattern_groups) == 2


def test_an_op_claimed_by_two_patterns_is_an_error_naming_both(tmp_path):
    def every_relu(graph):
        return [PatternMatch([op]) for op in graph.ops if op.type == "relu"]

    @hookimpl
    def flow2onnx_register_patterns(register):
        register("any-relu", every_relu, lambda ctx, match: None)

    AnyRelu = type("AnyRelu", (), {"flow2onnx_register_patterns": staticmethod(flow2onnx_register_patterns)})
    with pytest.raises(
        flow2onnx.PluginError,
        match=r"op 'model-relu-\d+' \(relu\) is claimed twice: by pattern 'any-relu' .* from plugin 'AnyRelu' .*\(group 'model'\) "
        r"and by pattern 'negated-relu' .* from plugin 'NegatedRelu'",
    ):
        export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[NegatedRelu, AnyRelu])
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("opset, applies", [(11, True), (12, True), (13, False), (17, False)])
def test_a_pattern_applies_within_its_opset_range(tmp_path, opset, applies):
    plugin = pattern_plugin(until_opset=12)
    result = export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[plugin], opset=opset)
    assert result.report.passed and bool(result.pattern_groups) == applies
    assert ("negative" in result.lowered_by) != applies


def test_pattern_registrations_follow_the_rules_of_lowerings(tmp_path):
    registry = Registry()
    registry.add_pattern("p", "negated-relu", match_negated_relu, lower_negated_relu, until_opset=12)
    registry.add_pattern("p", "negated-relu", match_negated_relu, lambda ctx, match: None, since_opset=13)
    assert [(pattern.since_opset, first, last) for pattern, first, last in registry.patterns_by_opset("negated-relu")] == [(11, 11, 12), (13, 13, None)]
    with pytest.raises(flow2onnx.PluginError, match=r"two patterns named 'negated-relu': pattern 'negated-relu' \[opset 13..\] from plugin 'p'"):
        registry.add_pattern("q", "negated-relu", match_negated_relu, lower_negated_relu, since_opset=17)
    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'q' registered pattern 'x' whose match is not callable"):
        registry.add_pattern("q", "x", None, lower_negated_relu)
    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'q' registered a pattern named 'two words'"):
        registry.add_pattern("q", "two words", match_negated_relu, lower_negated_relu)
    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'p' registered the same pattern 'negated-relu' from opset 11 and from opset 15"):
        registry.add_pattern("p", "negated-relu", match_negated_relu, lower_negated_relu, since_opset=15)

    # An override replaces the other plugin's pattern and says so, in the export result too.
    result = export_module(
        two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[NegatedRelu, pattern_plugin("Better", override=True)]
    )
    assert result.patterns == {"negated-relu": "Better"}
    assert result.overrides == {"pattern negated-relu": "Better overrides NegatedRelu"}


def test_a_lowering_that_leaves_an_output_unproduced_names_the_group_and_pattern(tmp_path):
    plugin = pattern_plugin("Lazy", lowering=lambda ctx, match: ctx.make_node("Neg", list(match.inputs)))
    with pytest.raises(
        flow2onnx.LoweringError,
        match=r"cannot lower group 'model' of pattern 'negated-relu' \(2 ops from 'model-relu-\d+'\) \(pattern from plugin 'Lazy' "
        r"\(passed to export\)\): the lowering did not produce 'model-negative-\d+/y_0', which the graph reads",
    ):
        export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[plugin])


class Squatter:
    """A relu lowering whose intermediate tensor takes the stable name of a claimed group's output."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        def lower(ctx, op):
            (copy,) = ctx.make_node("Identity", [op.input("x")], ["model/output_0"])
            ctx.make_node("Relu", [copy], [op.output("y")])

        register("relu", lower, override=True)


def test_a_node_that_takes_a_claimed_groups_output_name_is_refused(tmp_path):
    """Group outputs are renamed to ``<group>/output_<k>`` after lowering; a node that made a tensor of
    that name itself would give it two producers."""
    model = Lambda(lambda self, x: -flow.relu(x) + flow.relu(x - 1))
    with pytest.raises(flow2onnx.LoweringError, match=r"cannot lower relu op .*: node '.*/Identity' makes a tensor named 'model/output_0', the name a claimed group's output takes"):
        export_module(model, [(2, 5)], tmp_path / "m.onnx", plugins=[NegatedRelu, Squatter])
    assert os.listdir(tmp_path) == []


def test_a_group_that_cannot_be_placed_among_the_other_ops_is_refused(tmp_path):
    def relu_and_the_add_after_it(graph):
        relu = next(op for op in graph.ops if op.type == "relu")
        add = next(op for op in graph.ops if op.type == "add_n")
        return [PatternMatch([relu, add])]

    plugin = pattern_plugin("Holey", match=relu_and_the_add_after_it)
    model = Lambda(lambda self, x: (lambda y: y + y * 2)(flow.relu(x)))  # the scalar_mul between them is not claimed
    with pytest.raises(flow2onnx.PluginError, match=r"claimed group 'model', which cannot be lowered as one piece: op 'model-scalar_mul-\d+'"):
        export_module(model, [(2, 5)], tmp_path / "m.onnx", plugins=[plugin])


@pytest.mark.parametrize(
    "match, message",
    [
        (lambda graph: 1 / 0, r"failed in its match function: ZeroDivisionError"),
        (lambda graph: ["relu"], r"match returned 'relu'; return flow2onnx.lowering.patterns.PatternMatch objects"),
        (lambda graph: [PatternMatch([])], r"match returned group '' without ops"),
    ],
    ids=["raises", "not-a-match", "empty"],
)
def test_a_broken_match_function_is_an_error_naming_the_pattern(tmp_path, match, message):
    with pytest.raises(flow2onnx.PluginError, match=rf"pattern 'negated-relu' \[opset 11..\] from plugin 'Broken' .*{message}"):
        export_module(two_negated_relus(), [(2, 5)], tmp_path / "m.onnx", plugins=[pattern_plugin("Broken", match=match)])


def test_listings_show_patterns_like_lowerings():
    loaded = load_plugins(extra_plugins=[NegatedRelu])
    table = plugins_table(loaded).splitlines()
    row = next(line for line in table if line.startswith("NegatedRelu "))
    assert row.split()[1:6] == ["passed", "to", "export", "0", "negated-relu"] and row.endswith("register_patterns")
    assert loaded.plugins["NegatedRelu"].patterns == ["negated-relu"]
    text = render_text(loaded.registry)
    assert ["negated-relu", "NegatedRelu", "11.."] in [line.split() for line in text.splitlines()]
    assert "| `negated-relu` | NegatedRelu | 11.. | -relu(x) as Min(-x, 0). |" in render_markdown(loaded.registry)
