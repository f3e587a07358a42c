"""Element-wise activations and softmax: relu, sigmoid, tanh, GELU variants (quick GELU too), SiLU, Mish, hard-*, ELU family, shrinks and threshold."""

from __future__ import annotations

import math

import numpy as np

from flow2onnx.plugin import Lowerings, hookimpl

# since_opset=9 or 10: the oldest opset a lowering's nodes can be expressed in, where older than
# the default 11 (measured by the lowering tests at opsets 9 and 10: checker, operator types, ONNX
# Runtime). A lowering without since_opset is valid from the default, 11.
LOWERINGS = Lowerings()


def lower_unary(ctx, op, onnx_type: str, input_arg: str, output_arg: str):
    ctx.make_node(onnx_type, [op.input(input_arg)], [op.output(output_arg)])


# OneFlow op type -> (ONNX op type, OneFlow input argument, OneFlow output argument, since_opset)
_UNARY = {
    "relu": ("Relu", "x", "y", 9),
    "sigmoid": ("Sigmoid", "x", "y", 9),
    "tanh": ("Tanh", "x", "y", 9),
    "selu": ("Selu", "in", "out", 9),  # ONNX's default alpha and gamma are SELU's constants
    "softsign": ("Softsign", "in", "out", 9),
}
for op_type, (onnx_type, input_arg, output_arg, since) in _UNARY.items():
    LOWERINGS.add(op_type, lower_unary, since_opset=since, onnx_type=onnx_type, input_arg=input_arg, output_arg=output_arg)


def _scalar(ctx, x, value, hint="scalar"):
    """A scalar constant in ``x``'s dtype, one per value in the model (a formula's coefficients)."""
    return ctx.constant(np.array(value, dtype=ctx.dtype(x)), hint, shared=True)


@LOWERINGS.op("gelu", since_opset=9)
def lower_gelu(ctx, op):
    """Exact GELU: x * (1 + erf(x / sqrt(2))) / 2."""
    x = op.input("in")
    (scaled,) = ctx.make_node("Div", [x, _scalar(ctx, x, math.sqrt(2.0), "sqrt2")])
    (erf,) = ctx.make_node("Erf", [scaled])
    (shifted,) = ctx.make_node("Add", [erf, _scalar(ctx, x, 1.0, "one")])
    (half,) = ctx.make_node("Mul", [x, _scalar(ctx, x, 0.5, "half")])
    ctx.make_node("Mul", [half, shifted], [op.output("out")])


@LOWERINGS.op("fast_gelu", since_opset=9)
def lower_fast_gelu(ctx, op):
    """GELU's tanh form: x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2."""
    x = op.input("in")
    (cube,) = ctx.make_node("Mul", [x, x])
    (cube,) = ctx.make_node("Mul", [cube, x])
    (cube,) = ctx.make_node("Mul", [cube, _scalar(ctx, x, 0.044715, "coefficient")])
    (inner,) = ctx.make_node("Add", [x, cube])
    (inner,) = ctx.make_node("Mul", [inner, _scalar(ctx, x, math.sqrt(2.0 / math.pi), "sqrt_2_over_pi")])
    (tanh,) = ctx.make_node("Tanh", [inner])
    (shifted,) = ctx.make_node("Add", [tanh, _scalar(ctx, x, 1.0, "one")])
    (half,) = ctx.make_node("Mul", [x, _scalar(ctx, x, 0.5, "half")])
    ctx.make_node("Mul", [half, shifted], [op.output("out")])


#: The dtypes ONNX Runtime runs Gelu in (for float64 it expands Gelu into an Erf it has no kernel for).
GELU_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


@LOWERINGS.op("gelu", since_opset=20)
def lower_gelu_20(ctx, op):
    """ONNX Gelu, from opset 20: one node, which runtimes have a kernel for."""
    if ctx.dtype(op.input("in")) not in GELU_DTYPES:
        return lower_gelu(ctx, op)
    ctx.make_node("Gelu", [op.input("in")], [op.output("out")], approximate="none")


@LOWERINGS.op("fast_gelu", since_opset=20)
def lower_fast_gelu_20(ctx, op):
    """ONNX Gelu with its tanh approximation, from opset 20."""
    if ctx.dtype(op.input("in")) not in GELU_DTYPES:
        return lower_fast_gelu(ctx, op)
    ctx.make_node("Gelu", [op.input("in")], [op.output("out")], approximate="tanh")


