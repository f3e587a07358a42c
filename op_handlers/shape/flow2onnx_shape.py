"""Shape and creation ops: reshape (OneFlow 0.9 also compiles ``flatten`` to it), constant, eye, arange, fill_,
empty, tensor_constant, and random draws (normal, uniform, uniform_int, exponential, multinomial)."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from flow2onnx.plugin import Lowerings, cast, cast_if_needed, hookimpl, reshaped_weight, size_value, sizes_attr, sizes_tensor, squeeze, unsqueeze

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


@LOWERINGS.op("reshape", since_opset=9)
def lower_reshape(ctx, op):
    x = op.input("in")
    if reshaped_weight(ctx, x, op.output("out")):
        return
    target = list(op.attr("shape"))
    source = ctx.shape(x)
    other = ctx.variant_attr(op, "shape")
    if other is not None and len(other) == len(target):
        # The same reshape compiled at other sizes of the dynamic axes: the dims that differ follow
        # them. Where a dim equals the input's dim at the same index in both compilations, Reshape's
        # 0 copies it (and shape inference can follow its symbol); one other dim can be -1.
        other_source = ctx.variant_shape(x) or ()
        inferred = []
        for axis, (a, b) in enumerate(zip(target, other)):
            if a == b:
                continue
            if axis < min(len(source), len(other_source)) and a == source[axis] and b == other_source[axis]:
                target[axis] = 0
            else:
                inferred.append(axis)
        if len(inferred) > 1:
            # Reshape can infer one dim; the others are computed from Shape (channel shuffle's
            # (N, C, H, W) -> (N, g, C/g, H, W) moves H and W to other indices).
            follows = ctx.follows_sizes(op, "shape")
            target[inferred[0]] = -1
            computed = [follows[axis] if axis in inferred[1:] else None for axis in range(len(target))]
            ctx.make_node("Reshape", [x, sizes_tensor(ctx, target, computed)], [op.output("out")])
            return
        for axis in inferred:
            target[axis] = -1
    elif ctx.dynamic_batch and target and source and -1 not in target:
        # No second compilation to compare with (a compiled graph was exported): guess from sizes.
        if target[0] == source[0] == ctx.example_batch:
            # The compiled graph baked the example's batch size in; Reshape's 0 copies the input's dim 0.
            target[0] = 0
        elif ctx.example_batch in (source[0], target[0]):
            # The batch is folded into dim 0 (batched matmul flattens (B, H, ...) to (B * H, ...)),
            # unfolded from it, or moved there from another axis: let Reshape infer dim 0.
            target[0] = -1
    shape = ctx.constant(np.array(target, dtype=np.int64), "shape")
    ctx.make_node("Reshape", [x, shape], [op.output("out")])


@LOWERINGS.op("constant", since_opset=9)
def lower_constant(ctx, op):
    """A tensor filled with one value that the graph creates (e.g. BatchNorm's unit scale when affine=False)."""
    dtype = op.attr("dtype") or ctx.dtype(op.output("out"))
    value = op.attr("floating_value") if op.attr("is_floating_value") else op.attr("integer_value")
    # ConstantOfShape keeps the file small: one value and a shape, however large the tensor.
    ctx.make_node(
        "ConstantOfShape",
        [sizes_attr(ctx, op, "shape")],
        [op.output("out")],
        value=numpy_helper.from_array(np.array([value], dtype=dtype)),
    )


@LOWERINGS.op("arange")
def lower_arange(ctx, op):
    dtype = ctx.dtype(op.output("out"))
    prefix = "float" if np.issubdtype(dtype, np.floating) else "integer"
    inputs = []
    for part in ("start", "limit", "delta"):
        # A bound computed from a size in Python (flow.arange(x.shape[2]), FAN's position grid)
        # follows the dynamic axes: computed from Shape of the inputs.
        follows = ctx.follows_sizes(op, f"{prefix}_{part}")
        inputs.append(size_value(ctx, follows, dtype) if follows else ctx.constant(np.array(op.attr(f"{prefix}_{part}"), dtype), part))
    ctx.make_node("Range", inputs, [op.output("out")])


@LOWERINGS.op("fill_", since_opset=9)
def lower_fill(ctx, op):
    """``x.fill_(value)``: a tensor of x's shape, read from the graph so a dynamic size follows, and
    of its dtype, holding the scalar the model gave (a float for float tensors, an int for integers)."""
    x, out = op.input("in"), op.output("out")
    dtype = ctx.dtype(out)
    value = op.attr("floating_value") if op.attr("is_floating_value") else op.attr("integral_value")
    (shape,) = ctx.make_node("Shape", [x])
    ctx.make_node("ConstantOfShape", [shape], [out], value=numpy_helper.from_array(np.array([value]).astype(dtype)))


@LOWERINGS.op("fill_tensor_", since_opset=9)
def lower_fill_tensor(ctx, op):
    """``x.fill_(value)`` with a 0-d tensor as the value: the value, converted to x's dtype, broadcast to x's shape."""
    x, out = op.input("in"), op.output("out")
    value = cast_if_needed(ctx, op.input("value"), ctx.dtype(out))
    (shape,) = ctx.make_node("Shape", [x])
    ctx.make_node("Expand", [value, shape], [out])


#: The dtypes ONNX Runtime's CPU EyeLike kernel takes (its kernel registry, 1.23).
_EYE_LIKE_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.uint64))


