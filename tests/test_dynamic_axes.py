"""Named dynamic axes: symbolic dims that follow through the model, verified at several shapes,
and a clear refusal naming the op when a lowering bakes an example's size in."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest

import flow2onnx
from flow2onnx.exporter.plan.draws import far_size

from .helpers import Lambda, flow, random_inputs, relu_graph

flowvision_models = pytest.importorskip("flowvision.models", reason="the flowvision extra is part of the test set-up")
SPATIAL = {"input": {0: "batch", 2: "height", 3: "width"}}
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_batch_and_spatial_axes_stay_dynamic(onnx_path):
    model = flowvision_models.ModelCreator.create_model("resnet18", pretrained=False).eval()
    result = flow2onnx.export(model, random_inputs([(2, 3, 64, 64)]), onnx_path, dynamic_axes=SPATIAL)
    assert result.dynamic_axes == SPATIAL
    assert result.report.passed and result.report.batch_sizes == [1, 2, 7]
    saved = onnx.load(str(onnx_path))
    assert dims(saved.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(saved.graph.output[0]) == ["batch", 1000]
    # A shape verification did not try: OneFlow's eager module against ONNX Runtime.
    x = np.random.default_rng(3).random((2, 3, 80, 96), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x})
    expected = model(flow.tensor(x)).numpy()
    assert np.abs(actual - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_flattening_the_dynamic_axes_follows_them(onnx_path):
    """The compiled reshape holds 16 * 16 = 256; compared with a compilation at 17 x 17, it becomes
    Reshape(0, 0, -1), right at every size."""
    model = Lambda(lambda self, x: flow.relu(x).reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]))
    result = flow2onnx.export(model.eval(), random_inputs([(1, 3, 16, 16)]), onnx_path, dynamic_axes=SPATIAL)
    # The example, two runs far from it, one with every dynamic axis at 1, one at edge values.
    assert result.report.passed and [c.inputs for c in result.report.comparisons] == ["example", "signed", "magnitudes", "axes at 1", "edge values"]
    assert dims(onnx.load(str(onnx_path)).graph.output[0])[:2] == ["batch", 3]


def matches_oneflow_at(path, model, shapes):
    """The exported file against the module at sizes the export never saw (inputs of both signs)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for shape in shapes:
        x = rng.uniform(-2, 2, size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model(flow.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_a_tensor_created_with_an_input_size_follows_it(tmp_path):
    # flow.ones(x.shape[3]) inside forward: the compiled graph holds a constant op of the example's
    # width; comparing the two compilations shows that it is the width, computed from Shape.
    model = Lambda(lambda self, x: x * flow.ones(x.shape[3]) + flow.zeros(x.shape[0], 1, 1, x.shape[3])).eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 4, 16)]), tmp_path / "m.onnx", dynamic_axes=SPATIAL)
    assert result.report.passed
    matches_oneflow_at(tmp_path / "m.onnx", model, [(2, 3, 5, 7), (1, 3, 9, 40)])


def test_an_axis_of_size_one_in_the_example_is_verified_at_other_sizes(tmp_path):
    # Found by the fuzzer: an example of width 1, whose far sizes used to round back to 1, so the
    # width stayed 1 in the second compilation and in every run; the flatten of (H, W) was then
    # written as a copy of H, verified, and failed in ONNX Runtime at width 3.
    conv = flow.nn.Conv2d(6, 1, 2, stride=2, padding=1)
    model = Lambda(lambda self, x: self.conv(x).view(1, 1, -1), conv=conv).eval()
    result = flow2onnx.export(model, random_inputs([(1, 6, 1, 1)]), tmp_path / "m.onnx", opset=11, dynamic_axes={"input": {2: "c", 3: "d"}})
    assert result.report.passed
    # Some run saw both axes away from 1 (the conv's output then has more than one element).
    assert any(c.shape[2] > 2 for c in result.report.comparisons)
    matches_oneflow_at(tmp_path / "m.onnx", model, [(1, 6, 1, 3), (1, 6, 4, 3), (1, 6, 2, 2), (1, 6, 7, 1)])


