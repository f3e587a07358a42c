"""LoweringContext: built whole by its constructor, one op in scope at a time through ``lower``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import flow2onnx
from flow2onnx.exporter.capture.graphs import read_graph, wrap_module
from flow2onnx.lowering.context import LoweringContext
from flow2onnx.lowering.registry import Lowering

from .helpers import Lambda, flow, random_inputs


@pytest.fixture(scope="module")
def graph():
    return read_graph(wrap_module(Lambda(lambda self, x: flow.relu(x)).eval(), random_inputs([(2, 3)])))


def lowering(function, plugin="mine"):
    return Lowering("relu", function, 11, None, plugin, "mine-dist 1.0")


def test_constructor_sets_every_field(graph):
    axes = {"input": {0: "batch"}}
    ctx = LoweringContext(graph, 13, dynamic_batch=True, dynamic_axes=axes, variant=graph)
    assert (ctx.graph, ctx.opset, ctx.dynamic_batch, ctx.dynamic_axes, ctx.variant) == (graph, 13, True, axes, graph)
    assert ctx.example_batch == 2 and ctx.op is None
    assert (ctx.nodes, ctx.constants, ctx.domains) == ([], [], {})
    with pytest.raises(AttributeError):
        ctx.opset = 17  # fixed at construction
    relu = graph.ops[0]
    assert ctx.is_read(relu.input("x")) and ctx.variant_attr(relu, "nope") is None
    assert ctx.variant_shape(relu.output("y")) == (2, 3)


def test_lower_scopes_the_op_and_names_nodes_after_it(graph):
    ctx = LoweringContext(graph, 17)
    relu = graph.ops[0]
    seen = []

    def lower(ctx, op):
        seen.append(ctx.op)
        (half,) = ctx.make_node("Mul", [op.input("x"), ctx.constant(np.array(0.5, np.float32), "half")])
        ctx.make_node("Relu", [half], [op.output("y")])

    ctx.lower(relu, lowering(lower))
    assert seen == [relu] and ctx.op is None
    assert [node.op_type for node in ctx.nodes] == ["Mul", "Relu"]
    assert ctx.nodes[0].output == [f"{relu.name}/Mul"] and ctx.constants[0].name == f"{relu.name}/half"
    assert all(node.name.startswith(f"{relu.name}/") for node in ctx.nodes)
    assert ctx.nodes[1].output == [relu.output("y")]


def test_lower_reports_an_output_left_unproduced(graph):
    ctx = LoweringContext(graph, 17)
    relu = graph.ops[0]
    with pytest.raises(flow2onnx.LoweringError, match=r"cannot lower relu op '.*' \(lowering from plugin 'mine' \(mine-dist 1.0\)\): the lowering did not produce output"):
        ctx.lower(relu, lowering(lambda ctx, op: ctx.make_node("Relu", [op.input("x")])))
    assert ctx.op is None


def test_lower_wraps_any_failure_with_op_and_plugin(graph):
    ctx = LoweringContext(graph, 17)
    with pytest.raises(flow2onnx.LoweringError, match=r"cannot lower relu op .* \(lowering from plugin 'mine' .*\): ZeroDivisionError: division by zero"):
        ctx.lower(graph.ops[0], lowering(lambda ctx, op: 1 / 0))


def test_refusal_through_ctx_error(graph):
    ctx = LoweringContext(graph, 17)

    def refuse(ctx, op):
        raise ctx.error("relu of a complex tensor; cast it first")

    with pytest.raises(flow2onnx.LoweringError, match=r"plugin 'mine' \(mine-dist 1.0\)\): relu of a complex tensor; cast it first$"):
        ctx.lower(graph.ops[0], lowering(refuse))


def test_empty_list_attribute_is_refused_with_the_fix(graph):
    ctx = LoweringContext(graph, 17)
    with pytest.raises(flow2onnx.LoweringError, match=r"Transpose attribute 'perm' is an empty list, whose ONNX type cannot be inferred; leave it out"):
        ctx.lower(graph.ops[0], lowering(lambda ctx, op: ctx.make_node("Transpose", [op.input("x")], [op.output("y")], perm=[])))


def test_make_node_outputs_and_domains(graph):
    ctx = LoweringContext(graph, 17)

    def lower(ctx, op):
        first, second = ctx.make_node("TopK", [op.input("x"), ctx.constant(np.array([1], np.int64), "k")], 2, axis=-1)
        assert first.endswith("TopK_out0") and second.endswith("TopK_out1")
        assert ctx.make_node("Inverse", [first], domain="com.microsoft", domain_version=1, skipped=None) == [f"{op.name}/Inverse"]
        ctx.make_node("Relu", [op.input("x")], [op.output("y")])

    ctx.lower(graph.ops[0], lowering(lower))
    assert ctx.domains == {"com.microsoft": 1}
    assert not ctx.nodes[1].attribute  # None-valued attributes are left out


ATTRIBUTE_VALUES = [
    {},
    {"axis": -1, "keepdims": 0},
    {"alpha": 0.5, "beta": 1e-30, "gamma": -2.0, "nan": float("nan"), "inf": float("-inf")},
    {"mode": "nearest", "unicode": "ü→"},
    {"perm": [0, 2, 1], "pads": (0, 1, -1, 2), "big": [2**62, -(2**62)]},
    {"scales": [1.0, 2.5], "mixed": [1, 2.5]},
    {"flag": True, "np_int": np.int64(3), "np_float": np.float32(0.25), "np_list": [np.int64(1), np.int64(2)]},
    {"value": onnx.numpy_helper.from_array(np.array([1, -2], np.int64), "v"), "raw": b"\x00\x01", "strings": ["a", "b"]},
]


@pytest.mark.parametrize("attributes", ATTRIBUTE_VALUES, ids=range(len(ATTRIBUTE_VALUES)))
def test_make_node_makes_what_onnx_helper_makes(graph, attributes):
    """ctx.make_node builds nodes in place (plain ints, floats, strings and lists of them without the
    helper): byte for byte the node onnx.helper.make_node makes, attribute types and order included."""
    ctx = LoweringContext(graph, 17)
    made = {}

    def lower(ctx, op):
        made["outputs"] = ctx.make_node("Custom", [op.input("x"), ""], [op.output("y")], domain="my.domain", **attributes)

    ctx.lower(graph.ops[0], lowering(lower))
    expected = onnx.helper.make_node("Custom", [graph.ops[0].input("x"), ""], [graph.ops[0].output("y")], name=f"{graph.ops[0].name}/Custom", domain="my.domain", **attributes)
    assert ctx.nodes[0].SerializeToString() == expected.SerializeToString()
    assert made["outputs"] == [graph.ops[0].output("y")] and ctx.domains == {"my.domain": 1}


def test_make_node_that_fails_adds_no_node(graph):
    ctx = LoweringContext(graph, 17)

    def lower(ctx, op):
        ctx.make_node("Relu", [op.input("x")], [op.output("y")])
        try:
            ctx.make_node("Bad", [op.input("x")], attr=object())  # no ONNX attribute type
        except Exception:
            pass

    ctx.lower(graph.ops[0], lowering(lower))
    assert [node.op_type for node in ctx.nodes] == ["Relu"]


CONSTANTS = [
    np.array(0.5, np.float32), np.array([-1.5, np.nan, np.inf], np.float64), np.array([[1, -2]], np.int64), np.zeros((0, 3), np.float16),
    np.array([True, False]), np.array(255, np.uint8), np.arange(-4, 4, dtype=np.int8).reshape(2, 2, 2)[:, ::-1],
    np.array(["a", "bc"], dtype=object), np.arange(6, dtype=np.float32).reshape(2, 3).T, np.array(2**64 - 7, np.uint64),
]


@pytest.mark.parametrize("value", CONSTANTS, ids=range(len(CONSTANTS)))
def test_constant_is_what_numpy_helper_makes(graph, value):
    ctx = LoweringContext(graph, 17)
    name = {}

    def lower(ctx, op):
        name["c"] = ctx.constant(value, "c")
        ctx.make_node("Relu", [op.input("x")], [op.output("y")])

    ctx.lower(graph.ops[0], lowering(lower))
    (made,) = ctx.constants
    assert made == onnx.numpy_helper.from_array(np.asarray(value), name["c"])
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(made), value)


def test_make_node_takes_inputs_and_outputs_as_any_iterable(graph):
    """Generators too: the node, the tensors read (which decide the weights written) and the outputs
    produced (which the check for unproduced outputs reads) all see them."""
    from flow2onnx.lowering.context import renames_and_reads

    ctx = LoweringContext(graph, 17)
    relu = graph.ops[0]

    def lower(ctx, op):
        assert ctx.make_node("Relu", (name for name in [op.input("x")]), (name for name in [op.output("y")])) == [op.output("y")]

    ctx.lower(relu, lowering(lower))
    (node,) = ctx.nodes
    assert (list(node.input), list(node.output)) == ([relu.input("x")], [relu.output("y")])
    assert renames_and_reads(ctx)[1] == {relu.input("x")}


def test_shared_constants_are_made_once_per_value(graph):
    """``shared=True``: the same dtype, shape and bytes get the first one's name; any other value, an
    unshared request and a non-numeric value get a constant of their own."""
    ctx = LoweringContext(graph, 17)
    names = []

    def lower(ctx, op):
        names.extend([
            ctx.constant(np.array(0.5, np.float32), "half", shared=True),
            ctx.constant(0.5, "again", dtype=np.float32, shared=True),  # the same value, asked otherwise
            ctx.constant(np.array(0.5, np.float64), "wide", shared=True),  # another dtype
            ctx.constant(np.array([0.5], np.float32), "vector", shared=True),  # another shape
            ctx.constant(np.array(-0.5, np.float32), "negative", shared=True),
            ctx.constant(np.array(0.5, np.float32), "own"),  # not shared
            ctx.constant(np.array(["a"], dtype=object), "text", shared=True),
            ctx.constant(np.array(["a"], dtype=object), "text", shared=True),
        ])
        ctx.make_node("Relu", [op.input("x")], [op.output("y")])

    ctx.lower(graph.ops[0], lowering(lower))
    op = graph.ops[0].name
    assert names == [f"{op}/{hint}" for hint in ("half", "half", "wide", "vector", "negative", "own", "text", "text_1")]
    assert [c.name for c in ctx.constants] == [names[0], *names[2:]]
    for name, value in zip(names, [0.5, 0.5, 0.5, [0.5], -0.5, 0.5]):
        made = next(c for c in ctx.constants if c.name == name)
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(made), value)


def test_decomposed_gelus_share_their_coefficients(tmp_path):
    """Below opset 20 a GELU is a formula: four GELUs read the same three constants, not three each,
    and the model still computes each GELU (verified on inputs of both signs, scaled several ways)."""
    model = Lambda(lambda self, x: flow.cat([flow.nn.functional.gelu(x * k) for k in (1, -2, 30, 0.5)], 1)).eval()
    result = flow2onnx.export(model, random_inputs([(2, 8)]), str(tmp_path / "g.onnx"), opset=17)
    onnx_model = onnx.load(result.path)
    assert [n.op_type for n in onnx_model.graph.node].count("Erf") == 4
    hints = [t.name.rsplit("/", 1)[-1] for t in onnx_model.graph.initializer]
    assert sorted(h for h in hints if h in ("half", "one", "sqrt2")) == ["half", "one", "sqrt2"]
    assert result.report.passed
