"""Random draws (normal, uniform, randint, exponential, multinomial) and flow.empty: lowered to
ONNX's random operators without a seed (every run draws afresh, as OneFlow does), and verified by
their statistics: the same dtype, shape and NaN/inf counts, and a two-sample Kolmogorov-Smirnov
test, said in the report. A lowering that draws from the wrong distribution is refused."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx
from flow2onnx.exporter.verify.comparison import RANDOM_ALPHA, ks_two_sample

from .helpers import Lambda, flow, overriding

MODELS = {
    # name: (forward, OneFlow op type, (low, high) every value lies in, or None)
    "randn": (lambda self, x: x + flow.randn(x.shape), "normal", None),
    "normal-mean-std": (lambda self, x: flow.normal(0.5, 2.0, size=(x.size(0), 64)) * x.abs().mean(), "normal", None),
    "rand": (lambda self, x: flow.rand(x.size(0), 64) * 3.0 - 1.0, "uniform", (-1.0, 2.0)),
    "randint": (lambda self, x: flow.randint(2, 7, (x.size(0), 64)), "uniform_int", (2, 6)),
    "exponential": (lambda self, x: flow.empty(x.size(0), 64).exponential_(2.0), "exponential", (0.0, np.inf)),
    "multinomial-rows": (lambda self, x: flow.multinomial(x.softmax(-1), 40, replacement=True), "multinomial_with_replacement", (0, 63)),
    # At edge values x holds subnormals, whose products with the draw take few values.
    "x-times-rand": (lambda self, x: x * flow.rand(x.shape), "uniform", None),
    "multinomial-one-row": (lambda self, x: flow.multinomial(x[0].softmax(-1), 200, replacement=True), "multinomial_with_replacement", (0, 63)),
}


def samples(model, session, x, runs=8):
    """``runs`` outputs of OneFlow and of ONNX Runtime on ``x``, pooled."""
    want = np.concatenate([model(flow.tensor(x)).numpy().ravel() for _ in range(runs)])
    got = np.concatenate([session.run(None, {"input": x})[0].ravel() for _ in range(runs)])
    return want, got


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_random_draw_is_verified_by_its_statistics_and_draws_alike_at_other_sizes(tmp_path, name):
    forward, op_type, bounds = MODELS[name]
    model = Lambda(forward).eval()
    path = tmp_path / "m.onnx"
    result = flow2onnx.export(model, [flow.randn(3, 64)], path, dynamic_batch=True)
    assert result.report.verified and result.lowered_by[op_type] == "flow2onnx-shape"
    assert all(c.statistics and f"drawn by {op_type}" in c.statistics for c in result.report.comparisons)
    assert "compared by its statistics, not element by element" in result.report.to_text()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(4).standard_normal((5, 64)).astype(np.float32)
    want, got = samples(model, session, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert ks_two_sample(want, got)[1] >= RANDOM_ALPHA
    if bounds is not None:
        assert bounds[0] <= got.min() and got.max() <= bounds[1]
    if got.dtype.kind in "iu":
        assert set(np.unique(got)) <= set(range(int(bounds[0]), int(bounds[1]) + 1))
    # No seed in the file: two runs draw different values.
    assert not np.array_equal(session.run(None, {"input": x})[0], session.run(None, {"input": x})[0])


def test_a_lowering_that_draws_from_the_wrong_distribution_is_refused(tmp_path):
    def twice_the_spread(ctx, op):
        (template,) = ctx.make_node("ConstantOfShape", [ctx.constant(np.array(op.attr("shape"), np.int64), "shape")])
        ctx.make_node("RandomNormalLike", [template], [op.output("out")], dtype=1, mean=float(op.attr("mean")), scale=2.0 * float(op.attr("std")))

    model = Lambda(lambda self, x: x + flow.randn(x.shape)).eval()
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's") as caught:
        flow2onnx.export(model, [flow.randn(4, 64)], tmp_path / "m.onnx", plugins=[overriding("normal", twice_the_spread)])
    assert any(not c.passed and c.statistics for c in caught.value.report.comparisons)
    assert "compared by its statistics, which differ" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_draw_of_the_wrong_distribution_with_the_right_mean_and_spread_is_refused(tmp_path):
    # A uniform draw of normal's mean and standard deviation: pooled values of x + noise cannot tell
    # them apart (measured at 4,096 values); the residuals, with x cancelled, do.
    def uniform_of_the_same_moments(ctx, op):
        (template,) = ctx.make_node("ConstantOfShape", [ctx.constant(np.array(op.attr("shape"), np.int64), "shape")])
        half = np.sqrt(3.0) * float(op.attr("std"))
        ctx.make_node("RandomUniformLike", [template], [op.output("out")], dtype=1, low=float(op.attr("mean")) - half, high=float(op.attr("mean")) + half)

    model = Lambda(lambda self, x: x + flow.randn(x.shape)).eval()
    for shape in [(4, 64), (2, 8)]:
        with pytest.raises(flow2onnx.VerificationError, match="compared by its statistics, which differ"):
            flow2onnx.export(model, [flow.randn(*shape)], tmp_path / "m.onnx", plugins=[overriding("normal", uniform_of_the_same_moments)])
        assert list(tmp_path.iterdir()) == []


def test_the_divergence_finder_compares_random_draws_by_their_statistics_and_blames_the_wrong_op(tmp_path):
    # The draw is right and the relu after it wrong: element by element, the draw itself would differ.
    def leaky(ctx, op):
        ctx.make_node("LeakyRelu", [op.input("x")], [op.output("y")], alpha=0.5)

    model = Lambda(lambda self, x: flow.relu(x + flow.randn(x.shape)) * 2.0).eval()
    with pytest.raises(flow2onnx.VerificationError) as caught:
        flow2onnx.export(model, [flow.randn(4, 64)], tmp_path / "m.onnx", plugins=[overriding("relu", leaky)])
    divergence = caught.value.divergence
    assert divergence is not None and divergence.op_type == "relu" and divergence.plugin == "WrongRelu"


def test_an_output_of_uninitialized_memory_is_not_verified_and_says_why(tmp_path):
    model = Lambda(lambda self, x: flow.empty(x.size(0), 8) + x).eval()
    result = flow2onnx.export(model, [flow.randn(3, 8)], tmp_path / "m.onnx")
    assert result.report.passed and not result.report.verified
    assert "computed from memory OneFlow leaves as it was (empty)" in result.report.verdict
    assert any("flow.empty" in warning for warning in result.warnings)


def test_the_kolmogorov_smirnov_test_tells_distributions_apart_and_alike():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(4000), rng.standard_normal(3000)
    assert ks_two_sample(a, b)[1] > 1e-3
    assert ks_two_sample(a, b * 1.3)[1] < RANDOM_ALPHA  # 30% more spread
    assert ks_two_sample(a, b + 0.2)[1] < RANDOM_ALPHA  # a fifth of a standard deviation off
    integers = rng.integers(0, 5, 2000)
    assert ks_two_sample(integers, rng.integers(0, 5, 2000))[1] > 1e-3 and ks_two_sample(integers, rng.integers(0, 6, 2000))[1] < RANDOM_ALPHA
    assert ks_two_sample(np.array([]), np.array([1.0]))[1] == 0.0
