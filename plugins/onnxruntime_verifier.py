"""Verification on ONNX Runtime's CPU execution provider.

The CPU provider is used whatever the machine has: it is the reference implementation of ONNX
operators in ONNX Runtime and gives the same numbers on every machine. One session serves every
run of a verification and goes when the host lets go of it: nothing is kept between exports.
"""

from __future__ import annotations

from flow2onnx import hookimpl


def open_onnxruntime(model_path, custom_op_libraries=()):
    """An ONNX Runtime session of the model: a function from feeds to the model's outputs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the verification report is what the user reads
    # Without the arena, memory the runs used goes back when they end, not when the session does.
    options.enable_cpu_mem_arena = False
    for library in custom_op_libraries:
        options.register_custom_ops_library(library)
    session = onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])

    def run(feeds):
        return session.run(None, feeds)

    return run


def run_onnxruntime(model_path, feeds, custom_op_libraries=()):
    """One run in a session of its own (the host opens one session for all its runs instead)."""
    return open_onnxruntime(model_path, custom_op_libraries)(feeds)


@hookimpl
def flow2onnx_register_verifiers(register):
    register("onnxruntime", run_onnxruntime, session=open_onnxruntime)
