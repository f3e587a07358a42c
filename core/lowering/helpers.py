"""Small node-building helpers shared by the built-in lowerings (not a plugin: it registers nothing).

flow2onnx has one way to deal with ONNX's opsets in a lowering. Where ONNX changed the form of an
operator (an attribute that became an input, a type it began to accept), the helpers below emit
the form of the context's target opset, and :data:`FORM_CHANGES` lists each such change: one
lowering, registered once, serves every opset. A plugin registers separate lowerings for opset
ranges (``since_opset``/``until_opset``) only when the lowering itself differs, e.g. a newer ONNX
operator that replaces a decomposition.
"""

from __future__ import annotations

import functools

import numpy as np
from onnx import TensorProto, defs, helper

#: ONNX operator -> the opset from which the helpers emit it in its newer form. The tests of the
#: built-in lowerings also export at each of these opsets for every operator a model contains.
FORM_CHANGES = {
    # axes: an attribute before, an input from then on
    "Squeeze": 13,
    "Unsqueeze": 13,
    "ReduceSum": 13,
    "ReduceMean": 18,
    "ReduceMax": 18,
    "ReduceMin": 18,
    "ReduceProd": 18,
    "ReduceL1": 18,
    "ReduceL2": 18,
    "ReduceLogSum": 18,
    "ReduceLogSumExp": 18,
    "ReduceSumSquare": 18,
    # integer inputs accepted from 12; before, a select with Less/Greater
    "Clip": 12,
    "Min": 12,
    "Max": 12,
    # the scales input may be omitted from 13; before, an empty one is required
    "Resize": 13,
    # modes "bilinear"/"bicubic" renamed "linear"/"cubic" at 20, which also takes any rank
    "GridSample": 20,
}

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def int64s(ctx, values, hint="ints") -> str:
    """A 1-D int64 constant."""
    return ctx.constant(np.array(list(values), dtype=np.int64), hint)


def scalar_like(ctx, tensor: str, value, hint="scalar") -> str:
    """A 0-D constant in ``tensor``'s dtype, one per value in the model (see ``ctx.constant(shared=True)``)."""
    return ctx.constant(np.array(value, dtype=ctx.dtype(tensor)), hint, shared=True)


def normalize_axes(axes, rank: int) -> list[int]:
    """``axes`` with negative axes counted from the end, for a tensor of ``rank`` dimensions."""
    return [axis + rank if axis < 0 else axis for axis in axes]


def newer_form(ctx, onnx_type: str) -> bool:
    """Whether the target opset takes ``onnx_type`` in the newer form of :data:`FORM_CHANGES`."""
    return ctx.opset >= FORM_CHANGES[onnx_type]


def with_axes(ctx, onnx_type: str, inputs, axes, outputs=None, **attributes) -> list[str]:
    """A node whose ``axes`` is an attribute before its opset of change and an input from then on."""
    if newer_form(ctx, onnx_type):
        return ctx.make_node(onnx_type, list(inputs) + [int64s(ctx, axes, "axes")], outputs, **attributes)
    return ctx.make_node(onnx_type, inputs, outputs, axes=list(axes), **attributes)


def unsqueeze(ctx, x: str, axes, outputs=None) -> str:
    """``x`` with new dimensions of size 1 at ``axes``."""
    return with_axes(ctx, "Unsqueeze", [x], axes, outputs)[0]


def squeeze(ctx, x: str, axes, outputs=None) -> str:
    """``x`` without its dimensions ``axes`` (each of size 1)."""
    return with_axes(ctx, "Squeeze", [x], axes, outputs)[0]


def reduce(ctx, onnx_type: str, x: str, axes, keepdims: bool, outputs=None) -> str:
    """A reduction (``ReduceSum``, ``ReduceMean``, …) of ``x`` over ``axes``."""
    return with_axes(ctx, onnx_type, [x], axes, outputs, keepdims=int(bool(keepdims)))[0]


