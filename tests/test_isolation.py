"""Exports in a worker process: what they produce comes back intact, and Ctrl-C cleans up there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import flow2onnx
from flow2onnx import hookimpl

from .helpers import flow, random_inputs
from .models import tiny_cnn
from .test_errors import WrongRelu, leftovers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ShiftedRelu(flow.nn.Module):
    def forward(self, x):
        return flow.relu(x - 0.5)


class Sleepy:
    """A verifier that says where it runs, then waits to be interrupted."""

    @hookimpl
    def flow2onnx_register_verifiers(register):
        def sleep(model_path, feeds, custom_op_libraries):
            with open(os.environ["FLOW2ONNX_TEST_MARKER"], "w") as marker:
                marker.write(str(os.getpid()))
            time.sleep(120)

        register("sleepy", sleep)


def test_result_and_warnings_come_back(tmp_path):
    model = tiny_cnn().train()
    with pytest.warns(UserWarning, match="was in training mode"):
        result = flow2onnx.export(model, random_inputs([(2, 3, 8, 8)]), str(tmp_path / "m.onnx"), dynamic_batch=True, isolate=True)
    assert result.report.passed and result.report.batch_sizes == [1, 2, 7]
    assert os.path.isfile(result.path) and leftovers(tmp_path) == ["m.onnx"]


def test_a_function_building_the_model_runs_in_the_worker(tmp_path):
    result = flow2onnx.export(tiny_cnn, random_inputs([(1, 3, 8, 8)]), str(tmp_path / "m.onnx"), isolate=True)
    assert result.report.passed


def test_errors_come_back_with_their_details(tmp_path):
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(ShiftedRelu().eval(), random_inputs([(4, 8)]), str(tmp_path / "m.onnx"), plugins=[WrongRelu], isolate=True)
    assert not caught.value.report.passed and "FAILED" in caught.value.report.to_text()
    assert leftovers(tmp_path) == []


def test_a_compiled_graph_cannot_be_isolated(tmp_path):
    from flow2onnx.exporter.capture.graphs import wrap_module

    graph = wrap_module(tiny_cnn(), random_inputs([(1, 3, 8, 8)]))
    with pytest.raises(flow2onnx.InvalidModelError, match="cannot move the nn.Graph"):
        flow2onnx.export(graph, None, str(tmp_path / "m.onnx"), isolate=True)


SCRIPT = """
import sys
import numpy as np
import flow2onnx
from tests.test_isolation import ShiftedRelu, Sleepy
try:
    flow2onnx.export(ShiftedRelu().eval(), [np.zeros((2, 3), np.float32)], sys.argv[1], plugins=[Sleepy], verifier="sleepy", isolate=True)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_ctrl_c_reaches_the_worker_which_cleans_up(tmp_path):
    marker = tmp_path / "worker.pid"
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, FLOW2ONNX_TEST_MARKER=str(marker))
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out / "m.onnx")], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while not marker.exists() and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the worker never started verifying"
    time.sleep(0.5)
    os.kill(parent.pid, signal.SIGINT)  # the parent alone: it passes the signal on
    assert parent.wait(timeout=60) == 130
    worker = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert leftovers(out) == []


def test_cli_isolate_builds_the_model_in_the_worker(tmp_path, capsys):
    from flow2onnx.cli.main import main

    assert main(["-q", "export", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "--isolate", "-o", str(tmp_path / "m.onnx")]) == 0
    assert "all outputs match" in capsys.readouterr().out and leftovers(tmp_path) == ["m.onnx"]
    assert main(["-q", "export", "tests.models:absent", "--isolate", "-o", str(tmp_path / "n.onnx")]) == 1
    assert "module 'tests.models' has no attribute 'absent'" in capsys.readouterr().err
