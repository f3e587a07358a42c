"""Resizing: OneFlow's upsample ops (nearest, linear, bilinear, bicubic, trilinear) as ONNX Resize.

When the model gave a scale factor, the Resize takes that scale (so the spatial size follows the
input, and a dynamic batch passes through); when it gave an output size, the Resize takes the
input's own batch and channels from the graph and the spatial size, computed from the inputs' sizes
where it follows the dynamic axes (``F.interpolate(x, size=skip.shape[2:])``).
"""

from __future__ import annotations

import functools

import numpy as np

from flow2onnx import hookimpl

from flow2onnx.lowering.helpers import dims, resize, sizes_attr

# OneFlow op type -> (ONNX Resize mode, number of spatial axes)
_UPSAMPLE = {
    "upsample_nearest_1d": ("nearest", 1),
    "upsample_nearest_2d": ("nearest", 2),
    "upsample_nearest_3d": ("nearest", 3),
    "upsample_linear_1d": ("linear", 1),
    "upsample_bilinear_2d": ("linear", 2),
    "upsample_trilinear_3d": ("linear", 3),
    "upsample_bicubic_2d": ("cubic", 2),
}
_SCALE_ATTRS = {1: ["scale_factor"], 2: ["height_scale", "width_scale"], 3: ["depth_scale", "height_scale", "width_scale"]}


def lower_upsample(ctx, op, mode: str, spatial: int):
    if op.attr("data_format") != "channels_first":
        raise ctx.error(f"data_format={op.attr('data_format')!r}: only channels_first resizing lowers to ONNX Resize")
    x = op.input("x")
    output_size = list(op.attr("output_size") or [])
    attributes = {"mode": mode}
    if mode == "nearest":
        # OneFlow picks source index floor(dst / scale), PyTorch's "nearest".
        attributes.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif op.attr("align_corners"):
        attributes["coordinate_transformation_mode"] = "align_corners"
    else:
        attributes["coordinate_transformation_mode"] = "pytorch_half_pixel"
    if mode == "cubic":
        attributes["cubic_coeff_a"] = -0.75
    roi = ctx.constant(np.array([], dtype=np.float32), "roi")
    if output_size:
        batch_channels = dims(ctx, x, [0, 1])
        (sizes,) = ctx.make_node("Concat", [batch_channels, sizes_attr(ctx, op, "output_size")], axis=0)
        resize(ctx, x, roi, sizes=sizes, outputs=[op.output("y")], **attributes)
        return
    scales = [float(op.attr(name)) for name in _SCALE_ATTRS[spatial]]
    if any(scale <= 0 for scale in scales):
        raise ctx.error(f"scales {scales}: the op has neither an output size nor positive scale factors")
    scale_input = ctx.constant(np.array([1.0, 1.0] + scales, dtype=np.float32), "scales")
    resize(ctx, x, roi, scale_input, outputs=[op.output("y")], **attributes)


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type, (mode, spatial) in _UPSAMPLE.items():
        register(op_type, functools.partial(lower_upsample, mode=mode, spatial=spatial))
