"""Arithmetic: element-wise unary and binary ops, scalar ops, comparisons, logic, clipping, matmul, cumsum."""

from __future__ import annotations

import functools

import numpy as np

from flow2onnx import hookimpl

from flow2onnx.lowering.helpers import cast, cast_if_needed, clip, extremum, size_value

_BINARY = {
    "broadcast_add": "Add",
    "broadcast_sub": "Sub",
    "broadcast_mul": "Mul",
    "broadcast_div": "Div",
    "pow": "Pow",
}
_EXTREMUM = {
    "elementwise_maximum": "Max",
    "elementwise_minimum": "Min",
    "broadcast_maximum": "Max",
    "broadcast_minimum": "Min",
}
_COMPARE = {
    "broadcast_equal": "Equal",
    "broadcast_greater": "Greater",
    "broadcast_less": "Less",
}
_LOGICAL = {
    "broadcast_logical_and": "And",
    "broadcast_logical_or": "Or",
    "broadcast_logical_xor": "Xor",
}
_SCALAR = {
    "scalar_add": "Add",
    "scalar_mul": "Mul",
    "scalar_div": "Div",
    "scalar_pow": "Pow",
}
_SCALAR_COMPARE = {
    "scalar_logical_equal": "Equal",
    "scalar_logical_greater": "Greater",
    "scalar_logical_less": "Less",
}
# Element-wise unary ops that map onto one ONNX op (inputs "x", outputs "y").
_UNARY = {
    "sin": "Sin",
    "cos": "Cos",
    "abs": "Abs",
    "ceil": "Ceil",
    "floor": "Floor",
    "exp": "Exp",
    "log": "Log",
    "negative": "Neg",
    "sqrt": "Sqrt",
    "reciprocal": "Reciprocal",
    "erf": "Erf",
    "sign": "Sign",
    "round": "Round",
    "tan": "Tan",
    "asin": "Asin",
    "acos": "Acos",
    "atan": "Atan",
    "sinh": "Sinh",
    "cosh": "Cosh",
    "asinh": "Asinh",
    "acosh": "Acosh",
    "atanh": "Atanh",
}


def lower_unary(ctx, op, onnx_type: str):
    ctx.make_node(onnx_type, [op.input("x")], [op.output("y")])


def lower_logical_not(ctx, op):
    ctx.make_node("Not", [cast_if_needed(ctx, op.input("x"), np.bool_)], [op.output("y")])


def lower_rsqrt(ctx, op):
    (root,) = ctx.make_node("Sqrt", [op.input("x")])
    ctx.make_node("Reciprocal", [root], [op.output("y")])


def lower_square(ctx, op):
    x = op.input("x")
    ctx.make_node("Mul", [x, x], [op.output("y")])


def lower_log1p(ctx, op):
    x = op.input("x")
    (shifted,) = ctx.make_node("Add", [x, ctx.constant(np.array(1, ctx.dtype(x)), "one")])
    ctx.make_node("Log", [shifted], [op.output("y")])


def lower_expm1(ctx, op):
    x = op.input("x")
    (exp,) = ctx.make_node("Exp", [x])
    ctx.make_node("Sub", [exp, ctx.constant(np.array(1, ctx.dtype(x)), "one")], [op.output("y")])


def _operands(ctx, op):
    """x and y, with y cast to x's dtype where OneFlow promoted a mixed pair."""
    x, y = op.input("x"), op.input("y")
    return x, cast_if_needed(ctx, y, ctx.dtype(x))


def lower_binary(ctx, op, onnx_type: str):
    x, y = _operands(ctx, op)
    out = op.output("z")
    if ctx.dtype(x) != ctx.dtype(out):
        x, y = cast(ctx, x, ctx.dtype(out)), cast(ctx, y, ctx.dtype(out))
    if onnx_type == "Div" and np.issubdtype(ctx.dtype(out), np.integer):
        raise ctx.error("integer division: OneFlow's rounding of negative quotients is not ONNX Div's truncation; divide floats")
    if onnx_type == "Pow" and np.issubdtype(ctx.dtype(out), np.integer):
        _integer_pow(ctx, x, y, ctx.dtype(out), out)
        return
    ctx.make_node(onnx_type, [x, y], [out])


