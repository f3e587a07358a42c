"""Small models written the way others write them (issue #23's classes): sizes computed from a
dynamic axis (eye, arange, slices that end relative to a size, an RNN's initial state), in-place
writes in a graph (``copy_``, ``x[mask] = v``), and the squeeze OneFlow only makes at size 1.

Each file is compared on ONNX Runtime with OneFlow's eager module at the example's sizes and, for
every dynamic axis on its own, at size 1, the example's size and two others, on values of both
signs and several magnitudes."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import Lambda, flow

RNG = np.random.default_rng(23)


def signed(shape) -> np.ndarray:
    return (RNG.standard_normal(shape) * 10.0 ** RNG.integers(-3, 3, size=shape)).astype(np.float32)


def matches_at_every_size(model, path, example_shape, axes, smallest=1):
    """The file at ``path`` against ``model`` at sizes 1 (or ``smallest``), the example's and two
    others of each dynamic axis in turn; returns how many shapes were compared."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compared = 0
    for axis in axes:
        for size in sizes_around(example_shape[axis], smallest):
            shape = list(example_shape)
            shape[axis] = size
            x = signed(shape)
            want = [t.numpy() for t in flatten(model(flow.tensor(x)))]
            got = session.run(None, {"input": x})
            assert len(got) == len(want)
            for a, b in zip(got, want):
                assert a.shape == b.shape, (shape, a.shape, b.shape)
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max(initial=0))), err_msg=str(shape))
            compared += 1
    return compared


def sizes_around(size: int, smallest: int = 1) -> list[int]:
    return sorted({smallest, size, size + 3, 2 * size + 1})


def flatten(value):
    return list(value) if isinstance(value, (tuple, list)) else [value]


def assigned_regions(self, x):
    y = x * 1
    y[:, 1:3] = 0.5  # columns 1 and 2 of a dynamic width: none of them at width 1
    y[1:2, :] = 7.0  # row 1 of a dynamic batch
    y[:, :2] = x[:, :2] * 2  # a value that follows the width too
    return y


def assigned_to_the_width(self, x):
    y = x * 1
    y[:, :4] = 1.0  # the whole width of the example; at width 2 OneFlow assigns 2 columns
    return y


def lstm_with_state_from_batch(self, x):
    h0 = flow.zeros(1, x.size(0), 6)
    c0 = flow.zeros(1, x.size(0), 6)
    return self.rnn(x, (h0, c0))[0]


def copied(self, x):
    y = flow.zeros_like(x)
    y.copy_(x * 2)
    return y + 1


def mask_assigned(self, x):
    y = x.clone()
    y[y > 0] = 0.5
    return y