def test_a_mean_over_one_of_several_axes_of_one_follows_that_axis(tmp_path):
    # Found by the fuzzer (4:11333): every axis 1 in the example grew to 2 in the second compilation,
    # so the mean's 1/2 could follow any of them, and the file divided by the wrong one at b=1.
    model = Lambda(lambda self, x: flow.mean(x, dim=1)).eval()
    result = flow2onnx.export(model, random_inputs([(1, 1, 1)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "a", 1: "b", 2: "c"}})
    assert result.report.passed
    matches_oneflow_at(tmp_path / "m.onnx", model, [(1, 3, 1), (4, 1, 2), (2, 5, 3), (3, 2, 7)])


def test_a_slice_from_the_end_of_an_axis_of_one_is_right_at_every_size(tmp_path):
    # Found by the fuzzer (4:17348): x[:, :, -2:] on an axis of 1 was once verified and wrong at
    # other sizes, then refused. Its end is the axis's end at every size, and its start -2 at every
    # size: the file counts both from the end, and is right at sizes 1 to 8.
    model = Lambda(lambda self, x: x[:, :, -2:]).eval()
    path = tmp_path / "m.onnx"
    flow2onnx.export(model, random_inputs([(1, 1, 1, 1)]), path, opset=17, dynamic_axes={"input": {0: "a", 2: "c"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in range(1, 9):
        x = np.random.default_rng(size).standard_normal((2, 1, size, 1)).astype(np.float32)
        (got,) = session.run(None, {"input": x})
        want = model(flow.tensor(x)).numpy()
        assert got.shape == want.shape and np.array_equal(got, want), size


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 16, 224, 299])
def test_far_sizes_never_repeat_the_example(size):
    for factor in (1.2, 1.5, 1.035):
        assert far_size(size, factor) > size
    for factor in (0.5, 0.75, 0.9):
        assert far_size(size, factor) == 1 if size == 1 else far_size(size, factor) < size


def test_a_size_shared_by_several_inputs_is_one_size(tmp_path):
    # Every input's batch changes alike between the compilations; under one symbol it is one size,
    # so a tensor made with it follows it (it used to be refused as ambiguous between the inputs).
    model = Lambda(lambda self, x, y: x + y + flow.zeros(x.shape[0], 4)).eval()
    result = flow2onnx.export(model, random_inputs([(2, 4), (2, 4)]), tmp_path / "m.onnx", dynamic_batch=True)
    assert result.report.passed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 9):
        x, y = (rng.uniform(-2, 2, size=(batch, 4)).astype(np.float32) for _ in range(2))
        got = session.run(None, dict(zip(result.input_names, (x, y))))[0]
        np.testing.assert_allclose(got, model(flow.tensor(x), flow.tensor(y)).numpy(), rtol=1e-6)