@LOWERINGS.op("eye")
def lower_eye(ctx, op):
    """A constant; or, where its size is computed from a dynamic axis (``flow.eye(x.size(1))``),
    ``EyeLike`` of zeros of that size, computed from the inputs' ``Shape``."""
    dtype, out = np.dtype(op.attr("dtype")), op.output("out")
    rows, cols = int(op.attr("rows")), int(op.attr("cols"))
    follows = [ctx.follows_sizes(op, "rows"), ctx.follows_sizes(op, "cols")]
    if not any(follows):
        ctx.make_node("Identity", [ctx.constant(np.eye(rows, cols, dtype=dtype), "eye")], [out])
        return
    computed = dtype if dtype in _EYE_LIKE_DTYPES else np.dtype(np.float32)  # booleans, narrow integers: cast back
    (zeros,) = ctx.make_node("ConstantOfShape", [sizes_tensor(ctx, [rows, cols], follows)], value=numpy_helper.from_array(np.zeros(1, computed)))
    if computed == dtype:
        ctx.make_node("EyeLike", [zeros], [out])
    else:
        cast(ctx, ctx.make_node("EyeLike", [zeros])[0], dtype, [out])


def _zeros_of_shape(ctx, op, dtype, attribute: str = "shape", out: str | None = None) -> str:
    """Zeros of the shape ``op``'s ``attribute`` holds, computed from the inputs' ``Shape`` where it
    follows the dynamic axes: the template of a ``...Like`` draw, or ``empty``'s value."""
    outputs = None if out is None else [out]
    return ctx.make_node("ConstantOfShape", [sizes_attr(ctx, op, attribute)], outputs, value=numpy_helper.from_array(np.zeros(1, dtype)))[0]


def _draw_dtype(ctx, op, dtype) -> np.dtype:
    """The dtype ONNX Runtime draws in for an output of ``dtype``: its random kernels take float32
    and float64 (its kernel registry, 1.23); float16 is drawn in float32 and cast."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ctx.error(f"a random draw of {dtype}: OneFlow draws floats here")
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _drawn(ctx, op, onnx_type: str, dtype, out: str | None = None, **attributes) -> str:
    """``RandomNormalLike``/``RandomUniformLike`` of zeros of the op's shape, in ``dtype`` (cast to the
    op's output dtype where that differs). No seed: like OneFlow, every run draws afresh."""
    draw = _draw_dtype(ctx, op, dtype)
    template = _zeros_of_shape(ctx, op, draw)
    onnx_dtype = helper.np_dtype_to_tensor_dtype(draw)
    if out is not None and draw == np.dtype(dtype):
        return ctx.make_node(onnx_type, [template], [out], dtype=onnx_dtype, **attributes)[0]
    (drawn,) = ctx.make_node(onnx_type, [template], dtype=onnx_dtype, **attributes)
    return drawn if out is None else cast(ctx, drawn, dtype, [out])


@LOWERINGS.op("empty", since_opset=9)
def lower_empty(ctx, op):
    """Zeros: ``empty``'s values are whatever memory held, so any value is OneFlow's; verification
    does not judge what is computed from them."""
    _zeros_of_shape(ctx, op, np.dtype(op.attr("dtype")), out=op.output("out"))


