"""Reductions: sum, max, min, prod, any, all, variance, argmax, top-k and argsort.

ONNX moved ReduceSum's axes from an attribute to an input at opset 13 and the other reductions'
at opset 18; the ``reduce`` helper emits the form of the target opset, so each lowering is
registered once.
"""

from __future__ import annotations

import functools

import numpy as np

from flow2onnx import hookimpl

from flow2onnx.lowering.helpers import cast, cast_if_needed, dims, int64s, is_dynamic, normalize_axes, reduce

_REDUCE = {
    "reduce_sum": "ReduceSum",
    "reduce_max": "ReduceMax",
    "reduce_min": "ReduceMin",
    "reduce_prod": "ReduceProd",
}


def _axes(ctx, x, axes):
    rank = ctx.rank(x)
    return normalize_axes(axes, rank) if axes else list(range(rank))


def lower_reduce(ctx, op, onnx_type: str):
    x = op.input("input_tensor")
    out = op.output("output_tensor")
    axes = _axes(ctx, x, op.attr("axis"))
    keepdims = bool(op.attr("keepdims"))
    if ctx.dtype(x) == np.bool_:
        # ONNX reductions take no booleans: reduce as int32 and cast back.
        result = reduce(ctx, onnx_type, cast(ctx, x, np.int32), axes, keepdims)
        cast(ctx, result, ctx.dtype(out), [out])
        return
    reduce(ctx, onnx_type, x, axes, keepdims, [out])


def lower_reduce_bool(ctx, op, onnx_type: str):
    """any / all: the max / min of the values as 0/1 integers."""
    x = op.input("input_tensor")
    axes = _axes(ctx, x, op.attr("axis"))
    as_int = cast(ctx, cast_if_needed(ctx, x, np.bool_), np.int32)
    result = reduce(ctx, onnx_type, as_int, axes, bool(op.attr("keepdims")))
    cast(ctx, result, np.bool_, [op.output("output_tensor")])


def lower_var(ctx, op):
    """Two-pass variance: mean of the squared deviations, divided by N - 1 when unbiased."""
    x = op.input("input")
    axes = _axes(ctx, x, op.attr("dim"))
    keepdims = bool(op.attr("keepdim"))
    unbiased = bool(op.attr("unbiased"))
    mean = reduce(ctx, "ReduceMean", x, axes, True)
    (deviation,) = ctx.make_node("Sub", [x, mean])
    (squared,) = ctx.make_node("Mul", [deviation, deviation])
    total = reduce(ctx, "ReduceSum", squared, axes, keepdims)
    dtype = ctx.dtype(x)
    if any(is_dynamic(ctx, x, axis) for axis in axes):
        # The count includes the batch: compute it in the graph.
        (count,) = ctx.make_node("ReduceProd", [dims(ctx, x, axes)], keepdims=0)
        count = cast(ctx, count, dtype)
        if unbiased:
            (count,) = ctx.make_node("Sub", [count, ctx.constant(np.array(1, dtype), "one")])
        ctx.make_node("Div", [total, count], [op.output("output")])
        return
    count = int(np.prod([ctx.shape(x)[axis] for axis in axes])) - int(unbiased)
    # OneFlow gives NaN for an unbiased variance of one element (0 / 0), as does this division.
    ctx.make_node("Div", [total, ctx.constant(np.array(count, dtype), "count")], [op.output("output")])


def lower_arg(ctx, op, onnx_type: str):
    """OneFlow's argmax reduces the last axis without keeping it (it transposes for others).

    There is no argmin lowering: OneFlow 0.9 compiles argmin as the argmax of the negated input.
    """
    out = op.output("out")
    dtype = ctx.dtype(out)
    if dtype == np.int64:
        ctx.make_node(onnx_type, [op.input("in")], [out], axis=-1, keepdims=0)
    else:
        (index,) = ctx.make_node(onnx_type, [op.input("in")], axis=-1, keepdims=0)
        cast(ctx, index, dtype, [out])


def _indices_out(ctx, indices, out):
    if ctx.dtype(out) == np.int64:
        ctx.make_node("Identity", [indices], [out])
    else:
        cast(ctx, indices, ctx.dtype(out), [out])


def lower_top_k(ctx, op):
    """OneFlow's top_k returns only the indices (of the last axis); the values come from a dim_gather."""
    x = op.input("in")
    k = int(op.attr("k"))
    size = ctx.shape(x)[-1]
    if is_dynamic(ctx, x, ctx.rank(x) - 1):
        raise ctx.error("top-k over the dynamic batch axis: k would depend on the batch size")
    k = min(k, size)
    _, indices = ctx.make_node("TopK", [x, int64s(ctx, [k], "k")], 2, axis=-1, largest=1, sorted=1)
    _indices_out(ctx, indices, op.output("out"))


def lower_arg_sort(ctx, op):
    x = op.input("in")
    if is_dynamic(ctx, x, ctx.rank(x) - 1):
        raise ctx.error("sorting the dynamic batch axis is not supported")
    direction = op.attr("direction")
    if direction not in ("ASCENDING", "DESCENDING"):
        raise ctx.error(f"direction={direction!r}: expected ASCENDING or DESCENDING")
    size = ctx.shape(x)[-1]
    largest = int(direction == "DESCENDING")
    _, indices = ctx.make_node("TopK", [x, int64s(ctx, [size], "k")], 2, axis=-1, largest=largest, sorted=1)
    _indices_out(ctx, indices, op.output("out"))


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type, onnx_type in _REDUCE.items():
        lowering = functools.partial(lower_reduce, onnx_type=onnx_type)
        register(op_type, lowering)
    for op_type, onnx_type in (("reduce_any", "ReduceMax"), ("reduce_all", "ReduceMin")):
        register(op_type, functools.partial(lower_reduce_bool, onnx_type=onnx_type))
    register("var", lower_var)
    register("argmax", functools.partial(lower_arg, onnx_type="ArgMax"))
    register("top_k", lower_top_k)
    register("arg_sort", lower_arg_sort)
