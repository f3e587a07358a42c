"""Parameters reshaped in ``forward`` reach the file in the shape they are used in, with no node left
to compute them, and without a copy of any weight; and the flowvision transformers fuse.

Every export is verified against OneFlow on ONNX Runtime by the export itself (rtol 1e-3, atol 1e-4
for float32); the small model is also run here at another batch against the eager module.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

import flow2onnx
from flow2onnx.exporter.capture.graphs import read_graph, wrap_module
from flow2onnx.exporter.lower.converter import convert
from flow2onnx.lowering.plugin_manager import load_plugins

from .helpers import export_module, flow, random_inputs


class LayerScaled(flow.nn.Module):
    """A layer scale and a bias reshaped to broadcast over (N, C, H, W), three ways."""

    def __init__(self):
        super().__init__()
        self.gamma = flow.nn.Parameter(flow.randn(4))
        self.bias = flow.nn.Parameter(flow.randn(1, 4))
        self.offset = flow.nn.Parameter(flow.randn(2, 2))

    def forward(self, x):
        scale = self.gamma.unsqueeze(-1).unsqueeze(-1)  # expand_dims, twice
        bias = self.bias.squeeze(0)[:, None, None]  # squeeze, then expand_dims
        return x * scale + bias + self.offset.reshape(4, 1, 1)  # reshape


def counts(model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("options", [{}, {"external_data": True}, {"post_passes": ["onnxoptimizer"]}], ids=["inline", "external", "post-pass"])
def test_reshaped_parameters_become_weights_of_their_shape(tmp_path, options):
    path = tmp_path / "m.onnx"
    module = LayerScaled().eval()
    result = export_module(module, [(2, 4, 3, 3)], path, dynamic_batch=True, **options)
    assert result.report.passed
    model = onnx.load(str(path))
    assert counts(model) == {"Mul": 1, "Add": 2}
    shapes = sorted(tuple(tensor.dims) for tensor in model.graph.initializer)
    assert shapes == [(4, 1, 1)] * 3  # only the derived weights: their sources are read by no node
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (x,) = random_inputs([(5, 4, 3, 3)], seed=3)
    (actual,) = session.run(None, {"input": x.numpy()})
    assert np.allclose(actual, module(x).numpy(), rtol=1e-5, atol=1e-6)


def test_a_derived_weight_is_a_view_of_oneflow_memory():
    graph = read_graph(wrap_module(LayerScaled().eval(), random_inputs([(2, 4, 3, 3)])))
    conversion = convert(graph, load_plugins().registry, 17)
    derived = [info for info in conversion.weights if info.name not in {v.name for v in graph.variables}]
    assert len(derived) == 3
    sources = {"model.gamma": (4,), "model.bias": (1, 4), "model.offset": (2, 2)}
    for info in derived:
        array = conversion.read_weight(info.name)
        assert array.shape == info.shape == (4, 1, 1)
        assert any(np.shares_memory(array, graph.read_weight(source)) for source in sources)


def test_a_reshaped_parameter_returned_as_an_output_is_kept_by_name(tmp_path):
    class Returns(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = flow.nn.Parameter(flow.randn(4))

        def forward(self, x):
            return x * self.gamma, self.gamma.unsqueeze(0)

    result = export_module(Returns(), [(2, 4)], tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert result.report.passed and counts(model) == {"Mul": 1, "Identity": 1}
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    (identity,) = [node for node in model.graph.node if node.op_type == "Identity"]
    assert weights[identity.input[0]].shape == (1, 4) and identity.output[0] == "output_1"


def flowvision(name):
    from flowvision.models import ModelCreator

    return ModelCreator.create_model(name, pretrained=False).eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size, expected",
    [
        # ConvNeXt: 19 channels-last LayerNorms written out (the 4 channels-first ones normalize axis 1), no Unsqueeze left.
        ("convnext_tiny_224", 64, {"LayerNormalization": 19, "Unsqueeze": 0, "Erf": 18}),
        ("vit_tiny_patch16_224", 224, {"LayerNormalization": 25, "Gelu": 12, "Erf": 0, "Sqrt": 0}),
    ],
)
def test_flowvision_transformers_fuse_and_verify(tmp_path, name, size, expected):
    opset = 20 if "Gelu" in expected else 17
    result = flow2onnx.export(flowvision(name), [flow.rand(1, 3, size, size)], str(tmp_path / "m.onnx"), opset=opset)
    assert result.report.passed
    found = counts(onnx.load(str(tmp_path / "m.onnx"), load_external_data=False))
    assert {op_type: found[op_type] for op_type in expected} == expected

