"""Quantization-aware-training ops in inference: min-max observers and (fake) quantization.

OneFlow's "google" formula: a symmetric scheme maps [-max|x|, max|x|] to [-(2^(b-1) - 1), 2^(b-1) - 1]
with zero point 0 (values clamp at -2^(b-1)); an affine scheme maps [min, max] to [0, 2^b - 1] with
zero point -round(min / scale). Quantization rounds half to even, as ONNX Round does. Observers
reduce over the whole tensor, or per channel (axis 0) with per_layer_quantization=False.
"""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import Lowerings, hookimpl, reduce, scalar_like

LOWERINGS = Lowerings()


def _check_formula(ctx, op):
    if op.attr("quantization_formula") != "google":
        raise ctx.error(
            f"quantization_formula={op.attr('quantization_formula')!r}: only the 'google' formula lowers to ONNX "
            "(the 'cambricon' one rounds scales to powers of two)"
        )


def _levels(op) -> tuple[float, float]:
    bits = op.attr("quantization_bit")
    if op.attr("quantization_scheme") == "symmetric":
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _scale_and_zero_point(ctx, op, maximum: str, minimum: str | None):
    """Scale and zero point from the observed maximum (and minimum, for the affine scheme)."""
    low, high = _levels(op)
    scale_out, zero_out = op.output("scale"), op.output("zero_point")
    if op.attr("quantization_scheme") == "symmetric":
        ctx.make_node("Div", [maximum, scalar_like(ctx, scale_out, high, "levels")], [scale_out])
        ctx.make_node("Mul", [scale_out, scalar_like(ctx, scale_out, 0, "zero")], [zero_out])
        return
    (span,) = ctx.make_node("Sub", [maximum, minimum])
    ctx.make_node("Div", [span, scalar_like(ctx, scale_out, high - low, "levels")], [scale_out])
    (ratio,) = ctx.make_node("Div", [minimum, scale_out])
    (rounded,) = ctx.make_node("Round", [ratio])
    ctx.make_node("Neg", [rounded], [zero_out])


@LOWERINGS.op("min_max_observer")
def lower_min_max_observer(ctx, op):
    _check_formula(ctx, op)
    x = op.input("in")
    rank = ctx.rank(x)
    per_layer = op.attr("per_layer_quantization")
    axes = list(range(rank)) if per_layer else list(range(1, rank))
    shape = ctx.constant(np.array([1] if per_layer else [-1], dtype=np.int64), "scale_shape")

    def observed(onnx_type: str, source: str) -> str:
        (reduced,) = ctx.make_node("Reshape", [reduce(ctx, onnx_type, source, axes, keepdims=False), shape])
        return reduced

    if op.attr("quantization_scheme") == "symmetric":
        (magnitude,) = ctx.make_node("Abs", [x])
        _scale_and_zero_point(ctx, op, observed("ReduceMax", magnitude), None)
    else:
        _scale_and_zero_point(ctx, op, observed("ReduceMax", x), observed("ReduceMin", x))


@LOWERINGS.op("moving_average_min_max_observer")
def lower_moving_average_min_max_observer(ctx, op):
    """In inference the observer reports the scale of its stored moving maximum and minimum."""
    _check_formula(ctx, op)
    if op.attr("training"):
        raise ctx.error("training=True updates the moving statistics; put the module in eval mode")
    _scale_and_zero_point(ctx, op, op.input("moving_max"), op.input("moving_min"))


def _broadcastable(ctx, tensor: str, rank: int) -> str:
    """A per-channel (axis 0) scale or zero point reshaped to broadcast against a rank-``rank`` input."""
    if int(np.prod(ctx.shape(tensor))) <= 1 or rank <= 1:
        return tensor
    shape = ctx.constant(np.array([-1] + [1] * (rank - 1), dtype=np.int64), "per_channel")
    return ctx.make_node("Reshape", [tensor, shape])[0]


def _quantized(ctx, op, outputs=None) -> tuple[str, str, str]:
    _check_formula(ctx, op)
    x = op.input("in")
    rank = ctx.rank(x)
    scale = _broadcastable(ctx, op.input("scale"), rank)
    zero_point = _broadcastable(ctx, op.input("zero_point"), rank)
    low, high = _levels(op)
    (ratio,) = ctx.make_node("Div", [x, scale])
    if op.attr("quantization_scheme") != "symmetric":
        (ratio,) = ctx.make_node("Add", [ratio, zero_point])
    (rounded,) = ctx.make_node("Round", [ratio])
    (levels,) = ctx.make_node("Clip", [rounded, scalar_like(ctx, x, low, "low"), scalar_like(ctx, x, high, "high")], outputs)
    return levels, scale, zero_point


@LOWERINGS.op("quantization")
def lower_quantization(ctx, op):
    """The quantized levels, in the input's float type."""
    _quantized(ctx, op, [op.output("out")])


@LOWERINGS.op("fake_quantization")
def lower_fake_quantization(ctx, op):
    """Quantize and dequantize: the values the quantized model computes with."""
    levels, scale, zero_point = _quantized(ctx, op)
    if op.attr("quantization_scheme") != "symmetric":
        (levels,) = ctx.make_node("Sub", [levels, zero_point])
    ctx.make_node("Mul", [levels, scale], [op.output("out")])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
