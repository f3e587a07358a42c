"""The export pipeline's shape: options checked once, a result built once, a library that logs and
never prints, and callers (the CLI, the tutorial API) that show the report."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pathlib
import re

import numpy as np
import onnxruntime as ort
import pytest

import flow2onnx
from flow2onnx.cli.main import _export_options, build_parser
from flow2onnx.exporter.options import ExportOptions, flags
from flow2onnx.lowering.registry import DEFAULT_OPSET

from .helpers import Lambda, export_module, flow, relu_graph
from .test_errors import WrongRelu
from .test_plugin_control import Breaking


def relu_model():
    return Lambda(lambda self, x: flow.relu(x - 0.5))


def wrote_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flow2onnx" and r.getMessage().startswith("wrote ")]


# ---- options ----


@pytest.mark.parametrize(
    "options, message",
    [
        ({"opset": 99}, "opset 99 is not supported"),
        ({"opset": True}, "opset True is not supported"),
        ({"bundle_dir": "bundle", "verify": False}, "bundle_dir needs verify=True"),
        ({"post_passes": "onnxsim"}, r"post_passes takes a list of names, e.g. post_passes=\['onnxsim'\]"),
        ({"disable_plugins": "flow2onnx-conv"}, "disable_plugins takes a list of names"),
        ({"verify_batch_sizes": [2, 0]}, "verify_batch_sizes must be positive integers"),
        ({"input_range": (1.0, -1.0)}, r"input_range must be \(low, high\) with finite low < high"),
        ({"dynamic_axes": {"input": [0]}}, "dynamic_axes maps input names to {axis: symbol}"),
    ],
)
def test_options_are_checked_before_any_work(tmp_path, options, message):
    # Not a model at all: an option checked any later would fail on the model, or make the folder.
    with pytest.raises(flow2onnx.Flow2OnnxError, match=message):
        flow2onnx.export(object(), None, tmp_path / "new" / "m.onnx", **options)
    assert not (tmp_path / "new").exists()


def test_options_are_frozen_and_normalised_once():
    axes = {"input": {0: "batch"}}
    options = ExportOptions(path=pathlib.Path("m.onnx"), dynamic_axes=axes, post_passes=["onnxsim"], verify_batch_sizes=[1, 2])
    assert options.path == "m.onnx" and options.opset == DEFAULT_OPSET
    assert options.post_passes == ("onnxsim",) and options.verify_batch_sizes == (1, 2) and options.only_plugins is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.opset = 11
    with pytest.raises(TypeError):
        options.dynamic_axes["input"][2] = "height"
    axes["input"][2] = "height"  # the caller's dict stays the caller's
    assert dict(options.dynamic_axes["input"]) == {0: "batch"}


def test_export_keywords_and_the_options_are_the_same_set_with_the_same_defaults():
    parameters = inspect.signature(flow2onnx.export).parameters
    keywords = {name: p.default for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    fields = {f.name: f.default for f in dataclasses.fields(ExportOptions)}
    assert list(parameters)[:3] == ["model", "example_inputs", "path"]
    assert {**keywords, "path": parameters["path"].default} == fields


def test_every_option_is_documented_once_in_exports_docstring():
    documented = re.findall(r"^:param (\w+):", flow2onnx.export.__doc__, flags=re.M)
    assert documented == list(inspect.signature(flow2onnx.export).parameters)
    assert all(f.metadata["summary"] for f in dataclasses.fields(ExportOptions))


def test_the_command_lines_flags_come_from_the_declaration():
    # Each option with a flag is on `flow2onnx export`, set from the parsed value; `check` has
    # those that do not concern the kept file.
    parser = build_parser()
    export_args = parser.parse_args(["export", "m:f", "--opset", "13", "--no-verify", "--dynamic-axes", "input=0:n,2:h",
                                     "--post-pass", "onnxsim", "--only-plugins", "a, b", "--capture", "eager"])
    options = _export_options(export_args)
    assert {name for name, _, _ in flags()} <= set(options)
    assert options["opset"] == 13 and options["verify"] is False and options["dynamic_axes"] == {"input": {0: "n", 2: "h"}}
    assert options["post_passes"] == ("onnxsim",) and options["only_plugins"] == ("a", "b") and options["capture"] == "eager"
    assert options["external_data"] is None and options["bundle_dir"] is None
    ExportOptions(**options)  # what the CLI sets is a valid set of options
    check_options = _export_options(parser.parse_args(["check", "m:f"]))
    assert "verify" not in check_options and "bundle_dir" not in check_options and check_options["capture"] == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["check", "m:f", "--no-verify"])


def test_an_unknown_option_names_the_nearest(tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'opsett'; did you mean 'opset'\?"):
        flow2onnx.export(None, None, tmp_path / "m.onnx", opsett=13)
    assert os.listdir(tmp_path) == []


# ---- the result ----


def test_the_result_is_built_once_from_the_values_of_the_steps(onnx_path):
    result = export_module(relu_model(), [(2, 3)], onnx_path, dynamic_batch=True, post_passes=["onnxoptimizer"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.post_passes = []
    assert result.path == str(onnx_path) and result.opset == DEFAULT_OPSET
    assert result.input_names == ["input"] and result.output_names == ["output"]
    assert result.dynamic_axes == {"input": {0: "batch"}} and not result.external_data
    assert result.post_passes == ["onnxoptimizer"] and result.warnings == []
    assert result.report.passed and result.report.batch_sizes == [1, 2, 7]
    assert list(result.timings) == ["read_graph", "convert", "dynamic_axes_check", "post_passes", "write", "check", "verify"]
    assert all(seconds >= 0 for seconds in result.timings.values())


def test_a_post_pass_dropped_after_verification_is_absent_from_the_result(onnx_path, caplog, monkeypatch):
    import flow2onnx.exporter.lower.stage

    caplog.set_level(logging.INFO, logger="flow2onnx")
    conversions = []
    real_convert = flow2onnx.exporter.lower.stage.convert

    def counted_convert(*args, **kwargs):
        conversions.append(args[0].name)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(flow2onnx.exporter.lower.stage, "convert", counted_convert)
    result = export_module(relu_model(), [(4, 8)], onnx_path, plugins=[Breaking], post_passes=["onnxoptimizer", "break-relu"])
    assert result.post_passes == ["onnxoptimizer"] and result.report.passed
    # The model from before the passes is rebuilt from the lowered model, not converted again.
    assert conversions == ["Lambda"]
    assert len(result.warnings) == 1 and "'break-relu'" in result.warnings[0]
    # Five files went through the staging folder; one was written, once, where it was asked for.
    assert wrote_records(caplog) == [f"wrote {onnx_path} ({os.path.getsize(onnx_path) / 1e6:.1f} MB)"]
    assert caplog.records[-1].getMessage().startswith("wrote ")


# ---- the library logs, its callers print ----


def test_the_library_prints_nothing_on_success(onnx_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="flow2onnx")
    result = export_module(relu_model(), [(2, 3)], onnx_path, print_outlier=True, bisect=True)
    assert result.report.passed and result.bisected and result.divergence is None
    assert capsys.readouterr().out == ""
    # print_outlier, in the library, logs the report with the worst elements.
    assert any(r.getMessage().startswith("verification report:\nverification with onnxruntime") for r in caplog.records)
    assert len(wrote_records(caplog)) == 1


def test_the_library_prints_nothing_on_a_mismatch_and_logs_no_write(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="flow2onnx")
    with pytest.raises(flow2onnx.VerificationError) as caught:
        export_module(relu_model(), [(4, 8)], tmp_path / "m.onnx", plugins=[WrongRelu])
    assert capsys.readouterr().out == ""
    assert wrote_records(caplog) == [] and os.listdir(tmp_path) == []
    error = caught.value
    assert "differ from OneFlow's beyond tolerance (4 of 4 comparisons fail; the worst: output 'output'" in str(error)
    assert "nothing was written" in str(error) and "\n" not in str(error)
    assert error.divergence is not None and error.divergence.op_type == "relu"
    assert f"The first divergence is at relu op {error.divergence.op_name!r}, lowered by plugin 'WrongRelu'." in str(error)


def compiled(graph, *inputs):
    graph._compile(*inputs)
    return graph


def test_the_tutorial_api_prints_the_report_once(tmp_path, capsys):
    from flow2onnx import convert_to_onnx_and_check

    result = convert_to_onnx_and_check(compiled(relu_graph(), flow.rand(2, 3)), onnx_model_path=str(tmp_path), print_outlier=True)
    out = capsys.readouterr().out
    assert result.report.passed and out.count("verification with onnxruntime") == 1 and "all outputs match" in out


def test_the_tutorial_api_prints_the_report_on_a_mismatch(tmp_path, capsys):
    from flow2onnx import convert_to_onnx_and_check

    class BatchCentred(flow.nn.Graph):
        """Each sample minus the batch's mean. ``build`` reads the graph's own name, so it cannot run
        outside the graph; OneFlow's compiled graph only runs the example's batch, so verification at
        other batch sizes runs it on chunks, whose means differ from the batch's."""

        def build(self, x):
            return x - x.mean(0, keepdim=True) if self.name else x

    graph = compiled(BatchCentred(), flow.rand(2, 3))
    with pytest.raises(flow2onnx.VerificationError) as caught:
        convert_to_onnx_and_check(graph, onnx_model_path=str(tmp_path), dynamic_batch_size=True)
    out = capsys.readouterr().out
    assert "MISMATCH: some outputs are out of tolerance" in out and out.strip() == caught.value.report.to_text()
    assert os.listdir(tmp_path) == []


