"""A lowering sees its op's schema: real argument and attribute names, and errors that list them."""

from __future__ import annotations

import numpy as np
import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.exporter.capture.graphs import read_graph, wrap_module
from flow2onnx.lowering.graph import FlowOp, OpArgumentError
from flow2onnx.lowering.schema import ArgSpec, AttrSpec, OpSchema, schema_from_ops

from .helpers import Lambda, export_module, flow, random_inputs

F = flow.nn.functional


def graph_of(fn, *shapes):
    """The FlowGraph of ``fn`` compiled on random inputs of ``shapes``."""
    return read_graph(wrap_module(Lambda(fn).eval(), random_inputs(shapes)))


def op_of(graph, op_type):
    return next(op for op in graph.ops if op.type == op_type)


@pytest.fixture(scope="module")
def softshrink():
    return op_of(graph_of(lambda self, x: F.softshrink(x, alpha=0.25), (2, 3)), "softshrink")


def test_schema_comes_from_the_compiled_graph(softshrink):
    assert softshrink.schema == OpSchema("softshrink", (ArgSpec("in"),), (ArgSpec("out"),), (AttrSpec("alpha", "float"),))
    assert softshrink.signature() == "softshrink(in) -> out; alpha: float = 0.25"
    assert str(softshrink.schema) == "softshrink(in) -> out; alpha: float"


def test_every_attribute_is_there_with_its_type():
    """OneFlow completes each op with its registered defaults, so no lowering needs a default of its own."""
    conv = op_of(read_graph(wrap_module(flow.nn.Conv2d(2, 4, 3, bias=False).eval(), random_inputs([(1, 2, 5, 5)]))), "conv2d")
    assert conv.schema.input_names == ["in", "weight"] and conv.schema.output_names == ["out"]
    assert conv.schema.attr_type("data_format") == "str" and conv.attr("data_format") == "channels_first"
    assert conv.schema.attr_type("kernel_size") == "list[int]" and conv.attr("kernel_size") == [3, 3]
    assert conv.schema.attr_type("groups") == "int" and conv.attr("groups") == 1
    assert conv.schema.attr_type("nope") is None


def test_wrong_input_name_lists_the_real_ones(softshrink):
    with pytest.raises(OpArgumentError, match=r"softshrink op '.*': softshrink has no input 'x'; its inputs are: in \(signature: softshrink\(in\) -> out; alpha: float = 0.25\)"):
        softshrink.input("x")
    with pytest.raises(flow2onnx.LoweringError, match=r"has no output 'y'; its outputs are: out"):
        softshrink.output("y")
    with pytest.raises(KeyError):  # code that catches a missing argument as a KeyError still works
        softshrink.input("x")


def test_wrong_attribute_name_lists_the_real_ones(softshrink):
    assert softshrink.attr("alpha") == 0.25
    with pytest.raises(OpArgumentError, match=r"softshrink has no attribute 'lambd'; its attributes are: alpha: float"):
        softshrink.attr("lambd")


def test_index_past_an_arguments_tensors(softshrink):
    assert softshrink.input_list("in") == [softshrink.input("in")]
    with pytest.raises(OpArgumentError, match=r"input 'in' has 1 tensor; index 1 is out of range"):
        softshrink.input("in", 1)


def test_optional_argument_is_marked_and_explained():
    one = ({"x": ["a"], "bias": ["b"]}, {"y": ["c"]}, {"axis": "int"})
    other = ({"x": ["d"]}, {"y": ["e"]}, {"axis": "int"})
    schema = schema_from_ops("demo", [one, other])
    assert str(schema) == "demo(bias?, x) -> y; axis: int"
    op = FlowOp("demo-1", "demo", {"x": ["d"]}, {"y": ["e"]}, {"axis": 1}, schema=schema)
    assert not op.has_input("bias")
    with pytest.raises(OpArgumentError, match=r"optional input 'bias' is not bound in this op; check op.has_input\('bias'\) first"):
        op.input("bias")


