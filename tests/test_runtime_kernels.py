"""Nodes the verifying runtime has no kernel for: refused before anything is written, with the node,
the OneFlow op and plugin, what the runtime does have, and the fix; and the float64 activations
written from ops that do have float64 kernels, compared with OneFlow on values of both signs, at
other batch sizes, at ±inf and NaN.

The exports run isolated (in a process of their own): a long test process that has compiled many
graphs, some of them refused, can abort in a later float64 compile (OneFlow 0.9; seen in the full
suite), and an isolated export is the tool flow2onnx offers for that.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import flow


def test_a_node_without_a_kernel_for_its_types_is_refused_naming_the_op_and_the_fix(tmp_path):
    # ONNX Runtime 1.23's CPU provider has Conv for float32 only (its kernel registry); OneFlow convolves float64.
    model = flow.nn.Conv2d(3, 4, 3).to(flow.float64).eval()
    with pytest.raises(flow2onnx.MissingKernelError) as caught:
        flow2onnx.export(model, [flow.randn(1, 3, 8, 8, dtype=flow.float64)], tmp_path / "m.onnx", isolate=True)
    error = caught.value
    assert (error.onnx_op, error.op_type) == ("Conv", "conv2d")
    message = str(error)
    for part in (f"node '{error.node}'", "conv2d op", "flow2onnx-conv", "float64", "it has Conv for T: float", "Nothing was written", "model.float()"):
        assert part in message, (part, message)
    assert "NOT_IMPLEMENTED" not in message
    assert list(tmp_path.iterdir()) == []


class Elu(flow.nn.Module):
    """elu or celu at an alpha of their own (a class, not a lambda: an isolated export pickles it)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x):
        if self.name == "celu":
            return flow.nn.functional.celu(x, alpha=1.5)
        return flow.nn.functional.elu(x, alpha=0.7)


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("name", ["celu", "elu"])
def test_float64_elu_and_celu_run_on_onnx_runtime_and_match_oneflow(tmp_path, name, opset):
    model = Elu(name).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.randn(2, 5, dtype=flow.float64)], path, opset=opset, dynamic_batch=True, isolate=True)
    assert result.report.verified
    assert "Elu" not in {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, -1e-300, 1e-300, -1e-10, -745.0, 709.0, -1e6])
    x = np.concatenate([rng.standard_normal(24) * 10.0 ** rng.integers(-4, 3, size=24), special])[:35].reshape(7, 5)
    (got,) = session.run(None, {"input": x})
    want = model(flow.tensor(x)).numpy()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)