def layer_normalization(ctx, x: str, axis: int, scale: str, bias: str | None = None, epsilon: float = 1e-5, outputs=None) -> str:
    """ONNX ``LayerNormalization`` of ``x`` over the axes from ``axis`` on, given ``x`` minus its mean.

    ONNX Runtime 1.23's CPU kernel computes the variance in one pass, as E[x**2] - E[x]**2 in
    float32, which cancels catastrophically for rows far from zero: rows of ±0.5 about 10000 come
    out as ±79 or NaN instead of ±1 (found by the fuzzer, 5:12177 and four more, and kept by a test). Layer norm
    does not change when a row is shifted, so the row's mean is taken off first (one ``ReduceMean``
    and one ``Sub``): the kernel then sees rows centred on zero, where one pass is as exact as two,
    and the single node stays for the runtimes and compilers that have a fused kernel for it.
    ``bias``: a tensor name, or ``None`` for none.
    """
    mean = reduce(ctx, "ReduceMean", x, list(range(axis, ctx.rank(x))), True)
    (centred,) = ctx.make_node("Sub", [x, mean])
    inputs = [centred, scale] + ([bias] if bias else [])
    return ctx.make_node("LayerNormalization", inputs, outputs, axis=axis, epsilon=float(epsilon))[0]


#: The dtypes whose ``Min``, ``Max`` and ``Clip`` ONNX Runtime gets wrong, so that :func:`clip` and
#: :func:`extremum` compare with ``Less``/``Greater`` and choose with ``Where`` at every opset. ONNX
#: Runtime 1.23's CPU kernels for int64 answer ``Min(2147483648, 2) = 2147483648`` and
#: ``Max(-2147483649, -1) = -2147483649`` (magnitudes from 2**31 to 2**32; its comparisons, its
#: reductions and numpy are right there), found by the fuzzer (5:5288) and kept by a test.
MISCOMPARED = frozenset({np.dtype(np.int64)})


def clip(ctx, x: str, low: str = "", high: str = "", outputs=None, dtype=None) -> str:
    """``x`` limited to ``[low, high]`` (constant names in ``x``'s dtype; an empty name: no bound).
    ``dtype`` is ``x``'s numpy dtype, needed when ``x`` is a tensor a lowering made."""
    dtype = ctx.dtype(x) if dtype is None else np.dtype(dtype)
    if dtype not in MISCOMPARED and (np.issubdtype(dtype, np.floating) or newer_form(ctx, "Clip")):
        inputs = [x, low, high]
        while inputs[-1] == "":
            inputs.pop()
        return ctx.make_node("Clip", inputs, outputs)[0]
    current = x
    for bound, onnx_type in ((low, "Less"), (high, "Greater")):
        if bound:
            (beyond,) = ctx.make_node(onnx_type, [current, bound])
            (current,) = ctx.make_node("Where", [beyond, bound, current])
    return ctx.make_node("Identity", [current], outputs)[0]


def extremum(ctx, onnx_type: str, a: str, b: str, dtype, outputs=None) -> str:
    """``Min`` or ``Max`` (``onnx_type``) of ``a`` and ``b``, two tensors of the numpy ``dtype`` that
    broadcast together (given, since ``a`` and ``b`` may be tensors a lowering made). Booleans,
    which neither Min/Max nor the comparisons take, are And and Or."""
    if np.dtype(dtype) == np.bool_:
        return ctx.make_node("And" if onnx_type == "Min" else "Or", [a, b], outputs)[0]
    if np.dtype(dtype) not in MISCOMPARED and (np.issubdtype(np.dtype(dtype), np.floating) or newer_form(ctx, onnx_type)):
        return ctx.make_node(onnx_type, [a, b], outputs)[0]
    (a_wins,) = ctx.make_node("Less" if onnx_type == "Min" else "Greater", [a, b])
    return ctx.make_node("Where", [a_wins, a, b], outputs)[0]


#: What booleans and 8- and 16-bit integers are computed in where an ONNX operator does not take
#: them at the target opset (Add before 14, ReduceMax before 12, ReduceProd and CumSum never). Integer
#: arithmetic wraps modulo 2**bits in both, so the result cast back is the narrow type's own.
_WIDER = (np.dtype(np.int32), np.dtype(np.int64))


@functools.lru_cache(maxsize=None)
def _accepted_dtypes(onnx_type: str, opset: int, index: int) -> frozenset:
    schema = defs.get_schema(onnx_type, opset)
    parameter = schema.inputs[min(index, len(schema.inputs) - 1)]
    allowed = next((c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == parameter.type_str), [parameter.type_str])
    dtypes = set()
    for allowed_type in allowed:
        if allowed_type.startswith("tensor(") and allowed_type != "tensor(bfloat16)":
            try:
                dtypes.add(np.dtype(helper.tensor_dtype_to_np_dtype(TensorProto.DataType.Value(allowed_type[7:-1].upper()))))
            except (ValueError, KeyError, TypeError):
                continue  # a type numpy has no dtype for
    return frozenset(dtypes)