def test_a_value_no_product_of_sizes_explains_is_refused(tmp_path):
    # width + 1: the scalar follows the width, but not as a product of sizes, so it is refused.
    model = Lambda(lambda self, x: x * float(x.shape[3] + 1)).eval()
    with pytest.raises(flow2onnx.LoweringError, match=r"scalar_mul op .*attribute 'float_operand' is 17.0 at the example's sizes .* no product of the dynamic sizes explains") as caught:
        flow2onnx.export(model, random_inputs([(1, 3, 4, 16)]), tmp_path / "m.onnx", dynamic_axes=SPATIAL)
    assert os.listdir(tmp_path) == []
    # The batch alone can stay dynamic.
    result = flow2onnx.export(model, random_inputs([(1, 3, 4, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n"}})
    assert result.report.passed and dims(onnx.load(str(tmp_path / "m.onnx")).graph.output[0]) == ["n", 3, 4, 16]


def test_a_module_that_fixes_a_size_cannot_be_compiled_at_others(tmp_path):
    model = Lambda(lambda self, x: x.reshape(-1, 3 * 16 * 16))
    with pytest.raises(flow2onnx.InvalidModelError, match=r"cannot stay dynamic: the model runs at none of the sizes tried around the example.s \(OneFlow cannot build it there: .*invalid for input of size"):
        flow2onnx.export(model.eval(), random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes=SPATIAL)
    assert os.listdir(tmp_path) == []


class BakingUpsample:
    """A plugin whose upsample lowering writes the example's output size as a constant."""

    @flow2onnx.hookimpl
    def flow2onnx_register_lowerings(self, register):
        def lower(ctx, op):
            import numpy as np

            shape = np.array(ctx.shape(op.output("y")), dtype=np.int64)
            roi = ctx.constant(np.array([], dtype=np.float32), "roi")
            ctx.make_node("Resize", [op.input("x"), roi, "", ctx.constant(shape, "sizes")], [op.output("y")], mode="nearest")

        register("upsample_nearest_2d", lower, override=True)


def test_an_op_whose_lowering_follows_the_example_size_is_named(tmp_path):
    # An upsampling to a size computed in Python, lowered by a plugin that bakes the example's size.
    model = Lambda(lambda self, x: flow.nn.functional.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2))).eval()
    with pytest.raises(flow2onnx.LoweringError, match=r"upsample_nearest_2d op .* cannot keep the dynamic axes .*between inputs .*16, 16.* and .*24, 20"):
        flow2onnx.export(
            model, random_inputs([(1, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {2: "h", 3: "w"}}, plugins=[BakingUpsample()]
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"image": {0: "batch"}}, r"dynamic_axes names input 'image', but the model's inputs are input"),
        ({"input": {4: "depth"}}, r"has axis 4; input 'input' has 4 axes"),
        ({"input": {1: ""}}, r"must be a symbol name"),
        ({"input": {1: "n", 2: "n"}}, r"gives the symbol 'n' to input\[1\], of size 3, and to input\[2\], of size 4: a symbol is one size"),
    ],
)
def test_malformed_dynamic_axes(axes, message, tmp_path):
    with pytest.raises(flow2onnx.InvalidModelError, match=message):
        flow2onnx.export(flow.nn.ReLU(), random_inputs([(1, 3, 4, 4)]), tmp_path / "m.onnx", dynamic_axes=axes)


def test_spatial_axes_of_a_compiled_graph_need_the_module(tmp_path):
    graph = relu_graph()
    graph._compile(*random_inputs([(1, 3, 4, 4)]))
    with pytest.raises(flow2onnx.InvalidModelError, match="need the eager module"):
        flow2onnx.export(graph, path=tmp_path / "m.onnx", dynamic_axes=SPATIAL)


def test_cli_dynamic_axes(tmp_path):
    output = tmp_path / "m.onnx"
    args = [CLI, "export", "tests.models:tiny_cnn", "--input-shape", "2,3,8,8", "-o", str(output)]
    done = subprocess.run(args + ["--dynamic-axes", "input=0:batch,2:height,3:width"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "input (symbolic 0: batch, 2: height, 3: width)" in done.stdout
    assert dims(onnx.load(str(output)).graph.input[0]) == ["batch", 3, "height", "width"]
    bad = subprocess.run(args + ["--dynamic-axes", "input=two:h"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is not INPUT=AXIS:NAME" in bad.stderr


class StateAfterBatch(flow.nn.Module):
    """Two inputs whose batch lies on different axes, as a sequence and an RNN's initial state do."""

    def forward(self, x, state):
        return x.transpose(0, 1) + state


def test_axes_of_one_symbol_take_one_size_in_every_run(tmp_path):
    axes = {"input_0": {1: "batch"}, "input_1": {0: "batch"}}
    result = flow2onnx.export(StateAfterBatch(), random_inputs([(4, 3, 2), (3, 4, 2)]), tmp_path / "m.onnx", dynamic_axes=axes)
    assert result.report.passed
    # Each run gives both inputs the same batch, whichever axis holds it: sizes far from the example's
    # 3 as input_0's axis 1, the first axis that carries the symbol, takes them, and 1 in the last run.
    assert sorted({c.shape[0] for c in result.report.comparisons}) == [1, 2, 3, 4]


class PositionAdded(flow.nn.Module):
    """A parameter of batch 1 added to the input, as a ViT adds its position embedding: at batch 1
    OneFlow adds the two with add_n (same shapes), at other batches with broadcast_add."""

    def __init__(self, branch_at_one=False):
        super().__init__()
        self.pos = flow.nn.Parameter(flow.randn(1, 4, 8))
        self.fc = flow.nn.Linear(8, 8)
        self.branch_at_one = branch_at_one

    def forward(self, x):
        y = self.fc(x + self.pos)
        if self.branch_at_one:  # another computation at batch 1 alone
            return y.relu() if x.shape[0] == 1 else y.sigmoid()
        return y


@pytest.mark.parametrize("capture", ["graph", "eager"])
def test_a_batch_of_one_that_changes_oneflows_ops_is_traced_again_at_another_size(tmp_path, capture, caplog):
    caplog.set_level("INFO", logger="flow2onnx")
    module = PositionAdded().eval()
    result = flow2onnx.export(module, random_inputs([(1, 4, 8)]), tmp_path / "m.onnx", dynamic_batch=True, capture=capture)
    # Traced again at a batch above the second compilation's (5), so that the two tell what follows the batch.
    assert "tracing the model again at {'input': (6, 4, 8)}" in caplog.text
    # Verified at the example's batch of 1 too, against OneFlow at that batch.
    assert result.report.passed and result.report.batch_sizes == [1, 2, 5]
    saved = onnx.load(str(tmp_path / "m.onnx"))
    assert dims(saved.graph.input[0]) == ["batch", 4, 8]
    x = np.random.default_rng(4).standard_normal((3, 4, 8)).astype(np.float32)
    (actual,) = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with flow.no_grad():
        expected = module(flow.tensor(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_a_model_that_really_computes_otherwise_at_batch_one_still_fails(tmp_path):
    # Traced again at batch 2, the file holds the sigmoid; verification at the example's batch of 1,
    # where OneFlow takes the relu, must catch it.
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(PositionAdded(branch_at_one=True).eval(), random_inputs([(1, 4, 8)]), tmp_path / "m.onnx", dynamic_batch=True)
    assert not caught.value.report.passed
    failed = [c for c in caught.value.report.comparisons if not c.passed]
    assert failed and {c.batch_size for c in failed} == {1}
    assert not (tmp_path / "m.onnx").exists()


def test_a_module_whose_shapes_hold_only_at_the_example_batch_is_refused_not_aborted(tmp_path):
    # A weight of the example's length broadcast against the flattened batch: OneFlow 0.9's graph
    # compiler aborted the process (SIGABRT, found by the fuzzer) when the module was compiled at
    # another batch; eager OneFlow raises, and it runs first.
    code = (
        "import oneflow as flow, flow2onnx\n"
        "from tests.helpers import Lambda\n"
        "weight = flow.randn(6)\n"
        "model = Lambda(lambda self, x: flow.nn.functional.log_softmax(x.reshape(-1), dim=0) - weight).eval()\n"
        "try:\n"
        "    flow2onnx.export(model, [flow.randn(2, 3)], {path!r}, dynamic_batch=True)\n"
        "except flow2onnx.InvalidModelError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code.format(path=str(tmp_path / "m.onnx"))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused:") and "cannot stay dynamic" in done.stdout and "must match the size" in done.stdout
    assert not (tmp_path / "m.onnx").exists()
