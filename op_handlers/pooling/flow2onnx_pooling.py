"""Pooling: max and average pooling, adaptive average and max pooling, max unpooling (channels-first)."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from flow2onnx.plugin import Lowerings, cast, cast_if_needed, dims, hookimpl, int64s, is_dynamic, reduce, takes_dtype

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


class _Pooled:
    """The tensors a pooling node reads and writes: the op's own, or for integers ONNX pooling does
    not take at the target opset (int32 at any; int8 and uint8 before MaxPool's opset 12), the input
    cast to float64 and the result cast back. float64 holds every 32-bit integer, so max pooling
    is exact, and average pooling's mean truncated by the cast is OneFlow's integer division."""

    def __init__(self, ctx, op, onnx_type: str):
        self.ctx, self.x, self.y, self.out = ctx, op.input("x"), op.output("y"), op.output("y")
        self.dtype = ctx.dtype(self.x)
        self.cast = not np.issubdtype(self.dtype, np.floating) and not takes_dtype(ctx, onnx_type, self.dtype)
        if self.cast:
            if self.dtype.itemsize > 4:
                raise ctx.error(f"pooling of {self.dtype}: ONNX {onnx_type} takes no such integers, and float64 holds them exactly only up to 2**53; cast to int32 or a float first")
            self.x, self.y = cast(ctx, self.x, np.float64), ctx.unique_name("pooled")

    def done(self) -> None:
        """Cast the result back to the op's output, where the pooling ran in float64."""
        if self.cast:
            cast(self.ctx, self.y, self.dtype, [self.out])


def _check_layout(ctx, op):
    if op.attr("data_format") != "channels_first":
        raise ctx.error(f"data_format={op.attr('data_format')!r}: only channels_first (NCHW) pooling lowers to ONNX")


def _ceil_pads(ctx, op, kernel, stride, dilation, padding):
    """ONNX pads and ceil_mode that give OneFlow's output size.

    With ceil_mode, OneFlow (like PyTorch) drops a last window that would start in the right-hand
    padding; ONNX's formula keeps it. Where the two differ, the end padding is set so that floor
    mode yields OneFlow's size instead.
    """
    ceil = bool(op.attr("ceil_mode"))
    if not ceil:
        return padding + padding, 0
    spatial = ctx.shape(op.input("x"))[2:]
    wanted = ctx.shape(op.output("y"))[2:]
    ends = []
    for size, out, k, s, d, p in zip(spatial, wanted, kernel, stride, dilation, padding):
        if _onnx_ceil_size(size, k, s, d, p) == out:  # ONNX's ceil formula agrees
            ends.append(None)
        else:
            ends.append(max(0, (out - 1) * s + d * (k - 1) + 1 - size - p))
    if all(end is None for end in ends):
        return padding + padding, 1
    return padding + [p if end is None else end for p, end in zip(padding, ends)], 0


def _onnx_ceil_size(size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
    """The output size ONNX's formula gives with ceil_mode (shape inference before opset 22),
    which keeps a last window that starts in the padding."""
    return -(-(size + 2 * padding - dilation * (kernel - 1) - 1) // stride) + 1


@LOWERINGS.op("max_pool_1d", "max_pool_2d", "max_pool_3d", since_opset=10)
def lower_max_pool(ctx, op):
    _check_layout(ctx, op)
    kernel, stride, dilation = list(op.attr("kernel_size")), list(op.attr("stride")), list(op.attr("dilation"))
    # Padding with -inf (MaxPool's) never wins a max, so extra end padding is exact.
    pads, ceil_mode = _ceil_pads(ctx, op, kernel, stride, dilation, list(op.attr("padding")))
    x = op.input("x")
    dynamic = [is_dynamic(ctx, x, 2 + axis) for axis in range(len(kernel))]
    cut = []
    if op.attr("ceil_mode") and any(dynamic):
        # End padding chosen at the example's size is wrong at others (and one axis that needs it
        # takes ceil_mode from all). ONNX Runtime's MaxPool drops a last window that starts in the
        # padding, as OneFlow does, at every size (measured, opsets 11 to 22): ceil_mode as it is.
        # ONNX's shape inference before opset 22 keeps that window, so a static axis where it is
        # dropped is cut back to OneFlow's size (a no-op at run time).
        padding = list(op.attr("padding"))
        pads, ceil_mode = padding * 2, 1
        for axis, (size, out, k, s, d, p) in enumerate(zip(ctx.shape(x)[2:], ctx.shape(op.output("y"))[2:], kernel, stride, dilation, padding)):
            if not dynamic[axis] and _onnx_ceil_size(size, k, s, d, p) != out:
                cut.append((2 + axis, out))
    with_indices = bool(op.attr("return_indices")) and ctx.is_read(op.output("indice"))
    pooled = _Pooled(ctx, op, "MaxPool")
    targets = [pooled.y, ctx.unique_name("indices")] if with_indices else [pooled.y]
    outputs = [ctx.unique_name("pooled") for _ in targets] if cut else targets
    ctx.make_node("MaxPool", [pooled.x], outputs, kernel_shape=kernel, strides=stride, pads=pads, dilations=dilation, ceil_mode=ceil_mode)
    if cut:
        axes, ends = [axis for axis, _ in cut], [end for _, end in cut]
        for source, target in zip(outputs, targets):  # max pooling lowers from opset 10: Slice takes inputs
            ctx.make_node("Slice", [source, int64s(ctx, [0] * len(axes), "starts"), int64s(ctx, ends, "ends"), int64s(ctx, axes, "axes")], [target])
        outputs = targets
    pooled.done()
    if with_indices:
        # ONNX numbers the maxima over the whole tensor, OneFlow within each (N, C) plane: the
        # remainder by the plane's size is OneFlow's index (from Shape where a spatial axis is dynamic).
        if any(dynamic):
            plane = reduce(ctx, "ReduceProd", dims(ctx, x, list(range(2, len(ctx.shape(x))))), [0], keepdims=False)
        else:
            plane = ctx.constant(np.array(int(np.prod(ctx.shape(x)[2:])), dtype=np.int64), "plane")
        indices = op.output("indice")
        if ctx.dtype(indices) == np.int64:
            ctx.make_node("Mod", [outputs[1], plane], [indices])
        else:
            cast(ctx, ctx.make_node("Mod", [outputs[1], plane])[0], ctx.dtype(indices), [indices])


@LOWERINGS.op("avg_pool_1d", "avg_pool_2d", "avg_pool_3d", since_opset=10)
def lower_avg_pool(ctx, op):
    _check_layout(ctx, op)
    if op.attr("divisor_override"):
        raise ctx.error(f"divisor_override={op.attr('divisor_override')}: ONNX AveragePool has no such option")
    kernel, stride, padding = list(op.attr("kernel_size")), list(op.attr("stride")), list(op.attr("padding"))
    pooled = _Pooled(ctx, op, "AveragePool")
    if op.attr("ceil_mode"):
        _ceil_mode_average(ctx, op, pooled, kernel, stride, padding)
    else:
        count_include_pad = int(op.attr("count_include_pad"))
        ctx.make_node("AveragePool", [pooled.x], [pooled.y], kernel_shape=kernel, strides=stride, pads=padding * 2, count_include_pad=count_include_pad)
    pooled.done()


def _ceil_mode_average(ctx, op, pooled: _Pooled, kernel, stride, padding) -> None:
    """Average pooling with ceil_mode, as OneFlow computes it: each window's sum divided by the
    number of its elements inside the padded input (``count_include_pad``) or inside the input.

    ONNX AveragePool's ceil_mode windows past the end are divided differently by ONNX Runtime
    (by the whole window at ``count_include_pad=1``: measured) and, before opset 22, shape
    inference keeps a last window OneFlow drops. So nothing here uses ONNX's padding or ceil_mode:
    the input is padded with zeros far enough that every window lies inside it, pooled without
    padding (window sums, exact), and divided by the same pooling of a tensor of ones that marks
    what counts; both are then cut to OneFlow's output size, computed from ``Shape`` where a
    spatial axis is dynamic. Right at every size.
    """
    x, dtype = pooled.x, ctx.dtype(pooled.x)
    spatial_axes = list(range(2, 2 + len(kernel)))
    # OneFlow requires padding <= kernel // 2, so k - 1 zeros after the end cover its right padding too.
    zeros = [0, 0, *padding, 0, 0, *[k - 1 for k in kernel]]
    (mean,) = ctx.make_node("AveragePool", [_padded(ctx, x, zeros, dtype)], kernel_shape=kernel, strides=stride)
    dynamic = any(is_dynamic(ctx, x, axis) for axis in spatial_axes)
    spatial = dims(ctx, x, spatial_axes) if dynamic else int64s(ctx, ctx.shape(x)[2:], "spatial")
    shape = ctx.make_node("Concat", [int64s(ctx, [1, 1], "one_plane"), spatial], axis=0)[0]
    (ones,) = ctx.make_node("ConstantOfShape", [shape], value=numpy_helper.from_array(np.ones(1, dtype)))
    if op.attr("count_include_pad"):  # the padding counts, what lies past it does not
        ones = _padded(ctx, ones, [0, 0, *padding, 0, 0, *padding], dtype, 1)
        counted = [0, 0, *[0] * len(kernel), 0, 0, *[k - 1 - p for k, p in zip(kernel, padding)]]
    else:
        counted = zeros
    # The share of each window that counts; sum / count is mean / share.
    (share,) = ctx.make_node("AveragePool", [_padded(ctx, ones, counted, dtype)], kernel_shape=kernel, strides=stride)
    if pooled.cast:  # integers in float64: exact sums and counts, so that the cast back truncates sum / count
        mean, share = (_whole_multiple(ctx, value, int(np.prod(kernel)), dtype) for value in (mean, share))
    (average,) = ctx.make_node("Div", [mean, share])
    ends = _ceil_mode_sizes(ctx, spatial, kernel, stride, padding) if dynamic else int64s(ctx, ctx.shape(op.output("y"))[2:], "ends")
    ctx.make_node("Slice", [average, int64s(ctx, [0] * len(kernel), "starts"), ends, int64s(ctx, spatial_axes, "axes")], [pooled.y])


def _whole_multiple(ctx, mean: str, area: int, dtype) -> str:
    """``mean * area`` rounded to the nearest integer: a window's sum of integers, or its count."""
    (scaled,) = ctx.make_node("Mul", [mean, ctx.constant(np.array(area, dtype=dtype), "window_area")])
    return ctx.make_node("Floor", [ctx.make_node("Add", [scaled, ctx.constant(np.array(0.5, dtype=dtype), "half")])[0]])[0]


def _padded(ctx, x: str, pads, dtype, fill: float = 0) -> str:
    """``x`` (of ``dtype``) padded with ``pads`` (ONNX order) of ``fill``."""
    if ctx.opset < 11:  # Pad's pads and value are attributes before opset 11
        return ctx.make_node("Pad", [x], pads=pads, mode="constant", value=float(fill))[0]
    value = [ctx.constant(np.array(fill, dtype=dtype), "fill")] if fill else []
    return ctx.make_node("Pad", [x, int64s(ctx, pads, "pads"), *value], mode="constant")[0]


def _ceil_mode_sizes(ctx, spatial: str, kernel, stride, padding) -> str:
    """OneFlow's output sizes with ceil_mode, from the input's spatial sizes at run time (1-D int64):
    ``out = ceil((size + 2p - k) / s) + 1``, less one where that last window would start in the
    right-hand padding (``(out - 1) * s >= size + p``)."""
    k, s, p = (int64s(ctx, values, hint) for values, hint in ((kernel, "kernel"), (stride, "stride"), (padding, "padding")))
    (with_padding,) = ctx.make_node("Add", [spatial, p])
    (span,) = ctx.make_node("Sub", [ctx.make_node("Add", [with_padding, p])[0], k])
    (rounded_up,) = ctx.make_node("Add", [span, ctx.make_node("Sub", [s, int64s(ctx, [1], "one")])[0]])
    (steps,) = ctx.make_node("Div", [rounded_up, s])  # the last window's index (sizes are positive: Div floors)
    (starts_inside,) = ctx.make_node("Less", [ctx.make_node("Mul", [steps, s])[0], with_padding])
    return ctx.make_node("Add", [steps, cast(ctx, starts_inside, np.int64)])[0]


def _adaptive_pool(ctx, op, global_type: str, window_type: str, reduce_type: str):
    """Adaptive pooling at any input size.

    OneFlow's window ``i`` of ``out`` along an axis of size ``H`` spans ``[floor(i*H/out),
    ceil((i+1)*H/out))``. Output 1 is a global pool. When every window is alike (``H`` a multiple of
    ``out``) and the size is fixed, one pool with kernel = stride; otherwise each axis is pooled on
    its own (average and max pooling are separable over a rectangle): one ``Slice`` + reduction per
    window, joined by ``Concat``, with the window bounds computed from ``Shape`` when the axis
    follows a dynamic axis, so the model is right at every size.
    """
    pooled = _Pooled(ctx, op, window_type)
    _pool_adaptively(ctx, op, pooled.x, pooled.y, global_type, window_type, reduce_type)
    pooled.done()


def _pool_adaptively(ctx, op, x: str, y: str, global_type: str, window_type: str, reduce_type: str):
    """:func:`_adaptive_pool` from ``x`` (the op's input, or its float64 cast) to ``y``."""
    spatial = ctx.shape(op.input("x"))[2:]
    output_size = list(op.attr("output_size"))
    if all(size == 1 for size in output_size):
        ctx.make_node(global_type, [x], [y])
        return
    if any(size <= 0 for size in output_size):
        raise ctx.error(f"output size {output_size} must be positive")
    dynamic = _axes_following_dynamic_sizes(ctx, op.input("x"))
    if not dynamic and all(extent % size == 0 for extent, size in zip(spatial, output_size)):
        kernel = [extent // size for extent, size in zip(spatial, output_size)]
        ctx.make_node(window_type, [x], [y], kernel_shape=kernel, strides=kernel)
        return
    current = x
    pooled_axes = [2 + i for i, (extent, size) in enumerate(zip(spatial, output_size)) if 2 + i in dynamic or extent != size]
    for axis in pooled_axes:
        out = output_size[axis - 2]
        outputs = [y] if axis == pooled_axes[-1] else None
        bounds = _dynamic_windows(ctx, x, axis, out) if axis in dynamic else _static_windows(ctx, spatial[axis - 2], out)
        parts = [
            reduce(ctx, reduce_type, ctx.make_node("Slice", [current, start, end, int64s(ctx, [axis], "axis")])[0], [axis], True)
            for start, end in bounds
        ]
        current = ctx.make_node("Concat", parts, outputs, axis=axis)[0]
    if not pooled_axes:
        ctx.make_node("Identity", [x], [y])


def _axes_following_dynamic_sizes(ctx, x) -> set[int]:
    """The spatial axes of ``x`` whose size differs in the compilation at other sizes."""
    other = ctx.variant_shape(x)
    if other is None:
        return set()
    return {axis for axis, (a, b) in enumerate(zip(ctx.shape(x), other)) if axis >= 2 and a != b}


def _static_windows(ctx, extent: int, out: int) -> list[tuple[str, str]]:
    return [
        (int64s(ctx, [i * extent // out], "start"), int64s(ctx, [-(-(i + 1) * extent // out)], "end"))
        for i in range(out)
    ]


def _dynamic_windows(ctx, x, axis: int, out: int) -> list[tuple[str, str]]:
    """Window bounds from the axis's size at run time: start = i*H // out, end = ((i+1)*H + out-1) // out."""
    size = dims(ctx, x, [axis])  # [H], int64
    count = int64s(ctx, [out], "out")
    (scaled_starts,) = ctx.make_node("Mul", [int64s(ctx, range(out), "index"), size])
    (starts,) = ctx.make_node("Div", [scaled_starts, count])
    (scaled_ends,) = ctx.make_node("Mul", [int64s(ctx, range(1, out + 1), "next_index"), size])
    (rounded_up,) = ctx.make_node("Add", [scaled_ends, int64s(ctx, [out - 1], "round_up")])
    (ends,) = ctx.make_node("Div", [rounded_up, count])
    picks = [int64s(ctx, [i], "window") for i in range(out)]
    return [
        (ctx.make_node("Gather", [starts, pick], axis=0)[0], ctx.make_node("Gather", [ends, pick], axis=0)[0])
        for pick in picks
    ]


@LOWERINGS.op("adaptive_avg_pool1d", since_opset=9)
@LOWERINGS.op("adaptive_avg_pool2d", "adaptive_avg_pool3d", since_opset=10)
def lower_adaptive_avg_pool(ctx, op):
    _adaptive_pool(ctx, op, "GlobalAveragePool", "AveragePool", "ReduceMean")


@LOWERINGS.op("adaptive_max_pool1d", "adaptive_max_pool3d", since_opset=9)
@LOWERINGS.op("adaptive_max_pool2d", since_opset=10)
def lower_adaptive_max_pool(ctx, op):
    if op.has_output("index") and ctx.is_read(op.output("index")):
        raise ctx.error("the pooling indices are used: ONNX MaxPool numbers them differently, so they cannot be exported")
    _adaptive_pool(ctx, op, "GlobalMaxPool", "MaxPool", "ReduceMax")


@LOWERINGS.op("max_unpool_1d", "max_unpool_2d", "max_unpool_3d")
def lower_max_unpool(ctx, op):
    """Each value written at its index within its channel's plane, zeros elsewhere: ScatterElements
    over the flattened spatial axes (OneFlow's indices count within one plane; ONNX MaxUnpool's
    would count within the whole tensor)."""
    x, out = op.input("x"), op.output("y")
    plane = int(np.prod(ctx.shape(out)[2:]))
    keep = int64s(ctx, [0, 0, -1], "shape")
    (values,) = ctx.make_node("Reshape", [x, keep])
    (indices,) = ctx.make_node("Reshape", [cast_if_needed(ctx, op.input("indices"), np.int64), keep])
    (batch_channels,) = ctx.make_node("Slice", [ctx.make_node("Shape", [x])[0], int64s(ctx, [0], "start"), int64s(ctx, [2], "end")])
    (zeros_shape,) = ctx.make_node("Concat", [batch_channels, int64s(ctx, [plane], "plane")], axis=0)
    (zeros,) = ctx.make_node("ConstantOfShape", [zeros_shape], value=numpy_helper.from_array(np.zeros(1, ctx.dtype(x))))
    (scattered,) = ctx.make_node("ScatterElements", [zeros, indices, values], axis=2)
    (out_shape,) = ctx.make_node("Concat", [batch_channels, int64s(ctx, ctx.shape(out)[2:], "spatial")], axis=0)
    ctx.make_node("Reshape", [scattered, out_shape], [out])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
