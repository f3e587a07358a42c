"""Post-pass ``onnxoptimizer``: onnxoptimizer's default fusion and elimination passes."""

from __future__ import annotations

from flow2onnx import hookimpl


def optimize(model):
    import onnxoptimizer

    return onnxoptimizer.optimize(model, onnxoptimizer.get_fuse_and_elimination_passes())


@hookimpl
def flow2onnx_register_post_passes(register):
    register("onnxoptimizer", optimize)
