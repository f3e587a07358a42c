"""Shape and creation ops: reshape (OneFlow 0.9 also compiles ``flatten`` to it), constant, arange."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from flow2onnx.hookspecs import hookimpl


def lower_reshape(ctx, op):
    x = op.input("in")
    target = list(op.attrs["shape"])
    source = ctx.shape(x)
    if ctx.dynamic_batch and target and source and target[0] == source[0] == ctx.example_batch:
        # The compiled graph baked the example's batch size into the shape; ONNX Reshape's 0 copies
        # the input's dim 0 instead, so the model follows the batch it is given.
        target[0] = 0
    elif ctx.dynamic_batch and target and target[0] == ctx.example_batch and -1 not in target:
        # The batch moved here from another axis (a slice of a permuted tensor): let Reshape infer it.
        target[0] = -1
    shape = ctx.constant(np.array(target, dtype=np.int64), "shape")
    ctx.make_node("Reshape", [x, shape], [op.output("out")])


def lower_constant(ctx, op):
    """A tensor filled with one value that the graph creates (e.g. BatchNorm's unit scale when affine=False)."""
    dtype = op.attrs.get("dtype") or ctx.dtype(op.output("out"))
    value = op.attrs["floating_value"] if op.attrs.get("is_floating_value") else op.attrs["integer_value"]
    shape = list(op.attrs["shape"])
    # ConstantOfShape keeps the file small: one value and a shape, however large the tensor.
    ctx.make_node(
        "ConstantOfShape",
        [ctx.constant(np.array(shape, dtype=np.int64), "shape")],
        [op.output("out")],
        value=numpy_helper.from_array(np.array([value], dtype=dtype)),
    )


def lower_arange(ctx, op):
    dtype = ctx.dtype(op.output("out"))
    if np.issubdtype(dtype, np.floating):
        bounds = [op.attrs["float_start"], op.attrs["float_limit"], op.attrs["float_delta"]]
    else:
        bounds = [op.attrs["integer_start"], op.attrs["integer_limit"], op.attrs["integer_delta"]]
    inputs = [ctx.constant(np.array(value, dtype), hint) for value, hint in zip(bounds, ("start", "limit", "delta"))]
    ctx.make_node("Range", inputs, [op.output("out")])


@hookimpl
def flow2onnx_register_lowerings(register):
    register("reshape", lower_reshape)
    register("arange", lower_arange)
    register("constant", lower_constant)
