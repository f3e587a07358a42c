"""Arithmetic: broadcast binary ops, scalar ops, add_n, bias_add, matmul."""

from __future__ import annotations

import functools

import numpy as np

from flow2onnx.hookspecs import hookimpl

_BINARY = {
    "broadcast_add": "Add",
    "broadcast_sub": "Sub",
    "broadcast_mul": "Mul",
    "broadcast_div": "Div",
}
_SCALAR = {
    "scalar_add": "Add",
    "scalar_mul": "Mul",
}


def lower_binary(ctx, op, onnx_type: str):
    ctx.make_node(onnx_type, [op.input("x"), op.input("y")], [op.output("z")])


def lower_scalar(ctx, op, onnx_type: str):
    x = op.input("in")
    if op.attrs.get("has_float_operand"):
        value = op.attrs["float_operand"]
    else:
        value = op.attrs["int_operand"]
    # The scalar takes the tensor's dtype, as OneFlow computes in it.
    operand = ctx.constant(np.array(value, dtype=ctx.dtype(x)), "operand")
    ctx.make_node(onnx_type, [x, operand], [op.output("out")])


def lower_add_n(ctx, op):
    ctx.make_node("Sum", list(op.inputs["in"]), [op.output("out")])


def lower_bias_add(ctx, op):
    a, b = op.input("a"), op.input("b")
    rank = ctx.rank(a)
    axis = op.attrs.get("axis", 1)
    if axis < 0:
        axis += rank
    trailing = rank - axis - 1
    if trailing:
        # [C] -> [C, 1, ..., 1] so that it broadcasts along `axis`; a Reshape, not a copy of the weights.
        shape = ctx.constant(np.array([-1] + [1] * trailing, dtype=np.int64), "bias_shape")
        (b,) = ctx.make_node("Reshape", [b, shape])
    ctx.make_node("Add", [a, b], [op.output("out")])


def lower_matmul(ctx, op):
    a, b = op.input("a"), op.input("b")
    if ctx.rank(a) != 2 or ctx.rank(b) != 2:
        raise ctx.error(f"matmul of ranks {ctx.rank(a)} and {ctx.rank(b)}: this lowering handles 2-D operands only")
    ctx.make_node(
        "Gemm",
        [a, b],
        [op.output("out")],
        alpha=float(op.attrs.get("alpha", 1.0)),
        transA=int(op.attrs.get("transpose_a", False)),
        transB=int(op.attrs.get("transpose_b", False)),
    )


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type, onnx_type in _BINARY.items():
        register(op_type, functools.partial(lower_binary, onnx_type=onnx_type))
    for op_type, onnx_type in _SCALAR.items():
        register(op_type, functools.partial(lower_scalar, onnx_type=onnx_type))
    register("add_n", lower_add_n)
    register("bias_add", lower_bias_add)
    register("matmul", lower_matmul)
