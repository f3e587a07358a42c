"""Layout ops: transpose, concat/stack, slicing, narrow and slice assignment, (un)squeeze, expand and
broadcast_like, flip, roll, pad, cast, identity, as_strided, Tensor.unfold, repeat_interleave's indices.

Shapes stay symbolic where a dynamic batch can flow through: slices that run to the end of an axis
end at "infinity" rather than at the example's size, expand keeps the input's own sizes by
broadcasting against 1, and slice assignment pads the value and a mask in the graph.
"""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import INT64_MAX, INT64_MIN, Lowerings, accepted_dtype, cast, cast_if_needed, dims, hookimpl, int64s, is_dynamic, normalize_axes, reduce, reshaped_weight, select, sizes_tensor, squeeze, typed_node, unsqueeze

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


@LOWERINGS.op("identity", since_opset=9)
def lower_identity(ctx, op):
    ctx.make_node("Identity", [op.input("in")], [op.output("out")])


@LOWERINGS.op("cast", since_opset=9)
def lower_cast(ctx, op):
    cast(ctx, op.input("in"), ctx.dtype(op.output("out")), [op.output("out")])


@LOWERINGS.op("transpose", since_opset=9)
def lower_transpose(ctx, op):
    ctx.make_node("Transpose", [op.input("input")], [op.output("output")], perm=list(op.attr("perm")))


@LOWERINGS.op("concat", since_opset=9)
def lower_concat(ctx, op):
    inputs = op.input_list("in")
    out = op.output("out")
    axis = normalize_axes([op.attr("axis")], ctx.rank(out))[0]
    dtype = ctx.dtype(out)
    inputs = [name if ctx.dtype(name) == dtype else cast(ctx, name, dtype) for name in inputs]
    ctx.make_node("Concat", inputs, [out], axis=axis)


@LOWERINGS.op("stack", since_opset=9)
def lower_stack(ctx, op):
    out = op.output("out")
    axis = normalize_axes([op.attr("axis")], ctx.rank(out))[0]
    parts = [unsqueeze(ctx, name, [axis]) for name in op.input_list("in")]
    ctx.make_node("Concat", parts, [out], axis=axis)


def _slice(ctx, x, out, starts, ends, axes, steps, follows=None):
    """``Slice`` of ``x``; ``follows`` holds, per entry of ``starts`` and ``ends``, the size
    expression that entry is computed from instead (``None`` for a number)."""
    if not axes:
        ctx.make_node("Identity", [x], [out])
        return
    start_follows, end_follows = follows or ([None] * len(starts), [None] * len(ends))
    ctx.make_node(
        "Slice",
        [x, sizes_tensor(ctx, starts, start_follows, "starts"), sizes_tensor(ctx, ends, end_follows, "ends"), int64s(ctx, axes, "axes"), int64s(ctx, steps, "steps")],
        [out],
    )


@LOWERINGS.op("slice", since_opset=10)
def lower_slice(ctx, op):
    """``x[a:b:s]`` on each axis. A bound that follows a dynamic size is kept following it: counted
    from the end where it is the same distance from the end at every size (``x[:, : x.size(1) - 1]``
    ends at -1), else computed from the inputs' ``Shape`` (``x[:, : x.size(1) // 2]``)."""
    x = op.input("x")
    shape, other = ctx.shape(x), ctx.variant_shape(x)
    (start, start_follows), (stop, stop_follows) = (_slice_bounds(ctx, op, name, shape, other) for name in ("start", "stop"))
    starts, ends, axes, steps, follows = [], [], [], [], ([], [])
    for axis, (step, size) in enumerate(zip(op.attr("step"), shape)):
        if step <= 0:
            raise ctx.error(f"slice step {step} on axis {axis}: OneFlow slices with positive steps only")
        to_end = stop_follows[axis] is None and (stop[axis] >= size and (other is None or stop[axis] >= other[axis]) or stop[axis] == _FROM_END)
        if start[axis] == 0 and start_follows[axis] is None and to_end and step == 1:
            continue  # the whole axis: leave it out, so a dynamic size passes through
        starts.append(start[axis])
        ends.append(INT64_MAX if to_end else stop[axis])
        axes.append(axis)
        steps.append(step)
        follows[0].append(start_follows[axis])
        follows[1].append(stop_follows[axis])
    _slice(ctx, x, op.output("y"), starts, ends, axes, steps, follows)


