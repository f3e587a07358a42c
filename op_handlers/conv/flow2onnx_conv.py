"""Convolutions: conv1d/2d/3d, transposed deconv1d/2d/3d, deformable deform_conv2d, and unfold/fold
(im2col/col2im) as convolutions."""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import Lowerings, hookimpl, int64s, is_dynamic, newer_form, unsqueeze

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


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


@LOWERINGS.op("conv1d", "conv2d", "conv3d", since_opset=9)
def lower_conv(ctx, op):
    _convolution(ctx, op, "Conv")


@LOWERINGS.op("deconv1d", "deconv2d", "deconv3d", since_opset=9)
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


@LOWERINGS.op("unfold", since_opset=9)
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


@LOWERINGS.op("fold", since_opset=9)
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

@LOWERINGS.op("deform_conv2d", since_opset=16)
def lower_deform_conv2d(ctx, op):
    """Deformable convolution (v1, and v2 with a mask) as bilinear sampling and a matrix product.

    ONNX has DeformConv (opset 19), but ONNX Runtime has no kernel for it, so a model using it
    could not be verified; this form runs everywhere GridSample does (opset 16). Each kernel tap
    samples the input at its place plus its offset: GridSample with align_corners and zero padding
    interpolates exactly as OneFlow does (corners outside the image count as zero). The samples,
    scaled by the mask, are the columns of an im2col, multiplied by the weight group by group.
    """
    x, offset, weight = op.input("input"), op.input("offset"), op.input("weight")
    (_, channels, height, width), (out_channels, _, kh, kw) = ctx.shape(x), ctx.shape(weight)
    out_h, out_w = ctx.shape(op.output("output"))[2:]
    if height < 2 or width < 2 or is_dynamic(ctx, x, 2) or is_dynamic(ctx, x, 3):
        raise ctx.error(f"an input of {height}x{width} pixels: the lowering needs a fixed height and width of at least 2 (export it with static spatial sizes)")
    groups, offset_groups, taps = op.attr("groups"), op.attr("offset_groups"), kh * kw
    dtype = ctx.dtype(x)
    (offset,) = ctx.make_node("Reshape", [offset, int64s(ctx, [-1, taps, 2, out_h, out_w], "shape")])
    coordinates = []
    for axis, size, stride, pad, dilation, tap in (
        (0, height, op.attr("stride_h"), op.attr("pad_h"), op.attr("dilation_h"), np.arange(taps) // kw),
        (1, width, op.attr("stride_w"), op.attr("pad_w"), op.attr("dilation_w"), np.arange(taps) % kw),
    ):
        out = out_h if axis == 0 else out_w
        base = np.arange(out) * stride - pad
        base = (tap[:, None] * dilation + base[None, :]).astype(dtype)  # [taps, out]
        base = base[:, :, None] if axis == 0 else base[:, None, :]
        (moved,) = ctx.make_node("Gather", [offset, ctx.constant(np.array(axis, np.int64), "yx")], axis=2)
        (place,) = ctx.make_node("Add", [moved, ctx.constant(base, "taps")])
        # Pixel p of n maps to -1 + 2p/(n-1) with align_corners.
        (place,) = ctx.make_node("Mul", [place, ctx.constant(np.array(2 / (size - 1), dtype), "scale")])
        (place,) = ctx.make_node("Sub", [place, ctx.constant(np.array(1, dtype), "one")])
        coordinates.append(unsqueeze(ctx, place, [4]))
    (grid,) = ctx.make_node("Concat", coordinates[::-1], axis=-1)  # GridSample reads (x, y)
    (grid,) = ctx.make_node("Reshape", [grid, int64s(ctx, [-1, taps * out_h, out_w, 2], "shape")])
    (images,) = ctx.make_node("Reshape", [x, int64s(ctx, [-1, channels // offset_groups, height, width], "shape")])
    (samples,) = ctx.make_node("GridSample", [images, grid], align_corners=1, mode="linear" if newer_form(ctx, "GridSample") else "bilinear", padding_mode="zeros")
    if op.attr("use_mask"):
        (mask,) = ctx.make_node("Reshape", [op.input("mask"), int64s(ctx, [-1, 1, taps * out_h, out_w], "shape")])
        (samples,) = ctx.make_node("Mul", [samples, mask])
    (columns,) = ctx.make_node("Reshape", [samples, int64s(ctx, [-1, groups, channels // groups * taps, out_h * out_w], "shape")])
    (kernel,) = ctx.make_node("Reshape", [weight, int64s(ctx, [groups, out_channels // groups, channels // groups * taps], "shape")])
    (product,) = ctx.make_node("MatMul", [kernel, columns])
    ctx.make_node("Reshape", [product, int64s(ctx, [-1, out_channels, out_h, out_w], "shape")], [op.output("output")])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