def accepted_dtype(ctx, onnx_type: str, dtype, input_index: int = 0) -> np.dtype:
    """``dtype`` when ONNX ``onnx_type`` takes it (for input ``input_index``) at the target opset;
    else, for booleans and 8- and 16-bit integers, the first of int32 and int64 that it takes, read
    from the operator's type constraints. Other dtypes come back unchanged."""
    dtype = np.dtype(dtype)
    accepted = _accepted_dtypes(onnx_type, ctx.opset, input_index)
    if dtype in accepted or dtype.kind not in "biu" or dtype.itemsize >= 4:
        return dtype
    return next((wider for wider in _WIDER if wider in accepted), dtype)


def takes_dtype(ctx, onnx_type: str, dtype, input_index: int = 0) -> bool:
    """Whether ONNX ``onnx_type`` takes the numpy ``dtype`` for input ``input_index`` at the target opset."""
    return np.dtype(dtype) in _accepted_dtypes(onnx_type, ctx.opset, input_index)


def typed_node(ctx, onnx_type: str, inputs, dtype, outputs=None, result_dtype=None, operands=None, **attributes) -> str:
    """A one-output node of ``inputs`` computed in :func:`accepted_dtype` of ``dtype``, so that it is
    valid at the target opset, its result converted to ``result_dtype`` where that differs (default
    ``dtype``; ``False`` for an output of a type of its own, such as a comparison's booleans).

    :param inputs: tensor names; the first ``operands`` (default: all) have the numpy ``dtype`` and
        are cast when the node is computed in another; the others (Pad's pads) are left alone. An
        empty name is an omitted input.
    """
    dtype = np.dtype(dtype)
    compute = accepted_dtype(ctx, onnx_type, dtype)
    target = dtype if result_dtype is None else result_dtype
    if compute != dtype:
        count = len(inputs) if operands is None else operands
        inputs = [cast(ctx, name, compute) if name and index < count else name for index, name in enumerate(inputs)]
    if target is False or np.dtype(target) == compute:
        return ctx.make_node(onnx_type, list(inputs), outputs, **attributes)[0]
    (result,) = ctx.make_node(onnx_type, list(inputs), **attributes)
    return cast(ctx, result, target, outputs)


def select(ctx, condition: str, x: str, y: str, dtype, outputs=None) -> str:
    """``Where(condition, x, y)`` for tensors of the numpy ``dtype``; booleans are selected with
    And/Or/Not, since ONNX Runtime has no boolean Where kernel (a causal mask's tril is one)."""
    if np.dtype(dtype) != np.bool_:
        return ctx.make_node("Where", [condition, x, y], outputs)[0]
    (kept,) = ctx.make_node("And", [condition, x])
    (others,) = ctx.make_node("Not", [condition])
    (others,) = ctx.make_node("And", [others, y])
    return ctx.make_node("Or", [kept, others], outputs)[0]


def resize(ctx, x: str, roi: str, scales: str = "", sizes: str = "", outputs=None, **attributes) -> str:
    """A ``Resize`` of ``x`` to ``scales`` or to ``sizes`` (give one of them)."""
    if not scales and not newer_form(ctx, "Resize"):
        scales = ctx.constant(np.array([], dtype=np.float32), "scales")
    inputs = [x, roi, scales] + ([sizes] if sizes else [])
    return ctx.make_node("Resize", inputs, outputs, **attributes)[0]


def cast(ctx, x: str, dtype, outputs=None) -> str:
    """``x`` converted to the numpy ``dtype``."""
    return ctx.make_node("Cast", [x], outputs, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))[0]


def cast_if_needed(ctx, x: str, dtype) -> str:
    """``x`` itself when it already has ``dtype``, else a ``Cast`` of it."""
    return x if ctx.dtype(x) == np.dtype(dtype) else cast(ctx, x, dtype)


def dims(ctx, x: str, axes) -> str:
    """The sizes of ``x``'s ``axes`` computed in the graph (1-D int64), so dynamic axes stay dynamic."""
    (shape,) = ctx.make_node("Shape", [x])
    return ctx.make_node("Gather", [shape, int64s(ctx, axes, "dims")], axis=0)[0]


