"""Verification on ONNX Runtime's CPU execution provider.

The CPU provider is used whatever the machine has: it is the reference implementation of ONNX
operators in ONNX Runtime and gives the same numbers on every machine.
"""

from __future__ import annotations

import os

from flow2onnx import hookimpl

_session_cache: dict = {}


def _session(model_path: str, custom_op_libraries):
    import onnxruntime

    stat = os.stat(model_path)
    key = (model_path, stat.st_mtime_ns, stat.st_size, tuple(custom_op_libraries))
    session = _session_cache.get(key)
    if session is None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the verification report is what the user reads
        for library in custom_op_libraries:
            options.register_custom_ops_library(library)
        session = onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        _session_cache.clear()  # one model at a time: sessions hold the weights
        _session_cache[key] = session
    return session


def run_onnxruntime(model_path, feeds, custom_op_libraries=()):
    session = _session(model_path, custom_op_libraries)
    return session.run(None, feeds)


@hookimpl
def flow2onnx_register_verifiers(register):
    register("onnxruntime", run_onnxruntime)
