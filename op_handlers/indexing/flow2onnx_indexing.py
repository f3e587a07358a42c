"""Indexing and selection: gather (index_select, embedding), batch_gather, dim_gather, gather_nd, one_hot,
where, masked_fill, tril/triu, diag, diagonal, and the scatters (dim_scatter_*, scatter_nd, tensor_scatter_nd_update)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from flow2onnx.plugin import Lowerings, cast_if_needed, dims, hookimpl, int64s, is_dynamic, normalize_axes, reduce, scalar_like, select, squeeze, unsqueeze

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


@LOWERINGS.op("gather", since_opset=9)
def lower_gather(ctx, op):
    x = op.input("in")
    axis = normalize_axes([op.attr("axis")], ctx.rank(x))[0]
    ctx.make_node("Gather", [x, op.input("indices")], [op.output("out")], axis=axis)


@LOWERINGS.op("dim_gather")
def lower_dim_gather(ctx, op):
    x = op.input("input")
    axis = normalize_axes([op.attr("dim")], ctx.rank(x))[0]
    ctx.make_node("GatherElements", [x, op.input("index")], [op.output("output")], axis=axis)


@LOWERINGS.op("gather_nd")
def lower_gather_nd(ctx, op):
    indices = cast_if_needed(ctx, op.input("indices"), np.int64)
    ctx.make_node("GatherND", [op.input("params"), indices], [op.output("out")])


@LOWERINGS.op("where", since_opset=9)
def lower_where(ctx, op):
    condition = cast_if_needed(ctx, op.input("condition"), np.bool_)
    out = op.output("out")
    x, y = (cast_if_needed(ctx, op.input(arg), ctx.dtype(out)) for arg in ("x", "y"))
    select(ctx, condition, x, y, ctx.dtype(out), [out])


@LOWERINGS.op("where_scalar_x", since_opset=9, x_scalar=True, y_scalar=False)
@LOWERINGS.op("where_scalar_y", since_opset=9, x_scalar=False, y_scalar=True)
@LOWERINGS.op("where_scalar_xy", since_opset=9, x_scalar=True, y_scalar=True)
def lower_where_scalar(ctx, op, x_scalar: bool, y_scalar: bool):
    """where with a Python scalar for x, y or both (OneFlow keeps the scalars as attributes)."""
    condition = cast_if_needed(ctx, op.input("condition"), np.bool_)
    out = op.output("out")
    dtype = ctx.dtype(out)

    def operand(arg: str, is_scalar: bool):
        if not is_scalar:
            return cast_if_needed(ctx, op.input(arg), dtype)
        prefix = f"{arg}_" if x_scalar and y_scalar else ""
        for kind in ("float", "int", "bool"):
            if op.attrs.get(f"has_{prefix}{kind}_operand"):  # not every scalar op type has every kind
                return ctx.constant(np.array(op.attr(f"{prefix}{kind}_operand"), dtype), f"{arg}_value")
        raise ctx.error(f"no scalar operand for {arg} among the op's attributes {sorted(op.attrs)}")

    select(ctx, condition, operand("x", x_scalar), operand("y", y_scalar), dtype, [out])


@LOWERINGS.op("masked_fill", since_opset=9)
def lower_masked_fill(ctx, op):
    x = op.input("x")
    dtype = ctx.dtype(x)
    if op.attr("has_float_operand"):
        value = op.attr("float_operand")
    elif op.attrs.get("has_bool_operand"):  # not every scalar op type has a bool operand
        value = op.attr("bool_operand")
    else:
        value = op.attr("int_operand")
    mask = cast_if_needed(ctx, op.input("mask"), np.bool_)
    select(ctx, mask, ctx.constant(np.array(value, dtype), "value"), x, dtype, [op.output("out")])


@LOWERINGS.op("tril", since_opset=9, lower=True)
@LOWERINGS.op("triu", since_opset=9, lower=False)
def lower_triangle(ctx, op, lower: bool):
    """tril / triu as a select against a constant mask of the last two axes (ONNX Trilu needs opset 14 and fills only 0)."""
    x = op.input("in")
    rows, cols = ctx.shape(x)[-2:]
    diagonal = int(op.attr("diagonal"))
    if any(is_dynamic(ctx, x, axis) for axis in (ctx.rank(x) - 2, ctx.rank(x) - 1)):
        keep = _triangle_of_shape(ctx, op, x, diagonal, lower)
    else:
        keep = ctx.constant(np.tri(rows, cols, diagonal, dtype=bool) if lower else ~np.tri(rows, cols, diagonal - 1, dtype=bool), "mask")
    dtype = ctx.dtype(x)
    # tril carries its fill value; triu has no fill attributes and fills 0.
    if op.attrs.get("is_floating_fill_value"):
        fill = op.attr("floating_fill_value")
    else:
        fill = op.attrs.get("integer_fill_value", 0)
    select(ctx, keep, x, ctx.constant(np.array(fill, dtype), "fill"), dtype, [op.output("out")])


def _triangle_of_shape(ctx, op, x: str, diagonal: int, lower: bool) -> str:
    """The kept part of the last two axes, for sizes known at run time: ``col - row <= diagonal``
    (tril) or ``>= diagonal`` (triu), from ``Range`` over each axis's size (opset 11)."""
    if ctx.opset < 11:
        raise ctx.error("tril/triu of a dynamic size builds its mask with Range, from opset 11: export with opset 11 or newer")
    rank = ctx.rank(x)
    zero, one = (ctx.constant(np.array(value, np.int64), name) for value, name in ((0, "zero"), (1, "one")))
    sizes = [squeeze(ctx, dims(ctx, x, [axis]), [0]) for axis in (rank - 2, rank - 1)]  # Range takes scalars
    rows, cols = (ctx.make_node("Range", [zero, size, one])[0] for size in sizes)
    (offset,) = ctx.make_node("Sub", [cols, unsqueeze(ctx, rows, [1])])  # [rows, cols]: col - row
    bound = ctx.constant(np.array(diagonal, np.int64), "diagonal")
    (outside,) = ctx.make_node("Greater" if lower else "Less", [offset, bound])
    return ctx.make_node("Not", [outside])[0]


