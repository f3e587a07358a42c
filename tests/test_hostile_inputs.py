"""Verification that cannot be fooled, and careless arguments that end in one clear error.

Each wrong lowering here passed verification when it drew inputs in [0, 1) only, or compared
infinities by arithmetic; each careless argument ended in a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import flow2onnx
from flow2onnx import hookimpl

from .helpers import Lambda, export_module, flow, overriding, random_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")


def cli(*args):
    return subprocess.run([CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_error_line(done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("flow2onnx: error: ")]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# ---------------------------------------------------------------- verification honesty


def wrong_for_negatives(ctx, op):
    """softshrink as max(x - alpha, 0): right for x > -alpha, wrong below."""
    alpha = ctx.constant(np.float32(op.attr("alpha")), "alpha")
    (shifted,) = ctx.make_node("Sub", [op.input("in"), alpha])
    ctx.make_node("Relu", [shifted], [op.output("out")])


def test_a_lowering_wrong_only_for_negative_inputs_is_caught(tmp_path):
    plugin = overriding("softshrink", wrong_for_negatives)
    with pytest.raises(flow2onnx.VerificationError) as caught:
        export_module(flow.nn.Softshrink(0.5), [(4, 16)], tmp_path / "m.onnx", plugins=[plugin])
    assert os.listdir(tmp_path) == []
    failed = [c for c in caught.value.report.comparisons if not c.passed]
    assert failed and all(c.batch_size is None for c in failed)


def clipped_relu(limit):
    def lower(ctx, op):
        ctx.make_node("Clip", [op.input("x"), ctx.constant(np.float32(0), "low"), ctx.constant(np.float32(limit), "high")], [op.output("y")])

    return lower


def test_a_lowering_wrong_above_a_magnitude_is_caught_by_the_magnitude_draw(tmp_path):
    plugin = overriding("relu", clipped_relu(5.0))  # right on [0, 1) and [-1, 1); wrong above 5
    with pytest.raises(flow2onnx.VerificationError):
        export_module(flow.nn.ReLU(), [(4, 64)], tmp_path / "m.onnx", plugins=[plugin])


def test_the_users_example_inputs_are_always_verified(tmp_path):
    plugin = overriding("relu", clipped_relu(1000.0))  # random draws stay below 100; the example does not
    example = [flow.tensor(np.float32([[5000.0, -3.0, 0.5, 2.0]]))]
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(flow.nn.ReLU(), example, tmp_path / "m.onnx", plugins=[plugin])
    first = caught.value.report.comparisons[0]
    assert not first.passed and first.outliers[0][1:] == (5000.0, 1000.0)
    # The same plugin with friendly example inputs passes: the example run is what caught it.
    flow2onnx.export(flow.nn.ReLU(), [flow.tensor(np.float32([[5.0, -3.0, 0.5, 2.0]]))], tmp_path / "m.onnx", plugins=[plugin])


def reciprocal_without_infinity(ctx, op):
    (shifted,) = ctx.make_node("Add", [op.input("x"), ctx.constant(np.float32(1e-30), "eps")])
    ctx.make_node("Reciprocal", [shifted], [op.output("y")])


def test_an_infinity_replaced_by_a_finite_value_is_caught(tmp_path):
    plugin = overriding("reciprocal", reciprocal_without_infinity)
    example = [flow.tensor(np.float32([[0.0, 1.0, 2.0, 4.0]]))]  # OneFlow: 1/0 = +inf
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(Lambda(lambda self, x: flow.reciprocal(x)), example, tmp_path / "m.onnx", plugins=[plugin])
    first = caught.value.report.comparisons[0]
    assert first.inf_count == 1 and first.nonfinite_mismatches == 1


def test_constant_outputs_are_reported_and_strict_refuses_them(tmp_path):
    model = Lambda(lambda self, x: x * 0.0 + 1.0)
    result = export_module(model, [(2, 3)], tmp_path / "m.onnx")
    assert any("is constant" in warning for warning in result.warnings)
    with pytest.raises(flow2onnx.VerificationError, match="strict is set"):
        export_module(model, [(2, 3)], tmp_path / "n.onnx", strict=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


class _LogOfNegatives(flow.nn.Graph):
    """An nn.Graph whose first output is NaN at every input (log of negatives), the second finite."""

    def build(self, x):
        return flow.log(-(x.abs() + 1.0)), x * 2.0


def test_an_output_nan_everywhere_is_reported_not_verified_and_fails_the_tutorial_check(tmp_path, capsys):
    from flow2onnx import convert_to_onnx_and_check

    model = Lambda(lambda self, x: (flow.log(-(x.abs() + 1.0)), x * 2.0))
    result = export_module(model, [(2, 3)], tmp_path / "m.onnx")
    report = result.report
    assert report.passed and not report.verified and set(report.unverified_outputs.values()) == {"NaN everywhere"}
    nan_output = result.output_names[0]
    assert report.unverified_outputs == {nan_output: "NaN everywhere"}
    assert any(w.startswith("NOT VERIFIED") and nan_output in w for w in result.warnings)
    assert "not verified: NaN everywhere" in report.to_text() and "all outputs match" not in report.to_text()
    assert "not verified: NaN everywhere" in report.to_markdown()
    assert {c["result"] for c in json.loads(report.to_json())["comparisons"] if c["name"] == nan_output} == {"not verified: NaN everywhere"}

    graph = _LogOfNegatives()
    graph._compile(flow.rand(2, 3))
    with pytest.raises(flow2onnx.VerificationError, match="NOT VERIFIED: output .* is NaN everywhere in every verification run"):
        convert_to_onnx_and_check(graph, onnx_model_path=str(tmp_path / "tutorial"))
    assert "not verified: NaN everywhere" in capsys.readouterr().out  # the tutorial API prints the report
    assert not (tmp_path / "tutorial").exists() or os.listdir(tmp_path / "tutorial") == []


def test_the_cli_warns_of_an_output_it_could_not_compare_and_fails_on_it_when_asked(tmp_path):
    target = tmp_path / "m.onnx"
    done = cli("export", "tests.models:nan_everywhere", "--input-shape", "2,3", "-o", str(target))
    assert done.returncode == 0 and "NOT VERIFIED" in done.stderr and target.exists()
    target.unlink()
    line = one_error_line(cli("export", "tests.models:nan_everywhere", "--input-shape", "2,3", "-o", str(target), "--require-verified"))
    assert "NOT VERIFIED" in line and "NaN everywhere" in line and "nothing was written" in line
    assert os.listdir(tmp_path) == []


def test_adaptive_pooling_stays_right_far_from_the_example(tmp_path):
    # VGG-11's AdaptiveAvgPool2d(7), once lowered for the example's size, matched at 225 and 227 and
    # failed at 256. Now its windows are computed from the input's shape: compared with OneFlow at
    # sizes the export never saw, smaller and larger than the output, odd and even.
    import onnxruntime

    model = flow.nn.Sequential(flow.nn.Conv2d(3, 4, 3, padding=1), flow.nn.AdaptiveAvgPool2d(7), flow.nn.Flatten()).eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 28, 28)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 5, 9), (2, 3, 32, 32), (3, 3, 61, 100)]:
        x = rng.uniform(-2, 2, size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model(flow.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_a_mean_written_with_python_sizes_follows_them(tmp_path):
    # ShuffleNet's spatial mean, sum * (1 / (H * W)) with Python ints: the scalar is 1/(H*W) at both
    # compilations, so it is computed from Shape, and the model is right at sizes never seen.
    import onnxruntime

    model = Lambda(lambda self, x: x.sum(dim=[2, 3]) / (x.shape[2] * x.shape[3])).eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 28, 28)]), tmp_path / "m.onnx", dynamic_axes={"input": {2: "h", 3: "w"}})
    assert result.report.passed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 3, 50), (1, 3, 64, 9)]:
        x = np.random.default_rng(0).uniform(-5, 5, size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model(flow.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, value", [("rtol", -1e-3), ("atol", -1.0), ("rtol", float("nan")), ("atol", "1e-3")])
def test_tolerances_must_be_finite_and_not_negative(tmp_path, name, value):
    with pytest.raises(flow2onnx.Flow2OnnxError, match=f"{name} must be a finite number >= 0"):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "m.onnx", **{name: value})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- careless arguments


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([flow.rand(2, 5)], r"OneFlow could not run Linear on the example inputs \[\(2, 5\) float32\] \(.*\); pass one tensor per argument of forward"),
        ([], r"OneFlow could not run Linear on the example inputs \[none\]"),
        ([flow.rand(2, 4), flow.rand(2, 4)], r"OneFlow could not run Linear on the example inputs \[\(2, 4\) float32, \(2, 4\) float32\]"),
        ((2, 4), r"example_inputs is the shape \(2, 4\), not a tensor: .* pass flow.rand\(2, 4\)"),
        ([(2, 4)], r"example_inputs\[0\] is the shape \(2, 4\), not a tensor"),
        (["x"], r"example_inputs\[0\] is a str, not a tensor"),
    ],
    ids=["wrong-shape", "empty", "too-many", "shape-tuple", "shape-in-list", "string"],
)
def test_example_inputs_the_model_rejects(tmp_path, inputs, message):
    with pytest.raises(flow2onnx.InvalidModelError, match=message):
        flow2onnx.export(flow.nn.Linear(4, 3), inputs, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_malformed_dynamic_axes_are_refused_before_any_work(tmp_path):
    with pytest.raises(flow2onnx.Flow2OnnxError, match="dynamic_axes maps input names to"):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "m.onnx", dynamic_axes={"input": "garbage"})
    assert os.listdir(tmp_path) == []


class ReluPlugin:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("relu", lambda ctx, op: ctx.make_node("Relu", [op.input("x")], [op.output("y")]), override=True)


@hookimpl
def flow2onnx_register_lowerings(register):  # this module, passed by its dotted name, is a plugin too
    register("relu", lambda ctx, op: ctx.make_node("Relu", [op.input("x")], [op.output("y")]), override=True)


class ReluMethods:
    """A plugin object: an instance whose methods are the hook implementations."""

    @hookimpl
    def flow2onnx_register_lowerings(self, register):
        register("relu", lambda ctx, op: ctx.make_node("Relu", [op.input("x")], [op.output("y")]), override=True)


RELU_INSTANCE = ReluMethods()


class NotAPlugin:
    def flow2onnx_register_lowerings(register):  # not marked with @hookimpl
        pass


@pytest.mark.parametrize(
    "plugins, message",
    [
        ([None], r"plugins\[0\] is None, not a plugin"),
        ([42], r"plugins\[0\] is 42, not a plugin"),
        (["no.such.module"], r"plugins\[0\] = 'no.such.module': cannot import that module"),
        ([NotAPlugin], r"plugins\[0\] \(NotAPlugin\) implements no flow2onnx hook: its flow2onnx_register_lowerings is not marked"),
        ([object()], r"plugins\[0\] \(object-0\) implements no flow2onnx hook"),
        ([ReluPlugin, ReluPlugin], r"plugin 'ReluPlugin' is passed to export twice"),
        ([RELU_INSTANCE, RELU_INSTANCE], r"'ReluMethods-0' \(passed to export\) and plugin 'ReluMethods-1' are the same module or object"),
    ],
    ids=["none", "int", "missing-module", "unmarked", "empty-object", "twice", "same-object-two-names"],
)
def test_plugins_that_are_not_plugins_are_refused(tmp_path, plugins, message):
    with pytest.raises(flow2onnx.PluginError, match=message):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "m.onnx", plugins=plugins)
    assert os.listdir(tmp_path) == []


def test_a_plugin_given_by_its_dotted_name_is_imported(tmp_path):
    result = export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "m.onnx", plugins=["tests.test_hostile_inputs"])
    assert result.lowered_by["relu"] == "tests.test_hostile_inputs" and result.report.passed


BROKEN_FACTORIES = '''
def raises():
    raise RuntimeError("the checkpoint is missing")

def needs(depth, width=2):
    return None
'''


@pytest.mark.parametrize(
    "target, message",
    [
        ("raises", "hostile_factories:raises() raised RuntimeError: the checkpoint is missing; fix the model's constructor"),
        ("needs", "hostile_factories:needs cannot be called without arguments (missing a required argument: 'depth')"),
    ],
)
def test_cli_factory_that_raises_or_needs_arguments(tmp_path, target, message):
    (tmp_path / "hostile_factories.py").write_text(BROKEN_FACTORIES)
    done = subprocess.run(
        [CLI, "export", f"hostile_factories:{target}", "--input-shape", "2,3", "-o", str(tmp_path / "m.onnx")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert one_error_line(done).startswith("flow2onnx: error: " + message)
    assert sorted(os.listdir(tmp_path)) == ["__pycache__", "hostile_factories.py"] or sorted(os.listdir(tmp_path)) == ["hostile_factories.py"]


def test_cli_module_that_fails_to_import(tmp_path):
    (tmp_path / "broken_module.py").write_text("import math\nraise ValueError('bad configuration')\n")
    done = subprocess.run([CLI, "export", "broken_module:build", "-o", str(tmp_path / "m.onnx")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "importing module 'broken_module' for 'broken_module:build' failed: ValueError: bad configuration" in one_error_line(done)


def test_cli_input_shape_too_large_for_memory():
    done = cli("export", "tests.models:tiny_cnn", "--input-shape", "100000,3,1024,1024", "-o", "/tmp/never.onnx")
    line = one_error_line(done)
    assert "--input-shape 100000,3,1024,1024 needs 1171.9 GiB" in line and "more than half of the" in line
    assert not os.path.exists("/tmp/never.onnx")


def test_cli_input_range_and_tolerances(tmp_path):
    done = cli("check", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "--input-range=-3,3", "--rtol", "1e-2", "--atol", "1e-3")
    assert done.returncode == 0, done.stderr
    assert "uniform in [-3, 3)" in done.stderr
    done = cli("check", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "--rtol", "-1")
    assert "rtol must be a finite number >= 0" in one_error_line(done)


# ---------------------------------------------------------------- post-passes that misbehave


def weights_to_float64(model):
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            array = numpy_helper.to_array(tensor).astype(np.float64)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return model


def delete_the_output(model):
    del model.graph.output[:]
    return model


def mutate_then_raise(model):
    del model.graph.node[:]  # on the model it was handed, which flow2onnx must not depend on
    raise RuntimeError("gave up half-way")


def returns_none(model):
    model.graph.name = "changed"


class MisbehavingPasses:
    @hookimpl
    def flow2onnx_register_post_passes(register):
        register("to-float64", weights_to_float64)
        register("delete-output", delete_the_output)
        register("mutate-then-raise", mutate_then_raise)
        register("returns-none", returns_none)


@pytest.mark.parametrize(
    "name, why",
    [
        ("to-float64", "failed: "),
        ("delete-output", "it changed the model's outputs from [('output', 'FLOAT')] to []"),
        ("mutate-then-raise", "failed: RuntimeError: gave up half-way"),
        ("returns-none", "it returned a NoneType, not an onnx.ModelProto"),
    ],
)
def test_a_misbehaving_post_pass_is_named_and_dropped_and_the_model_before_it_kept(tmp_path, name, why):
    model = flow.nn.Sequential(flow.nn.Linear(8, 8), flow.nn.ReLU()).eval()
    result = export_module(model, [(4, 8)], tmp_path / "m.onnx", plugins=[MisbehavingPasses], post_passes=["onnxoptimizer", name])
    assert result.post_passes == ["onnxoptimizer"] and result.report.passed
    warning = next(w for w in result.warnings if f"'{name}'" in w)
    assert why in warning and "the model from before it kept" in warning
    written = onnx.load(str(tmp_path / "m.onnx"))
    assert len(written.graph.node) > 0 and [o.name for o in written.graph.output] == ["output"]
    assert {t.data_type for t in written.graph.initializer} == {onnx.TensorProto.FLOAT}
    with pytest.raises(flow2onnx.Flow2OnnxError, match=f"post-pass '{name}' .*strict_post_passes is set"):
        export_module(model, [(4, 8)], tmp_path / "n.onnx", plugins=[MisbehavingPasses], post_passes=[name], strict_post_passes=True)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("capture", ["graph", "eager", "auto"])
@pytest.mark.parametrize("example", [lambda: flow.randn(0), lambda: np.zeros((2, 0, 3), np.float32)])
def test_an_empty_example_input_is_refused_before_oneflow_aborts(tmp_path, capture, example):
    """OneFlow 0.9 aborts the process (SIGABRT) on a model compiled or captured on an empty tensor."""
    model = Lambda(lambda self, x: x * 2).eval()
    with pytest.raises(flow2onnx.InvalidModelError, match=r"example_inputs\[0\] has shape \((0,|2, 0, 3)\), with no elements.*dynamic_axes"):
        flow2onnx.export(model, [example()], tmp_path / "m.onnx", capture=capture)
    assert os.listdir(tmp_path) == []
    assert export_module(model, [(2, 3)], tmp_path / "m.onnx").report.verified  # the process lives on


@pytest.mark.parametrize("options", [{}, {"dynamic_batch": True, "verify": False}], ids=["verified", "dynamic-unverified"])
def test_an_op_whose_cpu_kernel_aborts_is_refused_before_oneflow_runs_it(tmp_path, options):
    """OneFlow 0.9's CPU layer_norm kernel is a TODO that aborts the process: verification and the
    trace at other batch sizes would run it, so the export stops first, naming the op and the fix."""
    model = Lambda(lambda self, x: flow._C.layer_norm(x, 1, 1, 1e-5)).eval()
    with pytest.raises(flow2onnx.InvalidModelError, match=r"cannot run layer_norm \(1x\) on the CPU.*aborts the process.*nn\.LayerNorm"):
        export_module(model, [(4, 6)], tmp_path / "m.onnx", **options)
    assert os.listdir(tmp_path) == []
    # Eager capture runs every call: refused at the call, before it runs.
    with pytest.raises(flow2onnx.InvalidModelError, match=r"cannot run layer_norm \(called as flow\._C\.layer_norm\) on the CPU.*capture='graph'"):
        export_module(model, [(4, 6)], tmp_path / "m.onnx", capture="eager", **options)
    assert os.listdir(tmp_path) == []
    # Static and unverified, nothing runs it: the file is written.
    assert export_module(model, [(4, 6)], tmp_path / "m.onnx", verify=False).op_types == {"layer_norm": 1}


class _SmallInputConv(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(4, 8, 2, groups=4)

    def forward(self, x):
        return self.conv(flow.nn.functional.softplus(x))


def test_a_convolution_with_no_output_is_refused_before_oneflow_aborts_on_it(tmp_path):
    # OneFlow 0.9's convolution kernels abort the process (SIGABRT) on an empty output: a kernel of
    # 2 on a 1 x 1 input (found by the fuzzer, 6:3000). The export says so; this process lives on.
    with pytest.raises(flow2onnx.InvalidModelError, match=r"aborts the process running a convolution on an empty tensor.*conv2d op .* makes \[1, 8, 0, 0\]"):
        flow2onnx.export(_SmallInputConv().eval(), [flow.randn(1, 4, 1, 1)], tmp_path / "m.onnx", dynamic_batch=True)
    assert list(tmp_path.iterdir()) == []


def test_a_run_at_sizes_where_a_convolution_has_no_output_is_left_out_and_said(tmp_path):
    # Every dynamic axis at 1 leaves the convolution without an output row: that run is not made.
    result = flow2onnx.export(_SmallInputConv().eval(), [flow.randn(6, 4, 3, 8)], tmp_path / "m.onnx", dynamic_axes={"input": {0: "a", 2: "c"}})
    assert result.report.verified
    assert any("every dynamic axis at 1" in w and "OneFlow 0.9 would abort the process there (conv2d op" in w for w in result.warnings)