#: A slice bound at the very end of an axis at every size.
_FROM_END = INT64_MIN


def _slice_bounds(ctx, op, name: str, shape, other) -> tuple[list[int], list]:
    """Slice attribute ``name`` (``start`` or ``stop``) per axis, as ONNX takes it: a number
    (negative: counted from the end; :data:`_FROM_END` for the end itself), with, per axis, the size
    expression it is computed from where it follows the dynamic axes some other way (else ``None``)."""
    values = [int(v) for v in op.attr(name)]
    variant = ctx.variant_attr(op, name)
    follows = [None] * len(values)
    if variant is None or other is None or [int(v) for v in variant] == values:
        return values, follows
    unexplained = []
    for axis, (value, moved) in enumerate(zip(values, variant)):
        bound = _bound_at_every_size(value, int(moved), shape[axis], other[axis], end=name == "stop")
        if bound is None:
            unexplained.append(axis)
        else:
            values[axis] = bound
    if unexplained:
        explained = ctx.follows_sizes(op, name)  # raises the op's error where no product of sizes explains one
        for axis in unexplained:
            follows[axis] = explained[axis]
    return values, follows


def _bound_at_every_size(value: int, moved: int, size: int, moved_size: int, end: bool) -> int | None:
    """A slice bound, ``value`` at the example's ``size`` and ``moved`` at the other compilation's,
    as one number right at both: itself where it is the same, counted from the end where its
    distance from the end is (:data:`_FROM_END` for an end at the end itself); else ``None``."""
    if value == moved:
        return value
    if value - size != moved - moved_size:
        return None
    distance = value - size
    return distance if distance < 0 else (_FROM_END if end else INT64_MAX)


@LOWERINGS.op("narrow", since_opset=10)
def lower_narrow(ctx, op):
    x = op.input("in")
    axis = normalize_axes([op.attr("dim")], ctx.rank(x))[0]
    start, length = int(op.attr("start")), int(op.attr("length"))
    size = ctx.shape(x)[axis]
    if start == 0 and length == size:
        _slice(ctx, x, op.output("out"), [], [], [], [])
        return
    if is_dynamic(ctx, x, axis):
        _slice(ctx, x, op.output("out"), [start], [_narrow_end_of_dynamic_axis(ctx, op, axis, start, length, size)], [axis], [1])
        return
    _slice(ctx, x, op.output("out"), [start], [INT64_MAX if start + length >= size else start + length], [axis], [1])


def _narrow_end_of_dynamic_axis(ctx, op, axis: int, start: int, length: int, size: int) -> int:
    """Where a narrow of a dynamic axis ends at every size: at ``start + length`` where both are the
    same in the compilation at other sizes (``x.narrow(1, 0, 2)``), counted from the end where its
    distance from the end is (``x.narrow(1, 1, x.size(1) - 1)``); refused otherwise."""
    other = ctx.variant_shape(op.input("in"))
    moved_start, moved_length = ctx.variant_attr(op, "start"), ctx.variant_attr(op, "length")
    if other is None or moved_start is None or int(moved_start) != start:
        raise ctx.error(f"narrow of dynamic axis {axis} whose start follows its size: the slice would depend on it")
    end = _bound_at_every_size(start + length, start + int(moved_length), size, other[axis], end=True)
    if end is None:
        raise ctx.error(f"narrow of dynamic axis {axis} whose length follows its size other than by a fixed distance from the end")
    return INT64_MAX if end == _FROM_END else end


