"""flow2onnx: export OneFlow models to ONNX through plugins, verified against OneFlow on ONNX Runtime.

The programmatic entry point is :func:`export`. Code written for OneFlow's tutorial tool
(``oneflow_onnx``) works by changing its import to ``from flow2onnx import export_onnx_model,
convert_to_onnx_and_check``. Plugin authors find everything they need in :mod:`flow2onnx.plugin`.
:mod:`flow2onnx.runtime` runs exported files, and imports without the exporter.
"""

from . import compile_guard
from .errors import (
    Flow2OnnxError,
    InvalidModelError,
    LoweringError,
    MissingKernelError,
    OpsetError,
    OutputPathError,
    PluginError,
    UnsupportedOpsError,
    VerificationError,
)
from .lowering.registry import DEFAULT_OPSET, DEFAULT_SINCE_OPSET, MIN_OPSET, max_opset

def __getattr__(name: str):
    # The exporter and the lowering API load on first use, so that ``flow2onnx.runtime`` (running
    # exported files) starts without them. The imports are written out, not computed, so that the
    # import graph read from the source sees them.
    if name in ("convert_to_onnx_and_check", "export_onnx_model"):
        from .exporter import compat as module
    elif name == "export":
        from .exporter import api as module
    elif name == "ExportResult":
        from .exporter import pipeline as module
    elif name == "VerificationReport":
        from .exporter import verify as module
    elif name == "LoweringContext":
        from .lowering import context as module
    elif name == "FlowOp":
        from .lowering import graph as module
    elif name == "hookimpl":
        from .lowering import hookspecs as module
    elif name == "OpSchema":
        from .lowering import schema as module
    else:
        raise AttributeError(f"module 'flow2onnx' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # later lookups find it without calling __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


# Graphs compiled in this process from now on are compiled safely (see flow2onnx.compile_guard).
compile_guard.install_when_imported()

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "DEFAULT_SINCE_OPSET",
    "ExportResult",
    "Flow2OnnxError",
    "FlowOp",
    "InvalidModelError",
    "LoweringContext",
    "LoweringError",
    "MissingKernelError",
    "OpSchema",
    "OpsetError",
    "OutputPathError",
    "PluginError",
    "UnsupportedOpsError",
    "VerificationError",
    "VerificationReport",
    "convert_to_onnx_and_check",
    "export",
    "export_onnx_model",
    "hookimpl",
    "max_opset",
]
