"""Resizing and resampling: OneFlow's upsample ops (nearest, linear, bilinear, bicubic, trilinear)
as ONNX Resize; grid_sample as GridSample, and affine_grid, which makes its grids.

When the model gave a scale factor, the Resize takes that scale (so the spatial size follows the
input, and a dynamic batch passes through); when it gave an output size, the Resize takes the
input's own batch and channels from the graph and the spatial size, computed from the inputs' sizes
where it follows the dynamic axes (``F.interpolate(x, size=skip.shape[2:])``).
"""

from __future__ import annotations

import numpy as np

from flow2onnx.plugin import Lowerings, dims, hookimpl, int64s, newer_form, resize, sizes_attr

LOWERINGS = Lowerings()


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
for op_type, (mode, spatial) in _UPSAMPLE.items():
    LOWERINGS.add(op_type, lower_upsample, mode=mode, spatial=spatial)


def lower_upsample_nearest_10(ctx, op, spatial: int):
    """Nearest upsampling at opset 10, whose Resize takes scales only and has no coordinate modes:
    ONNX Runtime maps output index ``i`` to ``floor(i / scale)`` there when upscaling (its opset-10
    rule, measured), OneFlow's nearest. Output sizes, and scales below 1, need opset 11."""
    if op.attr("data_format") != "channels_first":
        raise ctx.error(f"data_format={op.attr('data_format')!r}: only channels_first resizing lowers to ONNX Resize")
    scales = [float(op.attr(name)) for name in _SCALE_ATTRS[spatial]]
    if list(op.attr("output_size") or []) or any(scale < 1 for scale in scales):
        raise ctx.error("nearest resizing to an output size or by a scale below 1 needs Resize's coordinate modes, from opset 11: export with opset 11 or newer")
    scale_input = ctx.constant(np.array([1.0, 1.0] + scales, dtype=np.float32), "scales")
    ctx.make_node("Resize", [op.input("x"), scale_input], [op.output("y")], mode="nearest")


for op_type, (mode, spatial) in _UPSAMPLE.items():
    if mode == "nearest":
        LOWERINGS.add(op_type, lower_upsample_nearest_10, since_opset=10, until_opset=10, spatial=spatial)


# OneFlow's grid_sample interpolation mode -> ONNX GridSample's mode before opset 20 and from 20.
_GRID_SAMPLE_MODES = {"bilinear": ("bilinear", "linear"), "nearest": ("nearest", "nearest"), "bicubic": ("bicubic", "cubic")}


@LOWERINGS.op("grid_sample", since_opset=16)
def lower_grid_sample(ctx, op):
    """grid_sample as GridSample (opset 16). ONNX's modes and padding modes are OneFlow's, with the
    same align_corners; volumetric (5-D) input needs opset 20, where GridSample takes any rank."""
    x, grid, out = op.input("input"), op.input("grid"), op.output("output")
    mode, padding = op.attr("interpolation_mode"), op.attr("padding_mode")
    if mode not in _GRID_SAMPLE_MODES:
        raise ctx.error(f"interpolation_mode={mode!r}: ONNX GridSample interpolates with {sorted(_GRID_SAMPLE_MODES)}")
    if padding not in ("zeros", "border", "reflection"):
        raise ctx.error(f"padding_mode={padding!r}: ONNX GridSample pads with zeros, border or reflection")
    rank = ctx.rank(x)
    if rank != 4:
        if rank != 5:
            raise ctx.error(f"grid_sample of a rank-{rank} input: OneFlow samples 4-D and 5-D inputs")
        if not newer_form(ctx, "GridSample"):
            raise ctx.error(f"grid_sample of a 5-D (volumetric) input needs opset 20, where ONNX GridSample takes any rank; the target is opset {ctx.opset}")
        if mode == "bicubic":
            raise ctx.error("bicubic grid_sample of a 5-D input: ONNX Runtime's GridSample interpolates cubically in 2-D only; use bilinear or nearest")
    onnx_mode = _GRID_SAMPLE_MODES[mode][int(newer_form(ctx, "GridSample"))]
    ctx.make_node("GridSample", [x, grid], [out], mode=onnx_mode, padding_mode=padding, align_corners=int(bool(op.attr("align_corners"))))


def _grid_coordinates(size: int, align_corners: bool) -> np.ndarray:
    """Normalised coordinates of ``size`` samples along one axis: pixel centres (or, with
    ``align_corners``, the corner pixels) at -1 and 1; a single sample is at 0."""
    if size <= 1:
        return np.zeros(max(size, 0))
    steps = np.linspace(-1.0, 1.0, size)
    return steps if align_corners else steps * (size - 1) / size


@LOWERINGS.op("affine_grid")
def lower_affine_grid(ctx, op):
    """affine_grid: the base grid of (x, y[, z], 1) coordinates, a constant of the output's spatial
    size, times each batch's transposed theta (MatMul broadcasts it over the batch, so the batch
    may be dynamic), reshaped to (N, [D,] H, W, 2 or 3)."""
    theta, out = op.input("theta"), op.output("grid")
    size = list(op.attr("size"))
    spatial = size[2:]
    if len(spatial) not in (2, 3):
        raise ctx.error(f"affine_grid of size {size}: OneFlow makes 2-D (N, C, H, W) and 3-D (N, C, D, H, W) grids")
    follows = ctx.follows_sizes(op, "size")
    if follows and any(expression is not None for expression in follows[2:]):
        raise ctx.error("affine_grid whose spatial size follows a dynamic axis: its base grid is a constant of the example's size")
    dtype = ctx.dtype(out)
    align_corners = bool(op.attr("align_corners"))
    # Coordinates in (x, y[, z]) order: x runs along the last axis (W), y along H, z along D.
    axes = [_grid_coordinates(n, align_corners) for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    base = np.stack(list(reversed(mesh)) + [np.ones(spatial)], axis=-1).reshape(-1, len(spatial) + 1)
    (transposed,) = ctx.make_node("Transpose", [theta], perm=[0, 2, 1])
    (points,) = ctx.make_node("MatMul", [ctx.constant(base.astype(dtype), "base_grid"), transposed])
    ctx.make_node("Reshape", [points, int64s(ctx, [-1] + spatial + [len(spatial)], "shape")], [out])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