@LOWERINGS.op("expand_dims", since_opset=9)
def lower_expand_dims(ctx, op):
    out = op.output("out")
    if reshaped_weight(ctx, op.input("in"), out):
        return
    axis = normalize_axes([op.attr("axis")], ctx.rank(out))[0]
    unsqueeze(ctx, op.input("in"), [axis], [out])


@LOWERINGS.op("squeeze", since_opset=9)
def lower_squeeze(ctx, op):
    x = op.input("in")
    if reshaped_weight(ctx, x, op.output("out")):
        return
    axes = normalize_axes(list(op.attr("axes")), ctx.rank(x))
    if not axes:
        ctx.make_node("Identity", [x], [op.output("out")])
        return
    dynamic = [axis for axis in axes if is_dynamic(ctx, x, axis)]
    if dynamic:
        # OneFlow squeezes an axis only where its size is 1: at other sizes the output has another rank.
        raise ctx.error(
            f"it squeezes axis {dynamic[0]} of its input, which is 1 in the example but dynamic: OneFlow squeezes an axis "
            "only where its size is 1, so the output's rank would follow that size, and an ONNX model has one rank per output. "
            "Declare that axis static (leave it out of dynamic_axes), or index it (x[:, 0]) where it is always 1"
        )
    squeeze(ctx, x, axes, [op.output("out")])


@LOWERINGS.op("expand", since_opset=10)
def lower_expand(ctx, op):
    x = op.input("in")
    source = list(ctx.shape(x))
    target = list(op.attr("expand_shape"))
    offset = len(target) - len(source)
    # Where the input keeps its size, ask for 1: ONNX Expand broadcasts 1 to the input's own
    # (possibly dynamic) size, instead of baking the example's size in.
    shape = [1 if index >= offset and source[index - offset] == size else size for index, size in enumerate(target)]
    follows = ctx.follows_sizes(op, "expand_shape") or [None] * len(target)
    # A size that follows the dynamic axes where the input's own size does not (a class token
    # expanded to the batch, even a batch of 1 in the example): computed from Shape of the inputs.
    follows = [None if index >= offset and is_dynamic(ctx, x, index - offset) else e for index, e in enumerate(follows)]
    if any(follows):
        shape_input = sizes_tensor(ctx, shape, follows)
    elif ctx.variant is None and ctx.dynamic_batch and shape[0] != 1 and shape[0] == ctx.example_batch and ctx.graph.inputs:
        # No second compilation to compare with: a leading size equal to the example's batch is
        # taken as the batch, from the graph's input at run time.
        batch = dims(ctx, ctx.graph.inputs[0].name, [0])
        (shape_input,) = ctx.make_node("Concat", [batch, int64s(ctx, shape[1:], "shape")], axis=0)
    else:
        shape_input = int64s(ctx, shape, "shape")
    ctx.make_node("Expand", [x, shape_input], [op.output("out")])


@LOWERINGS.op("flip", since_opset=10)
def lower_flip(ctx, op):
    x = op.input("x")
    axes = normalize_axes(list(op.attr("dims")), ctx.rank(x))
    count = len(axes)
    _slice(ctx, x, op.output("y"), [-1] * count, [INT64_MIN] * count, axes, [-1] * count)


@LOWERINGS.op("roll", since_opset=10)
def lower_roll(ctx, op):
    x = op.input("in")
    shifts, axes = list(op.attr("shifts")), list(op.attr("dims") or [])
    if not axes:
        raise ctx.error("roll without dims (over the flattened tensor) is not supported; give the dims to roll")
    current = x
    for shift, axis in zip(shifts, normalize_axes(axes, ctx.rank(x))):
        if is_dynamic(ctx, x, axis):
            current = _rolled_along_dynamic_axis(ctx, current, int(shift), axis)
            continue
        size = ctx.shape(x)[axis]
        shift %= size
        if shift == 0:
            continue
        (tail,) = ctx.make_node("Slice", [current, int64s(ctx, [size - shift], "starts"), int64s(ctx, [INT64_MAX], "ends"), int64s(ctx, [axis], "axes")])
        (head,) = ctx.make_node("Slice", [current, int64s(ctx, [0], "starts"), int64s(ctx, [size - shift], "ends"), int64s(ctx, [axis], "axes")])
        (current,) = ctx.make_node("Concat", [tail, head], axis=axis)
    ctx.make_node("Identity", [current], [op.output("out")])


