"""The run at edge values: lowerings that are right for ordinary inputs and wrong at the values where
float arithmetic breaks (``exp``'s overflow, the largest floats, subnormals, ±inf, NaN).

Each wrong lowering here is the textbook formula, right below about 88 in float32 and inf or NaN
above it; random draws stop at 1e2 and put few elements past 88, so they passed before.
"""

from __future__ import annotations

import numpy as np
import pytest

import flow2onnx
from flow2onnx.exporter.verify.comparison import compare, overflow_margin
from flow2onnx.exporter.plan.draws import draw_inputs, edge_values
from flow2onnx.lowering.graph import TensorInfo

from .helpers import Lambda, export_module, flow, overriding

F = flow.nn.functional


def textbook(op_type, lowering):
    return overriding(op_type, lowering, prefix="Textbook")


def textbook_softplus(ctx, op):
    """log(1 + exp(x)): inf from x = 88.7 on, where OneFlow gives x."""
    (e,) = ctx.make_node("Exp", [op.input("in")])
    (s,) = ctx.make_node("Add", [e, ctx.constant(np.float32(1), "one")])
    ctx.make_node("Log", [s], [op.output("out")])


def textbook_logsigmoid(ctx, op):
    """log(sigmoid(x)): sigmoid underflows to 0 from x = -88.7 down, and log(0) is -inf where OneFlow gives x."""
    (s,) = ctx.make_node("Sigmoid", [op.input("x")])
    ctx.make_node("Log", [s], [op.output("y")])


@pytest.mark.parametrize(
    "op_type, lowering, forward",
    [("softplus", textbook_softplus, lambda self, x: F.softplus(x)), ("log_sigmoid", textbook_logsigmoid, lambda self, x: F.logsigmoid(x))],
)
def test_a_textbook_formula_that_overflows_is_refused_and_the_op_named(tmp_path, op_type, lowering, forward):
    plugin = textbook(op_type, lowering)
    target = tmp_path / "m.onnx"
    with pytest.raises(flow2onnx.VerificationError) as caught:
        export_module(Lambda(forward), [(2, 3, 8)], target, plugins=[plugin])
    message = str(caught.value)
    assert f"at {op_type} op" in message and plugin.__name__ in message
    failed = [c for c in caught.value.report.comparisons if not c.passed]
    # The edge run tells (the random draws may too, where one of their points came past 88).
    assert failed[-1].inputs == "edge values" and failed[-1].nonfinite_mismatches > 0
    if op_type == "softplus":
        assert [c.inputs for c in failed] == ["edge values"] and "on edge values inputs" in message
    assert not target.exists()


@pytest.mark.parametrize(
    "name, forward",
    [
        ("softplus", lambda self, x: F.softplus(x)),
        ("tanh", lambda self, x: flow.tanh(x)),
        ("sigmoid", lambda self, x: flow.sigmoid(x)),
        ("logsigmoid", lambda self, x: F.logsigmoid(x)),
        ("silu", lambda self, x: F.silu(x)),
        ("mish", lambda self, x: F.mish(x)),
        ("gelu", lambda self, x: F.gelu(x)),
        ("elu", lambda self, x: F.elu(x, alpha=1.0)),
        ("hardswish", lambda self, x: F.hardswish(x)),
        ("sign", lambda self, x: flow.sign(x)),
        ("compare", lambda self, x: (x > x.flip(-1), x >= x.flip(-1), x < x.flip(-1), x <= x.flip(-1), x == x.flip(-1), x != x.flip(-1))),
        ("exp-log", lambda self, x: (flow.exp(x), flow.log(x), flow.sqrt(x), 1 / x)),
        ("maximum-minimum", lambda self, x: (flow.maximum(x, x.flip(-1)), flow.minimum(x, x.flip(-1)), flow.maximum(x, x[:1]))),
        ("isclose", lambda self, x: (flow.isclose(x, x.flip(-1)), flow.isclose(x, x.flip(-1), equal_nan=True))),
        ("softmax", lambda self, x: F.softmax(x, dim=-1)),
    ],
)
def test_the_built_in_lowerings_match_oneflow_at_edge_values(tmp_path, name, forward):
    result = export_module(Lambda(forward), [(2, 3, 8)], tmp_path / "m.onnx")
    edge_rows = [c for c in result.report.comparisons if "edge" in c.inputs]
    assert edge_rows and all(c.passed for c in edge_rows)
    # NaN, ±inf and the largest floats go only where every op is elementwise: a softmax sums them.
    # So do two-tensor > and >=, whose answer at NaN OneFlow's kernels do not agree on.
    assert {c.inputs for c in edge_rows} == {"finite edges" if name in ("softmax", "compare") else "edge values"}
    # Something was judged in each: these ops are elementwise, or reduce along one short axis.
    assert all(c.uncompared < np.prod(c.shape) for c in edge_rows), [(c.name, c.uncompared) for c in edge_rows]


