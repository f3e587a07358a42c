"""The first-divergence finder names the op whose lowering is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.exporter.diagnose.bisect import find_first_divergence

from .helpers import Lambda, flow, random_inputs
from .test_errors import WrongRelu

flowvision_models = pytest.importorskip("flowvision.models", reason="the flowvision extra is part of the test set-up")
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resnet18():
    return flowvision_models.ModelCreator.create_model("resnet18", pretrained=False).eval()


def test_wrong_lowering_in_the_middle_of_resnet_is_named_exactly(tmp_path):
    """WrongRelu lowers relu to Identity; the first relu of ResNet-18 follows the stem's BatchNorm."""
    with pytest.raises(flow2onnx.VerificationError, match=r"The first divergence is at relu op 'model.relu-relu-\d+'") as caught:
        flow2onnx.export(resnet18(), random_inputs([(1, 3, 64, 64)]), tmp_path / "m.onnx", plugins=[WrongRelu])
    divergence = caught.value.divergence
    assert divergence.exact and divergence.op_type == "relu" and divergence.op_name.startswith("model.relu-relu-")
    assert divergence.plugin == "WrongRelu" and divergence.origin == "passed to export"
    assert list(divergence.input_shapes.values()) == [[1, 64, 32, 32]]
    assert divergence.max_abs_diff > 0.1 and 0 < divergence.mismatch_fraction < 1
    assert divergence.points_matching >= 2  # conv1 and bn1 matched before it
    assert os.listdir(tmp_path) == []


class WrongBatchNorm:
    """A BatchNorm lowering that forgets the scale: wrong wherever gamma is not 1."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        def lower(ctx, op):
            ctx.make_node(
                "BatchNormalization",
                [op.input("x"), op.input("beta"), op.input("beta"), op.input("moving_mean"), op.input("moving_variance")],
                [op.output("y")],
                epsilon=float(op.attrs["epsilon"]),
            )

        register("normalization", lower, override=True)


def test_finder_on_a_module_names_the_layer():
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 8, 3), flow.nn.ReLU(), flow.nn.Conv2d(8, 8, 1), flow.nn.BatchNorm2d(8), flow.nn.ReLU())
    with flow.no_grad():
        model[3].weight.copy_(flow.rand(8) + 0.5)
    divergence = find_first_divergence(model, random_inputs([(2, 3, 8, 8)]), opset=17, plugins=[WrongBatchNorm])
    assert divergence.exact and divergence.op_type == "normalization" and divergence.op_name.startswith("model.3-")
    assert find_first_divergence(model, random_inputs([(2, 3, 8, 8)]), opset=17) is None
    assert "first op whose ONNX lowering diverges: normalization op" in divergence.to_text()


def test_bisect_on_request_reports_no_divergence(onnx_path):
    result = flow2onnx.export(resnet18(), random_inputs([(1, 3, 32, 32)]), onnx_path, bisect=True)
    assert result.bisected and result.divergence is None and result.report.passed


def test_user_graph_mismatch_explains_that_the_finder_needs_the_module(tmp_path):
    class Graph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = Lambda(lambda self, x: flow.relu(x - 0.5))

        def build(self, x):
            return self.model(x)

    graph = Graph()
    graph._compile(*random_inputs([(4, 8)]))
    with pytest.raises(flow2onnx.VerificationError, match="finder needs the eager module") as caught:
        flow2onnx.export(graph, path=tmp_path / "m.onnx", plugins=[WrongRelu])
    assert caught.value.divergence is None


def test_cli_check_with_bisect(tmp_path):
    done = subprocess.run(
        [CLI, "check", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "--bisect"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "all outputs match" in done.stdout
    assert "first-divergence finder: every intermediate tensor OneFlow exposes matches" in done.stdout


class FunctionalBlock(flow.nn.Module):
    """Several ops called functionally inside one forward: no submodule output separates them."""

    def __init__(self):
        super().__init__()
        self.fc = flow.nn.Linear(8, 8)

    def forward(self, x):
        y = flow.nn.functional.relu(self.fc(x)) * 2.0
        y = flow.tanh(y) + y.sigmoid()
        return y - 1


class WrongSigmoid:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("sigmoid", lambda ctx, op: ctx.make_node("HardSigmoid", [op.input("x")], [op.output("y")]), override=True)


def test_an_op_called_functionally_inside_a_forward_is_named_exactly(tmp_path):
    model = flow.nn.Sequential(FunctionalBlock(), flow.nn.Linear(8, 4)).eval()
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(model, [flow.rand(2, 8)], tmp_path / "m.onnx", plugins=[WrongSigmoid])
    divergence = caught.value.divergence
    assert divergence.exact and divergence.op_type == "sigmoid" and divergence.plugin == "WrongSigmoid"
    assert "lowered by plugin 'WrongSigmoid'" in str(caught.value)
    # The tanh before it, in the same forward, was compared and matched.
    assert divergence.points_matching >= 3
