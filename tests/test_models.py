"""Real flowvision models (random weights): the ResNet family, VGG and AlexNet, and the tutorial's example."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest

import flow2onnx
from flow2onnx.lowering.families import family_names

from .helpers import flow

flowvision_models = pytest.importorskip("flowvision.models", reason="the flowvision extra is part of the test set-up")


def create(name):
    return flowvision_models.ModelCreator.create_model(name, pretrained=False).eval()


class ModelGraph(flow.nn.Graph):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, x):
        return self.model(x)


def test_tutorial_resnet34_dynamic_batch(tmp_path, monkeypatch, capsys):
    """OneFlow's tutorial example, unchanged but for the import, with a batch that really is dynamic."""
    from flow2onnx import convert_to_onnx_and_check

    model = create("resnet34")
    graph = ModelGraph(model)
    graph._compile(flow.rand(1, 3, 224, 224))
    monkeypatch.chdir(tmp_path)
    convert_to_onnx_and_check(
        graph, flow_weight_dir=str(tmp_path / "unused-weights"), onnx_model_path="./", print_outlier=True, dynamic_batch_size=True
    )
    path = tmp_path / "model.onnx"
    assert path.exists()
    assert "all outputs match" in capsys.readouterr().out
    onnx.checker.check_model(str(path), full_check=True)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch" and session.get_outputs()[0].shape[0] == "batch"
    rng = np.random.default_rng(1)
    for batch in (1, 4):
        x = rng.random((batch, 3, 224, 224), dtype=np.float32)
        (actual,) = session.run(None, {session.get_inputs()[0].name: x})
        expected = model(flow.tensor(x)).numpy()  # the eager module, independent of the graph
        assert actual.shape == expected.shape == (batch, 1000)
        assert np.abs(actual - expected).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, opset",
    [
        ("resnet18", flow2onnx.DEFAULT_SINCE_OPSET),
        ("resnet50", flow2onnx.DEFAULT_OPSET),
        ("resnet50", 10),  # the tutorial's default opset
        ("resnext50_32x4d", flow2onnx.DEFAULT_OPSET),
        ("wide_resnet50_2", flow2onnx.DEFAULT_SINCE_OPSET),
        ("vgg11", flow2onnx.DEFAULT_OPSET),
        ("vgg11_bn", flow2onnx.DEFAULT_SINCE_OPSET),
        ("alexnet", flow2onnx.DEFAULT_OPSET),
    ],
)
def test_flowvision_model_exports_and_verifies(name, opset, onnx_path):
    result = flow2onnx.export(create(name), [flow.rand(1, 3, 224, 224)], onnx_path, opset=opset, dynamic_batch=True)
    assert result.report.passed, result.report.to_text(outliers=True)
    assert result.report.batch_sizes == [1, 2, 5]
    assert set(result.lowered_by.values()) <= set(family_names())
    onnx.checker.check_model(str(onnx_path), full_check=True)


def test_export_is_deterministic(tmp_path):
    model = create("resnet18")
    first = flow2onnx.export(model, [flow.rand(1, 3, 64, 64)], tmp_path / "a.onnx", verify=False)
    second = flow2onnx.export(model, [flow.rand(1, 3, 64, 64)], tmp_path / "b.onnx", verify=False)
    assert first.output_names == second.output_names
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
