"""Errors a user can cause: one clear message naming the cause and the fix, and nothing left on disk."""

from __future__ import annotations

import os
import warnings

import pytest

import flow2onnx
from flow2onnx import hookimpl

from .helpers import Lambda, export_module, flow, random_inputs, relu_graph
from .models import with_unsupported_ops


def leftovers(directory):
    return sorted(os.listdir(directory))


def test_unsupported_ops_are_listed_together_and_nothing_is_written(tmp_path):
    with pytest.raises(flow2onnx.UnsupportedOpsError) as caught:
        export_module(with_unsupported_ops(), [(2, 3)], tmp_path / "model.onnx")
    error = caught.value
    assert set(error.missing) == {"erfc", "lgamma"}
    assert error.missing["erfc"][0] == 2 and error.missing["lgamma"][0] == 1
    message = str(error)
    assert "erfc: 2 ops, e.g. " in message and "lgamma: 1 op, e.g. " in message
    assert error.missing["erfc"][1] in message  # an example op name
    assert "flow2onnx_register_lowerings" in message and "Nothing was written" in message
    assert leftovers(tmp_path) == []


def test_unsupported_op_names_the_opset_that_has_a_lowering(tmp_path):
    """A lowering that exists only for newer opsets is pointed out with the opset to use."""

    class NewOnly:
        @hookimpl
        def flow2onnx_register_lowerings(register):
            register("lgamma", lambda ctx, op: None, since_opset=13)

    model = Lambda(lambda self, x: flow.lgamma(x * 0.5))
    with pytest.raises(flow2onnx.UnsupportedOpsError, match=r"lgamma: 1 op.*a lowering exists for opset 13\.\.; export with opset 13"):
        export_module(model, [(2, 3)], tmp_path / "m.onnx", opset=11, plugins=[NewOnly])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("opset", [8, flow2onnx.max_opset() + 1, "17"])
def test_opset_out_of_range(opset, tmp_path):
    with pytest.raises(flow2onnx.OpsetError, match=rf"opsets {flow2onnx.MIN_OPSET} to {flow2onnx.max_opset()}"):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "model.onnx", opset=opset)
    assert leftovers(tmp_path) == []


def test_unwritable_output_path_fails_before_conversion(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(flow2onnx.OutputPathError, match=r"cannot write the model to .*a-file/model.onnx.*writable directory"):
        export_module(flow.nn.ReLU(), [(2, 3)], blocker / "model.onnx")


def test_directory_path_gets_model_onnx(tmp_path):
    result = export_module(flow.nn.ReLU(), [(2, 3)], tmp_path)
    assert result.path == str(tmp_path / "model.onnx")
    assert leftovers(tmp_path) == ["model.onnx"]


def test_uncompiled_graph_without_inputs():
    with pytest.raises(flow2onnx.InvalidModelError, match=r"not compiled: pass example_inputs, or call graph._compile"):
        flow2onnx.export(relu_graph(), path="unused.onnx")


def test_uncompiled_graph_is_compiled_with_example_inputs(onnx_path):
    assert flow2onnx.export(relu_graph(), random_inputs([(2, 3)]), onnx_path).report.passed


def test_module_without_example_inputs():
    with pytest.raises(flow2onnx.InvalidModelError, match="needs example_inputs"):
        flow2onnx.export(flow.nn.ReLU(), path="unused.onnx")


def test_not_a_model():
    with pytest.raises(flow2onnx.InvalidModelError, match=r"cannot export a builtins.int: pass a oneflow.nn.Graph"):
        flow2onnx.export(42, path="unused.onnx")


def test_training_module_is_put_in_eval_mode_with_a_warning(onnx_path):
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 4, 3), flow.nn.BatchNorm2d(4), flow.nn.Dropout(0.5))
    model.train()
    with pytest.warns(UserWarning, match="was in training mode; flow2onnx switched it to eval mode"):
        result = flow2onnx.export(model, random_inputs([(2, 3, 6, 6)]), onnx_path)
    assert not model.training
    assert result.report.passed


