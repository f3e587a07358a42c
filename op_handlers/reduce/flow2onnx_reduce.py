"""Reductions: sum, NaN-skipping sum, max, min, prod, any, all, variance, median, argmax, top-k, argsort and searchsorted.

ONNX moved ReduceSum's axes from an attribute to an input at opset 13 and the other reductions'
at opset 18; the ``reduce`` helper emits the form of the target opset, so each lowering is
registered once.
"""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import Lowerings, accepted_dtype, cast, cast_if_needed, dims, hookimpl, int64s, is_dynamic, normalize_axes, reduce, unsqueeze

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


def _axes(ctx, x, axes):
    rank = ctx.rank(x)
    return normalize_axes(axes, rank) if axes else list(range(rank))


def lower_reduce(ctx, op, onnx_type: str):
    x = op.input("input_tensor")
    out = op.output("output_tensor")
    axes = _axes(ctx, x, op.attr("axis"))
    keepdims = bool(op.attr("keepdims"))
    # ONNX reductions take no booleans, and 8-bit integers only from opset 12 (ReduceProd never):
    # reduce those as a wider integer and cast back.
    compute = accepted_dtype(ctx, onnx_type, ctx.dtype(x))
    if compute == ctx.dtype(x) == ctx.dtype(out):
        reduce(ctx, onnx_type, x, axes, keepdims, [out])
        return
    result = reduce(ctx, onnx_type, cast_if_needed(ctx, x, compute), axes, keepdims)
    cast(ctx, result, ctx.dtype(out), [out])


