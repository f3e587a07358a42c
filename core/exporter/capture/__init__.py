"""The capture stage: the model's ops and tensors read into a :class:`~flow2onnx.lowering.graph.FlowGraph`.

:func:`capture` is the stage; :mod:`.graphs` reads a compiled ``nn.Graph`` (and compiles a module
as one), :mod:`.eager` records the ops an eager run calls, and :mod:`.recording` patches OneFlow's
calls for it. The parameters stay in OneFlow's memory (:mod:`flow2onnx.exporter.weights`).
"""

from .stage import Captured, capture, capture_again

__all__ = ["Captured", "capture", "capture_again"]
