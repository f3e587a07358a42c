"""The lowering API's view of a OneFlow graph: its ops, tensors and weights, under ONNX names.

:class:`FlowGraph` is what capture produces and the converter walks; a lowering sees one
:class:`FlowOp` at a time and reads tensors' static facts as :class:`TensorInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Static description of one tensor of the graph, under its ONNX name."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class FlowOp:
    """One OneFlow user op, with its tensors already renamed to the names they get in ONNX.

    ``inputs`` and ``outputs`` map OneFlow argument names (``"in"``, ``"weight"``, ``"y"``) to lists
    of tensor names; ``attrs`` holds the op's attributes as plain Python values.
    """

    name: str
    type: str
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]]
    attrs: dict[str, Any]

    def input(self, arg: str, index: int = 0) -> str:
        """The ONNX name of input ``arg`` (``index``-th tensor of that argument)."""
        return self.inputs[arg][index]

    def output(self, arg: str, index: int = 0) -> str:
        """The ONNX name of output ``arg`` (``index``-th tensor of that argument)."""
        return self.outputs[arg][index]

    def has_input(self, arg: str) -> bool:
        return bool(self.inputs.get(arg))


@dataclass
class FlowGraph:
    """What the converter needs from a compiled graph, and nothing copied that it does not."""

    name: str
    ops: list[FlowOp]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensors: dict[str, TensorInfo]
    variables: list[TensorInfo]
    read_weight: Callable[[str], np.ndarray] = field(repr=False)
    # For each output, the name of the tensor that feeds it.
    output_sources: list[str] = field(default_factory=list)
    # The graph itself, kept to run OneFlow for verification.
    flow_graph: Any = field(repr=False, default=None)
    # The eager module the graph was traced from, when flow2onnx wrapped it: verification runs it
    # rather than the graph (any batch size, and OneFlow 0.9's lazy-job runtime crashes now and then
    # on repeated graph runs).
    eager_module: Any = field(repr=False, default=None)

    def op_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        return counts