def test_op_built_by_hand_has_a_schema_of_its_own():
    op = FlowOp("m-relu-0", "leaky_relu", {"x": ["t0"]}, {"y": ["t1"]}, {"alpha": 0.1, "dtype": np.dtype("float32"), "axes": [1, 2]})
    assert op.signature() == "leaky_relu(x) -> y; alpha: float = 0.1, axes: list[int] = [1, 2], dtype: dtype = float32"


class WrongNames:
    """Lowers softshrink, in place of the built-in lowering, asking for the arguments and attributes
    it is given (by default OneFlow's own names)."""

    def __init__(self, argument="in", attribute="alpha"):
        self.argument, self.attribute = argument, attribute

    @hookimpl
    def flow2onnx_register_lowerings(self, register):
        def lower(ctx, op):
            ctx.make_node("Shrink", [op.input(self.argument)], [op.output("out")], lambd=float(op.attr(self.attribute)), bias=float(op.attr(self.attribute)))

        register("softshrink", lower, override=True)


@pytest.mark.parametrize(
    "plugin, message",
    [
        (WrongNames(argument="x"), r"softshrink has no input 'x'; its inputs are: in "),
        (WrongNames(attribute="lambd"), r"softshrink has no attribute 'lambd'; its attributes are: alpha: float"),
    ],
    ids=["argument", "attribute"],
)
def test_wrong_name_in_a_lowering_names_op_plugin_and_real_names(plugin, message, tmp_path):
    model = Lambda(lambda self, x: F.softshrink(x * 2 - 1))
    with pytest.raises(flow2onnx.LoweringError, match=rf"cannot lower softshrink op '.*' \(lowering from plugin 'WrongNames-0' \(passed to export\)\): {message}") as caught:
        export_module(model, [(2, 5)], tmp_path / "model.onnx", plugins=[plugin])
    assert isinstance(caught.value.__cause__, OpArgumentError)
    assert not (tmp_path / "model.onnx").exists()


def test_right_names_lower_softshrink_that_matches_oneflow(onnx_path):
    """The same lowering with OneFlow's names exports and verifies (ONNX Shrink is softshrink)."""
    result = export_module(Lambda(lambda self, x: F.softshrink(x * 2 - 1, alpha=0.3)), [(2, 5)], onnx_path, plugins=[WrongNames()])
    assert result.lowered_by["softshrink"] == "WrongNames-0"
    assert result.report.passed


def test_unsupported_op_error_prints_each_signature(tmp_path):
    model = Lambda(lambda self, x: F.softshrink(x) + flow.lgamma(x * 0.5))
    with pytest.raises(flow2onnx.UnsupportedOpsError) as caught:  # softshrink's family left out
        export_module(model, [(2, 3)], tmp_path / "model.onnx", disable_plugins=["flow2onnx-activations"])
    lines = str(caught.value).splitlines()
    assert lines[lines.index(next(line for line in lines if "- softshrink: 1 op" in line)) + 1].strip() == "signature: softshrink(in) -> out; alpha: float = 0.5"
    assert "      signature: lgamma(x) -> y" in lines


def test_ops_and_tensors_capture_makes_are_what_the_constructors_make():
    """Capture makes each op and tensor without the dataclasses' constructors: the objects must be the same."""
    from flow2onnx.lowering.graph import TensorInfo

    graph = graph_of(lambda self, x: F.leaky_relu(x, 0.2) * 3, (2, 3))
    for op in graph.ops:
        built = FlowOp(op.name, op.type, op.inputs, op.outputs, op.attrs, schema=op.schema)
        assert op == built and vars(op) == vars(built) and op.scope == built.scope
        assert op.signature() == built.signature()
    for info in graph.tensors.values():
        built = TensorInfo(info.name, info.shape, info.dtype)
        assert info == built and hash(info) == hash(built) and vars(info) == vars(built)
        with pytest.raises(AttributeError):
            info.name = "other"  # still frozen