def _integer_pow(ctx, base, exponent, dtype, out):
    """OneFlow raises integers to integer powers in double precision and converts back (3 ** -1 is 0,
    an overflow gives the integer minimum); so does this, which also keeps Pow, which takes no
    integers before opset 12, valid at every opset."""
    (power,) = ctx.make_node("Pow", [cast(ctx, base, np.float64), cast(ctx, exponent, np.float64)])
    cast(ctx, power, dtype, [out])


def lower_extremum(ctx, op, onnx_type: str):
    x, y = _operands(ctx, op)
    out = op.output("z")
    dtype = ctx.dtype(out)
    if ctx.dtype(x) != dtype:
        x, y = cast(ctx, x, dtype), cast(ctx, y, dtype)
    extremum(ctx, onnx_type, x, y, dtype, [out])


def lower_compare(ctx, op, onnx_type: str, negate: bool = False):
    x, y = _operands(ctx, op)
    if negate:
        (equal,) = ctx.make_node(onnx_type, [x, y])
        ctx.make_node("Not", [equal], [op.output("z")])
    else:
        ctx.make_node(onnx_type, [x, y], [op.output("z")])


def lower_compare_or_equal(ctx, op, onnx_type: str):
    """>= and <= before opset 12: (x > y) or (x == y), which is also false for NaN, like OneFlow's."""
    x, y = _operands(ctx, op)
    (strict,) = ctx.make_node(onnx_type, [x, y])
    (equal,) = ctx.make_node("Equal", [x, y])
    ctx.make_node("Or", [strict, equal], [op.output("z")])


def lower_compare_12(ctx, op, onnx_type: str):
    x, y = _operands(ctx, op)
    ctx.make_node(onnx_type, [x, y], [op.output("z")])


def lower_logical(ctx, op, onnx_type: str):
    x, y = (cast_if_needed(ctx, op.input(arg), np.bool_) for arg in ("x", "y"))
    ctx.make_node(onnx_type, [x, y], [op.output("z")])



def lower_fmod(ctx, op):
    """C's fmod (the result takes the dividend's sign)."""
    x, y = _operands(ctx, op)
    ctx.make_node("Mod", [x, y], [op.output("z")], fmod=1)


def _scalar_operand(op):
    if op.attr("has_float_operand"):
        return float(op.attr("float_operand"))
    if op.attrs.get("has_bool_operand"):  # not every scalar op type has a bool operand
        return bool(op.attr("bool_operand"))
    return int(op.attr("int_operand"))


def _scalar_input(ctx, op):
    """The op's tensor, in the dtype the computation happens in, and the scalar as a constant of that dtype."""
    x = op.input("in")
    value = _scalar_operand(op)
    dtype = ctx.dtype(x)
    out_dtype = ctx.dtype(op.output("out"))
    if np.issubdtype(out_dtype, np.floating) and not np.issubdtype(dtype, np.floating):
        # OneFlow promoted an integer tensor to a float result: compute in the result's dtype.
        dtype = out_dtype
        x = cast(ctx, x, dtype)
    elif isinstance(value, float) and not np.issubdtype(dtype, np.floating):
        # An integer tensor against a fractional scalar: compare/compute in double so 0.5 stays 0.5.
        dtype = np.dtype(np.float64)
        x = cast(ctx, x, dtype)
    # A scalar computed from a dynamic size in Python (sum / (H * W)) is computed from Shape instead.
    follows = ctx.follows_sizes(op, "float_operand" if op.attr("has_float_operand") else "int_operand")
    if follows is not None:
        return x, size_value(ctx, follows, dtype), np.dtype(dtype)
    return x, ctx.constant(np.array(value, dtype=dtype), "operand"), np.dtype(dtype)