@LOWERINGS.op("diag")
def lower_diag(ctx, op):
    """diag: a vector onto the ``diagonal``-th diagonal of a square matrix, or that diagonal of a matrix out.

    Both directions index with small constants (one index per row or per diagonal element) rather
    than a constant of the matrix's size, and work for every dtype (Gather, GatherND and Where do).
    """
    x, out = op.input("in"), op.output("out")
    offset = int(op.attr("diagonal"))
    if any(is_dynamic(ctx, x, axis) for axis in range(ctx.rank(x))):
        raise ctx.error("diag of a tensor with a dynamic axis: the diagonal's size and place would depend on it")
    if ctx.rank(x) == 1:
        length = ctx.shape(x)[0]
        size = length + abs(offset)
        rows = np.arange(size)
        # Row r holds x[r] (offset >= 0) or x[r + offset] (below the main diagonal), in column r + offset.
        source = np.clip(rows if offset >= 0 else rows + offset, 0, max(length - 1, 0))
        (values,) = ctx.make_node("Gather", [x, ctx.constant(source.astype(np.int64), "source")], axis=0)
        column = unsqueeze(ctx, values, [1])
        (on_diagonal,) = ctx.make_node(
            "Equal",
            [ctx.constant(rows.reshape(1, size).astype(np.int64), "columns"), ctx.constant((rows + offset).reshape(size, 1).astype(np.int64), "diagonal_column")],
        )
        select(ctx, on_diagonal, column, ctx.constant(np.array(0, ctx.dtype(out)), "zero"), ctx.dtype(out), [out])
        return
    if ctx.rank(x) != 2:
        raise ctx.error(f"diag of a rank-{ctx.rank(x)} tensor: OneFlow's diag takes a vector or a matrix")
    rows, columns = ctx.shape(x)
    length = ctx.shape(out)[0]
    steps = np.arange(length)
    indices = np.stack([steps + max(-offset, 0), steps + max(offset, 0)], axis=1).astype(np.int64)
    if length and (indices[-1, 0] >= rows or indices[-1, 1] >= columns):
        raise ctx.error(f"diagonal {offset} of a {rows}x{columns} matrix has no element {length - 1}")
    ctx.make_node("GatherND", [x, ctx.constant(indices.reshape(length, 2), "indices")], [out])


