"""Pooling: max and average pooling, adaptive average and max pooling (channels-first)."""

from __future__ import annotations

from flow2onnx import hookimpl


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
        span = size + 2 * p - d * (k - 1) - 1
        if -(-span // s) + 1 == out:  # ONNX's ceil formula agrees
            ends.append(None)
        else:
            ends.append(max(0, (out - 1) * s + d * (k - 1) + 1 - size - p))
    if all(end is None for end in ends):
        return padding + padding, 1
    return padding + [p if end is None else end for p, end in zip(padding, ends)], 0


def lower_max_pool(ctx, op):
    _check_layout(ctx, op)
    if op.attr("return_indices") and ctx.is_read(op.output("indice")):
        raise ctx.error(
            "the pooling indices are used: OneFlow numbers them within each (N, C) plane, ONNX MaxPool over the whole "
            "tensor, so they cannot be exported as they are"
        )
    kernel, stride, dilation = list(op.attr("kernel_size")), list(op.attr("stride")), list(op.attr("dilation"))
    # Padding with -inf (MaxPool's) never wins a max, so extra end padding is exact.
    pads, ceil_mode = _ceil_pads(ctx, op, kernel, stride, dilation, list(op.attr("padding")))
    ctx.make_node(
        "MaxPool",
        [op.input("x")],
        [op.output("y")],
        kernel_shape=kernel,
        strides=stride,
        pads=pads,
        dilations=dilation,
        ceil_mode=ceil_mode,
    )


def lower_avg_pool(ctx, op):
    _check_layout(ctx, op)
    if op.attr("divisor_override"):
        raise ctx.error(f"divisor_override={op.attr('divisor_override')}: ONNX AveragePool has no such option")
    kernel, stride, padding = list(op.attr("kernel_size")), list(op.attr("stride")), list(op.attr("padding"))
    pads, ceil_mode = _ceil_pads(ctx, op, kernel, stride, [1] * len(kernel), padding)
    if pads[len(kernel):] != padding:
        # Extra end padding would change the divisor of the last windows.
        raise ctx.error(
            "ceil_mode with a last window that starts in the padding: OneFlow drops that window, ONNX AveragePool keeps it"
        )
    ctx.make_node(
        "AveragePool",
        [op.input("x")],
        [op.output("y")],
        kernel_shape=kernel,
        strides=stride,
        pads=pads,
        ceil_mode=ceil_mode,
        count_include_pad=int(op.attr("count_include_pad")),
    )


def _adaptive_pool(ctx, op, global_type: str, window_type: str):
    """Adaptive pooling whose windows are all alike: a global pool, or a pool with kernel = stride."""
    x = op.input("x")
    spatial = ctx.shape(x)[2:]
    output_size = list(op.attr("output_size"))
    if all(size == 1 for size in output_size):
        ctx.make_node(global_type, [x], [op.output("y")])
        return
    if any(size <= 0 or extent % size for extent, size in zip(spatial, output_size)):
        raise ctx.error(
            f"output size {output_size} does not divide the input's spatial size {list(spatial)}: adaptive pooling "
            f"then uses windows of varying size, which ONNX {window_type} cannot express"
        )
    kernel = [extent // size for extent, size in zip(spatial, output_size)]
    ctx.make_node(window_type, [x], [op.output("y")], kernel_shape=kernel, strides=kernel)


def lower_adaptive_avg_pool(ctx, op):
    _adaptive_pool(ctx, op, "GlobalAveragePool", "AveragePool")


def lower_adaptive_max_pool(ctx, op):
    if op.has_output("index") and ctx.is_read(op.output("index")):
        raise ctx.error("the pooling indices are used: ONNX MaxPool numbers them differently, so they cannot be exported")
    _adaptive_pool(ctx, op, "GlobalMaxPool", "MaxPool")


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type in ("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"):
        register(op_type, lower_adaptive_max_pool)
    for op_type in ("max_pool_1d", "max_pool_2d", "max_pool_3d"):
        register(op_type, lower_max_pool)
    for op_type in ("avg_pool_1d", "avg_pool_2d", "avg_pool_3d"):
        register(op_type, lower_avg_pool)
    for op_type in ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d"):
        register(op_type, lower_adaptive_avg_pool)
