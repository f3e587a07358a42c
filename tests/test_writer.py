"""The streaming writer: weights go from OneFlow's memory to the file one at a time, and the result
is the same model that onnx would have written."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import flow2onnx
from flow2onnx import hookimpl

from .helpers import Lambda, export_module, flow


def weights_of(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def small_net():
    return flow.nn.Sequential(flow.nn.Conv2d(3, 64, 3), flow.nn.ReLU(), flow.nn.Conv2d(64, 300, 1), flow.nn.AdaptiveAvgPool2d(1))


class Unchanged:
    @hookimpl
    def flow2onnx_register_post_passes(register):
        register("unchanged", lambda model: model)


def test_streamed_file_holds_the_same_weights_as_onnx_would_write(tmp_path):
    model = small_net().eval()
    streamed = tmp_path / "streamed.onnx"
    export_module(model, [(1, 3, 8, 8)], streamed)
    # With a post-pass the model is materialised and written by onnx.save_model.
    materialized = tmp_path / "materialized.onnx"
    export_module(model, [(1, 3, 8, 8)], materialized, post_passes=["unchanged"], plugins=[Unchanged])
    a, b = weights_of(streamed), weights_of(materialized)
    assert a.keys() == b.keys() and len(a) == 6  # four weights and two bias reshapes' shapes
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    state = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    for name, array in state.items():
        np.testing.assert_array_equal(a[name], array)
    onnx.checker.check_model(str(streamed), full_check=True)


def test_external_data_is_streamed_and_aligned(tmp_path):
    path = tmp_path / "m.onnx"
    result = export_module(small_net(), [(1, 3, 8, 8)], path, external_data=True)
    assert result.external_data and result.report.passed
    model = onnx.load(str(path), load_external_data=False)
    offsets = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            assert entries["location"] == "m.onnx.data"
            offsets.append(int(entries["offset"]))
    assert offsets and all(offset % 64 == 0 for offset in offsets)
    full = onnx.load(str(path))  # loads the data back through onnx's own reader
    assert all(numpy_helper.to_array(t).size for t in full.graph.initializer)


class InvalidRelu:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        # Relu has no attribute "alpha": the checker must refuse the model.
        register("relu", lambda ctx, op: ctx.make_node("Relu", [op.input("x")], [op.output("y")], alpha=0.5), override=True)


def test_an_invalid_model_is_refused_by_the_checker_and_not_written(tmp_path):
    model = Lambda(lambda self, x: flow.relu(x))
    with pytest.raises(flow2onnx.Flow2OnnxError, match=r"not valid ONNX: .*alpha"):
        export_module(model, [(2, 3)], tmp_path / "m.onnx", plugins=[InvalidRelu], verify=False)
    assert os.listdir(tmp_path) == []


def test_the_checked_bytes_are_the_skeleton_and_the_file_is_the_model(tmp_path):
    """The check reads the model from bytes made of its serialised parts, without copying it; they must
    parse as exactly the skeleton (weights declared as inputs: a scalar with an empty shape, a
    matrix, a half-precision vector), and the streamed file as the model with its weights."""
    from onnx import TensorProto, helper

    from flow2onnx.exporter.serialize import serialized_parts, skeleton, skeleton_bytes, write_streamed
    from flow2onnx.lowering.graph import TensorInfo

    weights = [
        TensorInfo("scale", (), np.dtype(np.float32)),
        TensorInfo("w", (3, 2), np.dtype(np.float32)),
        TensorInfo("b", (2,), np.dtype(np.float16)),
    ]
    arrays = {"scale": np.array(-2.5, np.float32), "w": np.arange(-3, 3, dtype=np.float32).reshape(3, 2), "b": np.array([np.inf, -1e-3], np.float16)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
        helper.make_node("Mul", ["xw", "scale"], ["s"], name="mul"),
        helper.make_node("Cast", ["b"], ["b32"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Add", ["s", "b32"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="flow2onnx", doc_string="d")
    model.metadata_props.add(key="k", value="v")
    before = model.SerializeToString()

    parts = serialized_parts(model)
    declared = onnx.ModelProto()
    declared.CopyFrom(model)
    declared.graph.input.extend(helper.make_tensor_value_info(info.name, helper.np_dtype_to_tensor_dtype(info.dtype), list(info.shape)) for info in weights)
    assert onnx.ModelProto.FromString(skeleton_bytes(parts, weights)) == declared == skeleton(model, weights)
    assert model.SerializeToString() == before  # nothing taken from the model

    path = str(tmp_path / "m.onnx")
    write_streamed(model, weights, arrays.__getitem__, path, parts)
    written = onnx.load(path)
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    expected.graph.initializer.extend(numpy_helper.from_array(arrays[info.name], info.name) for info in weights)
    assert written == expected
    onnx.checker.check_model(written, full_check=True)