def test_a_model_that_sums_gets_the_finite_edge_values_and_they_are_compared(tmp_path):
    # Every output of a convolution followed by a global pool reads every input element: one NaN
    # anywhere would make it NaN, and a sum of the largest floats overflows or not by its order.
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 8, 3), flow.nn.ReLU(), flow.nn.AdaptiveAvgPool2d(1), flow.nn.Flatten(), flow.nn.Linear(8, 4))
    result = export_module(model, [(1, 3, 16, 16)], tmp_path / "m.onnx")
    (row,) = [c for c in result.report.comparisons if "edge" in c.inputs]
    assert row.inputs == "finite edges" and row.result == "ok" and row.uncompared == 0


def test_a_textbook_softplus_inside_a_model_that_sums_is_refused_too(tmp_path):
    # The finite edge values hold exp's overflow points: a softplus after a linear layer meets them.
    model = Lambda(lambda self, x: F.softplus(x * 1.0 + x.sum(-1, keepdim=True) * 0.0))
    with pytest.raises(flow2onnx.VerificationError) as caught:
        export_module(model, [(2, 3, 8)], tmp_path / "m.onnx", plugins=[textbook("softplus", textbook_softplus)])
    assert [c.inputs for c in caught.value.report.comparisons if not c.passed] == ["finite edges"]


def test_edge_values_of_each_float_dtype():
    for dtype in (np.float16, np.float32, np.float64):
        values = edge_values(dtype).astype(dtype)
        info = np.finfo(dtype)
        assert {float(info.max), -float(info.max), np.inf, -np.inf, 0.0, 1.0, -1.0} <= set(values.tolist())
        assert np.isnan(values).sum() == 1 and np.signbit(values[values == 0]).tolist() == [False, True]
        assert float(info.smallest_subnormal) in values and float(info.tiny) in values
        # Both sides of exp's overflow, in the dtype itself.
        with np.errstate(over="ignore"):
            exps = np.exp(values[np.isfinite(values) & (values > 1) & (values < 2 * np.log(float(info.max)))])
        assert np.isinf(exps).any() and np.isfinite(exps[exps > 1]).any()
    assert not np.isnan(edge_values(np.float32, finite=True)).any() and np.isfinite(edge_values(np.float32, finite=True)).all()
    # In an input_range, only what lies in it, and its ends.
    inside = edge_values(np.float32, within=(0.5, 2.0))
    assert inside.min() == 0.5 and inside.max() == 2.0 and 1.0 in inside and len(inside) == 3


def test_every_edge_value_is_drawn_once_at_least_and_integers_are_left_alone():
    floats, ints = draw_inputs([TensorInfo("x", (4, 7), np.float32), TensorInfo("i", (4, 7), np.int64)], None, floats="edges")
    edges = edge_values(np.float32).astype(np.float32)
    finite = edges[np.isfinite(edges)]
    assert all((floats == v).any() for v in finite) and np.isinf(floats).sum() >= 2 and np.isnan(floats).any()
    assert ints.min() >= 0 and ints.max() < 10