@LOWERINGS.op("embedding")
def lower_embedding(ctx, op):
    """Rows of the weight (padding_idx matters only to gradients)."""
    ctx.make_node("Gather", [op.input("weight"), op.input("indices")], [op.output("out")], axis=0)


@LOWERINGS.op("one_hot")
def lower_one_hot(ctx, op):
    dtype = np.dtype(op.attr("dtype"))
    prefix = "floating" if np.issubdtype(dtype, np.floating) else "integer"
    values = ctx.constant(np.array([op.attr(f"{prefix}_off_value"), op.attr(f"{prefix}_on_value")], dtype=dtype), "off_on")
    depth = ctx.constant(np.array(op.attr("depth"), dtype=np.int64), "depth")
    ctx.make_node("OneHot", [cast_if_needed(ctx, op.input("indices"), np.int64), depth, values], [op.output("out")], axis=-1)


@LOWERINGS.op("batch_gather", since_opset=12)
def lower_batch_gather(ctx, op):
    """Gather along the first axis after the indices' batch axes: GatherND with batch_dims (opset 12)."""
    indices = cast_if_needed(ctx, op.input("indices"), np.int64)
    batch_dims = ctx.rank(op.input("indices")) - 1
    ctx.make_node("GatherND", [op.input("in"), unsqueeze(ctx, indices, [-1])], [op.output("out")], batch_dims=batch_dims)


@LOWERINGS.op("diagonal")
def lower_diagonal(ctx, op):
    """The diagonal of axes 0 and 1 at ``offset``, as the last axis (OneFlow moves the two axes first)."""
    x, offset = op.input("in"), int(op.attr("offset"))
    rows, cols, *rest = ctx.shape(x)
    length = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))
    row = np.arange(length) + max(-offset, 0)
    flat = row * cols + row + offset
    (x,) = ctx.make_node("Reshape", [x, ctx.constant(np.array([rows * cols] + list(rest), dtype=np.int64), "shape")])
    (picked,) = ctx.make_node("Gather", [x, ctx.constant(flat.astype(np.int64), "indices")], axis=0)
    ctx.make_node("Transpose", [picked], [op.output("out")], perm=list(range(1, len(rest) + 1)) + [0])


def _scatter_updates(ctx, op, index):
    """The updates of a dim_scatter op, the shape of its index (OneFlow reads src only there)."""
    src = op.input("src")
    if ctx.shape(src) == ctx.shape(index):
        return src
    zeros = int64s(ctx, [0] * ctx.rank(index), "starts")
    (size,) = ctx.make_node("Shape", [index])
    return ctx.make_node("Slice", [src, zeros, size])[0]


@LOWERINGS.op("dim_scatter_update", "dim_scatter_update_scalar")
@LOWERINGS.op("dim_scatter_add", since_opset=16, reduction="add")
@LOWERINGS.op("dim_scatter_mul", since_opset=16, reduction="mul")
def lower_dim_scatter(ctx, op, reduction: str | None = None):
    """scatter, scatter_add and scatter(reduce="multiply") along ``dim``: ScatterElements (the
    reductions from opset 16)."""
    x, index = op.input("input"), cast_if_needed(ctx, op.input("index"), np.int64)
    if reduction == "mul" and ctx.dtype(x) == np.int64:
        # Measured: scatter([[3, 7, 1, 5]], 1, [[0, 3]], 2, reduce="multiply") gives [[5, 7, 1, 7]] in int64.
        raise ctx.error(
            "scatter(reduce='multiply') of int64: OneFlow 0.9's CPU kernel adds instead of multiplying for int64 "
            "(int32 and floats multiply), so no faithful ONNX model exists; scatter in int32 or a float dtype"
        )
    axis = normalize_axes([op.attr("dim")], ctx.rank(x))[0]
    if op.has_input("src"):
        updates = _scatter_updates(ctx, op, op.input("index"))
    else:
        (size,) = ctx.make_node("Shape", [index])
        (updates,) = ctx.make_node("Expand", [ctx.constant(np.array(op.attr("src_scalar"), ctx.dtype(x)), "src"), size])
    attributes = {"reduction": reduction} if reduction else {}
    ctx.make_node("ScatterElements", [x, index, updates], [op.output("output")], axis=axis, **attributes)


