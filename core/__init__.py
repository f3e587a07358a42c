"""flow2onnx: export OneFlow models to ONNX through plugins, verified against OneFlow on ONNX Runtime.

The programmatic entry point is :func:`export`. Code written for OneFlow's tutorial tool
(``oneflow_onnx``) works by changing its import to ``from flow2onnx import export_onnx_model,
convert_to_onnx_and_check``. Plugin authors implement the hooks of :mod:`flow2onnx.lowering.hookspecs` with
the :data:`hookimpl` marker.
"""

from . import compile_guard
from .errors import (
    Flow2OnnxError,
    InvalidModelError,
    LoweringError,
    OpsetError,
    OutputPathError,
    PluginError,
    UnsupportedOpsError,
    VerificationError,
)
from .exporter.compat import convert_to_onnx_and_check, export_onnx_model
from .exporter.api import export
from .exporter.pipeline import ExportResult
from .exporter.verify import VerificationReport
from .lowering.context import LoweringContext
from .lowering.graph import FlowOp
from .lowering.hookspecs import hookimpl
from .lowering.registry import DEFAULT_OPSET, DEFAULT_SINCE_OPSET, MIN_OPSET, max_opset
from .lowering.schema import OpSchema

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
