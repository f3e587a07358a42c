"""Small node-building helpers shared by the built-in lowerings (not a plugin: it registers nothing).

flow2onnx has one way to deal with ONNX's opsets in a lowering. Where ONNX changed the form of an
operator (an attribute that became an input, a type it began to accept), the helpers below emit
the form of the context's target opset, and :data:`FORM_CHANGES` lists each such change: one
lowering, registered once, serves every opset. A plugin registers separate lowerings for opset
ranges (``since_opset``/``until_opset``) only when the lowering itself differs, e.g. a newer ONNX
operator that replaces a decomposition.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

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
    """A 0-D constant in ``tensor``'s dtype."""
    return ctx.constant(np.array(value, dtype=ctx.dtype(tensor)), hint)


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


def clip(ctx, x: str, low: str = "", high: str = "", outputs=None) -> str:
    """``x`` limited to ``[low, high]`` (constant names in ``x``'s dtype; an empty name: no bound)."""
    if np.issubdtype(ctx.dtype(x), np.floating) or newer_form(ctx, "Clip"):
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
    broadcast together (given, since ``a`` and ``b`` may be tensors a lowering made)."""
    if np.issubdtype(np.dtype(dtype), np.floating) or newer_form(ctx, onnx_type):
        return ctx.make_node(onnx_type, [a, b], outputs)[0]
    (a_wins,) = ctx.make_node("Less" if onnx_type == "Min" else "Greater", [a, b])
    return ctx.make_node("Where", [a_wins, a, b], outputs)[0]


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
    the compilation at other sizes of the dynamic axes, or (without one) it is dim 0 under
    ``dynamic_batch`` and holds the example's batch."""
    other = ctx.variant_shape(x)
    if other is not None and len(other) == len(ctx.shape(x)) and other[axis] != ctx.shape(x)[axis]:
        return True
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