@LOWERINGS.op("tensor_constant", since_opset=9)
def lower_tensor_constant(ctx, op):
    """``flow.full(shape, value)`` with ``value`` a one-element tensor of the result's dtype: that
    element expanded to the shape (computed from the inputs' ``Shape`` where it follows them)."""
    value, out = op.input("in"), op.output("out")
    dtype = np.dtype(op.attr("dtype"))
    if ctx.dtype(value) != dtype:
        # Measured: OneFlow 0.9 reads the value's bytes as the result's dtype (an int64 5 gives
        # 7.0e-45 in float32, a float64 5.25 gives 0), which no cast reproduces.
        raise ctx.error(
            f"full() of a {ctx.dtype(value)} value tensor into {dtype}: OneFlow 0.9 reads the value's bytes as {dtype} "
            "instead of converting it (an int64 5 becomes 7.0e-45 in float32). Give the value in the result's dtype "
            "(value.to(dtype)), or a Python number"
        )
    (scalar,) = ctx.make_node("Reshape", [value, ctx.constant(np.array([], dtype=np.int64), "scalar_shape")])
    ctx.make_node("Expand", [scalar, sizes_attr(ctx, op, "shape")], [out])


@LOWERINGS.op("normal", since_opset=9)
def lower_normal(ctx, op):
    dtype = np.dtype(op.attr("dtype"))
    _drawn(ctx, op, "RandomNormalLike", dtype, op.output("out"), mean=float(op.attr("mean")), scale=float(op.attr("std")))


@LOWERINGS.op("uniform", since_opset=9)
def lower_uniform(ctx, op):
    dtype = np.dtype(op.attr("dtype"))
    _drawn(ctx, op, "RandomUniformLike", dtype, op.output("out"), low=float(op.attr("from")), high=float(op.attr("to")))


@LOWERINGS.op("uniform_int", since_opset=9)
def lower_uniform_int(ctx, op):
    """Integers in ``[from, to)``: the floor of a float64 draw in that range, kept below ``to`` (a
    draw that rounds up to it), cast to the op's dtype."""
    low, high = int(op.attr("from")), int(op.attr("to"))
    if high - low > 2**52:
        raise ctx.error(f"randint over [{low}, {high}): a float64 draw holds every integer only up to 2**53 apart")
    drawn = _drawn(ctx, op, "RandomUniformLike", np.float64, low=float(low), high=float(high))
    (whole,) = ctx.make_node("Floor", [drawn])
    (below,) = ctx.make_node("Min", [whole, ctx.constant(np.array(high - 1, dtype=np.float64), "highest")])
    cast(ctx, below, np.dtype(op.attr("dtype")), [op.output("out")])


@LOWERINGS.op("exponential", since_opset=9)
def lower_exponential(ctx, op):
    """``-log(1 - u) / lambda`` for ``u`` uniform in ``[0, 1)``: ``1 - u`` is in ``(0, 1]``, so the log is finite."""
    dtype = np.dtype(op.attr("dtype"))
    draw = _draw_dtype(ctx, op, dtype)
    template = _zeros_of_shape(ctx, op, draw, "out_shape")
    (u,) = ctx.make_node("RandomUniformLike", [template], dtype=helper.np_dtype_to_tensor_dtype(draw), low=0.0, high=1.0)
    (rest,) = ctx.make_node("Sub", [ctx.constant(np.array(1.0, dtype=draw), "one"), u])
    (log,) = ctx.make_node("Log", [rest])
    scale = ctx.constant(np.array(-1.0 / float(op.attr("lambd")), dtype=draw), "minus_inverse_rate")
    if draw == dtype:
        ctx.make_node("Mul", [log, scale], [op.output("out")])
    else:
        cast(ctx, ctx.make_node("Mul", [log, scale])[0], dtype, [op.output("out")])


@LOWERINGS.op("multinomial_with_replacement", since_opset=9)
def lower_multinomial(ctx, op):
    """``Multinomial`` of the log of the weights (ONNX takes unnormalised log-probabilities; a weight
    of 0 is -inf, never drawn), one row per row of a 2-D input; float32, the kernel's only type."""
    x, out = op.input("x"), op.output("out")
    rank = ctx.rank(x)
    weights = cast_if_needed(ctx, x, np.float32)
    if rank == 1:
        weights = unsqueeze(ctx, weights, [0])
    (log,) = ctx.make_node("Log", [weights])
    dtype = np.dtype(ctx.dtype(out))
    drawn_dtype = dtype if dtype in (np.int32, np.int64) else np.dtype(np.int64)
    attributes = {"sample_size": int(op.attr("num_samples")), "dtype": helper.np_dtype_to_tensor_dtype(drawn_dtype)}
    if rank == 2 and drawn_dtype == dtype:
        ctx.make_node("Multinomial", [log], [out], **attributes)
        return
    (drawn,) = ctx.make_node("Multinomial", [log], **attributes)
    if rank == 1:
        drawn = squeeze(ctx, drawn, [0])
    if drawn_dtype == dtype:
        ctx.make_node("Identity", [drawn], [out])
    else:
        cast(ctx, drawn, dtype, [out])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