def _rolled_along_dynamic_axis(ctx, x: str, shift: int, axis: int) -> str:
    """``x`` rolled by ``shift`` along ``axis``, whose size is read at run time: the last
    ``shift mod size`` elements, then the others (a shift of 0 mod the size leaves ``x`` as it is)."""
    size = dims(ctx, x, [axis])
    (kept,) = ctx.make_node("Mod", [int64s(ctx, [shift], "shift"), size])  # the divisor's sign, as Python's %
    (cut,) = ctx.make_node("Sub", [size, kept])
    axes = int64s(ctx, [axis], "axes")
    (tail,) = ctx.make_node("Slice", [x, cut, int64s(ctx, [INT64_MAX], "ends"), axes])
    (head,) = ctx.make_node("Slice", [x, int64s(ctx, [0], "starts"), cut, axes])
    return ctx.make_node("Concat", [tail, head], axis=axis)[0]


def _expanded_to_region(ctx, ref: str, value: str, before: list[int], after: list) -> str:
    """``value`` fitted to the region it is assigned to, which on an axis whose size is read at run
    time is ``max(min(stop, size) - start, 0)`` long: cut where it is longer (a value OneFlow
    expanded at the example's size), broadcast where it is 1, as OneFlow broadcasts it."""
    parts, axes = [], []
    for axis, (start, entry) in enumerate(zip(before, after)):
        if not isinstance(entry, tuple):
            parts.append(int64s(ctx, [1], "keep"))
            continue
        (end,) = ctx.make_node("Min", [dims(ctx, ref, [axis]), int64s(ctx, [entry[1]], "stop")])
        (length,) = ctx.make_node("Sub", [end, int64s(ctx, [start], "start")])
        parts.append(ctx.make_node("Max", [length, int64s(ctx, [0], "none")])[0])
        axes.append(axis)
    lengths = [parts[axis] for axis in axes]
    ends = lengths[0] if len(lengths) == 1 else ctx.make_node("Concat", lengths, axis=0)[0]
    (cut,) = ctx.make_node("Slice", [value, int64s(ctx, [0] * len(axes), "starts"), ends, int64s(ctx, axes, "axes")])
    (shape,) = ctx.make_node("Concat", parts, axis=0)
    return ctx.make_node("Expand", [cut, shape])[0]


def _pads_of(ctx, ref: str, before: list[int], after: list) -> str:
    """ONNX pads for ``before`` and ``after``; an ``after`` entry ``("follows", stop)`` is the axis's
    size at run time less ``stop``."""
    if not any(isinstance(entry, tuple) for entry in after):
        return int64s(ctx, before + after, "pads")
    parts = [int64s(ctx, before, "pads_before")]
    for axis, entry in enumerate(after):
        if isinstance(entry, tuple):
            (rest,) = ctx.make_node("Sub", [dims(ctx, ref, [axis]), int64s(ctx, [entry[1]], "stop")])
            parts.append(ctx.make_node("Max", [rest, int64s(ctx, [0], "none")])[0])  # an axis shorter than stop: no padding
        else:
            parts.append(int64s(ctx, [entry], "pad_after"))
    return ctx.make_node("Concat", parts, axis=0)[0]