@LOWERINGS.op("quick_gelu", since_opset=9)
def lower_quick_gelu(ctx, op):
    """GELU's sigmoid form, as CLIP uses it: x * sigmoid(1.702 x)."""
    x = op.input("x")
    (scaled,) = ctx.make_node("Mul", [x, _scalar(ctx, x, 1.702, "coefficient")])
    (gate,) = ctx.make_node("Sigmoid", [scaled])
    ctx.make_node("Mul", [x, gate], [op.output("y")])


@LOWERINGS.op("silu", since_opset=9)
def lower_silu(ctx, op):
    x = op.input("in")
    (gate,) = ctx.make_node("Sigmoid", [x])
    ctx.make_node("Mul", [x, gate], [op.output("out")])


@LOWERINGS.op("mish", since_opset=9)
def lower_mish(ctx, op):
    x = op.input("in")
    (softplus,) = ctx.make_node("Softplus", [x])
    (gate,) = ctx.make_node("Tanh", [softplus])
    ctx.make_node("Mul", [x, gate], [op.output("out")])


@LOWERINGS.op("hardsigmoid", since_opset=9)
def lower_hardsigmoid(ctx, op):
    # relu6(x + 3) / 6 == clip(x / 6 + 1/2, 0, 1)
    ctx.make_node("HardSigmoid", [op.input("in")], [op.output("out")], alpha=1.0 / 6.0, beta=0.5)


@LOWERINGS.op("hardswish", since_opset=9)
def lower_hardswish(ctx, op):
    """x * hardsigmoid(x), and 0 below -3 as OneFlow computes it: the product alone is NaN at -inf
    (-inf * 0), and so is ONNX's HardSwish, which is that product (measured at edge values)."""
    x = op.input("in")
    (gate,) = ctx.make_node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    (product,) = ctx.make_node("Mul", [x, gate])
    (below,) = ctx.make_node("Less", [x, _scalar(ctx, x, -3.0, "minus_three")])
    ctx.make_node("Where", [below, _scalar(ctx, x, 0.0, "zero"), product], [op.output("out")])


@LOWERINGS.op("hardtanh")
def lower_hardtanh(ctx, op):
    x = op.input("in")
    low, high = _scalar(ctx, x, op.attr("min_val"), "min"), _scalar(ctx, x, op.attr("max_val"), "max")
    ctx.make_node("Clip", [x, low, high], [op.output("out")])


@LOWERINGS.op("leaky_relu", since_opset=9)
def lower_leaky_relu(ctx, op):
    ctx.make_node("LeakyRelu", [op.input("x")], [op.output("y")], alpha=float(op.attr("alpha")))


@LOWERINGS.op("elu", since_opset=9)
def lower_elu(ctx, op):
    if ctx.dtype(op.input("in")) != np.float32:
        _written_out_elu(ctx, op.input("in"), float(op.attr("alpha")), 1.0, op.output("out"))
        return
    ctx.make_node("Elu", [op.input("in")], [op.output("out")], alpha=float(op.attr("alpha")))