def lower_scalar(ctx, op, onnx_type: str, reverse: bool = False):
    x, operand, dtype = _scalar_input(ctx, op)
    out = op.output("out")
    if onnx_type == "Div" and np.issubdtype(ctx.dtype(out), np.integer):
        raise ctx.error("integer division by a scalar: OneFlow's rounding is not ONNX Div's truncation; divide floats")
    inputs = [operand, x] if reverse else [x, operand]
    if onnx_type == "Pow" and np.issubdtype(dtype, np.integer):
        _integer_pow(ctx, *inputs, ctx.dtype(out), out)
        return
    if dtype == ctx.dtype(out):
        ctx.make_node(onnx_type, inputs, [out])
    else:
        (result,) = ctx.make_node(onnx_type, inputs)
        cast(ctx, result, ctx.dtype(out), [out])


def lower_scalar_floordiv(ctx, op):
    x, operand, dtype = _scalar_input(ctx, op)
    out = op.output("out")
    if np.issubdtype(dtype, np.integer):
        # OneFlow's integer floordiv truncates toward zero (C division), which is ONNX Div on integers.
        ctx.make_node("Div", [x, operand], [out])
        return
    (quotient,) = ctx.make_node("Div", [x, operand])
    if dtype == ctx.dtype(out):
        ctx.make_node("Floor", [quotient], [out])
    else:
        (floor,) = ctx.make_node("Floor", [quotient])
        cast(ctx, floor, ctx.dtype(out), [out])


def lower_scalar_compare(ctx, op, onnx_type: str, negate: bool = False, or_equal: bool = False):
    x, operand, _ = _scalar_input(ctx, op)
    out = op.output("out")
    if negate:
        (result,) = ctx.make_node(onnx_type, [x, operand])
        ctx.make_node("Not", [result], [out])
    elif or_equal:
        (strict,) = ctx.make_node(onnx_type, [x, operand])
        (equal,) = ctx.make_node("Equal", [x, operand])
        ctx.make_node("Or", [strict, equal], [out])
    else:
        ctx.make_node(onnx_type, [x, operand], [out])



def lower_clip(ctx, op, low: bool, high: bool):
    x = op.input("x")
    dtype = ctx.dtype(x)
    floating = np.issubdtype(dtype, np.floating)
    bounds = ["", ""]
    if low:
        bounds[0] = ctx.constant(np.array(op.attr("floating_min" if floating else "integral_min"), dtype), "min")
    if high:
        bounds[1] = ctx.constant(np.array(op.attr("floating_max" if floating else "integral_max"), dtype), "max")
    clip(ctx, x, *bounds, outputs=[op.output("y")])


def lower_add_n(ctx, op):
    inputs, out = op.input_list("in"), op.output("out")
    if np.issubdtype(ctx.dtype(out), np.floating):
        ctx.make_node("Sum", inputs, [out])
        return
    if len(inputs) == 1:
        ctx.make_node("Identity", inputs, [out])
        return
    # ONNX Sum takes no integers at any opset: a chain of Add, in OneFlow's order.
    total = inputs[0]
    for index, name in enumerate(inputs[1:], start=2):
        (total,) = ctx.make_node("Add", [total, name], [out] if index == len(inputs) else None)


def lower_bias_add(ctx, op):
    a, b = op.input("a"), op.input("b")
    rank = ctx.rank(a)
    axis = op.attr("axis")
    if axis < 0:
        axis += rank
    trailing = rank - axis - 1
    if trailing:
        # [C] -> [C, 1, ..., 1] so that it broadcasts along `axis`; a Reshape, not a copy of the weights.
        shape = ctx.constant(np.array([-1] + [1] * trailing, dtype=np.int64), "bias_shape")
        (b,) = ctx.make_node("Reshape", [b, shape])
    ctx.make_node("Add", [a, b], [op.output("out")])


def _swap_last_two(ctx, x):
    rank = ctx.rank(x)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.make_node("Transpose", [x], perm=perm)[0]