def test_a_compiled_graph_is_verified_by_running_its_build_eagerly_at_every_batch(tmp_path):
    """The batch-centred graph again, with a plain ``build``: it runs eagerly over the graph's own
    modules at each verification batch, so the dynamic batch verifies (no chunks, no launches of the
    compiled job, which OneFlow 0.9 can crash when repeated)."""
    from flow2onnx import convert_to_onnx_and_check

    class BatchCentred(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.linear = flow.nn.Linear(3, 4)

        def scale(self):
            return 2.0

        def build(self, x):
            y = self.linear(x) * self.scale()
            return y - y.mean(0, keepdim=True)

    graph = compiled(BatchCentred(), flow.rand(2, 3))
    convert_to_onnx_and_check(graph, onnx_model_path=str(tmp_path), dynamic_batch_size=True)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((9, 3)).astype(np.float32)
    y = graph.linear.to(flow.nn.Module)(flow.tensor(x)).numpy() * 2.0
    np.testing.assert_allclose(session.run(None, {"input": x})[0], y - y.mean(0, keepdims=True), rtol=1e-4, atol=1e-5)


# ---- Python's cyclic collector ----


def collector_state():
    import gc

    return gc.isenabled(), gc.get_freeze_count()


def test_an_export_leaves_the_collector_as_it_found_it(tmp_path):
    """The export turns the collector off and hides what it made from it (gc.freeze) while it works:
    after it, verified or failed, the collector is on and nothing stays frozen; what the export
    hid is collectable again."""
    import gc

    assert collector_state() == (True, 0)
    export_module(relu_model(), [(2, 3)], tmp_path / "m.onnx")
    assert collector_state() == (True, 0)
    with pytest.raises(flow2onnx.VerificationError):
        export_module(relu_model(), [(2, 3)], tmp_path / "wrong.onnx", plugins=[WrongRelu])
    assert collector_state() == (True, 0)
    assert not os.path.exists(tmp_path / "wrong.onnx")
    gc.disable()
    try:
        export_module(relu_model(), [(2, 3)], tmp_path / "off.onnx", verify=False)
        assert collector_state() == (False, 0)  # a collector turned off stays off
    finally:
        gc.enable()


def test_an_export_keeps_objects_the_process_froze_frozen(tmp_path, monkeypatch):
    """A process that froze its objects (gc.freeze before forking workers) keeps them frozen: the export
    then neither freezes nor unfreezes anything (unfreezing would undo the process's own freeze)."""
    import gc

    calls = []
    for name in ("freeze", "unfreeze"):
        monkeypatch.setattr(gc, name, lambda real=getattr(gc, name), name=name: (calls.append(name), real())[1])
    export_module(relu_model(), [(2, 3)], tmp_path / "alone.onnx")
    assert calls[-1] == "unfreeze" and "freeze" in calls and collector_state() == (True, 0)
    calls.clear()
    gc.freeze()
    try:
        calls.clear()
        export_module(relu_model(), [(2, 3)], tmp_path / "m.onnx")
        assert calls == [] and gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()


# ---- outputs that cannot simply be renamed ----


class AwkwardOutputs(flow.nn.Module):
    """Outputs that the converter cannot name by renaming the tensor that feeds them: the input itself,
    one tensor twice, a weight, and a LayerNorm's output, which the layer-norm pattern claims as a
    group and renames to its stable name first."""

    def __init__(self):
        super().__init__()
        self.norm = flow.nn.LayerNorm(5)
        self.scale = flow.nn.Parameter(flow.randn(2, 5))

    def forward(self, x):
        y = self.norm(x) * self.scale
        return x, y, y, self.scale, self.norm(x - 1.0)


def test_outputs_that_are_inputs_weights_repeats_or_group_outputs_keep_their_values(tmp_path):
    """Verified against OneFlow (every output), and read back: the names, the producers, the values."""
    import onnx

    module = AwkwardOutputs()
    result = export_module(module, [(2, 5)], tmp_path / "m.onnx")
    assert result.report.passed and result.patterns.get("layer-norm")
    assert result.output_names == ["output_0", "output_1", "output_2", "output_3", "output_4"]
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [o.name for o in model.graph.output] == result.output_names
    producers = {name: node for node in model.graph.node for name in node.output}
    # The input, the repeated tensor and the weight go out through an Identity each; the others are renamed.
    assert [producers[f"output_{k}"].op_type for k in (0, 2, 3)] == ["Identity"] * 3
    assert producers["output_4"].op_type == "LayerNormalization" and producers["output_1"].op_type == "Mul"
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32) * 100
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    want = [t.numpy() for t in module(flow.tensor(x))]
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[3], module.scale.numpy())
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
