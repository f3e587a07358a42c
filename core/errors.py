"""The errors flow2onnx raises. Each says what went wrong and what to do about it."""

from __future__ import annotations


class Flow2OnnxError(Exception):
    """Base class of every error flow2onnx raises on purpose."""


class InvalidModelError(Flow2OnnxError):
    """The object given to export is not something flow2onnx can read (or is not ready to be read)."""


class UnsupportedOpsError(Flow2OnnxError):
    """The graph uses OneFlow op types that no loaded plugin can lower at the requested opset.

    ``missing`` maps each op type to ``(count, example_op_name)``.
    """

    def __init__(self, message: str, missing: dict[str, tuple[int, str]]):
        super().__init__(message)
        self.missing = missing

    def __reduce__(self):  # pickled whole: an isolated export sends it back from its worker process
        return type(self), (self.args[0], self.missing), self.__dict__


class LoweringError(Flow2OnnxError):
    """A lowering refused or failed on one op; the message names the op, its type and the plugin."""


class OpsetError(Flow2OnnxError):
    """The requested opset is outside what flow2onnx and the installed onnx support."""


class PluginError(Flow2OnnxError):
    """A plugin failed to load or to register; the message names the plugin."""


class OutputPathError(Flow2OnnxError):
    """The output path cannot be written."""


class VerificationError(Flow2OnnxError):
    """ONNX Runtime's outputs differ from OneFlow's beyond tolerance; ``report`` holds the details."""

    def __init__(self, message: str, report, divergence=None):
        super().__init__(message)
        self.report = report
        #: What the first-divergence finder found, when it ran (``flow2onnx.exporter.diagnose.Divergence``).
        self.divergence = divergence

    def __reduce__(self):  # pickled whole: an isolated export sends it back from its worker process
        return type(self), (self.args[0], self.report, self.divergence), self.__dict__


class MissingKernelError(Flow2OnnxError):
    """The verifying runtime has no kernel for the types of a node of the exported model; nothing is
    written. ``onnx_op`` is the node's ONNX operator, ``node`` its name, ``op_type`` the OneFlow op
    type whose lowering emitted it (``None`` where no op of the graph did)."""

    def __init__(self, message: str, onnx_op: str, node: str, op_type: str | None):
        super().__init__(message)
        self.onnx_op, self.node, self.op_type = onnx_op, node, op_type

    def __reduce__(self):  # pickled whole: an isolated export sends it back from its worker process
        return type(self), (self.args[0], self.onnx_op, self.node, self.op_type), self.__dict__


class ModelFileError(Flow2OnnxError):
    """A model file to run or describe is missing, empty, truncated, not ONNX, or rejected by ONNX Runtime."""


class ProviderError(Flow2OnnxError):
    """None of the requested ONNX Runtime execution providers is known, available or working here."""


class ModelInputError(Flow2OnnxError):
    """An input given to a model (array, image or labels file) does not match what the model expects."""


class InferenceError(Flow2OnnxError):
    """ONNX Runtime failed while running a model on inputs that passed the checks."""
