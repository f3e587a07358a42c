"""Normalization: BatchNorm in inference mode (``normalization``), ``layer_norm`` and ``l2_normalize``.

OneFlow 0.9 builds nn.LayerNorm, GroupNorm and InstanceNorm on the CPU from reductions and ``var``
(lowered in ``reduce``); a graph built for the GPU, or ``flow._C.layer_norm``, has one ``layer_norm``
op, lowered here: written out before opset 17, ONNX LayerNormalization of the centred rows from 17
(see ``layer_normalization``).
"""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import Lowerings, hookimpl, layer_normalization, normalize_axes, reduce

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


@LOWERINGS.op("normalization", since_opset=9)
def lower_normalization(ctx, op):
    if op.attr("training"):
        raise ctx.error("training=True: batch statistics cannot be exported; put the module in eval mode")
    if not op.has_input("moving_mean"):
        raise ctx.error("no running statistics (track_running_stats=False): ONNX BatchNormalization needs them")
    x = op.input("x")
    axis = op.attr("axis")
    if axis < 0:
        axis += ctx.rank(x)
    if axis != 1:
        raise ctx.error(f"normalization over axis {axis}: ONNX BatchNormalization normalizes axis 1 only")
    channels = ctx.shape(op.input("moving_mean"))[0]
    dtype = ctx.dtype(x)
    gamma = op.input("gamma") if op.has_input("gamma") else ctx.constant(np.ones(channels, dtype), "gamma")
    beta = op.input("beta") if op.has_input("beta") else ctx.constant(np.zeros(channels, dtype), "beta")
    ctx.make_node(
        "BatchNormalization",
        [x, gamma, beta, op.input("moving_mean"), op.input("moving_variance")],
        [op.output("y")],
        epsilon=float(op.attr("epsilon")),
    )


def _layer_norm_parts(ctx, op):
    x = op.input("x")
    rank = ctx.rank(x)
    axis = op.attr("begin_norm_axis")
    axis = axis + rank if axis < 0 else axis
    params_axis = op.attr("begin_params_axis")
    params_axis = params_axis + rank if params_axis < 0 else params_axis
    if params_axis != axis:
        raise ctx.error(f"begin_params_axis={params_axis} differs from begin_norm_axis={axis}: ONNX normalizes and scales the same axes")
    for extra in ("mean", "inv_variance"):
        if op.has_output(extra) and ctx.is_read(op.output(extra)):
            raise ctx.error(f"the {extra} output is used; only the normalized output is exported")
    gamma = op.input("gamma") if op.attr("scale") and op.has_input("gamma") else None
    beta = op.input("beta") if op.attr("center") and op.has_input("beta") else None
    return x, axis, gamma, beta, float(op.attr("epsilon"))


@LOWERINGS.op("layer_norm")
def lower_layer_norm(ctx, op):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the axes from begin_norm_axis on."""
    x, axis, gamma, beta, epsilon = _layer_norm_parts(ctx, op)
    axes = list(range(axis, ctx.rank(x)))
    dtype = ctx.dtype(x)
    mean = reduce(ctx, "ReduceMean", x, axes, True)
    (deviation,) = ctx.make_node("Sub", [x, mean])
    (squared,) = ctx.make_node("Mul", [deviation, deviation])
    variance = reduce(ctx, "ReduceMean", squared, axes, True)
    (variance,) = ctx.make_node("Add", [variance, ctx.constant(np.array(epsilon, dtype), "epsilon")])
    (std,) = ctx.make_node("Sqrt", [variance])
    out = op.output("y")
    steps = [name for name in (gamma, beta) if name]
    (normalized,) = ctx.make_node("Div", [deviation, std], None if steps else [out])
    if gamma:
        (normalized,) = ctx.make_node("Mul", [normalized, gamma], None if beta else [out])
    if beta:
        ctx.make_node("Add", [normalized, beta], [out])


@LOWERINGS.op("layer_norm", since_opset=17)
def lower_layer_norm_17(ctx, op):
    x, axis, gamma, beta, epsilon = _layer_norm_parts(ctx, op)
    dtype = ctx.dtype(x)
    if gamma is None:
        gamma = ctx.constant(np.ones(ctx.shape(x)[axis:], dtype), "gamma")
    layer_normalization(ctx, x, axis, gamma, beta, epsilon, [op.output("y")])


@LOWERINGS.op("l2_normalize")
def lower_l2_normalize(ctx, op):
    """x / sqrt(max(sum(x^2), epsilon)) along ``axis`` (F.normalize), and the sum of squares."""
    x = op.input("x")
    axis = normalize_axes([op.attr("axis")], ctx.rank(x))[0]
    (square,) = ctx.make_node("Mul", [x, x])
    total = reduce(ctx, "ReduceSum", square, [axis], True)
    (bounded,) = ctx.make_node("Max", [total, ctx.constant(np.array(op.attr("epsilon"), ctx.dtype(x)), "epsilon")])
    (norm,) = ctx.make_node("Sqrt", [bounded])
    ctx.make_node("Div", [x, norm], [op.output("y")])
    if op.has_output("square_x_sum"):
        shape = ctx.constant(np.array(ctx.shape(op.output("square_x_sum")), dtype=np.int64), "shape")
        ctx.make_node("Reshape", [total, shape], [op.output("square_x_sum")])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
