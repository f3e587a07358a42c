"""nn.LSTM, nn.GRU and nn.RNN as ONNX LSTM, GRU and RNN nodes: batch and sequence length dynamic.

OneFlow 0.9 unrolls these modules over the example's sequence; the ``recurrent`` pattern of
flow2onnx-recurrent lowers each module as a whole. Every export below is verified by the export
itself (the example, then sizes far from it), then run here on ONNX Runtime against the eager module
at batch 1, a batch larger than the example's, and sequence lengths of half, one and a half times
the example's and 1. Tolerance: |onnx - oneflow| <= 1e-5 * max(1, max |oneflow|) + 1e-4 * |oneflow|.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime
import pytest

import flow2onnx

from .helpers import flow, random_inputs

FEATURES, HIDDEN = 3, 4
STEPS, BATCH = 6, 3
# (batch, sequence length) at which each exported model is compared with the eager module.
SIZES = [(1, STEPS), (2 * BATCH + 1, STEPS), (BATCH, STEPS // 2), (BATCH, 3 * STEPS // 2), (2, 1)]
KINDS = {"lstm": (flow.nn.LSTM, {}), "gru": (flow.nn.GRU, {}), "rnn": (flow.nn.RNN, {}), "rnn-relu": (flow.nn.RNN, {"nonlinearity": "relu"})}


class Recurrent(flow.nn.Module):
    """The module alone: returns (output, h_n) or (output, h_n, c_n), given the initial state or not."""

    def __init__(self, kind, **options):
        super().__init__()
        cls, defaults = KINDS[kind]
        self.rnn = cls(FEATURES, HIDDEN, **defaults, **options)
        self.lstm = cls is flow.nn.LSTM

    def forward(self, x, *state):
        if self.lstm:
            output, (h, c) = self.rnn(x, tuple(state) if state else None)
            return output, h, c
        output, h = self.rnn(x, state[0] if state else None)
        return output, h


def shapes(module, batch, steps, with_state):
    rnn = module.rnn
    sequence = (batch, steps, FEATURES) if rnn.batch_first else (steps, batch, FEATURES)
    state = (rnn.num_layers * (2 if rnn.bidirectional else 1), batch, HIDDEN)
    return [sequence] + ([state] * (2 if module.lstm else 1) if with_state else [])


def dynamic_axes(module, with_state):
    names = ["input_0", "input_1", "input_2"][: len(shapes(module, 1, 1, with_state))] if with_state else ["input"]
    axes = {names[0]: {0: "batch", 1: "sequence"} if module.rnn.batch_first else {0: "sequence", 1: "batch"}}
    for name in names[1:]:
        axes[name] = {1: "batch"}
    return axes


def assert_matches_eager(path, module, with_state):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    rng = np.random.default_rng(5)
    for batch, steps in SIZES:
        arrays = [rng.uniform(-2, 2, size=shape).astype(np.float32) for shape in shapes(module, batch, steps, with_state)]
        got = session.run(None, dict(zip(names, arrays)))
        want = [t.numpy() for t in module(*[flow.tensor(a) for a in arrays])]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (batch, steps)
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())), err_msg=f"batch {batch}, {steps} steps")


def export(module, with_state, path, **options):
    inputs = random_inputs(shapes(module, BATCH, STEPS, with_state))
    return flow2onnx.export(module, inputs, path, dynamic_axes=dynamic_axes(module, with_state), **options)


def variants():
    for kind in ("lstm", "gru", "rnn"):
        for layers in (1, 2):
            for bidirectional in (False, True):
                for batch_first in (False, True):
                    for with_state in (False, True):
                        name = f"{kind}-{layers}l-{'bi' if bidirectional else 'uni'}-{'bf' if batch_first else 'tf'}-{'h0' if with_state else 'zero'}"
                        yield pytest.param(kind, layers, bidirectional, batch_first, with_state, id=name)
    for layers, bidirectional in ((1, False), (2, True)):
        yield pytest.param("rnn-relu", layers, bidirectional, True, True, id=f"rnn-relu-{layers}l-{'bi' if bidirectional else 'uni'}")


@pytest.mark.parametrize("kind, layers, bidirectional, batch_first, with_state", list(variants()))
def test_recurrent_module_keeps_batch_and_sequence_length_dynamic(tmp_path, kind, layers, bidirectional, batch_first, with_state):
    module = Recurrent(kind, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first).eval()
    result = export(module, with_state, tmp_path / "m.onnx")
    assert result.report.passed
    assert result.pattern_groups == {"model.rnn": "recurrent"} and result.patterns == {"recurrent": "flow2onnx-recurrent"}
    assert result.lowered_by == {}  # every op of the graph is the module's
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx_type = {"lstm": "LSTM", "gru": "GRU"}.get(kind, "RNN")
    assert [node.op_type for node in model.graph.node].count(onnx_type) == layers
    assert all(node.name.startswith("model.rnn/") for node in model.graph.node)
    sequence_axis = 1 if batch_first else 0
    assert model.graph.output[0].type.tensor_type.shape.dim[sequence_axis].dim_param == "sequence"
    assert_matches_eager(tmp_path / "m.onnx", module, with_state)


class WithHead(flow.nn.Module):
    """An LSTM between other modules, and sizes computed from the input's shape after it."""

    def __init__(self):
        super().__init__()
        self.embed = flow.nn.Linear(FEATURES, 8)
        self.rnn = flow.nn.LSTM(8, HIDDEN, batch_first=True, bidirectional=True)
        self.head = flow.nn.Linear(2 * HIDDEN, 2)

    def forward(self, x):
        y = self.head(self.rnn(self.embed(x))[0].reshape(-1, 2 * HIDDEN))
        return flow.relu(y.reshape(x.shape[0], -1))


