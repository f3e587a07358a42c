"""Convolutions: conv1d/2d/3d and transposed deconv1d/2d/3d (channels-first, as OneFlow's nn.ConvNd build them)."""

from __future__ import annotations

from flow2onnx.hookspecs import hookimpl


def _convolution(ctx, op, onnx_type: str, **extra):
    """Conv or ConvTranspose with OneFlow's (symmetric) padding, strides, dilations and groups."""
    if op.attrs.get("data_format", "channels_first") != "channels_first":
        raise ctx.error(f"data_format={op.attrs['data_format']!r}: only channels_first (NCHW) convolutions lower to ONNX {onnx_type}")
    inputs = [op.input("in"), op.input("weight")]
    if op.has_input("bias"):
        inputs.append(op.input("bias"))
    padding = list(op.attrs["padding_before"])
    ctx.make_node(
        onnx_type,
        inputs,
        [op.output("out")],
        kernel_shape=list(op.attrs["kernel_size"]),
        strides=list(op.attrs["strides"]),
        pads=padding + padding,  # OneFlow pads symmetrically: begin == end
        dilations=list(op.attrs["dilation_rate"]),
        group=op.attrs.get("groups", 1),
        **extra,
    )


def lower_conv(ctx, op):
    _convolution(ctx, op, "Conv")


def lower_deconv(ctx, op):
    """Transposed convolution; the weight is [in, out / groups, k...] in both OneFlow and ONNX."""
    padding = op.attrs["padding_before"]
    _convolution(ctx, op, "ConvTranspose", output_padding=list(op.attrs.get("output_padding") or [0] * len(padding)))


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type in ("conv1d", "conv2d", "conv3d"):
        register(op_type, lower_conv)
    for op_type in ("deconv1d", "deconv2d", "deconv3d"):
        register(op_type, lower_deconv)