@LOWERINGS.op("scatter_nd")
def lower_scatter_nd(ctx, op):
    """Updates written into zeros of ``shape``."""
    updates = op.input("updates")
    zeros = ctx.make_node("ConstantOfShape", [int64s(ctx, op.attr("shape"), "shape")], value=numpy_helper.from_array(np.zeros(1, ctx.dtype(updates))))[0]
    ctx.make_node("ScatterND", [zeros, cast_if_needed(ctx, op.input("indices"), np.int64), updates], [op.output("out")])


@LOWERINGS.op("tensor_scatter_nd_update")
def lower_tensor_scatter_nd_update(ctx, op):
    ctx.make_node("ScatterND", [op.input("params"), cast_if_needed(ctx, op.input("indices"), np.int64), op.input("updates")], [op.output("out")])


@LOWERINGS.op("index_add", since_opset=16)
def lower_index_add(ctx, op):
    """input with ``alpha * source`` added at ``index`` along ``dim`` (repeated indices add up):
    ScatterElements adding (opset 16), the index broadcast over source's other axes."""
    x, source = op.input("input"), op.input("source")
    rank = ctx.rank(x)
    axis = normalize_axes([op.attr("dim")], rank)[0] if rank else 0
    index = cast_if_needed(ctx, op.input("index"), np.int64)
    if rank > 1:
        index = unsqueeze(ctx, index, [a for a in range(rank) if a != axis])
        (size,) = ctx.make_node("Shape", [source])
        (index,) = ctx.make_node("Expand", [index, size])
    alpha = op.attr("alpha")
    if alpha != 1:
        if np.issubdtype(ctx.dtype(source), np.integer) and alpha != int(alpha):
            raise ctx.error(f"alpha={alpha} is not an integer, and source is {ctx.dtype(source)}: pass an integer alpha, or add in a float dtype")
        (source,) = ctx.make_node("Mul", [source, scalar_like(ctx, source, alpha, "alpha")])
    ctx.make_node("ScatterElements", [x, index, source], [op.output("output")], axis=axis, reduction="add")


@LOWERINGS.op("unsorted_segment_sum", since_opset=16)
def lower_unsorted_segment_sum(ctx, op):
    """The slices of ``data`` along ``axis`` summed into ``num_segments`` segments by id (ids past
    the last segment dropped, as OneFlow does): ScatterND adding (opset 16) into zeros, with the
    segment axes of data moved to the front and the result's segment axis moved back."""
    data, ids = op.input("data"), cast_if_needed(ctx, op.input("segment_ids"), np.int64)
    axis, segments = op.attr("axis"), op.attr("num_segments")
    id_rank, rank = ctx.rank(ids), ctx.rank(data)
    segment_axes = list(range(axis, axis + id_rank))
    others = [a for a in range(rank) if a not in segment_axes]
    if axis:
        (data,) = ctx.make_node("Transpose", [data], perm=segment_axes + others)
    valid = ctx.make_node("Less", [ids, int64s(ctx, [segments], "num_segments")])[0]
    (data,) = ctx.make_node("Where", [unsqueeze(ctx, valid, list(range(id_rank, rank))), data, scalar_like(ctx, op.input("data"), 0)])
    (ids,) = ctx.make_node("Where", [valid, ids, int64s(ctx, [0], "zero")])
    (zeros,) = ctx.make_node(
        "ConstantOfShape", [_segment_shape(ctx, op.input("data"), others, segments)], value=numpy_helper.from_array(np.zeros(1, ctx.dtype(op.input("data"))))
    )
    (summed,) = ctx.make_node("ScatterND", [zeros, unsqueeze(ctx, ids, [id_rank]), data], None if axis else [op.output("out")], reduction="add")
    if axis:
        out_rank = len(others) + 1
        ctx.make_node("Transpose", [summed], [op.output("out")], perm=list(range(1, axis + 1)) + [0] + list(range(axis + 1, out_rank)))