def lower_matmul(ctx, op):
    """matmul (2-D: Gemm), batch_matmul and broadcast_matmul (N-D: MatMul with numpy broadcasting)."""
    a, b = op.input("a"), op.input("b")
    alpha = float(op.attr("alpha"))
    transpose_a, transpose_b = bool(op.attr("transpose_a")), bool(op.attr("transpose_b"))
    out = op.output("out")
    if ctx.rank(a) == 2 and ctx.rank(b) == 2 and np.issubdtype(ctx.dtype(a), np.floating):
        ctx.make_node("Gemm", [a, b], [out], alpha=alpha, transA=int(transpose_a), transB=int(transpose_b))
        return
    if min(ctx.rank(a), ctx.rank(b)) < 2:
        raise ctx.error(f"matmul of ranks {ctx.rank(a)} and {ctx.rank(b)}: OneFlow's matmul ops take operands of rank 2 or more")
    if transpose_a:
        a = _swap_last_two(ctx, a)
    if transpose_b:
        b = _swap_last_two(ctx, b)
    if alpha == 1.0:
        ctx.make_node("MatMul", [a, b], [out])
    else:
        (product,) = ctx.make_node("MatMul", [a, b])
        ctx.make_node("Mul", [product, ctx.constant(np.array(alpha, ctx.dtype(a)), "alpha")], [out])


def lower_cumsum(ctx, op):
    x = op.input("x")
    axis = ctx.constant(np.array(op.attr("dim"), dtype=np.int64), "axis")
    ctx.make_node("CumSum", [x, axis], [op.output("y")])



@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type, onnx_type in _UNARY.items():
        register(op_type, functools.partial(lower_unary, onnx_type=onnx_type))
    register("logical_not", lower_logical_not)
    register("rsqrt", lower_rsqrt)
    register("square", lower_square)
    register("log1p", lower_log1p)
    register("expm1", lower_expm1)
    for op_type, onnx_type in _BINARY.items():
        register(op_type, functools.partial(lower_binary, onnx_type=onnx_type))
    for op_type, onnx_type in _EXTREMUM.items():
        register(op_type, functools.partial(lower_extremum, onnx_type=onnx_type))
    for op_type, onnx_type in _COMPARE.items():
        register(op_type, functools.partial(lower_compare, onnx_type=onnx_type))
    register("broadcast_not_equal", functools.partial(lower_compare, onnx_type="Equal", negate=True))
    register("broadcast_greater_equal", functools.partial(lower_compare_or_equal, onnx_type="Greater"))
    register("broadcast_less_equal", functools.partial(lower_compare_or_equal, onnx_type="Less"))
    register("broadcast_greater_equal", functools.partial(lower_compare_12, onnx_type="GreaterOrEqual"), since_opset=12)
    register("broadcast_less_equal", functools.partial(lower_compare_12, onnx_type="LessOrEqual"), since_opset=12)
    for op_type, onnx_type in _LOGICAL.items():
        register(op_type, functools.partial(lower_logical, onnx_type=onnx_type))
    register("broadcast_fmod", lower_fmod)
    for op_type, onnx_type in _SCALAR.items():
        register(op_type, functools.partial(lower_scalar, onnx_type=onnx_type))
    register("scalar_reverse_pow", functools.partial(lower_scalar, onnx_type="Pow", reverse=True))
    register("scalar_floordiv", lower_scalar_floordiv)
    for op_type, onnx_type in _SCALAR_COMPARE.items():
        register(op_type, functools.partial(lower_scalar_compare, onnx_type=onnx_type))
    register("scalar_logical_not_equal", functools.partial(lower_scalar_compare, onnx_type="Equal", negate=True))
    register("scalar_logical_greater_equal", functools.partial(lower_scalar_compare, onnx_type="Greater", or_equal=True))
    register("scalar_logical_less_equal", functools.partial(lower_scalar_compare, onnx_type="Less", or_equal=True))
    register("clip_by_scalar", functools.partial(lower_clip, low=True, high=True))
    register("clip_by_scalar_min", functools.partial(lower_clip, low=True, high=False))
    register("clip_by_scalar_max", functools.partial(lower_clip, low=False, high=True))
    register("add_n", lower_add_n)
    register("bias_add", lower_bias_add)
    for op_type in ("matmul", "batch_matmul", "broadcast_matmul"):
        register(op_type, lower_matmul)
    register("cumsum", lower_cumsum)