def test_ops_after_the_module_keep_their_sizes_dynamic(tmp_path):
    # OneFlow numbers every op of the graph: after an RNN unrolled over another length, the head's
    # ops have other names, and the check that sizes follow the axes pairs them by stable names.
    model = WithHead().eval()
    axes = {"input": {0: "batch", 1: "sequence"}}
    result = flow2onnx.export(model, random_inputs([(BATCH, STEPS, FEATURES)]), tmp_path / "m.onnx", dynamic_axes=axes)
    assert result.report.passed and result.pattern_groups == {"model.rnn": "recurrent"}
    assert set(result.lowered_by) >= {"broadcast_matmul", "reshape", "relu"}
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch, steps in SIZES:
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, steps, FEATURES)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model(flow.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


class ScaledGraph(flow.nn.Graph):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def build(self, x):
        return self.module(x)[0] * 2.0


def test_a_compiled_graph_finds_its_module_through_its_own_blocks(tmp_path):
    module = Recurrent("gru", batch_first=True).eval()
    graph = ScaledGraph(module)
    graph._compile(flow.randn(BATCH, STEPS, FEATURES))
    result = flow2onnx.export(graph, path=tmp_path / "m.onnx", dynamic_batch=True)
    assert result.report.passed and result.pattern_groups == {"module.rnn": "recurrent"}


class OwnForward(flow.nn.LSTM):
    def forward(self, x, hx=None):
        # nn.Graph calls forward with a proxy as self, which super() refuses.
        return flow.nn.LSTM.forward(self, x * 2.0, hx)


class Wrapped(flow.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


class Twice(Wrapped):
    def forward(self, x):
        return self.rnn(self.rnn(x)[0])[0]


class OutputAndState(Wrapped):
    def forward(self, x):
        return self.rnn(x)


@pytest.mark.parametrize(
    "wrapper, rnn, shape, why",
    [
        (Wrapped, OwnForward(FEATURES, HIDDEN), (STEPS, BATCH, FEATURES), "OwnForward overrides LSTM.forward"),
        (Wrapped, flow.nn.LSTM(FEATURES, HIDDEN), (STEPS, FEATURES), "only batched input"),
        (Wrapped, flow.nn.LSTM(FEATURES, HIDDEN, proj_size=2), (STEPS, BATCH, FEATURES), "ONNX LSTM has no projection"),
        (Twice, flow.nn.GRU(HIDDEN, HIDDEN), (STEPS, BATCH, HIDDEN), "is the module called twice?"),
        # One step: the output and h_n are both the last hidden state, and nothing tells them apart.
        (OutputAndState, flow.nn.GRU(FEATURES, HIDDEN), (1, BATCH, FEATURES), "cannot tell what its output"),
    ],
    ids=["own-forward", "unbatched", "projection", "called-twice", "one-step"],
)
def test_a_module_the_pattern_is_unsure_of_is_lowered_op_by_op_with_a_warning(tmp_path, caplog, wrapper, rnn, shape, why):
    caplog.set_level(logging.WARNING, logger="flow2onnx")
    model = wrapper(rnn).eval()
    result = flow2onnx.export(model, random_inputs([shape]), tmp_path / "m.onnx")
    assert result.report.passed and result.pattern_groups == {}
    assert "matmul" in result.lowered_by
    assert f"at 'model.rnn' is lowered op by op" in caplog.text and why in caplog.text


def test_without_the_recurrent_family_a_dynamic_sequence_is_refused_naming_an_op(tmp_path):
    module = Recurrent("lstm").eval()
    with pytest.raises(flow2onnx.LoweringError, match=r"op 'model\.rnn-\w+-\d+'"):
        export(module, False, tmp_path / "m.onnx", disable_plugins=["flow2onnx-recurrent"])
    assert not (tmp_path / "m.onnx").exists()
    # The batch alone stays dynamic op by op, as before the pattern existed.
    result = flow2onnx.export(
        module, random_inputs([(STEPS, BATCH, FEATURES)]), tmp_path / "m.onnx", dynamic_axes={"input": {1: "batch"}},
        disable_plugins=["flow2onnx-recurrent"],
    )
    assert result.report.passed and result.pattern_groups == {}
