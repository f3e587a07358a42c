"""Sizes computed in the graph, never baked: RNN initial states, compiled graphs with a dynamic batch.

Each exported file is compared with OneFlow at batch sizes the export never saw, on ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import Lambda, flow, random_inputs


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


class ChannelShuffle(flow.nn.Module):
    """ShuffleNet's channel shuffle after a strided conv: (N, C, H, W) -> (N, g, C/g, H, W) -> back,
    with H and W, moved to other indices by the reshape, at an eighth of the input's size."""

    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 8, 3, stride=8, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2)
        return y.reshape(n, c, h, w) / (h * w)


def test_a_reshape_that_moves_dynamic_dims_computes_them_from_shape(tmp_path):
    model = ChannelShuffle().eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 64, 64)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(2, 3, 32, 96), (3, 3, 128, 40)])


class NeedsItsSize(flow.nn.Module):
    """Like DLA-34: a final 7 x 7 pooling that leaves nothing of a smaller input, where OneFlow would
    abort the whole process in the next kernel."""

    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.pool = flow.nn.AvgPool2d(7)
        self.fc = flow.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(flow.flatten(self.pool(self.conv(x)), 1))


def test_sizes_the_model_cannot_take_are_probed_not_run(tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="flow2onnx")
    model = NeedsItsSize().eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 28, 28)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    assert "the model cannot run at {'input': [2, 3, 16, 16]} (" in caplog.text  # OneFlow refuses to build it there
    sizes = sorted({tuple(c.shape) for c in result.report.comparisons})
    assert sizes == [(1, 2), (2, 2), (5, 2)]  # batch 1 (the example), 2 at 5/4 of its size, 5 at 3/2


def test_a_variance_over_dynamic_axes_counts_them_in_the_graph(tmp_path):
    # PoolFormer's GroupNorm and the style network's InstanceNorm compute var over C, H, W: the
    # unbiased count N - 1 is computed from Shape wherever a reduced axis follows a dynamic one.
    model = Lambda(lambda self, x: x.var(dim=[1, 2, 3], keepdim=True) + x.var(dim=[2, 3], unbiased=False, keepdim=True)).eval()
    result = flow2onnx.export(model, random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(1, 3, 5, 40), (4, 3, 33, 7)])