@LOWERINGS.op("celu", since_opset=9)
def lower_celu(ctx, op):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)): ONNX Celu needs opset 12 and takes float only."""
    x = op.input("in")
    alpha = float(op.attr("alpha"))
    if ctx.dtype(x) != np.float32:
        _written_out_elu(ctx, x, alpha, 1.0 / alpha, op.output("out"))
        return
    (scaled,) = ctx.make_node("Div", [x, _scalar(ctx, x, alpha, "alpha")])
    (elu,) = ctx.make_node("Elu", [scaled], alpha=1.0)
    ctx.make_node("Mul", [elu, _scalar(ctx, x, alpha, "alpha")], [op.output("out")])


def _written_out_elu(ctx, x: str, alpha: float, rate: float, out: str) -> None:
    """``x`` where it is above 0, else ``alpha * (exp(rate * x) - 1)``, from Exp and Where: ONNX
    Runtime's CPU provider has an Elu kernel for float32 only (its kernel registry, 1.23), and
    OneFlow computes elu and celu in float64 too. NaN stays NaN (it is not above 0)."""
    (scaled,) = ctx.make_node("Mul", [x, _scalar(ctx, x, rate, "rate")]) if rate != 1.0 else (x,)
    (grown,) = ctx.make_node("Sub", [ctx.make_node("Exp", [scaled])[0], _scalar(ctx, x, 1.0, "one")])
    (negative,) = ctx.make_node("Mul", [grown, _scalar(ctx, x, alpha, "alpha")])
    (positive,) = ctx.make_node("Greater", [x, _scalar(ctx, x, 0.0, "zero")])
    ctx.make_node("Where", [positive, x, negative], [out])


@LOWERINGS.op("softplus", since_opset=9)
def lower_softplus(ctx, op):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as OneFlow computes it)."""
    x = op.input("in")
    beta, threshold = float(op.attr("beta")), float(op.attr("threshold"))
    (scaled,) = ctx.make_node("Mul", [x, _scalar(ctx, x, beta, "beta")])
    (soft,) = ctx.make_node("Softplus", [scaled])
    (soft,) = ctx.make_node("Div", [soft, _scalar(ctx, x, beta, "beta")])
    (linear,) = ctx.make_node("Greater", [scaled, _scalar(ctx, x, threshold, "threshold")])
    ctx.make_node("Where", [linear, x, soft], [op.output("out")])


@LOWERINGS.op("log_sigmoid", since_opset=9)
def lower_log_sigmoid(ctx, op):
    # log(sigmoid(x)) = -softplus(-x), which stays finite for large |x|.
    x = op.input("x")
    (negated,) = ctx.make_node("Neg", [x])
    (soft,) = ctx.make_node("Softplus", [negated])
    ctx.make_node("Neg", [soft], [op.output("y")])


@LOWERINGS.op("hardshrink", since_opset=9)
def lower_hardshrink(ctx, op):
    x = op.input("in")
    (magnitude,) = ctx.make_node("Abs", [x])
    (keep,) = ctx.make_node("Greater", [magnitude, _scalar(ctx, x, op.attr("lambd"), "lambd")])
    ctx.make_node("Where", [keep, x, _scalar(ctx, x, 0, "zero")], [op.output("out")])


@LOWERINGS.op("softshrink")
def lower_softshrink(ctx, op):
    """x - alpha above alpha, x + alpha below -alpha, 0 between: ONNX Shrink with bias alpha."""
    alpha = float(op.attr("alpha"))
    ctx.make_node("Shrink", [op.input("in")], [op.output("out")], lambd=alpha, bias=alpha)


@LOWERINGS.op("threshold")
def lower_threshold(ctx, op):
    """x above the threshold, ``value`` elsewhere."""
    x = op.input("in")
    (keep,) = ctx.make_node("Greater", [x, _scalar(ctx, x, op.attr("threshold_val"), "threshold")])
    ctx.make_node("Where", [keep, x, _scalar(ctx, x, op.attr("value"), "value")], [op.output("out")])


@LOWERINGS.op("prelu", since_opset=9)
def lower_prelu(ctx, op):
    x, alpha = op.input("x"), op.input("alpha")
    rank = ctx.rank(x)
    if ctx.shape(alpha) != (1,) and rank > 2:
        # One slope per channel (axis 1): [C] -> [C, 1, ..., 1] so that it broadcasts along axis 1.
        shape = ctx.constant(np.array([-1] + [1] * (rank - 2), dtype=np.int64), "alpha_shape")
        (alpha,) = ctx.make_node("Reshape", [alpha, shape])
    ctx.make_node("PRelu", [x, alpha], [op.output("y")])


@LOWERINGS.op("softmax", since_opset=9, onnx_type="Softmax", output_arg="out")
@LOWERINGS.op("log_softmax", since_opset=9, onnx_type="LogSoftmax", output_arg="prob")
def lower_softmax(ctx, op, onnx_type: str, output_arg: str):
    # OneFlow's softmax ops always normalize the last axis (it transposes around them for other
    # axes). Before opset 13 ONNX flattens the input to 2-D at `axis`; for the last axis that
    # flattening is exactly a last-axis softmax, so one form serves every opset.
    ctx.make_node(onnx_type, [op.input("in")], [op.output(output_arg)], axis=-1)


@hookimpl
def flow2onnx_register_lowerings(register):
    LOWERINGS.register_lowerings(register)