def is_dynamic(ctx, x: str, axis: int) -> bool:
    """Whether ``axis`` of ``x`` may differ at run time from the compiled shape: its size differs in
    the compilation at other sizes of the dynamic axes, or (without one, or for a tensor it lacks) it is dim 0 under
    ``dynamic_batch`` and holds the example's batch. An axis of a graph input that the export names
    dynamic is, whatever the second compilation shows (it may have kept that axis's size)."""
    if axis in ctx.dynamic_axes.get(x, {}):
        return True
    other = ctx.variant_shape(x)
    if other is not None and len(other) == len(ctx.shape(x)):
        # The second compilation decides: a batch-1 class token is not the batch of a batch-1 example.
        return other[axis] != ctx.shape(x)[axis]
    return ctx.dynamic_batch and axis == 0 and ctx.example_batch is not None and ctx.shape(x)[:1] == (ctx.example_batch,)


def size_value(ctx, expression, dtype) -> str:
    """A 0-D tensor of ``dtype`` holding ``expression`` (a :class:`~flow2onnx.lowering.sizes.SizeExpression`)
    computed from ``Shape`` of the graph's inputs, so that it follows their dynamic axes."""
    dtype = np.dtype(dtype)
    value = None
    for (name, axis), exponent in expression.factors:
        (shape,) = ctx.make_node("Shape", [name])
        (size,) = ctx.make_node("Gather", [shape, ctx.constant(np.array(axis, dtype=np.int64), "axis")], axis=0)
        if dtype != np.int64:  # Shape gives int64
            size = cast(ctx, size, dtype)
        if value is None:
            value = size if exponent == 1 else ctx.make_node("Div", [ctx.constant(np.array(1, dtype=dtype), "one"), size])[0]
        else:
            value = ctx.make_node("Mul" if exponent == 1 else "Div", [value, size])[0]
    if expression.integer and dtype.kind in "iu":
        # Exact integer arithmetic: size * numerator // denominator (sizes are positive, so Div floors).
        if expression.numerator != 1:
            value = ctx.make_node("Mul", [value, ctx.constant(np.array(expression.numerator, dtype=dtype), "numerator")])[0]
        if expression.denominator != 1:
            value = ctx.make_node("Div", [value, ctx.constant(np.array(expression.denominator, dtype=dtype), "denominator")])[0]
    elif expression.coefficient != 1:
        value = ctx.make_node("Mul", [value, ctx.constant(np.array(float(expression.coefficient), dtype=dtype), "coefficient")])[0]
    return value


def sizes_tensor(ctx, values, follows, hint: str = "shape") -> str:
    """``values`` (a list of sizes) as a 1-D int64 tensor, each entry whose ``follows`` is a
    :class:`~flow2onnx.lowering.sizes.SizeExpression` computed from the inputs' ``Shape`` instead of
    written as a number; a constant when none is."""
    if not any(follows):
        return int64s(ctx, values, hint)
    parts = [
        int64s(ctx, [value], "dim") if expression is None else unsqueeze(ctx, size_value(ctx, expression, np.int64), [0])
        for value, expression in zip(values, follows)
    ]
    return ctx.make_node("Concat", parts, axis=0)[0]


def sizes_attr(ctx, op, name: str) -> str:
    """Attribute ``name`` of ``op`` (a list of sizes: a shape, an output size) as a 1-D int64 tensor.

    Entries that follow the dynamic axes (``flow.zeros(x.shape[0], 4)``, an upsample to
    ``2 * H``) are computed from the inputs' ``Shape`` (see :meth:`LoweringContext.follows_sizes`);
    the others are constants. Raises the context's error when an entry changes with the dynamic
    axes in a way no product of their sizes explains.
    """
    values = [int(v) for v in op.attr(name)]
    return sizes_tensor(ctx, values, ctx.follows_sizes(op, name) or [None] * len(values), name)


def reshaped_weight(ctx, x: str, output: str) -> bool:
    """When ``x`` is a weight, make ``output``, a reshape of it to ``output``'s static shape, a weight
    too (computed as a view when the model is written: :meth:`LoweringContext.derived_weight`) and
    return True; otherwise add nothing and return False.

    For lowerings of ops that only reshape (reshape, unsqueeze, squeeze): a parameter reshaped in
    ``forward`` (ConvNeXt's ``weight[:, None, None]``, a layer scale's ``gamma.unsqueeze(-1)``) then
    reaches the file in the shape it is used in, rather than as a node that every runtime computes
    again at load time. A shape that follows the dynamic axes is left to the nodes.
    """
    if not ctx.is_weight(x):
        return False
    shape = ctx.shape(output)
    if ctx.variant_shape(output) not in (None, shape):
        return False
    ctx.derived_weight(x, lambda array: array.reshape(shape), shape, output)
    return True