def test_eval_module_gives_no_warning(onnx_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow2onnx.export(flow.nn.ReLU().eval(), random_inputs([(2, 3)]), onnx_path)


class WrongRelu:
    """Lowers relu to the identity from opset 12 on, overriding the built-in one: wrong numbers."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("relu", lambda ctx, op: ctx.make_node("Identity", [op.input("x")], [op.output("y")]), since_opset=12, override=True)


def test_verification_failure_raises_with_report_and_writes_nothing(tmp_path, capsys):
    model = Lambda(lambda self, x: flow.relu(x - 0.5))
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's beyond tolerance") as caught:
        export_module(model, [(4, 8)], tmp_path / "model.onnx", plugins=[WrongRelu])
    assert not caught.value.report.passed and "FAILED" in caught.value.report.to_text()
    assert capsys.readouterr().out == ""  # the library prints nothing; the CLI and the tutorial API render the report
    assert leftovers(tmp_path) == []
    # The override does not apply below its since_opset: the built-in lowering is used there.
    assert export_module(model, [(4, 8)], tmp_path / "model.onnx", opset=11, plugins=[WrongRelu]).report.passed


class RaisingLowering:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        def lower(ctx, op):
            raise ValueError("this lowering is broken")

        register("lgamma", lower)


def test_lowering_that_raises_names_op_and_plugin(tmp_path):
    model = Lambda(lambda self, x: flow.lgamma(x * 0.5))
    with pytest.raises(flow2onnx.LoweringError, match=r"cannot lower lgamma op '.*lgamma.*' \(lowering from plugin 'RaisingLowering' \(passed to export\)\): ValueError: this lowering is broken"):
        export_module(model, [(2, 3)], tmp_path / "m.onnx", plugins=[RaisingLowering])
    assert leftovers(tmp_path) == []


class LazyLowering:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("lgamma", lambda ctx, op: None)


def test_lowering_that_forgets_its_output_is_named(tmp_path):
    model = Lambda(lambda self, x: flow.lgamma(x * 0.5) * 2)
    with pytest.raises(flow2onnx.LoweringError, match=r"lgamma op .*LazyLowering.*did not produce output"):
        export_module(model, [(2, 3)], tmp_path / "m.onnx", plugins=[LazyLowering])


class Interrupting:
    @hookimpl
    def flow2onnx_register_post_passes(register):
        def interrupt(model):
            raise KeyboardInterrupt

        register("interrupt", interrupt)

    @hookimpl
    def flow2onnx_register_verifiers(register):
        def interrupt(model_path, feeds, custom_op_libraries):
            assert os.path.getsize(model_path) > 0  # the model was written, in its staging place
            raise KeyboardInterrupt

        register("interrupt", interrupt)


def test_interrupted_export_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "model.onnx", plugins=[Interrupting], post_passes=["interrupt"])
    assert leftovers(tmp_path) == []
    # Interrupted after the file was written (during verification): still nothing in place.
    with pytest.raises(KeyboardInterrupt):
        export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "model.onnx", plugins=[Interrupting], verifier="interrupt")
    assert leftovers(tmp_path) == []


def test_existing_file_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(flow2onnx.UnsupportedOpsError):
        export_module(with_unsupported_ops(), [(2, 3)], path)
    assert path.read_bytes() == b"previous model"
    export_module(flow.nn.ReLU(), [(2, 3)], path)
    assert path.read_bytes() != b"previous model"
    assert leftovers(tmp_path) == ["model.onnx"]


def test_dynamic_batch_needs_a_common_batch_dimension(tmp_path):
    model = Lambda(lambda self, x, y: x + y)
    with pytest.raises(flow2onnx.InvalidModelError, match="dynamic_batch needs every input to carry the batch on dim 0"):
        export_module(model, [(2, 3), (3,)], tmp_path / "m.onnx", dynamic_batch=True)


def test_an_op_that_cannot_reach_an_old_opset_is_listed_with_the_lowest_that_works(tmp_path):
    # Convolutions and ReLU reach opset 9; ONNX's Resize only came at 10, in a form without the
    # coordinate modes OneFlow's upsampling needs, so the upsample lowering starts at 11.
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 4, 3), flow.nn.ReLU(), flow.nn.Upsample(scale_factor=2.0, mode="bilinear")).eval()
    with pytest.raises(flow2onnx.UnsupportedOpsError) as caught:
        export_module(model, [(1, 3, 8, 8)], tmp_path / "model.onnx", opset=9)
    message = str(caught.value)
    assert "lowers to ONNX at opset 9" in message and "upsample_bilinear_2d: 1 op" in message
    assert "a lowering exists for opset 11..; export with opset 11" in message
    assert "conv2d" not in message and "relu" not in message
    assert leftovers(tmp_path) == []


def test_a_missing_kernel_is_named_with_its_device_and_dtypes():
    """OneFlow's "Cannot find the kernel" error, as a graph build raises it (text from OneFlow 0.9),
    becomes the op type, device and dtypes that the message to the user names."""
    from flow2onnx.exporter.capture.graphs import _missing_kernel

    text = (
        "Cannot find the kernel matching Current OperatorConf.  The Info of OperatorConf are \n"
        " op_name: model-as_strided-1\n op_type_name: as_strided\n DeviceType_Name: kCPU\n"
        " DataType_Name of input_0: kFloat16\n DataType_Name of output_0: kFloat16"
    )
    assert _missing_kernel(text) == "as_strided CPU float16"
    assert _missing_kernel("The size of tensor a (576) must match the size of tensor b (196)") is None