def test_a_0d_input_is_drawn_as_an_array_in_every_draw():
    infos = [TensorInfo("x", (), np.float32), TensorInfo("i", (), np.int64), TensorInfo("b", (), np.bool_)]
    for draw in ("unit", "signed", "magnitudes", "edges", "finite-edges", (2.0, 3.0)):
        drawn = draw_inputs(infos, None, floats=draw)
        assert all(isinstance(a, np.ndarray) and a.shape == () for a in drawn), draw
        assert [a.dtype for a in drawn] == [np.float32, np.int64, np.bool_]


def test_a_model_with_a_0d_input_is_verified(tmp_path):
    # Found by the fuzzer: a 0-d float input reached ONNX Runtime as a NumPy scalar, which it refuses.
    model = Lambda(lambda self, x, s: flow.maximum(x, s) * s).eval()
    inputs = [flow.tensor(np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)), flow.tensor(np.float32(0.5))]
    result = flow2onnx.export(model, inputs, tmp_path / "m.onnx", dynamic_axes={"input_0": {0: "n"}})
    assert result.report.passed and len(result.report.comparisons) >= 4


def test_the_edge_rule_judges_only_where_oneflow_did_not_overflow():
    big = np.float32(overflow_margin(np.float32)) * 4
    want = np.array([np.nan, np.inf, big, 89.0, 1.0], np.float32)
    # Where OneFlow overflowed, the file may differ (another order of the same sum); not elsewhere.
    ok = compare("y", want, np.array([0.0, 5.0, np.inf, 89.0, 1.0], np.float32), edges=True, inputs="edge values")
    assert ok.passed and ok.uncompared == 3
    for wrong in ([0.0, 5.0, np.inf, np.inf, 1.0], [0.0, 5.0, np.inf, 89.0, np.nan], [0.0, 5.0, np.inf, 88.0, 1.0]):
        assert not compare("y", want, np.array(wrong, np.float32), edges=True).passed
    # Outside an edge run the usual rule holds everywhere.
    assert not compare("y", want, np.array([0.0, 5.0, np.inf, 89.0, 1.0], np.float32)).passed
    # Outputs computed from indices of floats are not judged there (ties and NaN), and said so.
    skipped = compare("i", np.array([0, 1]), np.array([1, 0]), edges=True, from_indices=True)
    assert skipped.passed and skipped.result.startswith("not verified: computed from indices of floats")
    assert not compare("i", np.array([0, 1]), np.array([1, 0]), edges=True).passed
    everywhere = compare("y", np.array([np.inf, big], np.float32), np.array([1.0, 2.0], np.float32), edges=True)
    assert everywhere.result == "not verified: OneFlow overflows everywhere"


def test_an_input_range_keeps_the_edge_run_inside_it(tmp_path):
    # log(x - 0.25): NaN below 0.25; the user said inputs lie in [0.5, 2).
    result = export_module(Lambda(lambda self, x: flow.log(x - 0.25)), [(4, 8)], tmp_path / "m.onnx", input_range=(0.5, 2.0))
    (row,) = [c for c in result.report.comparisons if c.inputs == "edge values"]
    assert row.result == "ok" and row.nan_count == 0 and row.uncompared == 0


def test_the_report_names_each_runs_inputs(tmp_path):
    result = export_module(Lambda(lambda self, x: F.softplus(x)), [(2, 8)], tmp_path / "m.onnx")
    text = result.report.to_text()
    assert [c.inputs for c in result.report.comparisons][-1] == "edge values"
    assert " inputs " in text.splitlines()[1] and "edge values" in text and "at edge values, not judged where OneFlow overflows" in text
    assert result.report.to_dict()["comparisons"][-1]["inputs"] == "edge values"
