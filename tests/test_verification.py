"""Verification that tells the truth: per-dtype tolerances, inputs that fit, reports, repro bundles."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

import flow2onnx
from flow2onnx.exporter.capture.graphs import read_graph, wrap_module
from flow2onnx.exporter.plan.draws import draw_inputs, index_bounds
from flow2onnx.exporter.verify.comparison import compare, tolerance_for

from .helpers import Lambda, export_module, flow, random_inputs
from .models import tiny_cnn
from .test_errors import WrongRelu

CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tolerances_follow_the_dtype():
    assert tolerance_for(np.float32) == (1e-3, 1e-4)
    assert tolerance_for(np.float64) == (1e-6, 1e-7)
    assert tolerance_for(np.float16, rtol=1e-5, atol=1e-6) == (1e-2, 1e-2)  # never tighter than float16 allows
    assert tolerance_for(np.int64) == (0.0, 0.0) and tolerance_for(np.bool_) == (0.0, 0.0)
    assert tolerance_for(np.float32, rtol=1e-5) == (1e-5, 1e-4)


def test_integer_and_boolean_outputs_must_match_exactly():
    assert not compare("i", np.array([1, 2, 3]), np.array([1, 2, 4])).passed
    assert compare("i", np.array([1, 2, 3]), np.array([1, 2, 3])).passed
    assert not compare("b", np.array([True, False]), np.array([True, True])).passed
    assert compare("f", np.float32([1.0, 2.0]), np.float32([1.0, 2.00001])).passed


def test_shape_mismatch_fails():
    result = compare("y", np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert not result.passed and result.mismatch_fraction == 1.0


def test_integer_inputs_used_as_indices_stay_in_range():
    class Lookup(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = flow.nn.Embedding(7, 3)

        def forward(self, ids, mask):
            return self.table(ids) * mask.unsqueeze(-1)

    graph = read_graph(wrap_module(Lookup().eval(), [flow.tensor(np.zeros((2, 5), np.int64)), flow.ones(2, 5)]))
    bounds = index_bounds(graph)
    assert bounds == {"input_0": 7}
    ids, mask = draw_inputs(graph.inputs, batch_size=64, bounds=bounds)
    assert ids.dtype == np.int64 and ids.shape == (64, 5) and ids.min() >= 0 and ids.max() == 6
    assert mask.dtype == np.float32


def test_an_index_input_reshaped_on_its_way_to_a_gather_stays_in_range(onnx_path):
    # x[i] is expand_dims(i) then gather_nd: drawn in [0, 10) on a 4-row x, OneFlow 0.9 aborted the
    # process (SIGABRT, measured) on the first random verification run.
    graph = read_graph(wrap_module(Lambda(lambda self, x, i: (x[i], x[:, i.reshape(-1)])).eval(), [flow.randn(4, 6), flow.tensor([1, 3])]))
    assert index_bounds(graph) == {"input_1": 4}
    code = (
        "import oneflow as flow, flow2onnx\n"
        "from tests.helpers import Lambda\n"
        "r = flow2onnx.export(Lambda(lambda self, x, i: x[i] * 2).eval(), [flow.randn(4, 8), flow.tensor([1, 3])], {path!r})\n"
        "print('verified' if r.report.verified else 'not verified')\n"
    )
    done = subprocess.run([sys.executable, "-c", code.format(path=str(onnx_path))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("verified") and "not" not in done.stdout, done.stderr[-2000:]


def test_boolean_inputs_are_masks():
    from flow2onnx.lowering.graph import TensorInfo

    (mask,) = draw_inputs([TensorInfo("mask", (4, 100), np.dtype(np.bool_))], batch_size=None)
    assert mask.dtype == np.bool_ and 0 < mask.mean() < 1


def test_report_formats(onnx_path):
    result = export_module(tiny_cnn(), [(2, 3, 8, 8)], onnx_path, dynamic_batch=True)
    data = json.loads(result.report.to_json())
    assert data["passed"] is True and data["verifier"] == "onnxruntime"
    assert [c["batch_size"] for c in data["comparisons"]] == [2, 1, 7, 2]  # the edge-value run is at the example batch
    assert {c["dtype"] for c in data["comparisons"]} == {"float32"}
    markdown = result.report.to_markdown()
    assert markdown.splitlines()[2].startswith("| output | inputs | batch | shape | dtype |") and markdown.count("| ok |") == 4
    assert [c["inputs"] for c in data["comparisons"]] == ["example", "signed", "magnitudes", "finite edges"]
    text = result.report.to_text()
    assert "max abs diff" in text and text.endswith("all outputs match")


def test_cli_writes_the_report_file(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [CLI, "export", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "-o", str(tmp_path / "m.onnx"), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["passed"] is True


def rerun_bundle(directory):
    """What anyone can do with a bundle: ONNX Runtime alone, on the stored inputs, against the stored outputs."""
    session = onnxruntime.InferenceSession(os.path.join(directory, "model.onnx"), providers=["CPUExecutionProvider"])
    data = os.path.join(directory, "test_data_set_0")
    feeds, expected = {}, []
    for name in sorted(os.listdir(data)):
        tensor = onnx.TensorProto()
        with open(os.path.join(data, name), "rb") as file:
            tensor.ParseFromString(file.read())
        if name.startswith("input_"):
            feeds[tensor.name] = numpy_helper.to_array(tensor)
        else:
            expected.append(numpy_helper.to_array(tensor))
    return session.run(None, feeds), expected


def test_repro_bundle_reruns_with_onnxruntime_alone(tmp_path):
    model = Lambda(lambda self, x, y: (flow.relu(x) + y, x * 2), )
    result = export_module(model, [(3, 4), (3, 4)], tmp_path / "m.onnx", bundle_dir=tmp_path / "bundle")
    assert result.bundle_dir == str(tmp_path / "bundle")
    assert sorted(os.listdir(tmp_path / "bundle" / "test_data_set_0")) == ["input_0.pb", "input_1.pb", "output_0.pb", "output_1.pb"]
    actual, expected = rerun_bundle(tmp_path / "bundle")
    assert len(actual) == len(expected) == 2
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_repro_bundle_of_a_failing_export_shows_the_mismatch(tmp_path):
    model = Lambda(lambda self, x: flow.relu(x - 0.5))
    with pytest.raises(flow2onnx.VerificationError):
        export_module(model, [(4, 8)], tmp_path / "m.onnx", plugins=[WrongRelu], bundle_dir=tmp_path / "bundle")
    assert not (tmp_path / "m.onnx").exists()
    (actual,), (expected,) = rerun_bundle(tmp_path / "bundle")
    assert np.abs(actual - expected).max() > 0.1  # the bundle reproduces the failure


def test_bundle_needs_verification(tmp_path):
    with pytest.raises(flow2onnx.Flow2OnnxError, match="bundle_dir needs verify=True"):
        flow2onnx.export(flow.nn.ReLU(), random_inputs([(2, 3)]), tmp_path / "m.onnx", verify=False, bundle_dir=tmp_path / "b")


class CountingSessions:
    """A verifier whose sessions are counted, and watched after the export returns."""

    opened: list = []
    calls: list = []

    @staticmethod
    @flow2onnx.hookimpl
    def flow2onnx_register_verifiers(register):
        from flow2onnx.plugins.onnxruntime_verifier import open_onnxruntime

        class Session:
            def __init__(self, path, libraries):
                self.run_model = open_onnxruntime(path, libraries)

            def __call__(self, feeds):
                CountingSessions.calls.append(next(iter(feeds.values())).shape[0])
                return self.run_model(feeds)

        def opened(path, libraries):
            session = Session(path, libraries)
            CountingSessions.opened.append(weakref.ref(session))
            return session

        def run_once(path, feeds, libraries):
            raise AssertionError("the host opens a session instead of calling run once per draw")

        register("counting", run_once, session=opened)


def test_one_session_serves_every_run_and_goes_with_the_export(tmp_path):
    CountingSessions.opened.clear()
    CountingSessions.calls.clear()
    result = export_module(tiny_cnn(), [(2, 3, 8, 8)], tmp_path / "m.onnx", dynamic_batch=True, plugins=[CountingSessions], verifier="counting")
    assert result.report.passed and sorted(CountingSessions.calls) == [1, 2, 2, 7]  # the edge-value run at the example batch, 2
    assert len(CountingSessions.opened) == 1
    gc.collect()
    assert CountingSessions.opened[0]() is None, "the verifier's session outlived the export"


def test_no_onnxruntime_session_outlives_the_export(tmp_path):
    export_module(tiny_cnn(), [(2, 3, 8, 8)], tmp_path / "m.onnx", dynamic_batch=True)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, onnxruntime.InferenceSession)]
