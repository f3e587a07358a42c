"""Post-pass ``onnxsim``: onnx-simplifier's constant folding and redundant-node removal."""

from __future__ import annotations

from flow2onnx import hookimpl


def simplify(model):
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified


@hookimpl
def flow2onnx_register_post_passes(register):
    register("onnxsim", simplify)
