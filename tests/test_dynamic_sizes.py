"""Sizes computed in the graph, never baked: RNN initial states, compiled graphs with a dynamic batch.

Each exported file is compared with OneFlow at batch sizes the export never saw, on ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import flow, random_inputs


def matches_oneflow(path, reference, shapes, scale=1.0):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for shape in shapes:
        x = rng.uniform(-2, 2, size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], reference(flow.tensor(x)).numpy() * scale, rtol=1e-4, atol=1e-5)


class Recurrent(flow.nn.Module):
    def __init__(self, cls, **options):
        super().__init__()
        self.rnn = cls(8, 16, **options)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    "cls, options",
    [
        (flow.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (flow.nn.GRU, {"batch_first": True}),
        (flow.nn.RNN, {}),
    ],
    ids=["lstm-2-layers-bidirectional", "gru-batch-first", "rnn"],
)
def test_recurrent_modules_keep_the_batch_dynamic(tmp_path, cls, options):
    # OneFlow builds the initial state as zeros(layers, batch, hidden): a constant op of the
    # example's batch, now computed from the input's Shape.
    model = Recurrent(cls, **options).eval()
    batch_axis = 0 if options.get("batch_first") else 1
    shape = [6, 6, 8]
    shape[batch_axis] = 3
    result = flow2onnx.export(model, random_inputs([tuple(shape)]), tmp_path / "m.onnx", dynamic_axes={"input": {batch_axis: "batch"}})
    assert result.report.passed
    others = []
    for batch in (1, 7):
        other = list(shape)
        other[batch_axis] = batch
        others.append(tuple(other))
    matches_oneflow(tmp_path / "m.onnx", model, others)


class Sequence(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = flow.nn.LSTM(8, 16, batch_first=True)
        self.head = flow.nn.Linear(16, 4)

    def forward(self, x):
        y = self.head(self.rnn(x)[0].reshape(-1, 16))
        return y.reshape(x.shape[0], -1)


class ScaledGraph(flow.nn.Graph):
    """A user's graph whose __init__ takes arguments, as the tutorial's graphs do."""

    def __init__(self, module, scale):
        super().__init__()
        self.module = module
        self.scale = scale

    def build(self, x):
        return self.module(x) * self.scale


def test_a_compiled_graph_with_a_dynamic_batch_is_compiled_again_and_right_at_every_batch(tmp_path):
    module = Sequence().eval()
    graph = ScaledGraph(module, 2.0)
    graph._compile(flow.randn(3, 5, 8))
    path, _ = flow2onnx.export_onnx_model(graph, onnx_model_path=str(tmp_path), dynamic_batch_size=True)
    matches_oneflow(path, module, [(1, 5, 8), (4, 5, 8), (11, 5, 8)], scale=2.0)