@LOWERINGS.op("ctc_greedy_decoder")
def lower_ctc_greedy_decoder(ctx, op):
    """Greedy CTC decoding of log_probs [T, N, C]: per sequence, the best label at each of its first
    ``input_lengths`` steps, blanks (label C-1) dropped and, with ``merge_repeated``, a label equal
    to the step before dropped too; the kept labels packed to the left of a [N, T] row of zeros.
    ``neg_sum_logits`` [N, 1] is minus the sum of the best scores. Packing is a ScatterElements to
    each kept label's rank among the kept, the others to a spare column sliced off after."""
    scores, lengths = op.input("log_probs"), cast_if_needed(ctx, op.input("input_lengths"), np.int64)
    (best,) = ctx.make_node("ArgMax", [scores], axis=2, keepdims=0)
    (best,) = ctx.make_node("Transpose", [best], perm=[1, 0])  # [N, T]
    top = reduce(ctx, "ReduceMax", scores, [2], keepdims=False)
    (top,) = ctx.make_node("Transpose", [top], perm=[1, 0])
    (ones,) = ctx.make_node("ConstantOfShape", [ctx.make_node("Shape", [best])[0]], value=numpy_helper.from_array(np.ones(1, np.int64)))
    (steps,) = ctx.make_node("CumSum", [ones, int64s(ctx, [1], "axis")])  # t + 1
    (within,) = ctx.make_node("Not", [ctx.make_node("Greater", [steps, unsqueeze(ctx, lengths, [1])])[0]])
    (top,) = ctx.make_node("Where", [within, top, scalar_like(ctx, scores, 0)])
    total = reduce(ctx, "ReduceSum", top, [1], keepdims=True)
    ctx.make_node("Neg", [total], [op.output("neg_sum_logits")])
    blank = ctx.make_node("Sub", [dims(ctx, scores, [2]), int64s(ctx, [1], "one")])[0]
    (keep,) = ctx.make_node("And", [within, ctx.make_node("Not", [ctx.make_node("Equal", [best, blank])[0]])[0]])
    if op.attr("merge_repeated"):
        (before,) = ctx.make_node("Slice", [best, int64s(ctx, [0], "starts"), int64s(ctx, [-1], "ends"), int64s(ctx, [1], "axes")])
        (none,) = ctx.make_node("Sub", [_zeros_column(ctx, best), int64s(ctx, [1], "one")])  # -1 before step 0
        (before,) = ctx.make_node("Concat", [none, before], axis=1)
        (keep,) = ctx.make_node("And", [keep, ctx.make_node("Not", [ctx.make_node("Equal", [best, before])[0]])[0]])
    (ranks,) = ctx.make_node("CumSum", [ctx.make_node("Cast", [keep], to=onnx.TensorProto.INT64)[0], int64s(ctx, [1], "axis")])
    length = dims(ctx, best, [1])
    (slot,) = ctx.make_node("Where", [keep, ctx.make_node("Sub", [ranks, int64s(ctx, [1], "one")])[0], length])
    (labels,) = ctx.make_node("Where", [keep, best, int64s(ctx, [0], "zero")])
    (zeros,) = ctx.make_node("Mul", [best, int64s(ctx, [0], "zero")])
    (padded,) = ctx.make_node("Concat", [zeros, _zeros_column(ctx, best)], axis=1)
    (packed,) = ctx.make_node("ScatterElements", [padded, slot, labels], axis=1)
    ctx.make_node("Slice", [packed, int64s(ctx, [0], "starts"), length, int64s(ctx, [1], "axes")], [op.output("decoded")])


def _zeros_column(ctx, x: str) -> str:
    """Zeros shaped like the first column of the int64 matrix ``x`` ([N, 1])."""
    (column,) = ctx.make_node("Slice", [x, int64s(ctx, [0], "starts"), int64s(ctx, [1], "ends"), int64s(ctx, [1], "axes")])
    return ctx.make_node("Mul", [column, int64s(ctx, [0], "zero")])[0]


def _segment_shape(ctx, data: str, rest_axes: list[int], segments: int) -> str:
    """[num_segments] + data's sizes on ``rest_axes``, computed in the graph."""
    if not rest_axes:
        return int64s(ctx, [segments], "shape")
    return ctx.make_node("Concat", [int64s(ctx, [segments], "num_segments"), dims(ctx, data, rest_axes)], axis=0)[0]


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