# OneFlow op type -> (ONNX op type, since_opset)
_REDUCE = {
    "reduce_sum": ("ReduceSum", 9),
    "reduce_max": ("ReduceMax", 9),
    "reduce_min": ("ReduceMin", 9),
    "reduce_prod": ("ReduceProd", 9),
}
for op_type, (onnx_type, since) in _REDUCE.items():
    LOWERINGS.add(op_type, lower_reduce, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("reduce_any", since_opset=9, onnx_type="ReduceMax")
@LOWERINGS.op("reduce_all", since_opset=9, onnx_type="ReduceMin")
def lower_reduce_bool(ctx, op, onnx_type: str):
    """any / all: the max / min of the values as 0/1 integers."""
    x = op.input("input_tensor")
    axes = _axes(ctx, x, op.attr("axis"))
    as_int = cast(ctx, cast_if_needed(ctx, x, np.bool_), np.int32)
    result = reduce(ctx, onnx_type, as_int, axes, bool(op.attr("keepdims")))
    cast(ctx, result, np.bool_, [op.output("output_tensor")])


@LOWERINGS.op("var", since_opset=9)
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


@LOWERINGS.op("argmax", since_opset=9, onnx_type="ArgMax")
def lower_arg(ctx, op, onnx_type: str):
    """OneFlow's argmax reduces the last axis without keeping it (it transposes for others).

    There is no argmin lowering: OneFlow 0.9 compiles argmin as the argmax of the negated input.
    """
    out = op.output("out")
    dtype = ctx.dtype(out)
    x = op.input("in")
    x = cast_if_needed(ctx, x, accepted_dtype(ctx, onnx_type, ctx.dtype(x)))  # booleans as integers
    if dtype == np.int64:
        ctx.make_node(onnx_type, [x], [out], axis=-1, keepdims=0)
    else:
        (index,) = ctx.make_node(onnx_type, [x], axis=-1, keepdims=0)
        cast(ctx, index, dtype, [out])


def _indices_out(ctx, indices, out):
    if ctx.dtype(out) == np.int64:
        ctx.make_node("Identity", [indices], [out])
    else:
        cast(ctx, indices, ctx.dtype(out), [out])


@LOWERINGS.op("top_k")
def lower_top_k(ctx, op):
    """OneFlow's top_k returns only the indices (of the last axis); the values come from a dim_gather."""
    x = op.input("in")
    k = int(op.attr("k"))
    size = ctx.shape(x)[-1]
    if is_dynamic(ctx, x, ctx.rank(x) - 1):
        # OneFlow takes k or the whole axis, whichever is smaller: computed from Shape at every size.
        (count,) = ctx.make_node("Min", [int64s(ctx, [k], "k"), dims(ctx, x, [ctx.rank(x) - 1])])
    else:
        count = int64s(ctx, [min(k, size)], "k")
    _, indices = ctx.make_node("TopK", [x, count], 2, axis=-1, largest=1, sorted=1)
    _indices_out(ctx, indices, op.output("out"))


@LOWERINGS.op("arg_sort")
def lower_arg_sort(ctx, op):
    x = op.input("in")
    direction = op.attr("direction")
    if direction not in ("ASCENDING", "DESCENDING"):
        raise ctx.error(f"direction={direction!r}: expected ASCENDING or DESCENDING")
    size = ctx.shape(x)[-1]
    largest = int(direction == "DESCENDING")
    # The whole axis: its size from Shape where it is dynamic.
    count = dims(ctx, x, [ctx.rank(x) - 1]) if is_dynamic(ctx, x, ctx.rank(x) - 1) else int64s(ctx, [size], "k")
    x = cast_if_needed(ctx, x, accepted_dtype(ctx, "TopK", ctx.dtype(x)))  # booleans sort as 0 and 1
    _, indices = ctx.make_node("TopK", [x, count], 2, axis=-1, largest=largest, sorted=1)
    _indices_out(ctx, indices, op.output("out"))


def _insertion_points(ctx, op, sequence, values, out, axis):
    """How many elements of ``sequence`` (along ``axis`` of the broadcast comparison) each value goes
    after: a count of comparisons, which for a sorted sequence is the binary search's answer.

    OneFlow's search moves right past an element unless ``element >= value`` (left) or ``element >
    value`` (right), so a NaN value goes after everything; counting the elements for which that
    does not hold gives the same. (A sequence that holds NaN is not sorted for this count.)
    """
    if op.attr("right"):
        (after,) = ctx.make_node("Greater", [sequence, values])
    elif ctx.opset >= 12:
        (after,) = ctx.make_node("GreaterOrEqual", [sequence, values])
    else:
        (greater,) = ctx.make_node("Greater", [sequence, values])
        (equal,) = ctx.make_node("Equal", [sequence, values])
        (after,) = ctx.make_node("Or", [greater, equal])
    (before,) = ctx.make_node("Not", [after])
    dtype = ctx.dtype(out)
    reduce(ctx, "ReduceSum", cast(ctx, before, dtype), [axis], False, [out])


@LOWERINGS.op("searchsorted")
def lower_searchsorted(ctx, op):
    """searchsorted by broadcast comparison: values (..., K) against the sequence (..., M) as
    (..., K, 1) against (..., 1, M), or against a 1-D sequence directly, summed over M."""
    sequence, values, out = op.input("sorted_sequence"), op.input("values"), op.output("out")
    values_in = cast_if_needed(ctx, values, ctx.dtype(sequence))
    rank = ctx.rank(values)
    if ctx.rank(sequence) == 1:
        _insertion_points(ctx, op, sequence, unsqueeze(ctx, values_in, [rank]), out, rank)
        return
    _insertion_points(ctx, op, unsqueeze(ctx, sequence, [rank - 1]), unsqueeze(ctx, values_in, [rank]), out, rank)


@LOWERINGS.op("searchsorted_scalar")
def lower_searchsorted_scalar(ctx, op):
    """searchsorted of one Python number in a 1-D sequence; OneFlow converts the number to the
    sequence's dtype first (2.5 in an int64 sequence is searched as 2)."""
    sequence, out = op.input("sorted_sequence"), op.output("out")
    value = ctx.constant(np.array(op.attr("values")).astype(ctx.dtype(sequence)), "value")
    _insertion_points(ctx, op, sequence, value, out, 0)


@LOWERINGS.op("reduce_nansum")
def lower_reduce_nansum(ctx, op):
    """A sum that counts NaN as 0."""
    x, out = op.input("input_tensor"), op.output("output_tensor")
    (nan,) = ctx.make_node("IsNaN", [x])
    (cleaned,) = ctx.make_node("Where", [nan, ctx.constant(np.array(0, ctx.dtype(x)), "zero"), x])
    reduce(ctx, "ReduceSum", cleaned, _axes(ctx, x, op.attr("axis")), bool(op.attr("keepdims")), [out])


def _lower_median(ctx, x, values_out, indices_out=None):
    """The lower median along the last axis of ``x`` (element (n - 1) // 2 in ascending order): the
    smallest (n - 1) // 2 + 1 elements by TopK, then the last of them. n is read from ``Shape``, so a
    dynamic axis is followed."""
    (size,) = ctx.make_node("Shape", [x])
    (size,) = ctx.make_node("Gather", [size, ctx.constant(np.array(-1, dtype=np.int64), "last")], axis=0)
    one = ctx.constant(np.array(1, dtype=np.int64), "one")
    (kth,) = ctx.make_node("Sub", [size, one])
    (kth,) = ctx.make_node("Div", [kth, ctx.constant(np.array(2, dtype=np.int64), "two")])
    (count,) = ctx.make_node("Add", [kth, one])
    values, indices = ctx.make_node("TopK", [x, unsqueeze(ctx, count, [0])], outputs=2, axis=-1, largest=0, sorted=1)
    ctx.make_node("Gather", [values, kth], [values_out], axis=-1)
    if indices_out:
        ctx.make_node("Gather", [indices, kth], [indices_out], axis=-1)


@LOWERINGS.op("median")
def lower_median(ctx, op):
    """The median of every element."""
    (flat,) = ctx.make_node("Reshape", [op.input("input"), int64s(ctx, [-1], "flat")])
    _lower_median(ctx, flat, op.output("output"))


@LOWERINGS.op("median_with_indices")
def lower_median_with_indices(ctx, op):
    """The median along the last axis and its index (OneFlow moves the reduced axis last first)."""
    _lower_median(ctx, op.input("input"), op.output("values"), op.output("indices"))


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
