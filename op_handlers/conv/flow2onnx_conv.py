"""Convolutions: conv1d/2d/3d, transposed deconv1d/2d/3d, and unfold/fold (im2col/col2im) as convolutions."""

from __future__ import annotations

import numpy as np

from flow2onnx import hookimpl
from flow2onnx.lowering.helpers import oldest_opsets


def _convolution(ctx, op, onnx_type: str, **extra):
    """Conv or ConvTranspose with OneFlow's (symmetric) padding, strides, dilations and groups."""
    if op.attr("data_format") != "channels_first":
        raise ctx.error(f"data_format={op.attr('data_format')!r}: only channels_first (NCHW) convolutions lower to ONNX {onnx_type}")
    inputs = [op.input("in"), op.input("weight")]
    if op.has_input("bias"):
        inputs.append(op.input("bias"))
    padding = list(op.attr("padding_before"))
    ctx.make_node(
        onnx_type,
        inputs,
        [op.output("out")],
        kernel_shape=list(op.attr("kernel_size")),
        strides=list(op.attr("strides")),
        pads=padding + padding,  # OneFlow pads symmetrically: begin == end
        dilations=list(op.attr("dilation_rate")),
        group=op.attr("groups"),
        **extra,
    )


def lower_conv(ctx, op):
    _convolution(ctx, op, "Conv")


def lower_deconv(ctx, op):
    """Transposed convolution; the weight is [in, out / groups, k...] in both OneFlow and ONNX."""
    padding = op.attr("padding_before")
    _convolution(ctx, op, "ConvTranspose", output_padding=list(op.attr("output_padding") or [0] * len(padding)))


def _patch_selector(ctx, channels: int, kernel: list[int], dtype) -> str:
    """Weights of a grouped convolution that copies each input pixel of a kernel window to its own
    output channel: channel ``c * K + j`` holds position ``j`` of channel ``c``'s window, which is
    the order of OneFlow's unfold (im2col) output. Multiplying by one and adding zeros is exact."""
    positions = int(np.prod(kernel))
    one_hot = np.zeros((channels, positions, positions), dtype=dtype)
    one_hot[:, np.arange(positions), np.arange(positions)] = 1
    return ctx.constant(one_hot.reshape(channels * positions, 1, *kernel), "patch_selector")


def _window_attributes(op) -> dict:
    padding = list(op.attr("padding"))
    return dict(
        kernel_shape=list(op.attr("kernel_size")),
        strides=list(op.attr("strides")),
        pads=padding + padding,
        dilations=list(op.attr("dilation_rate")),
    )


def lower_unfold(ctx, op):
    """im2col: (N, C, H, W) -> (N, C * kh * kw, L), as a grouped Conv and a Reshape."""
    x, y = op.input("x"), op.output("y")
    if op.attr("data_format") != "channels_first":
        raise ctx.error("only channels_first unfold lowers to ONNX")
    channels = ctx.shape(x)[1]
    kernel = list(op.attr("kernel_size"))
    (patches,) = ctx.make_node("Conv", [x, _patch_selector(ctx, channels, kernel, ctx.dtype(x))], group=channels, **_window_attributes(op))
    shape = ctx.constant(np.array([0, 0, -1], dtype=np.int64), "shape")
    ctx.make_node("Reshape", [patches, shape], [y])


def lower_fold(ctx, op):
    """col2im: (N, C * kh * kw, L) -> (N, C, H, W), as a Reshape to the window grid and a grouped
    ConvTranspose with the same one-hot weights, which sums overlapping windows as fold does."""
    x, y = op.input("x"), op.output("y")
    if op.attr("data_format") != "channels_first":
        raise ctx.error("only channels_first fold lowers to ONNX")
    kernel = list(op.attr("kernel_size"))
    channels = ctx.shape(y)[1]
    attributes = _window_attributes(op)
    out_size = list(op.attr("output_size"))
    grid = [
        (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        for size, pad, dilation, k, stride in zip(out_size, op.attr("padding"), op.attr("dilation_rate"), kernel, op.attr("strides"))
    ]
    if int(np.prod(grid)) != ctx.shape(x)[2]:
        raise ctx.error(f"{ctx.shape(x)[2]} windows do not form the {grid} grid of output size {out_size}")
    shape = ctx.constant(np.array([0, 0, *grid], dtype=np.int64), "grid")
    (windows,) = ctx.make_node("Reshape", [x, shape])
    # ConvTranspose's output size from the grid can fall short of output_size (a stride that leaves
    # a remainder); output_padding makes up the difference.
    natural = [(g - 1) * s - 2 * p + d * (k - 1) + 1 for g, s, p, d, k in zip(grid, op.attr("strides"), op.attr("padding"), op.attr("dilation_rate"), kernel)]
    ctx.make_node(
        "ConvTranspose",
        [windows, _patch_selector(ctx, channels, kernel, ctx.dtype(x))],
        [y],
        group=channels,
        output_padding=[o - n for o, n in zip(out_size, natural)],
        **attributes,
    )

# The oldest opset each lowering's nodes can be expressed in, where older than the default 11
# (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX Runtime).
OLDEST_OPSETS = {
    "conv1d": 9,
    "conv2d": 9,
    "conv3d": 9,
    "deconv1d": 9,
    "deconv2d": 9,
    "deconv3d": 9,
    "fold": 9,
    "unfold": 9,
}


@hookimpl
def flow2onnx_register_lowerings(register):
    register = oldest_opsets(register, OLDEST_OPSETS)
    register("unfold", lower_unfold)
    register("fold", lower_fold)
    for op_type in ("conv1d", "conv2d", "conv3d"):
        register(op_type, lower_conv)
    for op_type in ("deconv1d", "deconv2d", "deconv3d"):
        register(op_type, lower_deconv)
