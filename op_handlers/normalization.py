"""Normalization: OneFlow's ``normalization`` op (BatchNorm in inference mode)."""

from __future__ import annotations

import numpy as np

from flow2onnx.hookspecs import hookimpl


def lower_normalization(ctx, op):
    if op.attrs.get("training", False):
        raise ctx.error("training=True: batch statistics cannot be exported; put the module in eval mode")
    if not op.has_input("moving_mean"):
        raise ctx.error("no running statistics (track_running_stats=False): ONNX BatchNormalization needs them")
    x = op.input("x")
    axis = op.attrs.get("axis", 1)
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
        epsilon=float(op.attrs.get("epsilon", 1e-5)),
    )


@hookimpl
def flow2onnx_register_lowerings(register):
    register("normalization", lower_normalization)
