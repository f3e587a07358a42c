"""Small node-building helpers shared by the built-in lowerings (not a plugin: it registers nothing).

Each helper emits the form the context's target opset calls for where ONNX changed an operator:
Squeeze/Unsqueeze and ReduceSum took their axes as an input from opset 13, the other reductions
from opset 18.
"""

from __future__ import annotations

import numpy as np

# Opsets at which an operator's axes moved from an attribute to an input.
AXES_INPUT_SINCE = {"Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13}
REDUCE_AXES_INPUT_SINCE = 18  # ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL2, ...

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def int64s(ctx, values, hint="ints") -> str:
    """A 1-D int64 constant."""
    return ctx.constant(np.array(list(values), dtype=np.int64), hint)


def scalar_like(ctx, tensor: str, value, hint="scalar") -> str:
    """A 0-D constant in ``tensor``'s dtype."""
    return ctx.constant(np.array(value, dtype=ctx.dtype(tensor)), hint)


def normalize_axes(axes, rank: int) -> list[int]:
    return [axis + rank if axis < 0 else axis for axis in axes]


def _axes_since(onnx_type: str) -> int:
    return AXES_INPUT_SINCE.get(onnx_type, REDUCE_AXES_INPUT_SINCE)


def with_axes(ctx, onnx_type: str, inputs, axes, outputs=None, **attributes) -> list[str]:
    """A node whose ``axes`` is an attribute before its opset of change and an input from then on."""
    if ctx.opset >= _axes_since(onnx_type):
        return ctx.make_node(onnx_type, list(inputs) + [int64s(ctx, axes, "axes")], outputs, **attributes)
    return ctx.make_node(onnx_type, inputs, outputs, axes=list(axes), **attributes)


def unsqueeze(ctx, x: str, axes, outputs=None) -> str:
    return with_axes(ctx, "Unsqueeze", [x], axes, outputs)[0]


def squeeze(ctx, x: str, axes, outputs=None) -> str:
    return with_axes(ctx, "Squeeze", [x], axes, outputs)[0]


def reduce(ctx, onnx_type: str, x: str, axes, keepdims: bool, outputs=None) -> str:
    return with_axes(ctx, onnx_type, [x], axes, outputs, keepdims=int(bool(keepdims)))[0]


def cast(ctx, x: str, dtype, outputs=None) -> str:
    from onnx import helper

    return ctx.make_node("Cast", [x], outputs, to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))[0]


def cast_if_needed(ctx, x: str, dtype) -> str:
    return x if ctx.dtype(x) == np.dtype(dtype) else cast(ctx, x, dtype)


def dims(ctx, x: str, axes) -> str:
    """The sizes of ``x``'s ``axes`` computed in the graph (1-D int64), so dynamic axes stay dynamic."""
    (shape,) = ctx.make_node("Shape", [x])
    return ctx.make_node("Gather", [shape, int64s(ctx, axes, "dims")], axis=0)[0]


def is_dynamic(ctx, x: str, axis: int) -> bool:
    """Whether ``axis`` of ``x`` may differ at run time from the compiled shape (dim 0 under dynamic_batch)."""
    return ctx.dynamic_batch and axis == 0 and ctx.example_batch is not None and ctx.shape(x)[:1] == (ctx.example_batch,)
