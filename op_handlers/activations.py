"""Element-wise activations: relu, sigmoid, tanh."""

from __future__ import annotations

import functools

from flow2onnx.hookspecs import hookimpl

# OneFlow op type -> (ONNX op type, OneFlow input argument, OneFlow output argument)
_UNARY = {
    "relu": ("Relu", "x", "y"),
    "sigmoid": ("Sigmoid", "x", "y"),
    "tanh": ("Tanh", "x", "y"),
}


def lower_unary(ctx, op, onnx_type: str, input_arg: str, output_arg: str):
    ctx.make_node(onnx_type, [op.input(input_arg)], [op.output(output_arg)])


@hookimpl
def flow2onnx_register_lowerings(register):
    for op_type, (onnx_type, input_arg, output_arg) in _UNARY.items():
        register(op_type, functools.partial(lower_unary, onnx_type=onnx_type, input_arg=input_arg, output_arg=output_arg))