@LOWERINGS.op("slice_update")
def lower_slice_update(ctx, op):
    """``ref[start:stop] = value`` without copying: value and a mask padded to ref's shape, then a select."""
    from onnx import numpy_helper

    ref, value = op.input("ref"), op.input("value")
    before, after = [], []
    other, moved = ctx.variant_shape(ref), (ctx.variant_attr(op, "start"), ctx.variant_attr(op, "stop"))
    for axis, (start, stop, step, size) in enumerate(zip(op.attr("start"), op.attr("stop"), op.attr("step"), ctx.shape(ref))):
        if step != 1:
            raise ctx.error(f"slice assignment with step {step} on axis {axis}: only contiguous slices lower to ONNX here")
        stop = min(stop, size)
        before.append(start)
        after.append(size - stop)
        if not is_dynamic(ctx, ref, axis) or (start, stop) == (0, size) and (other is None or min(moved[1][axis], other[axis]) == other[axis]):
            continue
        # A region of a dynamic axis: fixed where both compilations assign the same one, padded up to
        # the size read at run time (y[:, 1:3] = v with the width dynamic).
        if other is None or moved[0] is None or (moved[0][axis], min(moved[1][axis], other[axis])) != (start, stop):
            raise ctx.error(f"slice assignment to part of dynamic axis {axis} whose bounds follow its size: the region would depend on it")
        after[axis] = ("follows", stop)
    pads = _pads_of(ctx, ref, before, after)
    value = cast_if_needed(ctx, value, ctx.dtype(ref))
    if any(isinstance(entry, tuple) for entry in after):
        value = _expanded_to_region(ctx, ref, value, before, after)
    padded = typed_node(ctx, "Pad", [value, pads], ctx.dtype(ref), operands=1, mode="constant")  # booleans as integers before opset 13
    (shape,) = ctx.make_node("Shape", [value])
    (ones,) = ctx.make_node("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([1], np.uint8)))
    (mask,) = ctx.make_node("Pad", [ones, pads], mode="constant")
    mask = cast(ctx, mask, np.bool_)
    cropped = [axis for axis, entry in enumerate(after) if isinstance(entry, tuple)]
    if cropped:  # where the axis is shorter than stop, OneFlow assigns what falls inside it
        starts, ends, axes = int64s(ctx, [0] * len(cropped), "starts"), dims(ctx, ref, cropped), int64s(ctx, cropped, "axes")
        padded, mask = (ctx.make_node("Slice", [tensor, starts, ends, axes])[0] for tensor in (padded, mask))
    select(ctx, mask, padded, ref, ctx.dtype(ref), [op.output("y")])


@LOWERINGS.op("pad")
def lower_pad(ctx, op):
    x = op.input("x")
    dtype = ctx.dtype(x)
    before, after = list(op.attr("padding_before")), list(op.attr("padding_after"))
    value = op.attr("floating_constant_value") if np.issubdtype(dtype, np.floating) else op.attr("integral_constant_value")
    # Pad takes booleans from opset 13; before, they are padded as integers.
    padded_as = accepted_dtype(ctx, "Pad", dtype)
    typed_node(
        ctx,
        "Pad",
        [x, int64s(ctx, before + after, "pads"), ctx.constant(np.array(value).astype(padded_as), "value")],
        dtype,
        [op.output("y")],
        operands=1,
        mode="constant",
    )


@LOWERINGS.op("reflection_pad1d", "reflection_pad2d", mode="reflect")
@LOWERINGS.op("replication_pad1d", "replication_pad2d", mode="edge")
def lower_pad_mode(ctx, op, mode: str):
    """reflection_pad / replication_pad: ``padding`` lists (begin, end) pairs from the last axis backwards."""
    x = op.input("x")
    rank = ctx.rank(x)
    padding = list(op.attr("padding"))
    before, after = [0] * rank, [0] * rank
    for pair in range(len(padding) // 2):
        axis = rank - 1 - pair
        before[axis], after[axis] = padding[2 * pair], padding[2 * pair + 1]
    typed_node(ctx, "Pad", [x, int64s(ctx, before + after, "pads")], ctx.dtype(x), [op.output("y")], operands=1, mode=mode)


@LOWERINGS.op("as_strided")
def lower_as_strided(ctx, op):
    """A view of the input's elements at ``storage_offset + sum(i_k * stride_k)``: a Gather of the
    flattened input at those positions, computed here from the static sizes and strides."""
    sizes, strides = [int(v) for v in op.attr("size")], [int(v) for v in op.attr("stride")]
    positions = np.full(sizes, int(op.attr("storage_offset")), dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(sizes, strides)):
        shape = [1] * len(sizes)
        shape[axis] = size
        positions = positions + (np.arange(size, dtype=np.int64) * stride).reshape(shape)
    (flat,) = ctx.make_node("Reshape", [op.input("input"), int64s(ctx, [-1], "flat")])
    ctx.make_node("Gather", [flat, ctx.constant(positions, "positions")], [op.output("output")], axis=0)


@LOWERINGS.op("broadcast_like")
def lower_broadcast_like(ctx, op):
    """x expanded to the shape of ``like``; where x lacks the broadcast axes, they are inserted first."""
    x, like = op.input("x"), op.input("like")
    if ctx.rank(x) < ctx.rank(like):
        x = unsqueeze(ctx, x, normalize_axes(op.attr("broadcast_axes"), ctx.rank(like)))
    (shape,) = ctx.make_node("Shape", [like])
    ctx.make_node("Expand", [x, shape], [op.output("y")])


@LOWERINGS.op("unfold_tensor")
def lower_unfold_tensor(ctx, op):
    """Tensor.unfold: windows of ``size`` every ``step`` along ``dimension``, the window last."""
    x = op.input("x")
    rank = ctx.rank(x)
    axis = normalize_axes([op.attr("dimension")], rank)[0] if rank else 0
    size, step = int(op.attr("size")), int(op.attr("step"))
    windows = (ctx.shape(x)[axis] - size) // step + 1
    positions = np.arange(windows, dtype=np.int64)[:, None] * step + np.arange(size, dtype=np.int64)[None, :]
    (picked,) = ctx.make_node("Gather", [x, ctx.constant(positions, "windows")], axis=axis)
    perm = [a for a in range(rank + 1) if a != axis + 1] + [axis + 1]
    ctx.make_node("Transpose", [picked], [op.output("y")], perm=perm)


@LOWERINGS.op("repeat_interleave")
def lower_repeat_interleave(ctx, op):
    """The index of each of ``repeat_num`` outputs: for output j, how many cumulative repeat counts
    are at most j (which element of the input it repeats)."""
    cumsum, out = cast_if_needed(ctx, op.input("cumsum"), np.int64), op.output("out")
    positions = ctx.constant(np.arange(int(op.attr("repeat_num")), dtype=np.int64)[:, None], "positions")
    (before,) = ctx.make_node("Less", [positions, unsqueeze(ctx, cumsum, [0])])
    (passed,) = ctx.make_node("Not", [before])
    counts = reduce(ctx, "ReduceSum", cast(ctx, passed, np.int64), [1], False)
    if ctx.dtype(out) == np.int64:
        ctx.make_node("Identity", [counts], [out])
    else:
        cast(ctx, counts, ctx.dtype(out), [out])


@LOWERINGS.op("assign", since_opset=9)
def lower_assign(ctx, op):
    """Refused, with the reason: capture reads every other ``assign`` (``y.copy_(v)`` into a tensor
    of the graph's own, or into an input) as its value for the ops after it. What is left writes
    into a weight or a buffer, or into a view of another tensor."""
    ref = op.input("ref")
    producer = ctx.graph.producer(ref)
    if producer is None:
        raise ctx.error(
            f"it writes into the model's own weight or buffer ({ref!r}, copy_ or an in-place op): an ONNX model has no state to change; "
            "compute a new tensor instead (y = f(x)), and keep state updates out of the exported forward"
        )
    raise ctx.error(
        f"it writes into a view of another tensor ({producer.type} op {producer.name!r}: y[...].copy_(v) or an in-place op on "
        "a slice): the eager module changes the viewed tensor, and OneFlow's graph does not. Write it as an indexed "
        "assignment, y[...] = v, which OneFlow's graph does compute"
    )


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