MODELS = {
    # name: (forward, submodules, example shape, dynamic axes of "input")
    "eye-square": (lambda self, x: flow.eye(x.size(0)) @ x, {}, (3, 5), (0,)),
    "eye-rows-cols": (lambda self, x: x.t() @ flow.eye(x.size(0), x.size(1)), {}, (3, 5), (0, 1)),
    "eye-int64": (lambda self, x: flow.eye(x.size(0), dtype=flow.int64).float() @ x, {}, (3, 5), (0,)),
    "eye-bool": (lambda self, x: flow.where(flow.eye(x.size(0), 5, dtype=flow.bool), x, -x), {}, (3, 5), (0,)),
    "arange-of-size": (lambda self, x: x + flow.arange(x.size(0)).unsqueeze(1).float(), {}, (3, 4), (0,)),
    "slice-all-but-last": (lambda self, x: x[:, : x.size(1) - 1], {}, (3, 6), (0, 1)),
    "slice-half": (lambda self, x: x[:, : x.size(1) // 2], {}, (3, 6), (0, 1)),
    "slice-last-two": (lambda self, x: x[:, x.size(1) - 2 :], {}, (3, 6), (0, 1)),
    "slice-strided-from-size": (lambda self, x: x[:, 1 : x.size(1) : 2], {}, (3, 7), (0, 1)),
    "slice-inner": (lambda self, x: x[1 : x.size(0) - 1, 1:-1], {}, (4, 6), (0, 1)),
    "lstm-state-from-batch": (lstm_with_state_from_batch, {"rnn": flow.nn.LSTM(4, 6, batch_first=True)}, (3, 5, 4), (0, 1)),
    "copy-into-fresh-tensor": (copied, {}, (3, 4), (0, 1)),
    "mask-assign": (mask_assigned, {}, (3, 4), (0, 1)),
    "sort-along-a-dynamic-axis": (lambda self, x: flow.sort(x, dim=1)[0], {}, (3, 6), (0, 1)),
    "argsort-along-a-dynamic-axis": (lambda self, x: flow.argsort(x, dim=1, descending=True), {}, (3, 6), (0, 1)),
    "topk-along-a-dynamic-axis": (lambda self, x: flow.topk(x, 3, dim=1)[0], {}, (3, 6), (0, 1)),
    "causal-mask": (
        lambda self, x: (x @ x.transpose(1, 2)).masked_fill(flow.triu(flow.ones(x.size(1), x.size(1)), 1).bool(), float("-inf")).softmax(-1),
        {}, (2, 4, 3), (0, 1),
    ),
    "tril-of-a-dynamic-matrix": (lambda self, x: flow.tril(x, -1) + flow.triu(x, 2), {}, (2, 4, 5), (1, 2)),
    "narrow-to-the-end": (lambda self, x: x.narrow(1, 1, x.size(1) - 1), {}, (3, 6), (0, 1)),
    "roll-along-a-dynamic-axis": (lambda self, x: flow.roll(x, 2, 1) + flow.roll(x, -7, 1), {}, (3, 6), (0, 1)),
    "slice-assignments-of-dynamic-axes": (assigned_regions, {}, (3, 6), (0, 1)),
    "slice-assignment-of-the-example-width": (assigned_to_the_width, {}, (3, 4), (0, 1)),
    "full-of-a-tensor": (lambda self, x: flow.full((x.size(0), 4), x.abs().max(), dtype=flow.float32) - x, {}, (3, 4), (0,)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_model_matches_oneflow_at_every_size_of_its_dynamic_axes(tmp_path, name):
    forward, submodules, shape, axes = MODELS[name]
    model = Lambda(forward, **submodules).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.tensor(signed(shape))], path, dynamic_axes={"input": {axis: f"d{axis}" for axis in axes}})
    assert result.report.verified
    assert matches_at_every_size(model, path, shape, axes) == sum(len(sizes_around(shape[a])) for a in axes)


def test_a_squeeze_of_a_dynamic_axis_is_refused_naming_the_axis_and_the_fix(tmp_path):
    # x.squeeze(1) on a (2, 1, 4) example with every axis dynamic: OneFlow squeezes axis 1 only
    # where it is 1, so the output's rank follows that size; no ONNX model has that.
    model = Lambda(lambda self, x: x.squeeze(1)).eval()
    with pytest.raises(flow2onnx.LoweringError, match=r"squeeze op .*squeezes axis 1 .*1 in the example but dynamic.*Declare that axis static"):
        flow2onnx.export(model, [flow.randn(2, 1, 4)], tmp_path / "m.onnx", dynamic_axes={"input": {0: "a", 1: "b", 2: "c"}})
    assert list(tmp_path.iterdir()) == []
    # With that axis static, the others stay dynamic and the file is right at their sizes.
    path = tmp_path / "m.onnx"
    flow2onnx.export(model, [flow.randn(2, 1, 4)], path, dynamic_axes={"input": {0: "a", 2: "c"}})
    assert matches_at_every_size(model, path, (2, 1, 4), (0, 2)) == len(sizes_around(2)) + len(sizes_around(4))


def test_a_squeeze_that_drops_a_dynamic_axis_at_size_1_is_refused_by_its_shape(tmp_path):
    # squeeze() with no axis squeezes whatever is 1: at batch 1 OneFlow's output loses the batch axis too.
    model = Lambda(lambda self, x: x.squeeze()).eval()
    with pytest.raises(flow2onnx.VerificationError, match=r"has shape \[1, \d+\] where OneFlow's is \[\d+\]"):
        flow2onnx.export(model, [flow.randn(2, 1, 4)], tmp_path / "m.onnx", dynamic_axes={"input": {0: "a", 2: "c"}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_oneflow_on_targets_of_both_signs_zero_and_nan(tmp_path, opset, reduction, log_target):
    model = Lambda(lambda self, x, t: flow.nn.functional.kl_div(x, t, reduction=reduction, log_target=log_target)).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.tensor(signed((3, 8))), flow.tensor(signed((3, 8)))], path, opset=opset, dynamic_batch=True)
    assert result.report.verified and result.lowered_by["kl_div_loss"] == "flow2onnx-math"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    special = np.array([0.0, -0.0, -0.5, 1e-30, np.nan, np.inf, 88.0, -88.0], np.float32)
    for batch in (1, 5):
        x, t = signed((batch, 8)), signed((batch, 8))
        t[0] = special
        x[-1] = special[::-1]
        want = model(flow.tensor(x), flow.tensor(t)).numpy()
        (got,) = session.run(None, {"input_0": x, "input_1": t})
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.nanmax(np.abs(np.where(np.isinf(want), 0, want))))))


