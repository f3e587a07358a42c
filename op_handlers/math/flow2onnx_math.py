"""Arithmetic: element-wise unary and binary ops, scalar ops, comparisons, isclose, logic, clipping,
matmul and vector products, the cross product, cumulative sums and products, atan2 and erfinv."""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper

from flow2onnx.plugin import DEFAULT_SINCE_OPSET, Lowerings, accepted_dtype, cast, cast_if_needed, clip, dims, extremum, hookimpl, normalize_axes, scalar_like, size_value, typed_node

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


def lower_unary(ctx, op, onnx_type: str):
    ctx.make_node(onnx_type, [op.input("x")], [op.output("y")])


# Element-wise unary ops that map onto one ONNX op (inputs "x", outputs "y"): OneFlow op type ->
# (ONNX op type, since_opset); Round is ONNX's from opset 11.
_UNARY = {
    "sin": ("Sin", 9),
    "cos": ("Cos", 9),
    "abs": ("Abs", 9),
    "ceil": ("Ceil", 9),
    "floor": ("Floor", 9),
    "exp": ("Exp", 9),
    "log": ("Log", 9),
    "negative": ("Neg", 9),
    "sqrt": ("Sqrt", 9),
    "reciprocal": ("Reciprocal", 9),
    "erf": ("Erf", 9),
    "round": ("Round", DEFAULT_SINCE_OPSET),
    "tan": ("Tan", 9),
    "asin": ("Asin", 9),
    "acos": ("Acos", 9),
    "atan": ("Atan", 9),
    "sinh": ("Sinh", 9),
    "cosh": ("Cosh", 9),
    "asinh": ("Asinh", 9),
    "acosh": ("Acosh", 9),
    "atanh": ("Atanh", 9),
}
for op_type, (onnx_type, since) in _UNARY.items():
    LOWERINGS.add(op_type, lower_unary, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("sign", since_opset=9)
def lower_sign(ctx, op):
    """Sign, and 0 at NaN as OneFlow gives it (``(x > 0) - (x < 0)``; ONNX's Sign is NaN there)."""
    x, y = op.input("x"), op.output("y")
    if not np.issubdtype(ctx.dtype(x), np.floating):
        ctx.make_node("Sign", [x], [y])
        return
    (sign,) = ctx.make_node("Sign", [x])
    (nan,) = ctx.make_node("IsNaN", [x])
    ctx.make_node("Where", [nan, _constant(ctx, 0, ctx.dtype(x), "zero"), sign], [y])


@LOWERINGS.op("logical_not", since_opset=9)
def lower_logical_not(ctx, op):
    ctx.make_node("Not", [cast_if_needed(ctx, op.input("x"), np.bool_)], [op.output("y")])


@LOWERINGS.op("rsqrt", since_opset=9)
def lower_rsqrt(ctx, op):
    (root,) = ctx.make_node("Sqrt", [op.input("x")])
    ctx.make_node("Reciprocal", [root], [op.output("y")])


@LOWERINGS.op("square", since_opset=9)
def lower_square(ctx, op):
    x = op.input("x")
    ctx.make_node("Mul", [x, x], [op.output("y")])


@LOWERINGS.op("log1p", since_opset=9)
def lower_log1p(ctx, op):
    x = op.input("x")
    (shifted,) = ctx.make_node("Add", [x, ctx.constant(np.array(1, ctx.dtype(x)), "one")])
    ctx.make_node("Log", [shifted], [op.output("y")])


@LOWERINGS.op("expm1", since_opset=9)
def lower_expm1(ctx, op):
    x = op.input("x")
    (exp,) = ctx.make_node("Exp", [x])
    ctx.make_node("Sub", [exp, ctx.constant(np.array(1, ctx.dtype(x)), "one")], [op.output("y")])


def _operands(ctx, op):
    """x and y, with y cast to x's dtype where OneFlow promoted a mixed pair."""
    x, y = op.input("x"), op.input("y")
    return x, cast_if_needed(ctx, y, ctx.dtype(x))


@LOWERINGS.op("broadcast_pow", onnx_type="Pow")
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
    if ctx.dtype(out) == np.bool_ and onnx_type in ("Add", "Sub", "Mul"):
        _boolean_arithmetic(ctx, onnx_type, x, y, out)
        return
    typed_node(ctx, onnx_type, [x, y], ctx.dtype(out), [out])


# OneFlow op type -> (ONNX op type, since_opset)
_BINARY = {
    "broadcast_add": ("Add", 9),
    "broadcast_sub": ("Sub", 9),
    "broadcast_mul": ("Mul", 9),
    "broadcast_div": ("Div", 9),
    "pow": ("Pow", 9),
}
for op_type, (onnx_type, since) in _BINARY.items():
    LOWERINGS.add(op_type, lower_binary, since_opset=since, onnx_type=onnx_type)


def _boolean_arithmetic(ctx, onnx_type, x, y, out):
    """OneFlow's arithmetic on booleans, as logic: x + y is x or y, x * y is x and y, and x - y is x
    and not y (OneFlow gives False for False - True)."""
    if onnx_type == "Add":
        ctx.make_node("Or", [x, y], [out])
    elif onnx_type == "Mul":
        ctx.make_node("And", [x, y], [out])
    else:
        (not_y,) = ctx.make_node("Not", [y])
        ctx.make_node("And", [x, not_y], [out])


def _integer_pow(ctx, base, exponent, dtype, out):
    """OneFlow raises integers to integer powers in double precision and converts back (3 ** -1 is 0,
    an overflow gives the integer minimum); so does this, which also keeps Pow, which takes no
    integers before opset 12, valid at every opset."""
    (power,) = ctx.make_node("Pow", [cast(ctx, base, np.float64), cast(ctx, exponent, np.float64)])
    cast(ctx, power, dtype, [out])


def lower_extremum(ctx, op, onnx_type: str):
    """maximum and minimum. Of floats, as OneFlow computes them: ``x if x > y else y`` (``<`` for
    the minimum), so that NaN wins only as ``y`` and -0 beats 0 as ``y`` (ONNX's Max and Min give
    NaN for a NaN on either side: measured different at NaN)."""
    x, y = _operands(ctx, op)
    out = op.output("z")
    dtype = ctx.dtype(out)
    if ctx.dtype(x) != dtype:
        x, y = cast(ctx, x, dtype), cast(ctx, y, dtype)
    if np.issubdtype(dtype, np.floating):
        (x_wins,) = ctx.make_node("Greater" if onnx_type == "Max" else "Less", [x, y])
        ctx.make_node("Where", [x_wins, x, y], [out])
        return
    extremum(ctx, onnx_type, x, y, dtype, [out])


# OneFlow op type -> (ONNX op type, since_opset)
_EXTREMUM = {
    "elementwise_maximum": ("Max", 9),
    "elementwise_minimum": ("Min", 9),
    "broadcast_maximum": ("Max", 9),
    "broadcast_minimum": ("Min", 9),
}
for op_type, (onnx_type, since) in _EXTREMUM.items():
    LOWERINGS.add(op_type, lower_extremum, since_opset=since, onnx_type=onnx_type)


def _compared(ctx, onnx_type: str, x: str, y: str, dtype, outputs=None) -> str:
    """``onnx_type`` (Greater, Less, Equal, ...) of x and y, booleans and small integers widened where ONNX wants."""
    return typed_node(ctx, onnx_type, [x, y], dtype, outputs, result_dtype=False)


@LOWERINGS.op("broadcast_not_equal", onnx_type="Equal", negate=True)
def lower_compare(ctx, op, onnx_type: str, negate: bool = False):
    x, y = _operands(ctx, op)
    dtype = ctx.dtype(op.input("x"))
    if negate:
        equal = _compared(ctx, onnx_type, x, y, dtype)
        ctx.make_node("Not", [equal], [op.output("z")])
    else:
        _compared(ctx, onnx_type, x, y, dtype, [op.output("z")])


# OneFlow op type -> (ONNX op type, since_opset)
_COMPARE = {
    "broadcast_equal": ("Equal", DEFAULT_SINCE_OPSET),
    "broadcast_greater": ("Greater", 9),
    "broadcast_less": ("Less", 9),
}
for op_type, (onnx_type, since) in _COMPARE.items():
    LOWERINGS.add(op_type, lower_compare, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("broadcast_greater_equal", onnx_type="Greater")
@LOWERINGS.op("broadcast_less_equal", onnx_type="Less")
def lower_compare_or_equal(ctx, op, onnx_type: str):
    """>= and <= before opset 12: (x > y) or (x == y), which is also false for NaN, like OneFlow's."""
    x, y = _operands(ctx, op)
    dtype = ctx.dtype(op.input("x"))
    strict = _compared(ctx, onnx_type, x, y, dtype)
    equal = _compared(ctx, "Equal", x, y, dtype)
    ctx.make_node("Or", [strict, equal], [op.output("z")])


@LOWERINGS.op("broadcast_greater_equal", since_opset=12, onnx_type="GreaterOrEqual")
@LOWERINGS.op("broadcast_less_equal", since_opset=12, onnx_type="LessOrEqual")
def lower_compare_12(ctx, op, onnx_type: str):
    x, y = _operands(ctx, op)
    _compared(ctx, onnx_type, x, y, ctx.dtype(op.input("x")), [op.output("z")])


def lower_logical(ctx, op, onnx_type: str):
    x, y = (cast_if_needed(ctx, op.input(arg), np.bool_) for arg in ("x", "y"))
    ctx.make_node(onnx_type, [x, y], [op.output("z")])


# OneFlow op type -> (ONNX op type, since_opset)
_LOGICAL = {
    "broadcast_logical_and": ("And", 9),
    "broadcast_logical_or": ("Or", 9),
    "broadcast_logical_xor": ("Xor", 9),
}
for op_type, (onnx_type, since) in _LOGICAL.items():
    LOWERINGS.add(op_type, lower_logical, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("broadcast_fmod", since_opset=10)
def lower_fmod(ctx, op):
    """C's fmod (the result takes the dividend's sign)."""
    x, y = _operands(ctx, op)
    typed_node(ctx, "Mod", [x, y], ctx.dtype(op.input("x")), [op.output("z")], fmod=1)


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


@LOWERINGS.op("scalar_reverse_pow", since_opset=9, onnx_type="Pow", reverse=True)
def lower_scalar(ctx, op, onnx_type: str, reverse: bool = False):
    x, operand, dtype = _scalar_input(ctx, op)
    out = op.output("out")
    if onnx_type == "Div" and np.issubdtype(ctx.dtype(out), np.integer):
        raise ctx.error("integer division by a scalar: OneFlow's rounding is not ONNX Div's truncation; divide floats")
    inputs = [operand, x] if reverse else [x, operand]
    if onnx_type == "Pow" and np.issubdtype(dtype, np.integer):
        _integer_pow(ctx, *inputs, ctx.dtype(out), out)
        return
    typed_node(ctx, onnx_type, inputs, dtype, [out], result_dtype=ctx.dtype(out))


# OneFlow op type -> (ONNX op type, since_opset)
_SCALAR = {
    "scalar_add": ("Add", 9),
    "scalar_mul": ("Mul", 9),
    "scalar_div": ("Div", 9),
    "scalar_pow": ("Pow", 9),
}
for op_type, (onnx_type, since) in _SCALAR.items():
    LOWERINGS.add(op_type, lower_scalar, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("scalar_floordiv", since_opset=9)
def lower_scalar_floordiv(ctx, op):
    x, operand, dtype = _scalar_input(ctx, op)
    out = op.output("out")
    if np.issubdtype(dtype, np.integer):
        # OneFlow's integer floordiv truncates toward zero (C division), which is ONNX Div on integers.
        typed_node(ctx, "Div", [x, operand], dtype, [out], result_dtype=ctx.dtype(out))
        return
    (quotient,) = ctx.make_node("Div", [x, operand])
    if dtype == ctx.dtype(out):
        ctx.make_node("Floor", [quotient], [out])
    else:
        (floor,) = ctx.make_node("Floor", [quotient])
        cast(ctx, floor, ctx.dtype(out), [out])


@LOWERINGS.op("scalar_logical_not_equal", onnx_type="Equal", negate=True)
@LOWERINGS.op("scalar_logical_greater_equal", onnx_type="Greater", or_equal=True)
@LOWERINGS.op("scalar_logical_less_equal", onnx_type="Less", or_equal=True)
def lower_scalar_compare(ctx, op, onnx_type: str, negate: bool = False, or_equal: bool = False):
    x, operand, dtype = _scalar_input(ctx, op)
    out = op.output("out")
    if negate:
        result = _compared(ctx, onnx_type, x, operand, dtype)
        ctx.make_node("Not", [result], [out])
    elif or_equal:
        strict = _compared(ctx, onnx_type, x, operand, dtype)
        equal = _compared(ctx, "Equal", x, operand, dtype)
        ctx.make_node("Or", [strict, equal], [out])
    else:
        _compared(ctx, onnx_type, x, operand, dtype, [out])


# OneFlow op type -> (ONNX op type, since_opset)
_SCALAR_COMPARE = {
    "scalar_logical_equal": ("Equal", DEFAULT_SINCE_OPSET),
    "scalar_logical_greater": ("Greater", 9),
    "scalar_logical_less": ("Less", 9),
}
for op_type, (onnx_type, since) in _SCALAR_COMPARE.items():
    LOWERINGS.add(op_type, lower_scalar_compare, since_opset=since, onnx_type=onnx_type)


@LOWERINGS.op("clip_by_scalar", low=True, high=True)
@LOWERINGS.op("clip_by_scalar_min", low=True, high=False)
@LOWERINGS.op("clip_by_scalar_max", low=False, high=True)
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


@LOWERINGS.op("add_n", since_opset=9)
def lower_add_n(ctx, op):
    inputs, out = op.input_list("in"), op.output("out")
    dtype = ctx.dtype(out)
    if np.issubdtype(dtype, np.floating):
        # Two tensors (a residual connection) as Add, which runtimes' fusions look for
        # (ONNX Runtime's SkipLayerNormalization is an Add followed by a LayerNormalization).
        ctx.make_node("Add" if len(inputs) == 2 else "Sum", inputs, [out])
        return
    if len(inputs) == 1:
        ctx.make_node("Identity", inputs, [out])
        return
    if dtype == np.bool_:
        total = inputs[0]
        for index, name in enumerate(inputs[1:], start=2):
            (total,) = ctx.make_node("Or", [total, name], [out] if index == len(inputs) else None)
        return
    # ONNX Sum takes no integers at any opset: a chain of Add, in OneFlow's order. OneFlow's add_n
    # saturates 8- and 16-bit integers (200 + 100 is 255 in uint8, where broadcast_add gives 44):
    # those are added as int32 and clipped to their range.
    narrow = dtype.itemsize < 4
    compute = np.dtype(np.int32) if narrow else dtype
    inputs = [cast_if_needed(ctx, name, compute) for name in inputs]
    total = inputs[0]
    for index, name in enumerate(inputs[1:], start=2):
        (total,) = ctx.make_node("Add", [total, name], [out] if index == len(inputs) and not narrow else None)
    if narrow:
        limits = np.iinfo(dtype)
        bounds = [ctx.constant(np.array(bound, compute), hint) for bound, hint in ((limits.min, "min"), (limits.max, "max"))]
        cast(ctx, clip(ctx, total, *bounds, dtype=compute), dtype, [out])


@LOWERINGS.op("bias_add", since_opset=9)
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


@LOWERINGS.op("matmul", "batch_matmul", "broadcast_matmul", since_opset=9)
def lower_matmul(ctx, op):
    """matmul (2-D: Gemm), batch_matmul and broadcast_matmul (N-D: MatMul with numpy broadcasting)."""
    a, b = op.input("a"), op.input("b")
    alpha = float(op.attr("alpha"))
    transpose_a, transpose_b = bool(op.attr("transpose_a")), bool(op.attr("transpose_b"))
    out = op.output("out")
    if ctx.rank(a) == 2 and ctx.rank(b) == 2 and np.issubdtype(ctx.dtype(a), np.floating):
        # Gemm's C became optional at opset 11; before, a zero that broadcasts to any output.
        c = [] if ctx.opset >= 11 else [ctx.constant(np.zeros((1,), dtype=ctx.dtype(a)), "zero")]
        ctx.make_node("Gemm", [a, b, *c], [out], alpha=alpha, transA=int(transpose_a), transB=int(transpose_b))
        return
    if min(ctx.rank(a), ctx.rank(b)) < 2:
        raise ctx.error(f"matmul of ranks {ctx.rank(a)} and {ctx.rank(b)}: OneFlow's matmul ops take operands of rank 2 or more")
    if transpose_a:
        a = _swap_last_two(ctx, a)
    if transpose_b:
        b = _swap_last_two(ctx, b)
    if alpha == 1.0:
        typed_node(ctx, "MatMul", [a, b], ctx.dtype(out), [out])
    else:
        (product,) = ctx.make_node("MatMul", [a, b])
        ctx.make_node("Mul", [product, ctx.constant(np.array(alpha, ctx.dtype(a)), "alpha")], [out])


@LOWERINGS.op("cumsum")
def lower_cumsum(ctx, op):
    x, out = op.input("x"), op.output("y")
    dtype = ctx.dtype(out)
    compute = accepted_dtype(ctx, "CumSum", dtype)
    axis = ctx.constant(np.array(op.attr("dim"), dtype=np.int64), "axis")
    if compute == dtype:
        ctx.make_node("CumSum", [cast_if_needed(ctx, x, dtype), axis], [out])
        return
    (total,) = ctx.make_node("CumSum", [cast_if_needed(ctx, x, compute), axis])
    cast(ctx, total, dtype, [out])


def _constant(ctx, value, dtype, hint):
    return ctx.constant(np.array(value, dtype=dtype), hint)


def _sign_bit(ctx, x, dtype):
    """Whether ``x``'s sign bit is set: true for negative numbers, -0 and -inf (1 / -0 is -inf)."""
    zero = _constant(ctx, 0, dtype, "zero")
    (negative,) = ctx.make_node("Less", [x, zero])
    (reciprocal,) = ctx.make_node("Reciprocal", [x])
    (negative_zero,) = ctx.make_node("Less", [reciprocal, zero])
    return ctx.make_node("Or", [negative, negative_zero])[0]


@LOWERINGS.op("atan2")
def lower_atan2(ctx, op):
    """atan2(x, y), the angle of the point (y, x), as C's atan2 gives it in every quadrant.

    The arctangent is taken of min(|x|, |y|) / max(|x|, |y|), which is in [0, 1], so that neither
    a zero denominator nor two infinities reach it (0 / 0 counts as 0, inf / inf as 1); then it is
    reflected into the octant and quadrant of (y, x). Sign bits, not comparisons with zero, choose
    the quadrant, so atan2(+-0, -0) is +-pi and atan2(+-0, +0) is +-0, as in C; NaN stays NaN.
    """
    out = op.output("z")
    dtype = ctx.dtype(out)
    x, y = (cast_if_needed(ctx, op.input(arg), dtype) for arg in ("x", "y"))
    (abs_x,) = ctx.make_node("Abs", [x])
    (abs_y,) = ctx.make_node("Abs", [y])
    (steep,) = ctx.make_node("Greater", [abs_x, abs_y])  # |x| > |y|: the angle is beyond 45 degrees
    (smaller,) = ctx.make_node("Where", [steep, abs_y, abs_x])
    (larger,) = ctx.make_node("Where", [steep, abs_x, abs_y])
    (ratio,) = ctx.make_node("Div", [smaller, larger])
    (equal,) = ctx.make_node("Equal", [abs_x, abs_y])
    (both_zero,) = ctx.make_node("Equal", [abs_x, _constant(ctx, 0, dtype, "zero")])
    (tie,) = ctx.make_node("Where", [both_zero, _constant(ctx, 0, dtype, "zero"), _constant(ctx, 1, dtype, "one")])
    (ratio,) = ctx.make_node("Where", [equal, tie, ratio])
    (angle,) = ctx.make_node("Atan", [ratio])
    (complement,) = ctx.make_node("Sub", [_constant(ctx, math.pi / 2, dtype, "half_pi"), angle])
    (angle,) = ctx.make_node("Where", [steep, complement, angle])
    (supplement,) = ctx.make_node("Sub", [_constant(ctx, math.pi, dtype, "pi"), angle])
    (angle,) = ctx.make_node("Where", [_sign_bit(ctx, y, dtype), supplement, angle])
    # x's sign by a product, not a select: ONNX Runtime's Where gives +0 for a -0 it picks from
    # its second input, and atan2(-0, y) is -0 for y > 0.
    (sign,) = ctx.make_node("Where", [_sign_bit(ctx, x, dtype), _constant(ctx, -1, dtype, "minus_one"), _constant(ctx, 1, dtype, "one")])
    ctx.make_node("Mul", [angle, sign], [out])


# erfinv(x) for float32, fitted here (least squares on Chebyshev nodes against mpmath, relative
# error) in two pieces of w = -log(1 - x^2): for w < 5 (|x| < 0.9966), x * P(w - 2.5); beyond, the
# tail Q(sqrt(w) - 3), up to the largest float32 below 1 (sqrt(w) = 3.99). Coefficients from the
# highest power down. Evaluated in float32 with 1 - x^2 formed as (1 - |x|)(1 + |x|), exact near 1,
# the result is within 2.3e-7 (relative; 3 ulp) of the exact erfinv of the float32 input over
# (-1, 1); OneFlow 0.9's own kernel is within 7.9e-6 (126 ulp, next to 1).
_ERFINV_SPLIT = 5.0
_ERFINV_CENTRAL = (
    -8.941414e-09, 2.32648e-08, 4.6826696e-07, -3.463093e-06, -4.9730697e-06,
    2.1834589e-04, -1.2527253e-03, -4.1773883e-03, 2.4664028e-01, 1.5014094,
)
_ERFINV_TAIL = (
    -1.6722122e-05, 5.6739493e-05, -4.2270745e-05, -2.2122162e-04, 1.1442517e-03,
    -3.4450414e-03, 6.8434826e-03, 1.0026624, 2.832802,
)


def _polynomial(ctx, t, coefficients, dtype, hint):
    """sum(c * t ** k) by Horner's rule, coefficients from the highest power down."""
    value = _constant(ctx, coefficients[0], dtype, hint)
    for coefficient in coefficients[1:]:
        (value,) = ctx.make_node("Mul", [value, t])
        (value,) = ctx.make_node("Add", [value, _constant(ctx, coefficient, dtype, hint)])
    return value


@LOWERINGS.op("erfinv")
def lower_erfinv(ctx, op):
    """The inverse error function (ONNX has none): a polynomial in float32 arithmetic (see
    ``_ERFINV_CENTRAL``); erfinv(+-1) is +-inf, and |x| > 1 and NaN give NaN."""
    x, out = op.input("x"), op.output("y")
    dtype = ctx.dtype(out)
    if dtype == np.float64:
        raise ctx.error("erfinv of float64: the lowering is accurate to float32 (2.3e-7 relative), not to float64; compute it in float32")
    if dtype != np.float32:
        x = cast(ctx, x, np.float32)
    f32 = np.float32
    one = _constant(ctx, 1, f32, "one")
    (magnitude,) = ctx.make_node("Abs", [x])
    (below,) = ctx.make_node("Sub", [one, magnitude])
    (above,) = ctx.make_node("Add", [one, magnitude])
    (complement,) = ctx.make_node("Mul", [below, above])  # 1 - x^2
    (log,) = ctx.make_node("Log", [complement])
    (w,) = ctx.make_node("Neg", [log])
    (centred,) = ctx.make_node("Sub", [w, _constant(ctx, _ERFINV_SPLIT / 2, f32, "centre")])
    (central,) = ctx.make_node("Mul", [x, _polynomial(ctx, centred, _ERFINV_CENTRAL, f32, "central")])
    (root,) = ctx.make_node("Sqrt", [w])
    (shifted,) = ctx.make_node("Sub", [root, _constant(ctx, 3, f32, "three")])
    tail = _polynomial(ctx, shifted, _ERFINV_TAIL, f32, "tail")
    (negative_tail,) = ctx.make_node("Neg", [tail])
    (negative,) = ctx.make_node("Less", [x, _constant(ctx, 0, f32, "zero")])
    (tail,) = ctx.make_node("Where", [negative, negative_tail, tail])
    (in_centre,) = ctx.make_node("Less", [w, _constant(ctx, _ERFINV_SPLIT, f32, "split")])
    (in_tail,) = ctx.make_node("Not", [in_centre])
    # central, which is -0 at -0, is Where's third input: ONNX Runtime's Where turns a -0 it picks
    # from its second input into +0.
    (value,) = ctx.make_node("Where", [in_tail, tail, central])
    # +-1 spelt out rather than left to the tail polynomial at infinity. Beyond 1 (and for +-inf
    # and NaN), 1 - x^2 is negative or NaN and its Log, hence everything after it, is NaN.
    (at_end,) = ctx.make_node("Equal", [magnitude, one])
    (infinite,) = ctx.make_node("Where", [negative, _constant(ctx, -np.inf, f32, "minus_inf"), _constant(ctx, np.inf, f32, "inf")])
    if dtype == np.float32:
        ctx.make_node("Where", [at_end, infinite, value], [out])
    else:
        (value,) = ctx.make_node("Where", [at_end, infinite, value])
        cast(ctx, value, dtype, [out])


@LOWERINGS.op("cumprod", since_opset=10)
def lower_cumprod(ctx, op):
    """Cumulative product along ``dim`` as a Scan that multiplies one slice at a time, in order.

    ONNX has no CumProd. exp(CumSum(log|x|)) would be fast but inexact (every product off by the
    rounding of a log and an exp, worse for long runs), and needs zeros and signs patched in; the
    Scan computes exactly OneFlow's sequence of multiplications, so zeros, negative numbers,
    infinities and NaN (and integer overflow) come out as OneFlow's do.
    """
    out = op.output("y")
    dtype = accepted_dtype(ctx, "Mul", ctx.dtype(out))  # small integers multiply as int32 before opset 14
    x = cast_if_needed(ctx, op.input("x"), dtype)
    rank = ctx.rank(op.input("x"))
    axis = normalize_axes([op.attr("dim")], rank)[0]
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if rank == 1:
        initial = _constant(ctx, 1, dtype, "one")
    else:
        kept = dims(ctx, x, [a for a in range(rank) if a != axis])
        (initial,) = ctx.make_node("ConstantOfShape", [kept], value=numpy_helper.from_array(np.array([1], dtype=dtype)))
    previous, item = ctx.unique_name("body_product_in"), ctx.unique_name("body_slice")
    product, emitted = ctx.unique_name("body_product_out"), ctx.unique_name("body_scan_out")
    body = helper.make_graph(
        [
            helper.make_node("Mul", [previous, item], [product], name=ctx.unique_name("body_Mul")),
            helper.make_node("Identity", [product], [emitted], name=ctx.unique_name("body_Identity")),
        ],
        ctx.unique_name("cumprod_body"),
        [helper.make_tensor_value_info(previous, element, None), helper.make_tensor_value_info(item, element, None)],
        [helper.make_tensor_value_info(product, element, None), helper.make_tensor_value_info(emitted, element, None)],
    )
    products = out if dtype == ctx.dtype(out) else ctx.unique_name("products")
    ctx.make_node(
        "Scan",
        [initial, x],
        [ctx.unique_name("final_product"), products],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[axis],
        scan_output_axes=[axis],
    )
    if products != out:
        cast(ctx, products, ctx.dtype(out), [out])


@LOWERINGS.op("log2", base=2.0)
@LOWERINGS.op("log10", base=10.0)
def lower_log_base(ctx, op, base: float):
    """log2 and log10: Log divided by the base's natural log."""
    x = op.input("x")
    (log,) = ctx.make_node("Log", [x])
    ctx.make_node("Div", [log, _constant(ctx, math.log(base), ctx.dtype(x), "log_base")], [op.output("y")])


def _nan_or_inf(ctx, x, test: str) -> str:
    """IsNaN or IsInf of ``x`` (float), or false everywhere for integers and booleans, which are neither."""
    if np.issubdtype(ctx.dtype(x), np.floating):
        return typed_node(ctx, test, [x], ctx.dtype(x), result_dtype=False)
    (shape,) = ctx.make_node("Shape", [x])
    return ctx.make_node("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([False])))[0]


@LOWERINGS.op("isnan")
def lower_isnan(ctx, op):
    ctx.make_node("Identity", [_nan_or_inf(ctx, op.input("in"), "IsNaN")], [op.output("out")])


@LOWERINGS.op("isinf")
def lower_isinf(ctx, op):
    ctx.make_node("Identity", [_nan_or_inf(ctx, op.input("in"), "IsInf")], [op.output("out")])


@LOWERINGS.op("isfinite")
def lower_isfinite(ctx, op):
    x = op.input("in")
    (either,) = ctx.make_node("Or", [_nan_or_inf(ctx, x, "IsNaN"), _nan_or_inf(ctx, x, "IsInf")])
    ctx.make_node("Not", [either], [op.output("out")])


@LOWERINGS.op("trunc")
def lower_trunc(ctx, op):
    """Rounding toward zero (ONNX has no Trunc): Ceil below zero, Floor elsewhere."""
    x = op.input("in")
    (negative,) = ctx.make_node("Less", [x, _constant(ctx, 0, ctx.dtype(x), "zero")])
    (up,) = ctx.make_node("Ceil", [x])
    (down,) = ctx.make_node("Floor", [x])
    ctx.make_node("Where", [negative, up, down], [op.output("out")])


@LOWERINGS.op("floordiv")
def lower_floordiv(ctx, op):
    """x // y of two tensors: floor(x / y) for floats; integers divide as OneFlow's scalar_floordiv
    does, truncating toward zero (C division), which is ONNX Div on integers."""
    x, y = _operands(ctx, op)
    out = op.output("z")
    dtype = ctx.dtype(out)
    if np.issubdtype(dtype, np.integer):
        typed_node(ctx, "Div", [cast_if_needed(ctx, x, dtype), cast_if_needed(ctx, y, dtype)], dtype, [out])
        return
    (quotient,) = ctx.make_node("Div", [x, y])
    ctx.make_node("Floor", [quotient], [out])


@LOWERINGS.op("scalar_fmod")
def lower_scalar_fmod(ctx, op):
    """C's fmod by a scalar (the result takes the dividend's sign)."""
    x, operand, dtype = _scalar_input(ctx, op)
    typed_node(ctx, "Mod", [x, operand], dtype, [op.output("out")], result_dtype=ctx.dtype(op.output("out")), fmod=1)


@LOWERINGS.op("scalar_logical_and", onnx_type="And")
@LOWERINGS.op("scalar_logical_or", onnx_type="Or")
@LOWERINGS.op("scalar_logical_xor", onnx_type="Xor")
def lower_scalar_logical(ctx, op, onnx_type: str):
    """And, Or, Xor of a tensor's truth and a scalar's."""
    x = cast_if_needed(ctx, op.input("in"), np.bool_)
    operand = ctx.constant(np.array(bool(_scalar_operand(op)), dtype=np.bool_), "operand")
    ctx.make_node(onnx_type, [x, operand], [op.output("out")])


@LOWERINGS.op("reciprocal_no_nan")
def lower_reciprocal_no_nan(ctx, op):
    """1 / x, and 0 where x is 0."""
    x = op.input("x")
    zero = _constant(ctx, 0, ctx.dtype(x), "zero")
    (is_zero,) = ctx.make_node("Equal", [x, zero])
    (reciprocal,) = ctx.make_node("Reciprocal", [x])
    ctx.make_node("Where", [is_zero, zero, reciprocal], [op.output("y")])


@LOWERINGS.op("broadcast_isclose_eq_nan", "broadcast_isclose_neq_nan")
def lower_isclose(ctx, op):
    """|x - y| <= atol + rtol * |y| where that difference is finite (false at NaN, and for a finite
    value against an infinity, whose tolerance is infinite too), or x == y (equal infinities); with
    ``equal_nan``, NaN meets NaN."""
    x, y = _operands(ctx, op)
    dtype = ctx.dtype(op.input("x"))
    if dtype == np.float16:
        # Measured: isclose(x, x + 1e-6) in float16 disagreed with OneFlow on each of the three verification inputs.
        raise ctx.error(
            "isclose of float16: OneFlow rounds each step of |x - y| <= atol + rtol * |y| to float16, and ONNX "
            "Runtime's CPU provider computes float16 arithmetic in float32, so elements near the tolerance come out "
            "differently; compare in float32 (flow.isclose(x.float(), y.float()))"
        )
    if not np.issubdtype(dtype, np.floating):
        x, y, dtype = cast(ctx, x, np.float64), cast(ctx, y, np.float64), np.dtype(np.float64)
    (difference,) = ctx.make_node("Sub", [x, y])
    (difference,) = ctx.make_node("Abs", [difference])
    (scale,) = ctx.make_node("Abs", [y])
    (tolerance,) = ctx.make_node("Mul", [scale, _constant(ctx, op.attr("rtol"), dtype, "rtol")])
    (tolerance,) = ctx.make_node("Add", [tolerance, _constant(ctx, op.attr("atol"), dtype, "atol")])
    (beyond,) = ctx.make_node("Greater", [difference, tolerance])
    (close,) = ctx.make_node("Not", [beyond])
    (finite,) = ctx.make_node("Less", [difference, _constant(ctx, np.inf, dtype, "infinity")])
    (close,) = ctx.make_node("And", [close, finite])
    (equal,) = ctx.make_node("Equal", [x, y])
    outputs = [op.output("z")]
    (close,) = ctx.make_node("Or", [close, equal], None if op.attr("equal_nan") else outputs)
    if op.attr("equal_nan"):
        (both,) = ctx.make_node("And", [ctx.make_node("IsNaN", [x])[0], ctx.make_node("IsNaN", [y])[0]])
        ctx.make_node("Or", [close, both], outputs)


@LOWERINGS.op("dot", a="x", b="y")
@LOWERINGS.op("matrix_vector_product", "vector_matrix_product", a="a", b="b")
def lower_vector_product(ctx, op, a: str, b: str):
    """dot (vector . vector), matrix_vector_product and vector_matrix_product: one MatMul."""
    out = op.output("out")
    typed_node(ctx, "MatMul", [op.input(a), op.input(b)], ctx.dtype(out), [out])


@LOWERINGS.op("linalg_cross")
def lower_linalg_cross(ctx, op):
    """The cross product along ``dim`` (of size 3): a[1, 2, 0] * b[2, 0, 1] - a[2, 0, 1] * b[1, 2, 0]."""
    a, b, out = op.input("input"), op.input("other"), op.output("out")
    b = cast_if_needed(ctx, b, ctx.dtype(a))
    axis = normalize_axes([op.attr("dim")], ctx.rank(a))[0]
    if ctx.shape(a)[axis] != 3:
        raise ctx.error(f"cross product along an axis of size {ctx.shape(a)[axis]}; it takes 3")

    def rotated(x, order):
        return ctx.make_node("Gather", [x, ctx.constant(np.array(order, dtype=np.int64), "order")], axis=axis)[0]

    (first,) = ctx.make_node("Mul", [rotated(a, [1, 2, 0]), rotated(b, [2, 0, 1])])
    (second,) = ctx.make_node("Mul", [rotated(a, [2, 0, 1]), rotated(b, [1, 2, 0])])
    typed_node(ctx, "Sub", [first, second], ctx.dtype(out), [out])


@LOWERINGS.op("kl_div_loss", since_opset=9)
def lower_kl_div_loss(ctx, op):
    """Pointwise KL divergence, as OneFlow computes it (its reductions are ops of their own):
    ``exp(target) * (target - input)`` with ``log_target``, else ``target * (log(target) - input)``
    where ``target > 0`` and 0 elsewhere, NaN targets included (measured: OneFlow gives 0 at a NaN,
    a negative or a zero target, whatever the input)."""
    x, target, out = op.input("input"), op.input("target"), op.output("out")
    if ctx.dtype(x).kind != "f":
        raise ctx.error(f"kl_div of {ctx.dtype(x)}: OneFlow computes it for floating-point tensors")
    if op.attr("log_target"):
        (difference,) = ctx.make_node("Sub", [target, x])
        ctx.make_node("Mul", [ctx.make_node("Exp", [target])[0], difference], [out])
        return
    zero = scalar_like(ctx, target, 0.0, "zero")
    (difference,) = ctx.make_node("Sub", [ctx.make_node("Log", [target])[0], x])
    (pointwise,) = ctx.make_node("Mul", [target, difference])
    (positive,) = ctx.make_node("Greater", [target, zero])
    ctx.make_node("Where", [positive, pointwise, zero], [out])


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