class Counter(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", flow.zeros(1))

    def forward(self, x):
        self.calls.copy_(self.calls + 1)
        return x + self.calls


def copied_into_a_slice(self, x):
    y = x * 1
    y[:, :2].copy_(x[:, 2:4] * 3)
    return y


@pytest.mark.parametrize("model, message", [
    (Lambda(copied_into_a_slice), r"assign op .*writes into a view of another tensor \(slice op .*Write it as an indexed assignment"),
    (Counter(), r"assign op .*writes into the model's own weight or buffer \('model.calls'"),
], ids=["copy-into-a-slice", "buffer-update"])
def test_writes_no_onnx_graph_can_make_are_refused_with_the_reason(tmp_path, model, message):
    with pytest.raises(flow2onnx.LoweringError, match=message):
        flow2onnx.export(model.eval(), [flow.randn(3, 5)], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def written_into_its_input(self, x):
    x.copy_(x * 2)
    return x + 1


def masked_fills(self, x):
    y = x.clone()
    y[y > 0.5] = 0.25
    y[x < -1] = flow.tensor(-2.0)  # a tensor value: OneFlow cannot build this as a graph
    return y * 2


@pytest.mark.parametrize("forward, capture", [(written_into_its_input, "graph"), (masked_fills, "eager")], ids=["copy-into-input", "masked-fill"])
def test_in_place_writes_that_have_a_graph_form_export_and_follow_the_inputs(tmp_path, forward, capture):
    model = Lambda(forward).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.tensor(signed((3, 5)))], path, dynamic_axes={"input": {0: "n"}})
    assert result.report.verified and result.capture == capture and not any("frozen" in warning for warning in result.warnings)
    # The masks follow the inputs (positions frozen to the example's would not).
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 4, 9):
        x = signed((batch, 5))
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, model(flow.tensor(x.copy())).numpy(), rtol=1e-6, atol=1e-6)


def test_a_tensor_given_where_the_graph_takes_a_number_is_captured_eagerly(tmp_path):
    # topk(x, k) with k a tensor: OneFlow's graph takes an int (TypeError); eager capture passes its value.
    model = Lambda(lambda self, x: flow.topk(x, flow.tensor(2))[0] * 2).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.tensor(signed((3, 5)))], path, dynamic_axes={"input": {0: "n"}})
    assert result.report.verified and result.capture == "eager"
    assert matches_at_every_size(model, path, (3, 5), (0,)) == len(sizes_around(3))


def test_a_number_that_follows_the_inputs_is_frozen_and_caught_by_verification(tmp_path):
    def forward(self, x):
        return flow.topk(x, (x[0, 0] > 10).long() + 2)[0]  # k is 3 at the edge values, 2 at the example

    with pytest.raises(flow2onnx.VerificationError, match=r"has shape \[3, 2\] where OneFlow's is \[3, 3\].*froze"):
        flow2onnx.export(Lambda(forward).eval(), [flow.tensor(signed((3, 5)) / 1e4)], tmp_path / "m.onnx", dynamic_batch=True)
    assert list(tmp_path.iterdir()) == []


def test_a_full_of_a_value_tensor_of_another_dtype_is_refused_naming_oneflows_reading(tmp_path):
    # OneFlow 0.9's tensor_constant reads the value's bytes as the result's dtype: full((2, 2), int64 5, float32) is 7.0e-45.
    model = Lambda(lambda self, x: flow.full((x.size(0), 4), x.max(), dtype=flow.float32) + 1).eval()
    with pytest.raises(flow2onnx.LoweringError, match=r"tensor_constant op .*reads the value's bytes as float32"):
        flow2onnx.export(model, [flow.tensor([[1, 5, 2, 3]], dtype=flow.int64)], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_fixed_narrow_of_a_dynamic_axis_is_right_at_every_size_it_fits(tmp_path):
    model = Lambda(lambda self, x: x.narrow(1, 1, 2) * 2).eval()
    path = tmp_path / "m.onnx"
    flow2onnx.export(model, [flow.tensor(signed((3, 6)))], path, dynamic_axes={"input": {0: "n", 1: "m"}})
    assert matches_at_every_size(model, path, (3, 6), (0, 1), smallest=3) == len(sizes_around(3, 3)) + len(sizes_around(6, 3))


def zeroed_rows(self, x):
    y = x * 1
    y[1:].zero_()
    return y


def clamped_and_filled_rows(self, x):
    y = x * 1
    y[1:].clamp_(-0.1, 0.1)
    y[0].fill_(3.0)
    y[:1].mul_(x[:1] * 3)
    return y * 2


@pytest.mark.parametrize("forward", [zeroed_rows, clamped_and_filled_rows], ids=["zero-rows", "clamp-fill-mul-rows"])
def test_in_place_ops_on_a_view_are_recorded_as_writes_into_the_viewed_tensor(tmp_path, forward):
    # Lazy mode refuses zero_ on a view (OneFlow cannot build these as graphs); eager capture records
    # each as its out-of-place form written back with base[index] = ..., as the eager module computes.
    model = Lambda(forward).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.tensor(signed((3, 5)))], path, capture="eager", dynamic_axes={"input": {1: "m"}})
    assert result.report.verified
    assert matches_at_every_size(model, path, (3, 5), (1,)) == len(sizes_around(5))


def test_an_in_place_op_on_a_strided_view_is_refused_where_oneflow_writes_elsewhere(tmp_path):
    # Measured: OneFlow 0.9's y[:, 0].zero_() zeroes y[0, :3], the first elements of memory, not the
    # column; the file zeroes the column, verification compares with OneFlow, and nothing is written.
    model = Lambda(lambda self, x: (lambda y: (y[:, 0].zero_(), y)[1])(x * 1)).eval()
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's"):
        flow2onnx.export(model, [flow.tensor(signed((3, 5)))], tmp_path / "m.onnx", capture="eager")
    assert list(tmp_path.iterdir()) == []
